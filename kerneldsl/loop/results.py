"""The record of an optimisation run: trial dicts, the best feasible trial, a summary table."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

__all__ = ["TickTockResult", "best_feasible", "best_so_far", "feasible"]

PHASES = ("init", "tick", "tock")


def feasible(trial: dict, max_cost: float) -> bool:
    """A trial that finished with a loss and cost within the budget."""
    return trial["status"] == "ok" and trial["cost"] is not None and trial["cost"] <= max_cost


def best_feasible(trials: list[dict], max_cost: float) -> dict | None:
    """The trial with the lowest loss among those with cost <= max_cost (None if there is none)."""
    candidates = [t for t in trials if feasible(t, max_cost)]
    return min(candidates, key=lambda t: t["loss"]) if candidates else None


def best_so_far(trials: list[dict], max_cost: float) -> list[float | None]:
    """Best feasible loss after each trial (None until the first feasible trial)."""
    out, best = [], None
    for t in trials:
        if feasible(t, max_cost) and (best is None or t["loss"] < best):
            best = t["loss"]
        out.append(best)
    return out


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    line = lambda cells: "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


@dataclass
class TickTockResult:
    """Trials of a tick-tock run (one dict each, in run order) and the budget they were judged by.

    Each trial dict holds ``trial`` (position in the run), ``iteration`` (0 for
    initial points, then 1, 2, ... for model-based proposals), ``phase``
    (``"init"``, ``"tick"`` or ``"tock"``), ``config``, ``status`` (``"ok"`` or
    ``"failed"``), ``loss`` and ``cost`` (None when unknown), ``error`` (the
    failure reason or None), ``outputs`` (extra values the objective returned),
    ``timings`` (seconds spent in the objective, in model fitting and in the
    acquisition optimisation that proposed it), ``prediction`` (the models'
    median loss and cost at a proposed point, None for initial points) and
    ``imputed_loss`` for failed trials (the loss the model was given, see
    `tick_tock`).
    """

    trials: list[dict]
    max_cost: float
    journal: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def best(self) -> dict | None:
        """The best trial with cost <= max_cost, or None."""
        return best_feasible(self.trials, self.max_cost)

    def best_so_far(self) -> list[float | None]:
        """Best feasible loss after each trial (None until the first feasible trial)."""
        return best_so_far(self.trials, self.max_cost)

    def summary(self, top: int = 5) -> str:
        """A plain-text summary: a per-phase table, the best feasible trial and the top trials."""
        trials, max_cost = self.trials, self.max_cost
        rows = []
        for phase in (*PHASES, "all"):
            group = trials if phase == "all" else [t for t in trials if t["phase"] == phase]
            if not group:
                continue
            costs = [t["cost"] for t in group if t["cost"] is not None]
            best = best_feasible(group, max_cost)
            over = sum(1 for t in group if t["cost"] is not None and t["cost"] > max_cost)
            rows.append([
                phase, str(len(group)), str(sum(t["status"] == "failed" for t in group)),
                f"{100.0 * over / len(group):.0f}%", _fmt(best["loss"] if best else None),
                _fmt(statistics.median(costs) if costs else None), _fmt(sum(costs), 5),
            ])
        text = [f"{len(trials)} trials, max_cost = {max_cost:g}",
                _table(["phase", "trials", "failed", "over budget", "best feasible loss", "median cost", "total cost"], rows)]
        best = self.best
        if best is None:
            text.append("no trial finished within max_cost")
        else:
            text.append(f"best within max_cost: trial {best['trial']} ({best['phase']}), "
                        f"loss {_fmt(best['loss'])}, cost {_fmt(best['cost'])}")
            text.append(f"  config: {best['config']}")
        ranked = sorted((t for t in trials if feasible(t, max_cost)), key=lambda t: t["loss"])[:top]
        if ranked:
            text.append(f"top {len(ranked)} within max_cost:")
            text.append(_table(["trial", "phase", "loss", "cost", "config"],
                               [[str(t["trial"]), t["phase"], _fmt(t["loss"]), _fmt(t["cost"]),
                                 ", ".join(f"{k}={_fmt(v, 3)}" for k, v in t["config"].items())] for t in ranked]))
        failed = [t for t in trials if t["status"] == "failed"]
        if failed:
            text.append(f"failed trials ({len(failed)}):")
            text.extend(f"  trial {t['trial']} ({t['phase']}): {t['error']}" for t in failed[:10])
            if len(failed) > 10:
                text.append(f"  ... and {len(failed) - 10} more")
        return "\n".join(text)

    def plot(self, path: str | None = None, title: str | None = None):
        """Cost against loss for every trial (see `kerneldsl.loop.plotting.plot_trials`); saves a PNG if `path`."""
        from .plotting import plot_trials

        return plot_trials(self.trials, self.max_cost, path=path, title=title)
