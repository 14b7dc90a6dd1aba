"""Run trials on executors: any `concurrent.futures.Executor`, or a Dask cluster through `distributed.Client`.

`trial_pool` checks what the user passed (before the first trial: a closed or broken
executor, ``n_workers < 1``, something that is not an executor, an objective that
cannot be pickled, a script without ``if __name__ == "__main__":``) and wraps it in a
`TrialPool`: `submit` a `TrialCall`, `wait` for the first of several to finish,
`collect` a finished one as an `Outcome` (or as "run it again"), `cancel` one that
timed out, `close`; `report_channel` carries the reports of a reporting objective
(`kerneldsl.loop.reporting`). The study's driver (`kerneldsl.loop.optimize`) alone asks,
tells and writes the journal; workers only run `TrialCall`, which turns everything the
objective does into an `Outcome` on the worker (`kerneldsl.loop.runner.call_objective`).

What happens when things go wrong:

* The objective raises or returns garbage: a failed trial with the one-line reason,
  made on the worker.
* Timeouts (``timeout`` seconds per trial; on a process pool counted from when the
  trial starts in its worker, elsewhere from when it is submitted, so give those
  executors at least ``n_workers`` workers). A running task cannot be killed through
  the `Executor` interface, so:

  - process pools: an alarm in the worker process stops the objective at the timeout
    (`TrialTimeout` raised inside it) and the worker goes on with the next trial. An
    objective that does not stop within `grace_of(timeout)` more seconds (stuck in C
    code) has its worker process killed; the pool breaks and is replaced as below, and
    the trial is failed "timed out".
  - thread pools and other executors: the trial is failed "timed out" at the timeout
    and its future cancelled; a task already running cannot be stopped and runs on in
    its thread (as ``isolation="thread"``).
  - Dask: the future is cancelled and the trial failed "timed out"; Dask cannot stop a
    task that is running either, so the worker thread runs it on to its end.
* A worker process dies (killed, out of memory, a crash in C code, a preempted node): one
  policy on every executor that has processes. The trial runs again on a live worker, at
  most `MAX_RERUNS` (3) times, then it is failed with the reason: a worker lost to a
  neighbour or a preemption costs one rerun, a config that kills its worker every time
  ends after 4 runs.

  - process pools (`BrokenProcessPool`): the pool is replaced by a new one of the same
    size; the trial whose worker died and the other trials the broken pool took down
    with it (it terminates all its workers) run again on the new pool, as the same
    trials. Which trial's worker died is known from the process each trial marked when
    it started and the exit codes, and names the reason when the trial is failed
    ("worker process died (killed by SIGKILL) while the trial ran, 4 times ...").
  - Dask: its scheduler runs the tasks of a lost worker again on another worker, as
    often as its ``distributed.scheduler.allowed-failures`` setting says (3 by default,
    the same as `MAX_RERUNS`); past that the task raises ``KilledWorker`` and the trial
    is failed with the reason.
* Nothing told is ever lost: each outcome is journaled by the driver as it is told.
  If the driver itself stops, trials in flight stay "running" in the journal and a
  resumed study marks them lost and runs their configs again.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import shutil
import signal
import tempfile
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from .reporting import DaskChannel, LocalChannel, ReportChannel
from .runner import Outcome, TrialRunner, call_objective, describe_exception, exit_reason, grace_of
from .spawn import check_main_guard, check_picklable, worker_context
from .trial import TrialState

__all__ = ["TrialCall", "TrialPool", "PoolSettings", "trial_pool", "MAX_RERUNS"]

MAX_RERUNS = 3
"""How often a trial taken down by a broken process pool runs again before it is failed (Dask's default
``allowed-failures``, so that both run a trial whose worker dies at most 4 times)."""
STOP_SECONDS = 5.0
"""How long a broken process pool gets to stop its workers before the driver kills those still alive.
`concurrent.futures` terminates the workers it knows of, but one spawned by a submit that raced the break is
missed, and the pool's shutdown then waits for it forever (seen once in the docs build: a worker idle on the
pool's queue, the driver in ``shutdown``)."""

