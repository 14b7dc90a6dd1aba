"""Run one trial of a user objective and turn whatever happens into an `Outcome`.

An objective maps a config dict to a mapping with at least ``loss`` and
``cost``. Exceptions, timeouts, dead worker processes, missing keys, NaN/inf
and non-positive values (both outputs are modelled in log space) all become a
failed outcome with a one-line reason; only KeyboardInterrupt / SystemExit stop
the caller. `call_objective` is that one call; `TrialRunner` makes it in this
process, a thread or a worker process (`kerneldsl.loop.executors` runs it on
process pools and Dask clusters).

Time-outs (``timeout`` seconds) come in two flavours, chosen by ``isolation``:

* ``"process"`` (the robust one, default when a timeout is set): trials run in a
  persistent worker process (a fork of a ``forkserver`` that imported everything
  once, or a spawned process where there is none: `kerneldsl.loop.spawn.worker_context`).
  In the worker an alarm (``SIGALRM``, where the platform has it) stops a trial that runs past its
  timeout by raising `TrialTimeout` inside the objective, and the worker stays up
  for the next trial. An objective that does not stop (stuck in C code, or
  catching ``BaseException``) is killed ``grace_of(timeout)`` seconds later and a
  new worker started at once. The objective must be picklable (a module-level function or a
  picklable callable object) and a script that uses this must keep its top-level
  code under ``if __name__ == "__main__":`` (checked before the first trial, see
  `kerneldsl.loop.spawn`). The worker starts as soon as the runner is made, and
  before the trial clock starts.
* ``"thread"``: the trial runs in a daemon thread and the caller stops waiting
  after ``timeout`` seconds. Python cannot stop a thread, so a timed-out trial
  keeps running in the background (using CPU and memory) until it returns; use
  it only for objectives that are cheap to abandon.

Without a timeout, ``"inline"`` (the default) calls the objective directly.
"""

from __future__ import annotations

import inspect
import math
import numbers
import reprlib
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .spawn import check_main_guard, check_picklable, worker_context
from .trial import TrialState

__all__ = ["Outcome", "TrialRunner", "TrialTimeout", "ISOLATIONS", "as_number", "call_objective", "check_result",
           "describe_exception", "exit_reason", "grace_of", "outcome_of", "takes_reporter"]

ISOLATIONS = ("inline", "thread", "process")


class TrialTimeout(BaseException):
    """Raised inside an objective by the worker's alarm when the trial runs past its timeout.

    A `BaseException`, so that an objective's ``except Exception`` does not swallow it."""


def grace_of(timeout: float) -> float:
    """Seconds a worker gets, after its trial's timeout, to stop the trial itself before it is killed.

    Generous, because the alarm waits for an import in progress to finish (a module imported halfway would
    break every later trial of the worker), and a worker's first trials often import heavy modules."""
    return min(max(10.0, 0.5 * timeout), 120.0)


@dataclass
class Outcome:
    """What one objective call produced: state (ok or failed), outputs, failure reason, wall time."""

    state: TrialState
    loss: float | None = None
    cost: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # extra outputs the objective returned
    error: str | None = None
    seconds: float = 0.0  # wall-clock seconds of the objective call


def describe_exception(exc: BaseException) -> str:
    """One line: exception type, message and the innermost frame it came from."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = f" (at {frames[-1].filename.rsplit('/', 1)[-1]}:{frames[-1].lineno} in {frames[-1].name})" if frames else ""
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {message}{where}" if message else f"{type(exc).__name__}{where}"


def as_number(value: Any) -> float | None:
    """A real number as a float: an int or float, or a numpy/torch scalar (0-dimensional); else None.

    Strings ("0.5"), booleans and arrays or tensors with dimensions (e.g. shape (1,)) are not
    accepted silently: the trial fails and says what it got.
    """
    if isinstance(value, bool) or "bool" in str(getattr(value, "dtype", "")):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if getattr(value, "shape", None) == () and hasattr(value, "item"):
        item = value.item()
        return float(item) if isinstance(item, numbers.Real) and not isinstance(item, bool) else None
    return None


def _describe_value(value: Any) -> str:
    """``repr`` of a returned value, short, with its type (and shape for arrays and tensors)."""
    shape = getattr(value, "shape", None)
    if shape is not None and hasattr(value, "tolist"):
        return f"<{type(value).__name__} of shape {tuple(shape)}, dtype {getattr(value, 'dtype', '?')}>"
    return f"{reprlib.repr(value)} ({type(value).__name__})"


def _plain(value: Any) -> Any:
    """Extra outputs as JSON-friendly values (tensors and arrays become numbers or lists)."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return repr(value)


