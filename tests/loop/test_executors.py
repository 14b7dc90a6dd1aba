"""Trials in parallel: process pools, thread pools and a Dask cluster; timeouts, dead workers, bad input.

The objectives sleep a fraction of a second and the studies stay in their initial design (no model fits),
so the time goes to starting worker processes (each imports torch)."""

from __future__ import annotations

import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import pytest

import kerneldsl as kd
from kerneldsl.loop import executors
from kerneldsl.loop.journal import read_journal
from kerneldsl.loop.spawn import SpawnError
from kerneldsl.loop.runner import TrialRunner

sys.path.insert(0, str(Path(__file__).resolve().parent))  # worker processes inherit it and import the objectives
from executor_objectives import Sleeper, SteppedReporter, finished, key_of, started  # noqa: E402


TASK = kd.SyntheticTask()


def sobol_study(tmp_path: Path, n: int, name: str = "study.jsonl") -> kd.Study:
    """A study that stays in its initial design for ``n`` trials (no model fit: these tests are about running)."""
    return kd.Study(TASK.space(), TASK.max_cost, tmp_path / name, n_init=n, n_trials=n, seed=1)


def kill_in_the_middle(marks: Path, nth: int, box: dict) -> threading.Thread:
    """Kill (SIGKILL) the worker process of the ``nth`` trial run to start, while it sleeps."""

    def kill() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            runs = started(str(marks))
            if len(runs) >= nth:
                key, pid, _ = runs[nth - 1]
                time.sleep(0.1)
                if not finished(str(marks), key, pid):
                    os.kill(pid, signal.SIGKILL)
                    box.update(key=key, pid=pid)
                return
            time.sleep(0.02)

    thread = threading.Thread(target=kill, daemon=True)
    thread.start()
    return thread


def assert_journal_complete(study: kd.Study, n: int) -> None:
    """Every trial of the study is told, and the journal says the same as the study object."""
    _, trials = read_journal(study.journal.path)
    assert len(trials) == len(study.trials) >= n
    assert all(t.state.finished for t in trials)
    assert [(t.id, t.state, t.loss) for t in trials] == [(t.id, t.state, t.loss) for t in study.trials]
    assert study.n_counted == n


def overlap(trials: list[kd.Trial]) -> int:
    """The largest number of trials that were running at one moment."""
    events = sorted([(t.started, 1) for t in trials] + [(t.finished, -1) for t in trials])
    running = most = 0
    for _, step in events:
        running += step
        most = max(most, running)
    return most


# ------------------------------------------------------------------------------------------- process pool
def test_process_pool_survives_a_killed_worker(tmp_path):
    """2 worker processes, 6 trials; one worker is killed in the middle of a trial (a preemption, a neighbour's
    out-of-memory kill): the pool is replaced, that trial and any other the broken pool took down run again,
    every trial is told, the study completes."""
    marks = tmp_path / "marks"
    marks.mkdir()
    box: dict = {}
    killer = kill_in_the_middle(marks, 3, box)
    with ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("forkserver")) as pool:
        with sobol_study(tmp_path, 6) as study:
            study.optimize(Sleeper(str(marks), seconds=0.6), executor=pool, n_workers=2, progress=False)
    killer.join()
    assert box, "the killer thread found no trial to kill"
    assert_journal_complete(study, 6)
    by_key = {key_of(t.config): t for t in study.trials}
    victim = by_key[box["key"]]
    assert victim.state is kd.TrialState.OK and victim.outputs["pid"] != box["pid"]  # ran again, elsewhere
    assert all(t.state is kd.TrialState.OK for t in study.trials), [t.error for t in study.trials]
    runs = started(str(marks))
    assert len(runs) in (7, 8)  # 8 when another trial was taken down with the victim and ran again
    assert len({pid for _, pid, _ in runs}) >= 3  # the replacement pool has new processes
    assert overlap(study.trials) == 2


def test_a_config_that_kills_its_worker_every_time_is_failed_after_its_reruns(tmp_path, monkeypatch):
    """One policy for dead workers (as Dask's allowed-failures): a trial whose worker dies runs again, at most
    `MAX_RERUNS` times, then it is failed with the reason; the other trials end as they would."""
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(executors, "MAX_RERUNS", 1)
    with sobol_study(tmp_path, 6) as study:  # shifts 0.42, -0.29, 0.71, -0.57, -0.1, 0.24
        study.optimize(Sleeper(str(marks), seconds=0.1, die_above=0.6), n_workers=2, progress=False)
    assert_journal_complete(study, 6)
    errors = {round(t.config["shift"], 2): t.error for t in study.trials}
    assert errors.pop(0.71) == ("worker process died (killed by SIGKILL) while the trial ran, 2 times; the process "
                                "pool was replaced each time")
    assert set(errors.values()) == {None}, errors
    doomed = key_of(next(t.config for t in study.trials if t.config["shift"] > 0.6))
    assert sum(key == doomed for key, _, _ in started(str(marks))) == 2


