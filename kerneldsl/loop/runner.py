"""Run one trial of a user objective and turn whatever happens into an `Outcome`.

An objective maps a config dict to a mapping with at least ``loss`` and
``cost``. Exceptions, timeouts, dead worker processes, missing keys, NaN/inf
and non-positive values (both outputs are modelled in log space) all become a
failed outcome with a one-line reason; only KeyboardInterrupt / SystemExit stop
the caller.

Time-outs (``timeout`` seconds) come in two flavours, chosen by ``isolation``:

* ``"process"`` (the robust one, default when a timeout is set): trials run in a
  persistent worker process started with the ``spawn`` method; a trial that
  runs past its timeout gets its worker killed, and the next trial starts a new
  one. The objective must be picklable (a module-level function or a picklable
  callable object) and its module importable by the worker. Worker start-up
  (importing torch, ...) happens before the trial clock starts.
* ``"thread"``: the trial runs in a daemon thread and the caller stops waiting
  after ``timeout`` seconds. Python cannot stop a thread, so a timed-out trial
  keeps running in the background (using CPU and memory) until it returns; use
  it only for objectives that are cheap to abandon.

Without a timeout, ``"inline"`` (the default) calls the objective directly.
"""

from __future__ import annotations

import inspect
import math
import multiprocessing
import numbers
import pickle
import reprlib
import threading
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .trial import TrialState

__all__ = ["Outcome", "TrialRunner", "ISOLATIONS", "as_number", "check_result", "outcome_of", "takes_reporter"]

ISOLATIONS = ("inline", "thread", "process")


@dataclass
class Outcome:
    """What one objective call produced: state (ok or failed), outputs, failure reason, wall time."""

    state: TrialState
    loss: float | None = None
    cost: float | None = None
    outputs: dict[str, Any] = field(default_factory=dict)  # extra outputs the objective returned
    error: str | None = None
    seconds: float = 0.0  # wall-clock seconds of the objective call


def _describe_exception(exc: BaseException) -> str:
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


def _portable(result: Any) -> Any:
    """A result as plain values to send between processes; loss and cost keep their number-ness."""
    if not isinstance(result, Mapping):
        return _plain(result)
    numbers_of = {k: as_number(result[k]) for k in ("loss", "cost") if k in result}
    return {str(k): numbers_of[k] if numbers_of.get(k) is not None else _plain(v) for k, v in result.items()}


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


def _worker_main(conn) -> None:
    """Worker process loop: receive (objective, config), send back ("ok", result) or ("error", reason)."""
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        objective, config = message
        try:
            result = objective(config)
            reply = ("ok", _portable(result))
        except Exception as exc:  # noqa: BLE001 - every failure of the user's code is an outcome
            reply = ("error", _describe_exception(exc))
        conn.send(reply)


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
        if timeout is not None and not (isinstance(timeout, (int, float)) and timeout > 0):
            raise ValueError(f"timeout must be a positive number of seconds or None, got {timeout!r}")
        if isolation is None:
            isolation = "inline" if timeout is None else "process"
        if isolation not in ISOLATIONS:
            raise ValueError(f"isolation must be one of {ISOLATIONS}, got {isolation!r}")
        if isolation == "inline" and timeout is not None:
            raise ValueError("isolation='inline' cannot enforce a timeout; use 'process' or 'thread'")
        if isolation == "process":
            try:
                pickle.dumps(objective)
            except Exception as exc:  # noqa: BLE001 - any pickling failure means the same thing
                raise ValueError(
                    "isolation='process' sends the objective to a worker process, so it must be picklable "
                    f"(a module-level function or a picklable callable object): {exc}"
                ) from None
        self.objective = objective
        self.takes_reporter = takes_reporter(objective)
        self.timeout = timeout
        self.isolation = isolation
        self.positive_loss = positive_loss
        self._process = None
        self._conn = None

    def __call__(self, config: dict, reporter: Callable[..., bool] | None = None) -> Outcome:
        """Run the objective on ``config``; an objective of two arguments gets ``reporter`` as its second."""
        if self.isolation == "process":
            return self._run_in_process(config)
        if self.isolation == "thread":
            return self._run_in_thread(config, reporter)
        start = time.perf_counter()
        try:
            result = self._call(config, reporter)
        except Exception as exc:  # noqa: BLE001 - every failure of the user's code is an outcome
            return Outcome(TrialState.FAILED, error=_describe_exception(exc), seconds=time.perf_counter() - start)
        return outcome_of(result, time.perf_counter() - start, self.positive_loss)

    def _call(self, config: dict, reporter: Callable[..., bool] | None) -> Any:
        if self.takes_reporter:
            return self.objective(dict(config), reporter if reporter is not None else _no_stop)
        return self.objective(dict(config))

    def _run_in_thread(self, config: dict, reporter: Callable[..., bool] | None = None) -> Outcome:
        box: dict[str, Any] = {}

        def target() -> None:
            try:
                box["result"] = self._call(config, reporter)
            except Exception as exc:  # noqa: BLE001
                box["error"] = _describe_exception(exc)

        start = time.perf_counter()
        thread = threading.Thread(target=target, name="kerneldsl-trial", daemon=True)
        thread.start()
        thread.join(self.timeout)
        seconds = time.perf_counter() - start
        if thread.is_alive():
            return Outcome(TrialState.FAILED, error=f"timed out after {self.timeout:g} s (thread left running)", seconds=seconds)
        if "error" in box:
            return Outcome(TrialState.FAILED, error=box["error"], seconds=seconds)
        return outcome_of(box.get("result"), seconds, self.positive_loss)

    def _start_worker(self) -> None:
        context = multiprocessing.get_context("spawn")
        parent, child = context.Pipe()
        self._process = context.Process(target=_worker_main, args=(child,), name="kerneldsl-trial-worker", daemon=True)
        self._process.start()
        child.close()
        self._conn = parent
        if not parent.poll(120.0):
            self._kill_worker()
            raise RuntimeError("the trial worker process did not start within 120 s")
        parent.recv()  # "ready": imports are done, the trial clock may start

    def _kill_worker(self) -> None:
        if self._process is not None:
            self._process.kill()
            self._process.join()
        if self._conn is not None:
            self._conn.close()
        self._process = self._conn = None

    def _run_in_process(self, config: dict) -> Outcome:
        if self._process is None or not self._process.is_alive():
            self._kill_worker()
            self._start_worker()
        start = time.perf_counter()
        try:
            self._conn.send((self.objective, dict(config)))
            ready = self._conn.poll(self.timeout)
            if not ready:
                self._kill_worker()
                return Outcome(TrialState.FAILED, error=f"timed out after {self.timeout:g} s (worker killed)", seconds=time.perf_counter() - start)
            kind, payload = self._conn.recv()
        except (EOFError, BrokenPipeError, ConnectionResetError, OSError):
            self._process.join(5.0)
            code = self._process.exitcode
            self._kill_worker()
            return Outcome(TrialState.FAILED, error=f"worker process died (exit code {code})", seconds=time.perf_counter() - start)
        seconds = time.perf_counter() - start
        if kind == "error":
            return Outcome(TrialState.FAILED, error=payload, seconds=seconds)
        return outcome_of(payload, seconds, self.positive_loss)

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
