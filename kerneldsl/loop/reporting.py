"""Reports from trials that run elsewhere: the engine's own primitives carry them to the study and back.

An objective that takes a second argument gets a reporter, ``report(cost=..., progress=...,
loss=None) -> stop``. In this process (``executor=None``, inline or thread isolation) the
reporter calls `Study.report` directly. Where trials run in other processes, a channel
carries them:

* process and thread pools on this machine (and ``isolation="process"``): a
  ``multiprocessing.Manager`` queue of reports and a managed dict of stop flags;
* a Dask cluster: a ``distributed.Queue`` of reports and one ``distributed.Variable`` of answers per trial.

A thread of the study's driver serves the channel (`ReportChannel.serve`): it records each
report as it arrives (journaled) and answers it with the study's decision; the worker's
reporter waits for that answer (at most `ANSWER_WAIT` seconds, then it goes on with the
last answer it had), so a trial sees the stop decision of the report it just made, on a
process pool or a Dask cluster as in this process.
"""

from __future__ import annotations

import threading
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ReportChannel", "LocalChannel", "DaskChannel", "ReportHandler", "ANSWER_WAIT", "POLL"]

ANSWER_WAIT = 10.0
"""Seconds a worker's reporter waits for the study's answer to a report before it goes on without it."""
POLL = 0.1
"""Seconds between two looks of the serving thread at its stop flag while no report arrives."""

ReportHandler = Callable[[int, Any, Any, Any], bool]
"""``handler(trial, cost, progress, loss) -> stop``: the study's decision on one report."""


def _await_answer(read: Callable[[], Any], sent: int) -> bool:
    """Poll ``read() -> (number, stop) or None`` until the answer to report number ``sent`` is there (or
    `ANSWER_WAIT` passes: then the last answer known); returns its stop flag."""
    deadline, pause = time.monotonic() + ANSWER_WAIT, 0.001
    while True:
        answer = read()
        if answer is not None and answer[0] >= sent:
            return bool(answer[1])
        if time.monotonic() > deadline:
            return bool(answer[1]) if answer is not None else False
        time.sleep(pause)
        pause = min(2 * pause, 0.02)


class ReportChannel(ABC):
    """Carries (trial, cost, progress, loss) from workers to the driver, and the study's answer back."""

    def __init__(self):
        self._closing = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: BaseException | None = None
        """What the handler raised (the driver's loop raises it)."""

    @abstractmethod
    def reporter(self, trial: int) -> Callable[..., bool]:
        """The picklable reporter a worker passes to trial ``trial``'s objective: ``report(cost=..., progress=...,
        loss=None) -> stop``, which waits for the study's answer."""

    @abstractmethod
    def _next(self, timeout: float) -> tuple[int, int, Any, Any, Any] | None:
        """The next report as ``(trial, number, cost, progress, loss)``, or None after ``timeout`` seconds."""

    @abstractmethod
    def _answer(self, trial: int, number: int, stop: bool) -> None:
        """Answer report ``number`` of ``trial``: the study wants it stopped (``stop``) or not."""

    def serve(self, handler: ReportHandler) -> None:
        """Answer every report with ``handler`` on a thread of this process, until `close`."""
        def run() -> None:
            while not self._closing.is_set():
                try:
                    item = self._next(POLL)
                except Exception:  # noqa: BLE001 - the channel went away (closing): nothing more to serve
                    return
                if item is None:
                    continue
                trial, number, cost, progress, loss = item
                try:
                    stop = bool(handler(trial, cost, progress, loss))
                except BaseException as exc:  # noqa: BLE001 - raised by the driver's loop instead
                    self.error, stop = exc, False
                try:
                    self._answer(trial, number, stop)
                except Exception:  # noqa: BLE001
                    return

        self._thread = threading.Thread(target=run, name="kerneldsl-reports", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop serving and release what the channel started."""
        self._closing.set()
        if self._thread is not None:
            self._thread.join(5 * POLL + 1.0)


@dataclass
class _QueueReporter:
    """A worker's reporter over a managed queue (picklable: the proxies reconnect in the worker)."""

    queue: Any
    answers: Any
    trial: int
    sent: int = 0

    def __call__(self, cost: float, progress: float, loss: float | None = None) -> bool:
        self.sent += 1
        self.queue.put((self.trial, self.sent, cost, progress, loss))
        return _await_answer(lambda: self.answers.get(self.trial), self.sent)


class LocalChannel(ReportChannel):
    """Processes and threads on this machine: a ``multiprocessing.Manager`` queue of reports and a dict of answers."""

    def __init__(self, context=None):
        import multiprocessing

        super().__init__()
        self.manager = (context or multiprocessing).Manager()
        self.queue, self.answers = self.manager.Queue(), self.manager.dict()

    def reporter(self, trial: int) -> _QueueReporter:
        return _QueueReporter(self.queue, self.answers, trial)

    def _next(self, timeout: float):
        import queue

        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def _answer(self, trial: int, number: int, stop: bool) -> None:
        self.answers[trial] = (number, stop)

    def close(self) -> None:
        super().close()
        self.manager.shutdown()


@dataclass
class _DaskReporter:
    """A Dask worker's reporter: puts on the study's ``distributed.Queue``, reads the trial's answer ``Variable``."""

    queue: str
    prefix: str
    trial: int
    sent: int = 0

    def __call__(self, cost: float, progress: float, loss: float | None = None) -> bool:
        from distributed import Queue, Variable

        self.sent += 1
        Queue(self.queue).put((self.trial, self.sent, cost, progress, loss))
        answer = Variable(f"{self.prefix}-{self.trial}")
        return _await_answer(lambda: _variable(answer), self.sent)


def _variable(variable) -> Any:
    try:
        return variable.get(timeout=0)
    except TimeoutError:
        return None


class DaskChannel(ReportChannel):
    """A Dask cluster: one named ``distributed.Queue`` per optimize call, one ``distributed.Variable`` of answers
    per trial."""

    def __init__(self, client):
        from distributed import Queue

        super().__init__()
        key = uuid.uuid4().hex[:12]
        self.client, self.prefix = client, f"kerneldsl-answer-{key}"
        self.queue = Queue(f"kerneldsl-reports-{key}", client=client)

    def reporter(self, trial: int) -> _DaskReporter:
        return _DaskReporter(self.queue.name, self.prefix, trial)

    def _next(self, timeout: float):
        try:
            return tuple(self.queue.get(timeout=timeout))
        except TimeoutError:
            return None

    def _answer(self, trial: int, number: int, stop: bool) -> None:
        from distributed import Variable

        Variable(f"{self.prefix}-{trial}", client=self.client).set([number, stop])
