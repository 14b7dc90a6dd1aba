"""Tiny objectives for the executor tests, importable by worker processes (spawned workers and Dask workers
get the test process's ``sys.path``, where this folder is)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

from kerneldsl.loop.synthetic import SyntheticTask


def key_of(config: dict) -> str:
    """A config's name in marker files (its ``shift``, unique among Sobol points)."""
    return f"{config['shift']:.9f}"


@dataclass
class Sleeper:
    """The synthetic task's outputs after ``seconds`` of sleep; notes ``<key>.<pid>.start`` / ``.end`` in ``marks``.

    ``hang_above``: configs with ``shift`` above it sleep ``hang`` seconds (for timeouts); those above
    ``deaf_above`` block SIGALRM first, as an objective stuck in C code would be deaf to it; those above
    ``die_above`` kill their own worker process (SIGKILL), every time, as a config that runs out of memory."""

    marks: str
    seconds: float = 0.3
    hang_above: float | None = None
    hang: float = 30.0
    deaf_above: float | None = None
    die_above: float | None = None

    def __call__(self, config: dict) -> dict:
        stem = os.path.join(self.marks, f"{key_of(config)}.{os.getpid()}.{time.time_ns()}")
        open(stem + ".start", "w").close()
        seconds = self.seconds
        if self.die_above is not None and config["shift"] > self.die_above:
            import signal

            os.kill(os.getpid(), signal.SIGKILL)
        if self.hang_above is not None and config["shift"] > self.hang_above:
            seconds = self.hang
            if self.deaf_above is not None and config["shift"] > self.deaf_above:
                import signal

                signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
        time.sleep(seconds)
        open(stem + ".end", "w").close()
        task = SyntheticTask()
        return {"loss": task.loss(config), "cost": task.cost(config), "pid": os.getpid()}


def started(marks: str) -> list[tuple[str, int, int]]:
    """(config key, pid, start time in ns) of every trial run that started, oldest first."""
    runs = []
    for name in os.listdir(marks):
        if name.endswith(".start"):
            key, pid, ns = name[: -len(".start")].rsplit(".", 2)
            runs.append((key, int(pid), int(ns)))
    return sorted(runs, key=lambda run: run[2])


def finished(marks: str, key: str, pid: int) -> bool:
    return any(name.startswith(f"{key}.{pid}.") and name.endswith(".end") for name in os.listdir(marks))


@dataclass
class SteppedReporter:
    """The synthetic task in ``steps`` steps of ``pause`` seconds; reports after each one (cost k/steps of the true
    cost) and returns what it has when the study asks it to stop."""

    steps: int = 6
    pause: float = 0.05

    def __call__(self, config: dict, report) -> dict:
        task = SyntheticTask()
        cost = task.cost(config)
        for k in range(1, self.steps + 1):
            time.sleep(self.pause)
            if report(cost=cost * k / self.steps, progress=k / self.steps, loss=task.loss(config)):
                return {"loss": None, "cost": cost * k / self.steps}
        return {"loss": task.loss(config), "cost": cost}