PROBE_TIMEOUT = 300.0
"""Seconds to wait for a process pool's first worker to start (imports) before the first trial."""


@dataclass
class TrialCall:
    """One trial as sent to a worker: picklable, and called there to produce the trial's `Outcome`.

    ``marks`` is a folder on this machine where a local worker process notes its pid when the trial
    starts (so the driver knows which trial a dead worker was running)."""

    trial: int
    objective: Callable[[dict], Any]
    config: dict
    positive_loss: bool = True
    timeout: float | None = None
    marks: str | None = None
    reporter: Callable[..., bool] | None = None
    """The trial's reporter for an objective of two arguments (see `kerneldsl.loop.reporting`)."""

    def __call__(self) -> Outcome:
        if self.marks is not None:
            with open(os.path.join(self.marks, f"{self.trial}.pid"), "w", encoding="ascii") as handle:
                handle.write(str(os.getpid()))
        return call_objective(self.objective, self.config, self.positive_loss, self.timeout, self.reporter)


def _probe() -> int:
    return os.getpid()


class TrialPool(ABC):
    """Where trials run: submit calls, wait for them, collect their outcomes."""

    kind = "executor"
    owns = False

    def report_channel(self) -> ReportChannel | None:
        """A new channel for the reports of trials run here; None when trials run in the driver's process while it
        waits for them, where a trial's reporter calls the study itself."""
        return LocalChannel()

    def deadline(self, call: TrialCall, submitted: float, timeout: float | None) -> float | None:
        """When (Unix time) the driver gives up on ``call``, submitted at ``submitted`` (None: never)."""
        return None if timeout is None else submitted + timeout

    @abstractmethod
    def submit(self, call: TrialCall) -> Any:
        """Start ``call``; returns its future (a `concurrent.futures.Future` or the executor's kind)."""

    def wait(self, futures: Iterable[Any], timeout: float | None) -> set:
        """The futures among ``futures`` that are done, waiting until one is or ``timeout`` seconds pass."""
        return cf.wait(list(futures), timeout=timeout, return_when=cf.FIRST_COMPLETED).done

    def collect(self, future: Any, call: TrialCall) -> Outcome | None:
        """The outcome of a finished trial, or None when it must run again (submit ``call`` anew)."""
        exc = future.exception()
        if exc is None:
            return future.result()
        return Outcome(TrialState.FAILED, error=f"{self.kind} could not run the trial: {describe_exception(exc)}")

    def cancel(self, future: Any, call: TrialCall) -> str:
        """Give up on a running trial that timed out; returns how (for its reason)."""
        future.cancel()
        return "the executor cannot stop a running task: it runs on until the objective returns"

    def close(self, interrupted: bool = False) -> None:
        """Release what this pool started (an executor passed by the user is left open)."""


class _InProcess(TrialPool):
    """``executor=None, n_workers=1``: trials run one at a time by a `TrialRunner` (inline, thread or process)."""

    kind = "this process"

    def __init__(self, runner: TrialRunner):
        self.runner = runner
        # A trial in the worker process is waited for on a thread, so that the driver can take its reports meanwhile.
        self._waiter = cf.ThreadPoolExecutor(1, thread_name_prefix="kerneldsl-wait") if runner.isolation == "process" else None

    def deadline(self, call: TrialCall, submitted: float, timeout: float | None) -> None:
        return None  # the runner enforces the timeout itself

    def report_channel(self) -> ReportChannel | None:
        return LocalChannel() if self.runner.isolation == "process" else None

    def submit(self, call: TrialCall) -> cf.Future:
        if self._waiter is not None:
            return self._waiter.submit(self.runner, call.config, call.reporter)
        future: cf.Future = cf.Future()
        future.set_result(self.runner(call.config, reporter=call.reporter))
        return future

    def close(self, interrupted: bool = False) -> None:
        if self._waiter is not None:
            self._waiter.shutdown(wait=not interrupted, cancel_futures=True)
        self.runner.close()


