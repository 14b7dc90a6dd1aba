"""One driver writes a journal at a time: a second one is refused with the holder named, never interleaved;
a killed driver's lock goes with it, and the next driver reruns its running trial."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import kerneldsl as kd
JournalBusy = kd.JournalBusy

DRIVER = textwrap.dedent("""
    import sys, time
    import kerneldsl as kd

    def slow(config):
        time.sleep(float(sys.argv[2]))
        return {"loss": 0.1 + config["x"], "cost": 1.0 + config["y"]}

    if __name__ == "__main__":
        space = kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Scalar("y", 0.0, 1.0)])
        with kd.Study(space, 10.0, sys.argv[1], n_init=6, n_trials=6, seed=0) as study:
            print("open", flush=True)
            study.optimize(slow, progress=False)
        print("done", flush=True)
""")


def space():
    return kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Scalar("y", 0.0, 1.0)])


def start(tmp_path, journal, seconds):
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    process = subprocess.Popen([sys.executable, str(script), str(journal), str(seconds)], stdout=subprocess.PIPE,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert process.stdout.readline().strip() == "open"
    return process


def test_a_second_driver_is_refused_while_the_first_writes_and_nothing_is_interleaved(tmp_path):
    journal = tmp_path / "study.jsonl"
    first = start(tmp_path, journal, 0.3)
    try:
        with pytest.raises(JournalBusy, match=rf"process {first.pid} on .* has this journal open for writing"):
            kd.Study(space(), 10.0, journal, n_init=6, n_trials=6, seed=0)
        loaded = kd.Study.load(journal)  # reading needs no lock
        assert loaded.trials is not None
    finally:
        out, _ = first.communicate(timeout=60)
    assert first.returncode == 0 and out.strip().endswith("done")
    done = kd.Study.load(journal)
    assert [t.id for t in done.trials] == list(range(6))
    assert all(t.state is kd.TrialState.OK for t in done.trials)
    with kd.Study(space(), 10.0, journal, n_init=6, n_trials=6, seed=0) as again:  # the lock went with it
        assert again.best.id == done.best.id


def test_a_killed_drivers_lock_goes_with_it_and_its_running_trial_is_rerun(tmp_path):
    journal = tmp_path / "study.jsonl"
    first = start(tmp_path, journal, 30.0)
    for _ in range(100):  # wait for its first trial to be asked
        if journal.exists() and '"kind":"ask"' in journal.read_text():
            break
        time.sleep(0.1)
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    with kd.Study(space(), 10.0, journal, n_init=6, n_trials=6, seed=0) as study:
        running = [t.id for t in study.running]
        assert running == [0]
        study.optimize(lambda c: {"loss": 0.1 + c["x"], "cost": 1.0 + c["y"]}, progress=False)
    trials = kd.Study.load(journal).trials
    assert trials[0].state is kd.TrialState.LOST
    assert sum(t.state is kd.TrialState.OK for t in trials) == 6
    assert [t for t in trials if t.retry_of == 0]  # the lost trial's config ran again, once
    assert len([t for t in trials if t.retry_of == 0]) == 1