def test_own_process_pool_and_timeouts(tmp_path, monkeypatch):
    """``n_workers=2`` without an executor: the study's own pool. A trial past its timeout is stopped in its
    worker (the pool goes on); one deaf to the alarm has its worker killed, and the pool is replaced."""
    marks = tmp_path / "marks"
    marks.mkdir()
    monkeypatch.setattr(executors, "grace_of", lambda timeout: 1.0)  # the driver's backstop, shortened
    with sobol_study(tmp_path, 6) as study:  # shifts 0.42, -0.29, 0.71, -0.57, -0.1, 0.24
        study.optimize(Sleeper(str(marks), seconds=0.2, hang_above=0.3, deaf_above=0.6), n_workers=2, timeout=1.0,
                       progress=False)
    assert_journal_complete(study, 6)
    errors = {round(t.config["shift"], 2): t.error for t in study.trials}
    assert errors.pop(0.42) == "timed out after 1 s (stopped in the worker)"
    assert errors.pop(0.71).startswith("timed out after 1 s (it did not stop: its worker process was killed")
    assert set(errors.values()) == {None}, errors
    assert len(started(str(marks))) in (6, 7)  # 7 when a trial was taken down with the deaf one and ran again


# ------------------------------------------------------------------------------------------- thread pool
def test_thread_pool_keeps_n_workers_in_flight_and_records_failures(tmp_path):
    """Asynchronous: as soon as one trial ends the next starts; raises, garbage and timeouts become failed
    trials with a one-line reason, and the study completes."""
    calls = []

    def objective(config):
        calls.append(config)
        if config["shift"] < -0.5:
            raise RuntimeError("boom")
        if config["shift"] > 0.6:
            time.sleep(1.0)  # past the timeout
        elif config["effort"] > 0.5:
            time.sleep(0.3)
            return "not a mapping"
        time.sleep(0.1)
        return TASK(config)

    with ThreadPoolExecutor(3) as pool, sobol_study(tmp_path, 10) as study:
        study.optimize(objective, executor=pool, n_workers=3, timeout=0.6, progress=False)
    assert_journal_complete(study, 10)
    assert overlap(study.trials) == 3
    for trial in study.trials:
        c = trial.config
        if c["shift"] < -0.5:
            assert trial.error.startswith("RuntimeError: boom (at test_executors.py:")
        elif c["shift"] > 0.6:
            assert trial.error == "timed out after 0.6 s (thread left running)"
        elif c["effort"] > 0.5:
            assert trial.error == "objective returned str, expected a mapping with 'loss' and 'cost'"
        else:
            assert trial.state is kd.TrialState.OK
    assert {t.state for t in study.trials} == {kd.TrialState.OK, kd.TrialState.FAILED}


def test_model_based_asks_while_trials_run(tmp_path):
    """After the initial design each finished trial is told and the next asked with the running ones pending."""
    with ThreadPoolExecutor(2) as pool:
        study = kd.Study(TASK.space(), TASK.max_cost, tmp_path / "s.jsonl", n_init=3, n_trials=5, seed=0,
                         num_restarts=2, raw_samples=32, mc_samples=16, acq_options={"maxiter": 30},
                         fit_options={"maxiter": 30})
        with study:
            study.optimize(Sleeper(str(tmp_path), seconds=0.2), executor=pool, n_workers=2, progress=False)
    assert_journal_complete(study, 5)
    assert [t.phase for t in study.trials][3:] == [kd.Phase.TOCK, kd.Phase.TICK]
    assert len({tuple(sorted(t.config.items())) for t in study.trials}) == 5


# ------------------------------------------------------------------------------------------- Dask
@pytest.fixture(scope="module")
def dask_client():
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                  dashboard_address=None) as cluster, distributed.Client(cluster) as client:
        yield client


def test_dask_cluster_survives_a_killed_worker(tmp_path, dask_client):
    """A LocalCluster of 2 worker processes; one is killed in the middle of a trial: Dask runs the trial again on
    a live worker (or, past its allowed failures, the trial is failed with the reason); nothing told is lost."""
    marks = tmp_path / "marks"
    marks.mkdir()
    box: dict = {}
    killer = kill_in_the_middle(marks, 2, box)
    with sobol_study(tmp_path, 5) as study:
        study.optimize(Sleeper(str(marks), seconds=0.6), executor=dask_client, n_workers=2, progress=False)
    killer.join()
    assert box, "the killer thread found no trial to kill"
    assert_journal_complete(study, 5)
    victim = {key_of(t.config): t for t in study.trials}[box["key"]]
    if victim.state is kd.TrialState.OK:  # rerun by the scheduler on another worker
        assert sum(key == box["key"] for key, _, _ in started(str(marks))) == 2
    else:
        assert "KilledWorker" in victim.error
    assert all(t.state is kd.TrialState.OK for t in study.trials if t is not victim)
    assert overlap(study.trials) == 2

    with sobol_study(tmp_path, 2, "executor.jsonl") as study:  # the client's concurrent.futures face
        study.optimize(Sleeper(str(marks), seconds=0.1), executor=dask_client.get_executor(), progress=False)
    assert_journal_complete(study, 2)
    assert all(t.state is kd.TrialState.OK for t in study.trials)