class _Futures(TrialPool):
    """Any `concurrent.futures.Executor` (thread pools, process pools, others)."""

    def __init__(self, executor: cf.Executor, owns: bool):
        self.executor, self.owns = executor, owns
        self.kind = type(executor).__name__

    def submit(self, call: TrialCall) -> cf.Future:
        return self.executor.submit(call)

    def cancel(self, future: cf.Future, call: TrialCall) -> str:
        if future.cancel():
            return "cancelled before it started"
        if isinstance(self.executor, cf.ThreadPoolExecutor):
            return "thread left running"
        return super().cancel(future, call)

    def close(self, interrupted: bool = False) -> None:
        if self.owns:
            self.executor.shutdown(wait=not interrupted, cancel_futures=True)


@dataclass(frozen=True)
class PoolSettings:
    """What a process pool is made with, to make its replacement the same way."""

    max_workers: int | None = None
    mp_context: Any = None
    initializer: Callable[..., Any] | None = None
    initargs: tuple = ()

    @classmethod
    def of(cls, executor: cf.Executor) -> "PoolSettings":
        """The settings of an executor the user made. `concurrent.futures` has no public accessor for them, so
        this one place reads the executor's own attributes (pools kerneldsl makes record their settings)."""
        return cls(getattr(executor, "_max_workers", None), getattr(executor, "_mp_context", None),
                   getattr(executor, "_initializer", None), getattr(executor, "_initargs", ()))

    def new_pool(self) -> cf.ProcessPoolExecutor:
        return cf.ProcessPoolExecutor(max_workers=self.max_workers, mp_context=self.mp_context,
                                      initializer=self.initializer, initargs=self.initargs)


