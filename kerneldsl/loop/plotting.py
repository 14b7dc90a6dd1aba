"""The tick-tock picture: cost against loss for every trial, and the best feasible loss over time."""

from __future__ import annotations

import math

from .trial import Phase, Trial, TrialState, best_feasible, best_so_far

__all__ = ["plot_trials", "pareto_front"]

MARKERS = {Phase.INIT: ("o", "initial (Sobol / given)"), Phase.TICK: ("v", "tick: cheaper at equal loss"),
           Phase.TOCK: ("^", "tock: lower loss within max_cost")}


def pareto_front(trials: list[Trial]) -> list[tuple[float, float]]:
    """(cost, loss) of the finished trials that no other trial beats on both cost and loss, by cost."""
    points = sorted((t.cost, t.loss) for t in trials if t.state is TrialState.OK)
    front, best = [], math.inf
    for cost, loss in points:
        if loss < best:
            front.append((cost, loss))
            best = loss
    return front


def plot_trials(trials: list[Trial], max_cost: float, path: str | None = None, title: str | None = None):
    """Draw the run and return the matplotlib Figure; write a PNG to ``path`` when given.

    Left: cost (x, log) against loss (y, log) for every trial, coloured by trial
    number, with a marker per phase (init o, tick v, tock ^); failed trials as red
    crosses on a band above the worst loss (at their measured cost when known, else
    at the left edge); the max_cost line with the over-budget side shaded; the
    cost-loss front of finished trials; the best feasible trial starred.
    Middle: each trial's loss by trial number and the best feasible loss so far.
    Right: each trial's cost by trial number with the budget it was asked under (a step
    line: budgets can move); stopped trials at the cost they spent, with a bar up to the
    final cost estimated when they were stopped.
    """
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    fig = Figure(figsize=(18, 5.2), layout="constrained")
    ax, ax_time, ax_cost = fig.subplots(1, 3, width_ratios=[1.35, 1, 1])
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax_time.set_yscale("log")
    colours = (colormaps["viridis"], Normalize(vmin=0, vmax=max(len(trials) - 1, 1)))
    losses = [t.loss for t in trials if t.state is TrialState.OK]
    costs = [t.cost for t in trials if t.cost is not None] + [max_cost]
    lo_cost, hi_cost = min(costs) / 1.5, max(costs) * 1.5
    _draw_trials(ax, ax_time, trials, colours, (lo_cost * 1.1, (max(losses) * 1.6) if losses else 1.0))
    _draw_front_and_budget(ax, trials, max_cost, hi_cost)
    _log_ticks(ax.xaxis, ax.yaxis, ax_time.yaxis)
    ax.set_xlim(lo_cost, hi_cost)
    ax.set_xlabel("cost")
    ax.set_ylabel("loss")
    ax.set_title("every trial: cost against loss")
    ax.legend(fontsize=8, loc="upper right")
    fig.colorbar(ScalarMappable(norm=colours[1], cmap=colours[0]), ax=ax, label="trial number", pad=0.01)
    _draw_best_so_far(ax_time, trials, max_cost)
    _draw_costs(ax_cost, trials, max_cost, *colours)
    if title:
        fig.suptitle(title)
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def _log_ticks(*axes) -> None:
    """Log axes labelled at 1, 2 and 5 times the powers of ten, in plain numbers."""
    from matplotlib.ticker import FormatStrFormatter, LogLocator, NullFormatter

    for axis in axes:
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(NullFormatter())


def _draw_trials(ax, ax_time, trials: list[Trial], colours: tuple, failed_at: tuple[float, float]) -> None:
    """Finished trials by phase (cost against loss, and loss by trial), failed ones as red crosses at
    ``failed_at`` (cost when unknown, loss band)."""
    cmap, norm = colours
    ok = [t for t in trials if t.state is TrialState.OK]
    for phase, (marker, label) in MARKERS.items():
        group = [t for t in ok if t.phase is phase]
        if group:
            ax.scatter([t.cost for t in group], [t.loss for t in group], c=[t.id for t in group],
                       cmap=cmap, norm=norm, marker=marker, s=46, edgecolors="k", linewidths=0.4, label=label, zorder=3)
            ax_time.scatter([t.id for t in group], [t.loss for t in group], c=[t.id for t in group],
                            cmap=cmap, norm=norm, marker=marker, s=30, edgecolors="k", linewidths=0.3, zorder=3)
    failed = [t for t in trials if t.state is TrialState.FAILED]
    if failed:
        unknown_cost, fail_y = failed_at
        fx = [t.cost if t.cost is not None else unknown_cost for t in failed]
        ax.scatter(fx, [fail_y] * len(failed), marker="x", c="red", s=50, label=f"failed ({len(failed)})", zorder=3)
        ax_time.scatter([t.id for t in failed], [fail_y] * len(failed), marker="x", c="red", s=40, zorder=3)
        ax.axhline(fail_y, color="red", lw=0.5, alpha=0.3)