def check_result(result: Any, positive_loss: bool = True) -> tuple[float | None, float | None, dict, str | None]:
    """Validate an objective's return value: (loss, cost, extra outputs, failure reason or None)."""
    if not isinstance(result, Mapping):
        return None, None, {}, f"objective returned {type(result).__name__}, expected a mapping with 'loss' and 'cost'"
    extra = {str(k): _plain(v) for k, v in result.items() if k not in ("loss", "cost")}
    missing = [key for key in ("loss", "cost") if key not in result]
    if missing:
        return None, None, extra, f"objective result has no {' or '.join(repr(k) for k in missing)} (keys: {sorted(map(str, result))})"
    loss, cost = as_number(result["loss"]), as_number(result["cost"])
    if loss is None or cost is None:
        bad = "loss" if loss is None else "cost"
        return loss, cost, extra, (f"objective returned {bad}={_describe_value(result[bad])}, which is not a number: "
                                   f"return an int or float (e.g. tensor.item())")
    if not math.isfinite(loss):
        return None, cost, extra, f"objective returned loss={loss}"
    if not math.isfinite(cost) or cost <= 0:
        return loss, None, extra, f"objective returned cost={cost}; cost must be finite and positive (it is modelled in log space)"
    if positive_loss and loss <= 0:
        return loss, cost, extra, f"objective returned loss={loss}; loss must be positive when modelled in log space (pass log_loss=False)"
    return loss, cost, extra, None


def outcome_of(result: Any, seconds: float = 0.0, positive_loss: bool = True) -> Outcome:
    """The outcome of an objective's return value: ok, or failed with the reason (a kept cost if it is usable)."""
    loss, cost, extra, reason = check_result(result, positive_loss)
    if reason is None:
        return Outcome(TrialState.OK, loss, cost, extra, None, seconds)
    # A failed trial keeps a finite positive measured cost: the cost model (in log space) can still learn from it.
    usable = cost if cost is not None and math.isfinite(cost) and cost > 0 else None
    return Outcome(TrialState.FAILED, None, usable, extra, reason, seconds)


def _importing(frame) -> bool:
    """Whether ``frame`` is running inside the import machinery."""
    while frame is not None:
        if frame.f_code.co_filename.startswith("<frozen importlib"):
            return True
        frame = frame.f_back
    return False


@contextmanager
def _alarm(seconds: float | None) -> Iterator[bool]:
    """Raise `TrialTimeout` in this thread after ``seconds``, where a SIGALRM timer can do it (the main thread
    of a process on a POSIX system); yields whether the alarm is armed."""
    if (seconds is None or not hasattr(signal, "setitimer")
            or threading.current_thread() is not threading.main_thread()):
        yield False
        return

    def ring(signum, frame):
        if _importing(frame):  # an import stopped halfway would leave its module broken for later trials
            signal.setitimer(signal.ITIMER_REAL, 0.05)
            return
        raise TrialTimeout(seconds)

    previous = signal.signal(signal.SIGALRM, ring)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield True
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def call_objective(objective: Callable[[dict], Any], config: dict, positive_loss: bool = True,
                   timeout: float | None = None, reporter: Callable[..., bool] | None = None) -> Outcome:
    """Call ``objective(config)`` once and return its `Outcome`; never raises for the objective's failures.

    An objective of two arguments is called as ``objective(config, reporter)`` (a reporter that never
    asks to stop when ``reporter`` is None).

    With ``timeout``, an alarm stops the call after that many seconds where this thread can be interrupted
    (the main thread of a worker process); elsewhere the caller enforces the timeout.
    """
    start = time.perf_counter()
    try:
        try:
            with _alarm(timeout):
                if takes_reporter(objective):
                    result = objective(dict(config), reporter if reporter is not None else _no_stop)
                else:
                    result = objective(dict(config))
        except TrialTimeout:
            return Outcome(TrialState.FAILED, error=f"timed out after {timeout:g} s (stopped in the worker)",
                           seconds=time.perf_counter() - start)
        except Exception as exc:  # noqa: BLE001 - every failure of the user's code is an outcome
            return Outcome(TrialState.FAILED, error=describe_exception(exc), seconds=time.perf_counter() - start)
        seconds = time.perf_counter() - start
        return outcome_of(result, seconds, positive_loss)
    except TrialTimeout:  # the alarm rang as the objective returned
        return Outcome(TrialState.FAILED, error=f"timed out after {timeout:g} s (stopped in the worker)",
                       seconds=time.perf_counter() - start)


def _worker_main(conn) -> None:
    """Worker process loop: receive (objective, config, positive_loss, timeout, reporter), send back the `Outcome`."""
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        objective, config, positive_loss, timeout, reporter = message
        conn.send(("outcome", call_objective(objective, config, positive_loss, timeout, reporter)))


def takes_reporter(objective: Callable) -> bool:
    """Whether ``objective`` takes a second positional argument, the reporter (``objective(config, report)``)."""
    try:
        parameters = list(inspect.signature(objective).parameters.values())
    except (TypeError, ValueError):  # builtins and some C callables: assume the plain one-argument form
        return False
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind is p.VAR_POSITIONAL for p in parameters)