class _ProcessPool(_Futures):
    """A `ProcessPoolExecutor`: trials are stopped in the worker at their timeout, dead workers are told
    from the trials they took down, and a broken pool is replaced.

    The driver keeps the `multiprocessing.Process` of every live child it sees (`multiprocessing.active_children`
    after each submit and before each wait), so the exit code of a worker that died can be read."""

    def __init__(self, executor: cf.ProcessPoolExecutor, settings: PoolSettings, owns: bool):
        super().__init__(executor, owns)
        self.settings = settings
        self.marks = tempfile.mkdtemp(prefix="kerneldsl-trials-")
        self._workers: dict[int, Any] = {}  # pid -> multiprocessing.Process of the children seen alive
        self._on: dict[int, cf.ProcessPoolExecutor] = {}  # trial -> the pool it was submitted to
        self._verdicts: dict[int, Outcome | None] = {}  # trials of a broken pool: failed, or None to run again
        self._reruns: dict[int, int] = {}
        self._timed_out: set[int] = set()
        self._children_before = _child_pids()  # the current pool's workers are the children started since

    def deadline(self, call: TrialCall, submitted: float, timeout: float | None) -> float | None:
        """From the trial's start in its worker (its mark), so a worker starting up does not count; a trial not
        started yet is looked at again in a second."""
        if timeout is None:
            return None
        try:
            started = os.stat(os.path.join(self.marks, f"{call.trial}.pid")).st_mtime
        except OSError:
            return time.time() + 1.0
        return started + timeout + grace_of(timeout)

    def submit(self, call: TrialCall) -> cf.Future:
        call.marks = self.marks
        self._forget_mark(call.trial)
        try:
            future = self.executor.submit(call)
        except BrokenProcessPool:  # it broke since the last wait: its trials are judged when collected
            self._replace(self.executor)
            future = self.executor.submit(call)
        self._on[call.trial] = self.executor
        self._note_workers()
        return future

    def wait(self, futures: Iterable[Any], timeout: float | None) -> set:
        self._note_workers()
        return super().wait(futures, timeout)

    def _note_workers(self) -> None:
        for process in multiprocessing.active_children():  # live ones: each the current owner of its pid
            self._workers[process.pid] = process

    def collect(self, future: cf.Future, call: TrialCall) -> Outcome | None:
        exc = future.exception()
        if not isinstance(exc, BrokenProcessPool):
            self._on.pop(call.trial, None)
            return super().collect(future, call)
        if call.trial not in self._verdicts:
            self._replace(self._on.get(call.trial, self.executor))
        self._on.pop(call.trial, None)
        return self._verdicts.pop(call.trial, None)

    def cancel(self, future: cf.Future, call: TrialCall) -> str:
        if future.cancel():
            self._on.pop(call.trial, None)
            return "cancelled before it started"
        pid = self._pid_of(call.trial)
        if pid is None:
            return super().cancel(future, call)
        self._timed_out.add(call.trial)
        _kill(pid)
        return "it did not stop: its worker process was killed and the process pool replaced"

    def _pid_of(self, trial: int) -> int | None:
        try:
            with open(os.path.join(self.marks, f"{trial}.pid"), encoding="ascii") as handle:
                return int(handle.read().strip())
        except (OSError, ValueError):
            return None

    def _forget_mark(self, trial: int) -> None:
        try:
            os.remove(os.path.join(self.marks, f"{trial}.pid"))
        except OSError:
            pass

    def _replace(self, broken: cf.ProcessPoolExecutor) -> None:
        """Judge every trial that was running on the ``broken`` pool, and put a new pool in its place."""
        self._stop(broken)
        codes = {pid: process.exitcode for pid, process in self._workers.items()}
        self._workers = {pid: process for pid, process in self._workers.items() if codes[pid] is None}
        victims = [trial for trial, pool in self._on.items() if pool is broken]
        pids = {trial: self._pid_of(trial) for trial in victims}
        # The pool terminates (SIGTERM) the workers it did not lose: another exit code marks the dead one.
        culprits = {trial for trial, pid in pids.items()
                    if pid is not None and codes.get(pid) not in (None, -signal.SIGTERM)}
        for trial in victims:
            if trial in self._timed_out:  # already told (timed out): nothing will collect it
                self._on.pop(trial)
                self._timed_out.discard(trial)
                continue
            self._reruns[trial] = runs = self._reruns.get(trial, 0) + 1
            if runs <= MAX_RERUNS:
                self._verdicts[trial] = None
            elif trial in culprits:
                self._verdicts[trial] = Outcome(
                    TrialState.FAILED, error=f"worker process died ({exit_reason(codes[pids[trial]])}) while the "
                                             f"trial ran, {runs} times; the process pool was replaced each time")
            else:
                self._verdicts[trial] = Outcome(
                    TrialState.FAILED, error=f"worker process died while the trial ran ({runs} times, each time "
                                             "taking down the process pool)")
        if broken is self.executor:
            self._children_before = _child_pids()
            self.executor = self.settings.new_pool()
            self.owns = True  # the replacement is ours to shut down

    def _stop(self, broken: cf.ProcessPoolExecutor) -> None:
        """Shut the ``broken`` pool down: its manager thread terminates (SIGTERM) and joins its workers; a worker
        of the current pool still alive after `STOP_SECONDS` is killed (SIGKILL), so the join cannot hang. The
        driver only signals here (by pid), it never waits on a worker's process object itself: the pool's
        manager thread is the one that reads their exit codes."""
        broken.shutdown(wait=False, cancel_futures=True)
        if broken is self.executor:
            self._note_workers()
            spawned = [pid for pid in self._workers if pid not in self._children_before]
            deadline = time.monotonic() + STOP_SECONDS
            while spawned and time.monotonic() < deadline:
                spawned = [pid for pid in spawned if _exists(pid)]
                time.sleep(0.02)
            for pid in spawned:
                _kill(pid)
        broken.shutdown(wait=True)

    def close(self, interrupted: bool = False) -> None:
        if self.owns and interrupted:  # the workers that ran trials (their marks) may be busy: kill them
            for pid in {self._pid_of(trial) for trial in self._on}:
                if pid in self._workers:
                    self._workers[pid].kill()
        super().close(interrupted)
        shutil.rmtree(self.marks, ignore_errors=True)