def _draw_front_and_budget(ax, trials: list[Trial], max_cost: float, hi_cost: float) -> None:
    """The cost-loss front, the max_cost line with the over-budget side shaded, the best feasible trial."""
    front = pareto_front(trials)
    if front:
        xs = [c for c, _ in front] + [hi_cost]
        ys = [l for _, l in front] + [front[-1][1]]
        ax.step(xs, ys, where="post", color="tab:orange", lw=1.5, label="cost-loss front", zorder=2)
    ax.axvline(max_cost, color="tab:red", ls="--", lw=1.2, label=f"max_cost = {max_cost:.3g}")
    ax.axvspan(max_cost, hi_cost, color="tab:red", alpha=0.06)
    best = best_feasible(trials, max_cost)
    if best is not None:
        ax.scatter([best.cost], [best.loss], marker="*", s=260, facecolors="none", edgecolors="tab:red",
                   linewidths=1.5, label=f"best feasible (trial {best.id})", zorder=4)


def _draw_best_so_far(ax_time, trials: list[Trial], max_cost: float) -> None:
    """The best feasible loss so far by trial number, and the finished trials over max_cost."""
    best_losses = [math.nan if v is None else v for v in best_so_far(trials, max_cost)]
    ax_time.step(range(len(trials)), best_losses, where="post", color="tab:red", lw=1.5, label="best loss within max_cost")
    over = [t for t in trials if t.state is TrialState.OK and t.cost > max_cost]
    if over:
        ax_time.scatter([t.id for t in over], [t.loss for t in over], marker="o", s=90, facecolors="none",
                        edgecolors="grey", linewidths=0.8, label="over max_cost", zorder=2)
    ax_time.set_xlabel("trial number")
    ax_time.set_ylabel("loss")
    ax_time.set_title("loss by trial; best within max_cost so far")
    ax_time.legend(fontsize=8, loc="upper right")


def _draw_costs(ax, trials: list[Trial], max_cost: float, cmap, norm) -> None:
    """Cost by trial number, the budget over time, stopped trials with their estimated final cost."""
    ax.set_yscale("log")
    finished = [t for t in trials if t.state in (TrialState.OK, TrialState.FAILED) and t.cost is not None]
    if finished:
        ax.scatter([t.id for t in finished], [t.cost for t in finished], c=[t.id for t in finished], cmap=cmap,
                   norm=norm, s=26, edgecolors="k", linewidths=0.3, zorder=3, label="finished trials")
    stopped = [t for t in trials if t.state is TrialState.STOPPED and t.cost is not None]
    if stopped:
        ax.scatter([t.id for t in stopped], [t.cost for t in stopped], marker="s", c="tab:purple", s=30, zorder=3,
                   label=f"stopped ({len(stopped)}): cost spent")
        estimated = [t for t in stopped if t.estimated_cost is not None]
        ax.vlines([t.id for t in estimated], [t.cost for t in estimated], [t.estimated_cost for t in estimated],
                  colors="tab:purple", linestyles=":", lw=1.2, label="... and estimated final cost")
    budgets = [t.budget if t.budget is not None else max_cost for t in trials]
    if trials and all(math.isfinite(b) for b in budgets):
        ax.step(range(len(trials)), budgets, where="mid", color="tab:red", ls="--", lw=1.2, label="budget when asked")
    _log_ticks(ax.yaxis)
    ax.set_xlabel("trial number")
    ax.set_ylabel("cost")
    ax.set_title("cost by trial and the budget over time")
    ax.legend(fontsize=8, loc="upper right")
