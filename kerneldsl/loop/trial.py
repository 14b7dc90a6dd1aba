"""Trials of a study: their state, the phase that proposed them, and everything recorded about them."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

__all__ = ["TrialState", "Phase", "Trial", "Report", "phase_of", "best_feasible", "best_so_far"]


class TrialState(str, Enum):
    """Where a trial is in its life; every trial is in exactly one state."""

    RUNNING = "running"
    """Asked and not told yet."""
    OK = "ok"
    """Told with a finite loss and a finite positive cost."""
    FAILED = "failed"
    """Told with an error (raised, timed out, bad result): it enters the loss model at an imputed bad loss."""
    STOPPED = "stopped"
    """Stopped early by the study because its estimated final cost exceeds the budget: it teaches the
    cost model (at its estimated final cost) and the loss model (below the last loss it reported, if any),
    and is never the best trial."""
    LOST = "lost"
    """The study stopped while the trial ran (it was never told): it teaches the models nothing and
    `Study.optimize` runs its config again as a new trial."""

    @property
    def finished(self) -> bool:
        return self is not TrialState.RUNNING


class Phase(str, Enum):
    """What a trial was proposed for."""

    INIT = "init"
    """The initial design: the user's configs, then scrambled Sobol points."""
    TICK = "tick"
    """Lower cost at no worse loss."""
    TOCK = "tock"
    """Lower loss within the budget."""


def phase_of(iteration: int, tick_ratio: float) -> Phase:
    """Phase of model-based iteration ``iteration`` (1, 2, ...): a tick whenever ``floor(k * tick_ratio)`` steps up.

    ``tick_ratio=0.5`` alternates tock, tick, tock, tick, ...; ``1/3`` gives tock, tock, tick, ...;
    ``0`` only tocks (cost-constrained noisy EI); ``1`` only ticks.
    """
    step = math.floor(iteration * tick_ratio) > math.floor((iteration - 1) * tick_ratio)
    return Phase.TICK if step else Phase.TOCK


@dataclass(frozen=True)
class Report:
    """A partial result reported while a trial runs: cost so far, progress in (0, 1], optional loss."""

    cost: float
    progress: float
    loss: float | None = None
    time: float | None = None
    """Unix time the study received it."""

    def record(self, trial: int) -> dict[str, Any]:
        return {"kind": "report", "trial": trial, "cost": self.cost, "progress": self.progress, "loss": self.loss,
                "time": self.time}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> "Report":
        return cls(record["cost"], record["progress"], record.get("loss"), record.get("time"))


