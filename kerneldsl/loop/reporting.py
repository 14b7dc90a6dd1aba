"""Reports from trials that run elsewhere: the engine's own primitives carry them to the study and back.

An objective that takes a second argument gets a reporter, ``report(cost=..., progress=...,
loss=None) -> stop``. In this process (``executor=None``, inline or thread isolation) the
reporter calls `Study.report` directly. Where trials run in other processes, a channel
carries them:

* process and thread pools on this machine (and ``isolation="process"``): a
  ``multiprocessing.Manager`` queue of reports and a managed dict of stop flags;
* a Dask cluster: a ``distributed.Queue`` of reports and one ``distributed.Event`` per trial.

The study's driver drains the channel while it waits for trials (``POLL`` seconds at most
between two looks), records each report (journaled) and raises the trial's stop flag when
it decides to stop it; the worker's reporter returns that flag, so a trial sees a stop at
its next report after the decision.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ReportChannel", "LocalChannel", "DaskChannel", "POLL"]

POLL = 0.2
"""Seconds between two looks at the channel while trials run."""


class ReportChannel(ABC):
    """Carries (trial, cost, progress, loss) from workers to the driver, and stop flags back."""

    @abstractmethod
    def reporter(self, trial: int) -> Callable[..., bool]:
        """The picklable reporter a worker passes to trial ``trial``'s objective: ``report(cost=..., progress=...,
        loss=None) -> stop``."""

    @abstractmethod
    def drain(self) -> list[tuple[int, Any, Any, Any]]:
        """The reports that arrived since the last call, as ``(trial, cost, progress, loss)``."""

    @abstractmethod
    def stop(self, trial: int) -> None:
        """Raise trial ``trial``'s stop flag: its reporter returns True from now on."""

    def close(self) -> None:
        """Release what the channel started."""


@dataclass
class _QueueReporter:
    """A worker's reporter over a managed queue (picklable: the proxies reconnect in the worker)."""

    queue: Any
    stops: Any
    trial: int

    def __call__(self, cost: float, progress: float, loss: float | None = None) -> bool:
        self.queue.put((self.trial, cost, progress, loss))
        return bool(self.stops.get(self.trial, False))


class LocalChannel(ReportChannel):
    """Processes and threads on this machine: a ``multiprocessing.Manager`` queue and dict."""

    def __init__(self, context=None):
        import multiprocessing

        self.manager = (context or multiprocessing).Manager()
        self.queue, self.stops = self.manager.Queue(), self.manager.dict()

    def reporter(self, trial: int) -> _QueueReporter:
        return _QueueReporter(self.queue, self.stops, trial)

    def drain(self) -> list[tuple[int, Any, Any, Any]]:
        import queue

        items = []
        while True:
            try:
                items.append(self.queue.get_nowait())
            except queue.Empty:
                return items

    def stop(self, trial: int) -> None:
        self.stops[trial] = True

    def close(self) -> None:
        self.manager.shutdown()


@dataclass
class _DaskReporter:
    """A Dask worker's reporter: puts on the study's ``distributed.Queue``, reads the trial's ``Event``."""

    queue: str
    prefix: str
    trial: int

    def __call__(self, cost: float, progress: float, loss: float | None = None) -> bool:
        from distributed import Event, Queue

        Queue(self.queue).put((self.trial, cost, progress, loss))
        return Event(f"{self.prefix}-{self.trial}").is_set()


class DaskChannel(ReportChannel):
    """A Dask cluster: one named ``distributed.Queue`` per optimize call, one ``distributed.Event`` per trial."""

    def __init__(self, client):
        from distributed import Queue

        key = uuid.uuid4().hex[:12]
        self.client, self.prefix = client, f"kerneldsl-stop-{key}"
        self.queue = Queue(f"kerneldsl-reports-{key}", client=client)

    def reporter(self, trial: int) -> _DaskReporter:
        return _DaskReporter(self.queue.name, self.prefix, trial)

    def drain(self) -> list[tuple[int, Any, Any, Any]]:
        if self.queue.qsize() == 0:
            return []
        return list(self.queue.get(batch=True))

    def stop(self, trial: int) -> None:
        from distributed import Event

        Event(f"{self.prefix}-{trial}", client=self.client).set()