def test_dask_bad_input(tmp_path, dask_client):
    distributed = pytest.importorskip("distributed")
    with sobol_study(tmp_path, 2) as study:
        with pytest.raises(ValueError, match=r"n_workers must be a positive integer"):
            study.optimize(TASK, executor=dask_client, n_workers=0)
        closed = distributed.Client(dask_client.scheduler.address)
        closed.close()
        with pytest.raises(ValueError, match=r"the Dask client is closed"):
            study.optimize(TASK, executor=closed)
    assert study.trials == []


# ------------------------------------------------------------------------------------------- bad input
def _journal_with_a_running_trial(tmp_path: Path) -> tuple[Path, bytes]:
    path = tmp_path / "j.jsonl"
    with kd.Study(TASK.space(), TASK.max_cost, path, n_init=4, n_trials=4) as study:
        study.ask()
    return path, path.read_bytes()


class _Unpicklable:
    def __init__(self):
        self.lock = threading.Lock()

    def __call__(self, config):
        return TASK(config)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(executor="threads"), TypeError, r"executor must be a concurrent.futures.Executor .* got str"),
    (dict(executor=object()), TypeError, r"or a distributed.Client, got object"),
    (dict(n_workers=0), ValueError, r"n_workers must be a positive integer .* got 0"),
    (dict(n_workers=-2), ValueError, r"got -2"),
    (dict(n_workers=True), ValueError, r"got True"),
    (dict(n_workers=1.5), ValueError, r"got 1.5"),
    (dict(executor="closed threads"), ValueError, r"ThreadPoolExecutor is shut down"),
    (dict(executor="closed processes"), ValueError, r"ProcessPoolExecutor is shut down"),
    (dict(executor="open threads", isolation="process"), ValueError, r"isolation='process' is for trials run without"),
    (dict(n_workers=2, isolation="inline"), ValueError, r"not isolation='inline'"),
    (dict(executor="open processes", objective=lambda c: TASK(c)), SpawnError,
     r"the objective \S*test_executors\.<lambda> cannot be sent to process pool workers: it cannot be pickled .*"
     r"Define it as a function at the top level of a module"),
    (dict(n_workers=2, objective=_Unpicklable()), SpawnError,
     r"the objective \S*test_executors\._Unpicklable cannot be sent .*cannot pickle '_thread.lock' object"),
])
def test_bad_input_is_a_clear_error_before_the_first_trial(tmp_path, kwargs, error, match):
    path, before = _journal_with_a_running_trial(tmp_path)
    kwargs = dict(kwargs)
    objective = kwargs.pop("objective", TASK)
    executor = kwargs.get("executor")
    if executor in ("closed threads", "open threads"):
        kwargs["executor"] = ThreadPoolExecutor(1)
        if executor == "closed threads":
            kwargs["executor"].shutdown()
    elif executor in ("closed processes", "open processes"):
        kwargs["executor"] = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
        if executor == "closed processes":
            kwargs["executor"].shutdown()
    study = kd.Study(TASK.space(), TASK.max_cost, path, n_init=4, n_trials=4)
    with study, pytest.raises(error, match=match):
        study.optimize(objective, progress=False, **kwargs)
    if hasattr(kwargs.get("executor"), "shutdown"):
        kwargs["executor"].shutdown()
    assert path.read_bytes() == before  # the running trial is not even marked lost


# ------------------------------------------------------------------------------------------- __main__ guard
UNGUARDED = """
import kerneldsl as kd
from kerneldsl.loop.synthetic import SyntheticTask

task = SyntheticTask()
study = kd.Study(task.space(), task.max_cost, n_init=2, n_trials=2)
try:
    study.optimize(task, n_workers=2, progress=False)
except Exception as exc:
    print(f"{type(exc).__name__}: {exc}")
kd.tick_tock(task, task.space(), task.max_cost, n_init=2, n_iter=0, timeout=3, progress=False)
print("ran", len(study.trials))
"""


