"""Several drivers share one journal: appends under a lock, each driver reads the others' lines before it asks,
ids are unique, a live driver's running trials are never marked lost, a killed driver's one is lost once its
lease is over and run again, and every driver ends with the same study."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

import kerneldsl as kd
from kerneldsl.loop.journal import Journal, JournalBusy, live_drivers

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

DRIVER = textwrap.dedent("""
    import json, os, sys, time
    import kerneldsl as kd
    import kerneldsl.loop.journal as journal

    journal.LEASE = 3.0                      # short, for the test: heartbeats every 0.6 s
    path, calls, seconds, n_trials = sys.argv[1], sys.argv[2], float(sys.argv[3]), int(sys.argv[4])

    def objective(config):
        with open(calls, "a") as log:        # one short line per call, appended whole
            log.write(json.dumps({"pid": os.getpid(), "x": config["x"]}) + "\\n")
        time.sleep(seconds)
        return {"loss": 0.1 + config["x"], "cost": 1.0 + config["y"]}

    if __name__ == "__main__":
        space = kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Scalar("y", 0.0, 1.0)])
        with kd.Study(space, 10.0, path, n_init=2, n_trials=n_trials, seed=0,
                      proposer=kd.RandomProposer(space, seed=0)) as study:
            print("open", flush=True)
            study.optimize(objective, progress=False)
            print(json.dumps({"best": study.best.id, "trials": len(study.trials)}), flush=True)
""")


def start(tmp_path, seconds: float, n_trials: int) -> subprocess.Popen:
    script = tmp_path / "driver.py"
    script.write_text(DRIVER)
    return subprocess.Popen([sys.executable, str(script), str(tmp_path / "study.jsonl"), str(tmp_path / "calls.jsonl"),
                             str(seconds), str(n_trials)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})


def finish(process: subprocess.Popen) -> dict:
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def calls(tmp_path) -> list[dict]:
    return [json.loads(line) for line in (tmp_path / "calls.jsonl").read_text().splitlines()]


def wait_for(condition, what: str, seconds: float = 60.0) -> None:
    end = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_two_drivers_share_a_journal_each_trial_once_and_the_same_best(tmp_path):
    drivers = [start(tmp_path, 0.3, 10) for _ in range(2)]
    reported = [finish(d) for d in drivers]
    study = kd.Study.load(tmp_path / "study.jsonl")
    assert [t.id for t in study.trials] == list(range(10))
    assert all(t.state is kd.TrialState.OK for t in study.trials)
    assert len({t.driver for t in study.trials}) == 2  # both asked trials
    ran = [c["x"] for c in calls(tmp_path)]
    assert sorted(ran) == sorted(t.config["x"] for t in study.trials)  # every trial ran once, none twice
    assert len(set(ran)) == 10
    assert reported == [{"best": study.best.id, "trials": 10}] * 2
    assert live_drivers(tmp_path / "study.jsonl") == []  # both closed: no lease left behind


def test_four_drivers_one_killed_mid_trial_its_trial_is_lost_once_and_run_again(tmp_path):
    journal = tmp_path / "study.jsonl"
    victim = start(tmp_path, 60.0, 12)  # its first trial runs for a minute: it is killed in it
    wait_for(lambda: (tmp_path / "calls.jsonl").exists(), "the first driver's first trial")
    others = [start(tmp_path, 0.4, 12) for _ in range(3)]
    wait_for(lambda: len(calls(tmp_path)) >= 4, "the other drivers' trials")
    # The victim lives: its running trial is not marked lost by the drivers that opened the journal since.
    assert kd.Study.load(journal).trials[0].state is kd.TrialState.RUNNING
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=30)
    reported = [finish(d) for d in others]

    study = kd.Study.load(journal)
    lost = [t for t in study.trials if t.state is kd.TrialState.LOST]
    assert [t.id for t in lost] == [0]
    (rerun,) = [t for t in study.trials if t.retry_of == 0]
    assert rerun.state is kd.TrialState.OK and rerun.config == lost[0].config and rerun.driver != lost[0].driver
    assert sum(t.state is kd.TrialState.OK for t in study.trials) == 12
    assert [t.id for t in study.trials] == list(range(13))
    ran = [c["x"] for c in calls(tmp_path)]
    assert len(ran) == 13 and len(set(ran)) == 12  # each config once, the killed one's twice
    assert reported == [{"best": study.best.id, "trials": 13}] * 3


def test_settings_are_checked_at_open_and_a_conversion_is_refused_while_another_driver_is_live(tmp_path):
    space = kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Scalar("y", 0.0, 1.0)])
    path = tmp_path / "study.jsonl"
    with kd.Study(space, 10.0, path, n_init=2, seed=0) as first:
        with pytest.raises(kd.JournalError, match=r"journal was written with seed=0, this study has seed=1"):
            kd.Study(space, 10.0, path, n_init=2, seed=1)
        trial = first.ask()
        with kd.Study(space, 10.0, path, n_init=2, seed=0) as second:  # a second driver in the same process
            second.optimize(lambda c: {"loss": 0.1 + c["x"], "cost": 1.0}, n_trials=1, progress=False)
            assert trial.state is kd.TrialState.RUNNING and second.trials[0].state is kd.TrialState.RUNNING
            assert [t.id for t in second.trials] == [0, 1]
        first.tell(trial, {"loss": 0.5, "cost": 1.0})
        assert [t.state for t in first.ask(1)] == [kd.TrialState.RUNNING] and len(first.trials) == 3

    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"kind": "header", "version": 1, "max_cost": 10.0}) + "\n")
    with Journal(tmp_path / "old.jsonl", {"max_cost": 10.0}):  # no format-1 journal here yet: this one is format 2
        pass
    old.write_text(json.dumps({"kind": "header", "version": 1, "max_cost": 10.0}) + "\n")
    live = Journal(tmp_path / "other.jsonl", {"max_cost": 10.0})  # the lease file lives beside the journal
    (tmp_path / "old.jsonl.drivers").mkdir(exist_ok=True)
    (tmp_path / "old.jsonl.drivers" / live.driver).write_text(json.dumps({"host": "elsewhere", "pid": 1}))
    with pytest.raises(JournalBusy, match=r"cannot be done while other drivers have it open \(pid 1 on elsewhere\)"):
        Journal(old, {"max_cost": 10.0})
    live.close()
