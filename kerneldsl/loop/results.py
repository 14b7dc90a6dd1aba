"""The record of an optimisation run: its trials, the best feasible trial, a summary table, a DataFrame, a plot
(drawn by `kerneldsl.loop.plotting`, which reads trials, not results)."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field
from typing import Any

from .trial import Phase, Trial, TrialState, best_feasible, best_so_far

__all__ = ["TickTockResult", "best_feasible", "best_so_far", "trials_dataframe"]


def trials_dataframe(trials: list[Trial], max_cost: float):
    """One row per trial, as Optuna's ``Study.trials_dataframe``: ``number``, ``state``, ``phase``,
    ``iteration``, ``loss``, ``cost``, ``feasible``, times and timings (``fit_seconds`` and
    ``acquisition_seconds`` of its proposal, ``wait_seconds`` its worker slot waited for it, ``objective_seconds``),
    ``proposal``, ``error``,
    ``imputed_loss``, ``predicted_loss`` / ``predicted_cost``, one ``params_<name>`` column per parameter
    (NaN where inactive) and one ``outputs_<name>`` column per extra output."""
    import pandas as pd

    rows = []
    for t in trials:
        row = {"number": t.id, "state": t.state.value, "phase": t.phase.value, "iteration": t.iteration,
               "loss": t.loss, "cost": t.cost, "feasible": t.feasible(max_cost),
               "datetime_start": pd.to_datetime(t.started, unit="s") if t.started is not None else pd.NaT,
               "datetime_complete": pd.to_datetime(t.finished, unit="s") if t.finished is not None else pd.NaT,
               "objective_seconds": t.timings.get("objective"), "fit_seconds": t.timings.get("fit"),
               "acquisition_seconds": t.timings.get("acquisition"), "wait_seconds": t.timings.get("wait"),
               "proposal": t.proposal, "error": t.error,
               "imputed_loss": t.imputed_loss, "retry_of": t.retry_of, "budget": t.budget,
               "reports": len(t.reports), "stop_requested": t.stop_requested, "estimated_cost": t.estimated_cost,
               "predicted_loss": (t.prediction or {}).get("loss"), "predicted_cost": (t.prediction or {}).get("cost")}
        row.update({f"params_{k}": v for k, v in t.config.items()})
        row.update({f"outputs_{k}": v for k, v in t.outputs.items()})
        rows.append(row)
    frame = pd.DataFrame(rows)
    if frame.empty:
        return frame
    frame["duration"] = frame["datetime_complete"] - frame["datetime_start"]
    return frame


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


def _budget_runs(trials: list[Trial]) -> list[tuple[float | None, int, int]]:
    """(budget, first trial, last trial) of each run of trials asked under the same budget."""
    runs: list[tuple[float | None, int, int]] = []
    for t in trials:
        if runs and runs[-1][0] == t.budget:
            runs[-1] = (t.budget, runs[-1][1], t.id)
        else:
            runs.append((t.budget, t.id, t.id))
    return runs


@dataclass
class TickTockResult:
    """Trials of a study (`Trial` objects, in id order) and the budget they were judged by."""

    trials: list[Trial]
    max_cost: float
    journal: str | None = None
    info: dict = field(default_factory=dict)

    @property
    def best(self) -> Trial | None:
        """The best trial with cost <= max_cost, or None."""
        return best_feasible(self.trials, self.max_cost)

    def best_so_far(self) -> list[float | None]:
        """Best feasible loss after each trial (None until the first feasible trial)."""
        return best_so_far(self.trials, self.max_cost)

    def trials_dataframe(self):
        """One row per trial (pandas); see `trials_dataframe`."""
        return trials_dataframe(self.trials, self.max_cost)

    def summary(self, top: int = 5) -> str:
        """A plain-text summary: a per-phase table, the best feasible trial and the top trials."""
        trials, max_cost = self.trials, self.max_cost
        rows = []
        for phase in (*(p.value for p in Phase), "all"):
            group = trials if phase == "all" else [t for t in trials if t.phase.value == phase]
            if not group:
                continue
            costs = [t.cost for t in group if t.cost is not None]
            best = best_feasible(group, max_cost)
            over = sum(1 for t in group if t.cost is not None and t.cost > max_cost)
            rows.append([
                phase, str(len(group)), str(sum(t.state is TrialState.FAILED for t in group)),
                str(sum(t.state is TrialState.STOPPED for t in group)),
                f"{100.0 * over / len(group):.0f}%", _fmt(best.loss if best else None),
                _fmt(statistics.median(costs) if costs else None), _fmt(sum(costs), 5),
            ])
        text = [f"{len(trials)} trials, max_cost = {max_cost:g}",
                _table(["phase", "trials", "failed", "stopped", "over budget", "best feasible loss", "median cost",
                       "total cost"], rows)]
        budgets = _budget_runs(trials)
        if len(budgets) > 1:
            text.append("budget moved: " + ", ".join(f"{_fmt(b)} for trials {a}-{z}" for b, a, z in budgets)
                        + f"; trials are judged against the current max_cost = {max_cost:g}")
        stopped = [t for t in trials if t.state is TrialState.STOPPED]
        if stopped:
            spent = sum(t.cost or 0.0 for t in stopped)
            saved = sum(max((t.estimated_cost or 0.0) - (t.cost or 0.0), 0.0) for t in stopped)
            text.append(f"{len(stopped)} trials stopped for cost: spent {_fmt(spent, 5)}, "
                        f"saved about {_fmt(saved, 5)} against their estimated final costs")
        best = self.best
        if best is None:
            text.append("no trial finished within max_cost")
        else:
            text.append(f"best within max_cost: trial {best.id} ({best.phase.value}), "
                        f"loss {_fmt(best.loss)}, cost {_fmt(best.cost)}")
            text.append(f"  config: {best.config}")
        ranked = sorted((t for t in trials if t.feasible(max_cost)), key=lambda t: t.loss)[:top]
        if ranked:
            text.append(f"top {len(ranked)} within max_cost:")
            text.append(_table(["trial", "phase", "loss", "cost", "config"],
                               [[str(t.id), t.phase.value, _fmt(t.loss), _fmt(t.cost),
                                 ", ".join(f"{k}={_fmt(v, 3)}" for k, v in t.config.items())] for t in ranked]))
        failed = [t for t in trials if t.state in (TrialState.FAILED, TrialState.LOST)]
        if failed:
            text.append(f"failed or lost trials ({len(failed)}):")
            text.extend(f"  trial {t.id} ({t.phase.value}): {t.error}" for t in failed[:10])
            if len(failed) > 10:
                text.append(f"  ... and {len(failed) - 10} more")
        return "\n".join(text)

    def plot(self, path: str | None = None, title: str | None = None):
        """Cost against loss for every trial (see `kerneldsl.loop.plotting.plot_trials`); saves a PNG if ``path``."""
        from .plotting import plot_trials

        return plot_trials(self.trials, self.max_cost, path=path, title=title)