def test_a_script_without_the_main_guard_gets_a_clear_error(tmp_path):
    """A process pool (line 8) and ``timeout=`` process isolation (line 11, issue 15's first hour) started from
    the top level of a script: a clear error naming the line, before any worker process is started."""
    script = tmp_path / "script.py"
    script.write_text(UNGUARDED)
    child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert child.returncode == 1
    assert child.stdout.startswith("SpawnError: Study.optimize: script.py line 8 starts process pool workers from "
                                   'the top level of the script, outside `if __name__ == "__main__":`'), child.stdout
    assert ("SpawnError: timeout= with isolation='process': script.py line 11 starts a worker process from the top "
            "level") in child.stderr, child.stderr
    for raw in ("bootstrapping phase", "EOFError", "AttributeError", "BrokenProcessPool"):
        assert raw not in child.stdout + child.stderr
    assert "ran" not in child.stdout


def test_process_isolation_stops_a_trial_and_keeps_its_worker(tmp_path):
    """``timeout=`` with process isolation: the alarm stops the trial and the same worker runs the next one."""
    hang = {"model": "small", "effort": 0.1, "shift": 0.9, "depth": 2}
    with TrialRunner(Sleeper(str(tmp_path), seconds=0.05, hang_above=0.5), timeout=0.5, isolation="process") as run:
        first = run({**hang, "shift": 0.1})
        stopped = run(hang)
        after = run({**hang, "shift": 0.2})
    assert first.state is after.state is kd.TrialState.OK
    assert stopped.error == "timed out after 0.5 s (stopped in the worker)"
    assert first.outputs["pid"] == after.outputs["pid"]


# ------------------------------------------------------------------------------------------- reports from workers
REPORT_BUDGET = 4.0


def assert_stopped_for_cost(study: kd.Study) -> None:
    """Trials far over the budget were stopped before their last step, trials within it ran to the end, and every
    report reached the study (and its journal) before the trial's outcome."""
    over = [t for t in study.trials if TASK.cost(t.config) > 1.6 * REPORT_BUDGET]
    within = [t for t in study.trials if TASK.cost(t.config) <= REPORT_BUDGET]
    assert over and within, "the design must have trials on both sides of the budget"
    for trial in over:
        assert trial.state is kd.TrialState.STOPPED and len(trial.reports) < 6, trial
    for trial in within:
        assert trial.state is kd.TrialState.OK and len(trial.reports) == 6, trial
    assert read_journal(study.journal.path)[1] == study.trials
    # A worker sees the decision on the report it just made, as a trial in this process does: not one late.
    in_process = kd.Study(TASK.space(), REPORT_BUDGET, None, n_init=8, n_trials=8, seed=1)
    in_process.optimize(SteppedReporter(pause=0.0), progress=False)
    assert [len(t.reports) for t in study.trials] == [len(t.reports) for t in in_process.trials]


def test_reports_travel_from_process_pool_workers_and_stop_trials(tmp_path):
    study = kd.Study(TASK.space(), REPORT_BUDGET, tmp_path / "study.jsonl", n_init=8, n_trials=8, seed=1)
    with study:
        study.optimize(SteppedReporter(pause=0.25), n_workers=2, progress=False)
    assert_stopped_for_cost(study)


def test_reports_travel_from_dask_workers_and_stop_trials(tmp_path, dask_client):
    study = kd.Study(TASK.space(), REPORT_BUDGET, tmp_path / "study.jsonl", n_init=8, n_trials=8, seed=1)
    with study:
        study.optimize(SteppedReporter(pause=0.25), executor=dask_client, progress=False)
    assert_stopped_for_cost(study)


def test_replacing_a_broken_pool_kills_a_worker_its_shutdown_would_wait_for(monkeypatch):
    """When a pool breaks, `concurrent.futures` terminates the workers it knows of and joins them; a worker spawned
    by a submit that raced the break is missed, and the shutdown then waited for it forever (the docs build hung
    once so). Replacing a broken pool kills the current pool's workers still alive after `STOP_SECONDS`. Stand-in
    for the missed worker: a child started after the pool, asleep; the pool breaks when its worker is killed."""
    monkeypatch.setattr(executors, "STOP_SECONDS", 1.0)
    context = multiprocessing.get_context("forkserver")
    settings = executors.PoolSettings(1, context)
    pool = settings.new_pool()
    worker = pool.submit(os.getpid).result()
    trials = executors._ProcessPool(pool, settings, owns=True)
    straggler = context.Process(target=time.sleep, args=(60,))
    straggler.start()
    try:
        os.kill(worker, signal.SIGKILL)
        start = time.monotonic()
        trials._replace(pool)
        assert time.monotonic() - start < 10
        straggler.join(5)
        assert not straggler.is_alive() and straggler.exitcode == -signal.SIGKILL
        assert trials.executor is not pool and trials.executor.submit(os.getpid).result() != worker
    finally:
        if straggler.is_alive():
            straggler.kill()
        trials.close()