def _no_stop(cost: float, progress: float, loss: float | None = None) -> bool:
    """The reporter of a trial run outside a study: reports go nowhere, and it never asks to stop."""
    return False


class TrialRunner:
    """Calls an objective on configs with failure capture and an optional per-trial timeout."""

    def __init__(
        self,
        objective: Callable[[dict], Mapping[str, Any]],
        timeout: float | None = None,
        isolation: str | None = None,
        positive_loss: bool = True,
    ):
        if not callable(objective):
            raise TypeError(f"objective must be callable, got {type(objective).__name__}")
        if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float))
                                    or not timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if isolation is None:
            isolation = "inline" if timeout is None else "process"
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        if isolation == "inline" and timeout is not None:
            raise ValueError("isolation='inline' cannot enforce a timeout; use 'process' or 'thread'")
        if isolation == "process":
            where = "timeout= with isolation='process'"
            check_picklable(objective, where, "a worker process")
            check_main_guard(where, "a worker process")
        self.objective = objective
        self.takes_reporter = takes_reporter(objective)
        self.timeout = timeout
        self.isolation = isolation
        self.positive_loss = positive_loss
        self._process = None
        self._conn = None
        if isolation == "process":
            self._start_worker()  # imports happen while the first configs are proposed

    def __call__(self, config: dict, reporter: Callable[..., bool] | None = None) -> Outcome:
        """Run the objective on ``config``; an objective of two arguments gets ``reporter`` as its second."""
        if self.isolation == "process":
            return self._run_in_process(config, reporter)
        if self.isolation == "thread":
            return self._run_in_thread(config, reporter)
        return call_objective(self.objective, config, self.positive_loss, reporter=reporter)

    def _run_in_thread(self, config: dict, reporter: Callable[..., bool] | None = None) -> Outcome:
        box: dict[str, Outcome] = {}

        def target() -> None:
            box["outcome"] = call_objective(self.objective, config, self.positive_loss, reporter=reporter)

        start = time.perf_counter()
        thread = threading.Thread(target=target, name="kerneldsl-trial", daemon=True)
        thread.start()
        thread.join(self.timeout)
        if thread.is_alive():
            return Outcome(TrialState.FAILED, error=f"timed out after {self.timeout:g} s (thread left running)",
                           seconds=time.perf_counter() - start)
        return box["outcome"]

    def _start_worker(self) -> None:
        """Start a worker process; it reports "ready" once its imports are done (awaited by `_ready`)."""
        context = worker_context()
        parent, child = context.Pipe()
        self._process = context.Process(target=_worker_main, args=(child,), name="kerneldsl-trial-worker", daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        self._waiting_ready = True

    def _ready(self) -> None:
        if not self._waiting_ready:
            return
        if not self._conn.poll(120.0):
            self._kill_worker()
            raise RuntimeError("the trial worker process did not start within 120 s")
        try:
            self._conn.recv()  # "ready": imports are done, the trial clock may start
        except (EOFError, OSError):
            code = self._process.exitcode if self._process is not None else None
            self._kill_worker()
            raise RuntimeError(f"the trial worker process died while starting (exit code {code}); "
                               "its error is printed above") from None
        self._waiting_ready = False

    def _kill_worker(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def _run_in_process(self, config: dict, reporter: Callable[..., bool] | None = None) -> Outcome:
        if self._process is None or not self._process.is_alive():
            self._kill_worker()
            self._start_worker()
        self._ready()
        start = time.perf_counter()
        try:
            self._conn.send((self.objective, dict(config), self.positive_loss, self.timeout, reporter))
            ready = self._conn.poll(self.timeout + grace_of(self.timeout))
            if not ready:  # the alarm did not stop it: kill, and start the next worker now
                self._kill_worker()
                self._start_worker()
                return Outcome(TrialState.FAILED, error=f"timed out after {self.timeout:g} s (worker killed)",
                               seconds=time.perf_counter() - start)
            _, outcome = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self._process.join(5.0)
            code = self._process.exitcode
            self._kill_worker()
            return Outcome(TrialState.FAILED, error=f"worker process died ({exit_reason(code)})",
                           seconds=time.perf_counter() - start)
        return outcome

    def close(self) -> None:
        """Stop the worker process, if any."""
        if self._process is not None and self._process.is_alive() and self._conn is not None:
            try:
                self._conn.send(None)
                self._process.join(5.0)
            except (BrokenPipeError, OSError):
                pass
        self._kill_worker()

    def __enter__(self) -> "TrialRunner":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def exit_reason(code: int | None) -> str:
    """A process exit code in words: ``killed by SIGKILL``, ``exit code 3``."""
    if code is None:
        return "exit code unknown"
    if code < 0:
        try:
            return f"killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"