@dataclass
class Trial:
    """One evaluation of the objective at one config.

    ``id`` is the trial's position in its study (0, 1, ...), ``iteration`` 0 for the
    initial design and then 1, 2, ... for model-based proposals; ``proposal`` says how
    the config was found, ``prediction`` holds the models' loss and cost at it (None
    for the initial design); ``timings`` has the seconds spent fitting (``fit``),
    optimising the acquisition (``acquisition``) and in the objective (``objective``).
    ``loss`` and ``cost`` are None until known; a failed trial keeps a measured cost
    when it was finite and positive. ``imputed_loss`` is the loss the loss model was
    given for a failed trial. ``started`` and ``finished`` are Unix times.
    """

    id: int
    config: dict[str, Any]
    phase: Phase
    state: TrialState = TrialState.RUNNING
    iteration: int = 0
    loss: float | None = None
    cost: float | None = None
    error: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict)
    proposal: str = ""
    prediction: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)
    started: float | None = None
    finished: float | None = None
    imputed_loss: float | None = None
    retry_of: int | None = None
    """For a trial that reruns the config of a lost trial: that trial's id."""
    budget: float | None = None
    """The study's max_cost when the trial was asked (budgets can move)."""
    reports: list[Report] = field(default_factory=list)
    """Partial results reported while it ran, in order."""
    stop_requested: bool = False
    """Whether the study asked the running trial to stop (its estimated final cost exceeded the budget)."""
    estimated_cost: float | None = None
    """For a stopped trial: the final cost the study estimated when it stopped it (what the cost model sees)."""
    warnings: list[str] = field(default_factory=list)
    """Problems with what the trial reported (ignored reports), recorded instead of failing the study."""
    driver: str | None = None
    """The id of the driver (the `Study` object) that asked it: its running trials are lost only when that
    driver's lease on the journal is over (`kerneldsl.loop.journal`)."""

    def feasible(self, max_cost: float) -> bool:
        """Finished with a loss and a cost within ``max_cost``."""
        return self.state is TrialState.OK and self.cost is not None and self.cost <= max_cost

    # ------------------------------------------------------------------ journal records
    def ask_record(self) -> dict[str, Any]:
        """What the journal stores when the trial is asked."""
        return {"kind": "ask", "trial": self.id, "iteration": self.iteration, "phase": self.phase.value,
                "config": self.config, "proposal": self.proposal, "prediction": self.prediction,
                "timings": self.timings, "started": self.started, "retry_of": self.retry_of, "budget": self.budget,
                "driver": self.driver}

    def tell_record(self) -> dict[str, Any]:
        """What the journal stores when the trial is told."""
        return {"kind": "tell", "trial": self.id, "state": self.state.value, "loss": self.loss, "cost": self.cost,
                "error": self.error, "outputs": self.outputs, "objective_seconds": self.timings.get("objective"),
                "finished": self.finished, "stop_requested": self.stop_requested,
                "estimated_cost": self.estimated_cost, "warnings": self.warnings}

    @classmethod
    def from_ask(cls, record: dict[str, Any]) -> "Trial":
        return cls(id=record["trial"], config=dict(record["config"]), phase=Phase(record["phase"]),
                   iteration=record.get("iteration", 0), proposal=record.get("proposal", ""),
                   prediction=record.get("prediction"), timings=dict(record.get("timings") or {}),
                   started=record.get("started"), retry_of=record.get("retry_of"), budget=record.get("budget"),
                   driver=record.get("driver"))

    def apply_tell(self, record: dict[str, Any]) -> None:
        self.state = TrialState(record["state"])
        self.loss, self.cost, self.error = record.get("loss"), record.get("cost"), record.get("error")
        self.outputs = dict(record.get("outputs") or {})
        if record.get("objective_seconds") is not None:
            self.timings["objective"] = record["objective_seconds"]
        self.finished = record.get("finished")
        self.stop_requested = bool(record.get("stop_requested", False))
        self.estimated_cost = record.get("estimated_cost")
        self.warnings = list(record.get("warnings") or [])

    @classmethod
    def from_v1(cls, record: dict[str, Any]) -> "Trial":
        """A trial record of journal format 1 (one line per finished trial)."""
        trial = cls(id=record["trial"], config=dict(record["config"]), phase=Phase(record["phase"]),
                    state=TrialState(record["status"]), iteration=record.get("iteration", 0),
                    loss=record.get("loss"), cost=record.get("cost"), error=record.get("error"),
                    outputs=dict(record.get("outputs") or {}), proposal=record.get("proposal", ""),
                    prediction=record.get("prediction"), timings=dict(record.get("timings") or {}),
                    started=record.get("started"))
        return trial


def best_feasible(trials: list[Trial], max_cost: float) -> Trial | None:
    """The trial with the lowest loss among those with cost <= max_cost (None if there is none)."""
    candidates = [t for t in trials if t.feasible(max_cost)]
    return min(candidates, key=lambda t: t.loss) if candidates else None


def best_so_far(trials: list[Trial], max_cost: float) -> list[float | None]:
    """Best feasible loss after each trial (None until the first feasible trial)."""
    out, best = [], None
    for t in trials:
        if t.feasible(max_cost) and (best is None or t.loss < best):
            best = t.loss
        out.append(best)
    return out