def _child_pids() -> set[int]:
    """The pids of this process's live `multiprocessing` children."""
    return {process.pid for process in multiprocessing.active_children()}


def _exists(pid: int) -> bool:
    """Whether a process ``pid`` exists (a pool worker, even one the forkserver started)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by another user
        pass
    return True


def _kill(pid: int) -> None:
    """SIGKILL process ``pid``, if it is still there to be killed."""
    try:
        os.kill(pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


class _Dask(TrialPool):
    """A Dask cluster through a `distributed.Client`: its futures, `distributed.wait`, its own retries."""

    kind = "Dask"

    def __init__(self, client):
        self.client = client

    def report_channel(self) -> ReportChannel:
        return DaskChannel(self.client)

    def submit(self, call: TrialCall):
        return self.client.submit(call, key=f"kerneldsl-trial-{call.trial}-{uuid.uuid4().hex[:8]}", pure=False)

    def wait(self, futures: Iterable[Any], timeout: float | None) -> set:
        import distributed

        try:
            return set(distributed.wait(list(futures), timeout=timeout, return_when="FIRST_COMPLETED").done)
        except (TimeoutError, distributed.TimeoutError):
            return set()

    def collect(self, future, call: TrialCall) -> Outcome:
        from distributed.scheduler import KilledWorker

        if future.status == "cancelled":
            return Outcome(TrialState.FAILED, error="the Dask scheduler cancelled the trial (it lost it, or the "
                                                    "client lost its connection)")
        exc = future.exception()
        if exc is None:
            return future.result()
        if isinstance(exc, KilledWorker):
            return Outcome(TrialState.FAILED, error="its Dask workers died while it ran, more often than the "
                                                    "scheduler's allowed-failures (KilledWorker); it was run again "
                                                    "on other workers each time")
        return Outcome(TrialState.FAILED, error=f"Dask could not run the trial: {describe_exception(exc)}")

    def cancel(self, future, call: TrialCall) -> str:
        future.cancel()
        return "cancelled; Dask cannot stop a running task, its worker thread runs on until the objective returns"


# ---------------------------------------------------------------------------------------------------- checks
def _dask_client(executor: Any, where: str):
    """The `distributed.Client` behind ``executor`` (a client, or its ``get_executor()``), or None.

    A ``ClientExecutor`` does not say which client made it: its trials go through `distributed.get_client`, the
    client in force (the one that made it, unless several are open: then pass that client itself)."""
    if not type(executor).__module__.split(".")[0] == "distributed":
        return None
    import distributed
    from distributed.cfexecutor import ClientExecutor

    if isinstance(executor, distributed.Client):
        return executor
    if isinstance(executor, ClientExecutor):
        try:
            return distributed.get_client()
        except ValueError as exc:
            raise ValueError(f"{where}: no Dask client in force for the executor {type(executor).__name__} "
                             f"({exc}); pass the distributed.Client itself") from None
    return None


def _count_workers(where: str, n_workers: Any) -> int | None:
    if n_workers is None:
        return None
    if isinstance(n_workers, bool) or not isinstance(n_workers, int) or n_workers < 1:
        raise ValueError(f"{where}: n_workers must be a positive integer (trials in flight at once), got {n_workers!r}")
    return n_workers


def _process_checks(where: str, objective: Callable, context) -> None:
    check_picklable(objective, where, "process pool workers")
    if context is None or context.get_start_method() != "fork":
        check_main_guard(where, "process pool workers")


def _probe_pool(where: str, executor: cf.Executor) -> None:
    """Fail now with a clear error when ``executor`` is shut down, broken, or (a process pool) cannot start a worker."""
    try:
        future = executor.submit(_probe)
    except cf.BrokenExecutor as exc:
        raise ValueError(f"{where}: the executor {type(executor).__name__} is broken ({exc}); make a new one") from None
    except RuntimeError as exc:
        raise ValueError(f"{where}: the executor {type(executor).__name__} is shut down ({exc}); pass an open "
                         "executor (for example, call optimize inside its `with` block)") from None
    try:
        future.result(timeout=PROBE_TIMEOUT)
    except cf.BrokenExecutor:
        raise ValueError(f"{where}: the worker processes of {type(executor).__name__} died while starting (their "
                         "error is printed above): the objective's module must be importable by them, and a script "
                         'must keep its top-level code under `if __name__ == "__main__":`') from None
    except cf.TimeoutError:
        raise ValueError(f"{where}: no worker of {type(executor).__name__} started within {PROBE_TIMEOUT:g} s") from None


def trial_pool(objective: Callable, executor: Any = None, n_workers: int | None = None, *,
               timeout: float | None = None, isolation: str | None = None, positive_loss: bool = True,
               where: str = "Study.optimize") -> tuple[TrialPool, int]:
    """Check the arguments and return the pool that runs the trials and the number of trials to keep in flight.

    ``executor=None``: in this process with one worker (a `TrialRunner`, ``isolation`` as there), or a process
    pool of its own with ``n_workers > 1`` (a thread pool with ``isolation="thread"``). Otherwise a
    `concurrent.futures.Executor` or a `distributed.Client` (or its ``get_executor()``); ``n_workers``
    defaults to its number of workers (Dask: threads).
    """
    if not callable(objective):
        raise TypeError(f"{where}: objective must be callable, got {type(objective).__name__}")
    n_workers = _count_workers(where, n_workers)
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0):
        raise ValueError(f"{where}: timeout must be a positive number of seconds or None, got {timeout!r}")
    if executor is None:
        if n_workers in (None, 1):
            return _InProcess(TrialRunner(objective, timeout=timeout, isolation=isolation,
                                          positive_loss=positive_loss)), 1
        if isolation == "thread":
            return _Futures(cf.ThreadPoolExecutor(n_workers, thread_name_prefix="kerneldsl-trial"), owns=True), n_workers
        if isolation not in (None, "process"):
            raise ValueError(f"{where}: n_workers={n_workers} runs trials in worker processes (isolation='process') "
                             f"or threads (isolation='thread'), not isolation={isolation!r}")
        settings = PoolSettings(n_workers, worker_context())
        _process_checks(where, objective, settings.mp_context)
        pool = settings.new_pool()
        _probe_pool(where, pool)
        return _ProcessPool(pool, settings, owns=True), n_workers
    if isolation is not None:
        raise ValueError(f"{where}: isolation={isolation!r} is for trials run without an executor; with executor= "
                         "the executor decides where trials run")
    client = _dask_client(executor, where)
    if client is not None:
        if client.status != "running":
            raise ValueError(f"{where}: the Dask client is {client.status}; pass a connected distributed.Client")
        from distributed.protocol.pickle import dumps

        check_picklable(objective, where, "Dask workers", dumps=dumps)
        workers = sum(client.nthreads().values())
        return _Dask(client), n_workers or max(workers, 1)
    if not isinstance(executor, cf.Executor):
        raise TypeError(f"{where}: executor must be a concurrent.futures.Executor (ProcessPoolExecutor, "
                        f"ThreadPoolExecutor, ...) or a distributed.Client, got {type(executor).__name__}")
    settings = PoolSettings.of(executor)
    workers = settings.max_workers if isinstance(settings.max_workers, int) else 1
    if isinstance(executor, cf.ProcessPoolExecutor):
        _process_checks(where, objective, settings.mp_context)
        _probe_pool(where, executor)
        return _ProcessPool(executor, settings, owns=False), n_workers or workers
    _probe_pool(where, executor)
    return _Futures(executor, owns=False), n_workers or workers
