"""Compare GP models by cross-validation on the same folds of the same subsets, paired by seed.

``compare(candidates, X, Y, sizes, seeds)`` cross-validates every candidate on every
(n, seed) cell: the seed shuffles the data, the first ``n`` trials are the subset, and
every candidate scores the same folds of it (``held_out`` of them, or all ``n``). The
records (one per candidate, n and seed) feed

- ``summarise`` / ``metrics_table``: each metric's mean and standard error over seeds;
- ``paired`` / ``paired_table``: each candidate against the first, paired by seed, with a
  verdict per metric: *win* or *loss* when the mean paired difference is at least two
  standard errors from zero, *tie* otherwise;
- ``plot``: every metric against n.

``baseline(name, space)`` gives the named baselines (``botorch_default``, ``botorch_mixed``,
``plain_matern``) of a search space.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from torch import Tensor

from ..progress import Progress
from .cv import CrossValidationError, ModelFactory, cross_validate

if TYPE_CHECKING:
    from matplotlib.figure import Figure

METRICS = ("mlpd", "mean_density", "rmse", "mae", "coverage95", "fit_seconds")
"""The fields of ``CVMetrics`` that are reported, in table order."""

LABELS = {
    "mlpd": "mean log predictive density (higher is better)",
    "mean_density": "mean predictive density (higher is better)",
    "rmse": "RMSE of predictive mean (lower is better)",
    "mae": "MAE of predictive mean (lower is better)",
    "coverage95": "95% interval coverage (0.95 is ideal)",
    "fit_seconds": "fit seconds, all evaluated folds",
}

ADVANTAGE: dict[str, Callable[[Mapping, Mapping], float]] = {
    # the candidate's advantage over the reference on one seed's cell; positive means the candidate is better
    "mlpd": lambda c, r: c["mlpd"] - r["mlpd"],
    "mean_density": lambda c, r: c["mean_density"] - r["mean_density"],
    "rmse": lambda c, r: r["rmse"] - c["rmse"],
    "mae": lambda c, r: r["mae"] - c["mae"],
    "coverage95": lambda c, r: abs(r["coverage95"] - 0.95) - abs(c["coverage95"] - 0.95),
}

BASELINES = ("botorch_default", "botorch_mixed", "plain_matern")


@dataclass(frozen=True)
class Candidate:
    """A model to cross-validate: a name, a ``(train_X, train_Y) -> model`` factory, fit restarts."""

    name: str
    factory: ModelFactory
    restarts: int = 0
    description: str = ""


@dataclass(frozen=True)
class Paired:
    """One candidate against the reference at one n: per metric, mean ± s.e. of the paired advantage."""

    candidate: str
    reference: str
    n: int
    seeds: int
    advantage: dict[str, tuple[float, float]] = field(default_factory=dict)

    def verdict(self, metric: str) -> str:
        """'win', 'loss' (at least two standard errors from zero) or 'tie'."""
        mean, se = self.advantage[metric]
        if math.isnan(se):
            return "tie"
        if mean > 2 * se:
            return "win"
        if mean < -2 * se:
            return "loss"
        return "tie"


MIN_SIZE = 3
"""Smallest subset leave-one-out can score: each fold must train on at least two trials."""


def check_sizes(sizes: Sequence[int], available: int) -> list[int]:
    """The subset sizes, or a ``CrossValidationError`` naming any outside [MIN_SIZE, available]."""
    bad = [n for n in sizes if not MIN_SIZE <= n <= available]
    if bad or not sizes:
        raise CrossValidationError(f"n = {', '.join(map(str, bad)) or '(none)'}: every subset size must be between {MIN_SIZE} "
                                   f"and the {available} trials with the target")
    return list(sizes)


def cells(candidates: Sequence[Candidate], sizes: Sequence[int], seeds: Sequence[int],
          held_out: int = 0) -> list[tuple[int, int, Candidate, int]]:
    """(n, seed, candidate, folds) of every cell, in the order they run."""
    return [(n, seed, c, min(held_out, n) if held_out else n) for n in sizes for seed in seeds for c in candidates]


def compare(candidates: Sequence[Candidate], X: Tensor, Y: Tensor, sizes: Sequence[int], seeds: Sequence[int],
            held_out: int = 0, chunk_size: int | None = None, raw: str | os.PathLike | None = None,
            resume: bool = False, progress: bool = True, log=None) -> list[dict]:
    """Cross-validate every candidate on every (n, seed) cell; one record per cell.

    A record holds ``model``, ``seed`` and the ``CVMetrics`` fields. ``held_out=K`` scores the
    first ``K`` folds of each shuffled subset (random folds; the same for every candidate).
    ``raw``: append each record to this JSON-lines file when it is done; with ``resume``, cells
    already there are reused. ``progress`` shows a tqdm bar over folds (with time left) when ``log``
    (default: stderr) is a terminal, and one line per finished cell otherwise (a log file).
    """
    log = sys.stderr if log is None else log
    names = [c.name for c in candidates]
    if len(set(names)) != len(names):
        raise CrossValidationError(f"candidate names must be distinct, got {names}")
    check_sizes(sizes, X.shape[-2])
    done = read_records(raw) if (raw and resume) else {}
    todo = cells(candidates, sizes, seeds, held_out)
    fresh = [cell for cell in todo if (cell[2].name, cell[0], cell[1], cell[3]) not in done]
    remaining = sum(folds for *_, folds in fresh)
    print(f"cross-validating {len(candidates)} model(s) x {len(sizes)} subset size(s) x {len(seeds)} seed(s): "
          f"{len(todo)} cells, {remaining} folds to fit"
          + (f" ({len(todo) - len(fresh)} cells reused)" if done else ""), file=log, flush=True)
    records = []
    with Progress(remaining, "cv", "fold", file=log, enabled=progress) as bar:
        for n, seed, candidate, folds in todo:
            key = (candidate.name, n, seed, folds)
            if key in done:
                records.append(done[key])
                continue
            cell = f"{candidate.name} n={n} seed={seed}"
            bar.running(cell)
            last = [0]

            def advance(finished: int, _total: int) -> None:
                bar.update(finished - last[0])
                last[0] = finished

            result = cross_validate(candidate.factory, X, Y, n=n, seed=seed,
                                    held_out=range(folds) if folds < n else None, chunk_size=chunk_size,
                                    progress=advance, restarts=candidate.restarts)
            bar.finished(f"{cell} ({folds} folds)", units=folds - last[0])
            record = {"model": candidate.name, "seed": seed, **result.metrics().as_dict()}
            records.append(record)
            if raw:
                with open(raw, "a") as f:
                    f.write(json.dumps(record) + "\n")
    return records


def read_records(path: str | os.PathLike | None) -> dict[tuple, dict]:
    """The records of a raw file keyed by (model, n, seed, folds); empty if there is no file."""
    done = {}
    if path and Path(path).exists():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["model"], r["n"], r["seed"], r["folds"])] = r
    return done


def mean_se(values: Sequence[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN with fewer than two values)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


def summarise(records: Sequence[Mapping], models: Sequence[str], sizes: Sequence[int]) -> list[dict]:
    """Mean and standard error over seeds of every metric, per (model, n)."""
    rows = []
    for model in models:
        for n in sizes:
            cell = [r for r in records if r["model"] == model and r["n"] == n]
            if not cell:
                continue
            folds = sorted({r["folds"] for r in cell})
            row = {"model": model, "n": n, "seeds": len(cell),
                   "folds": folds[0] if len(folds) == 1 else "-".join(map(str, folds))}
            for metric in METRICS:
                row[metric], row[metric + "_se"] = mean_se([r[metric] for r in cell])
            rows.append(row)
    return rows


def paired(records: Sequence[Mapping], models: Sequence[str], sizes: Sequence[int]) -> list[Paired]:
    """Every model but the first against the first, per n, over the seeds where both scored the same folds."""
    reference, *others = models
    by_cell = {(r["model"], r["n"], r["seed"]): r for r in records}
    out = []
    for model in others:
        for n in sizes:
            pairs = [(c, by_cell[(reference, n, seed)]) for (m, size, seed), c in by_cell.items()
                     if m == model and size == n and (reference, n, seed) in by_cell
                     and by_cell[(reference, n, seed)]["folds"] == c["folds"]]
            if pairs:
                advantage = {metric: mean_se([f(c, r) for c, r in pairs]) for metric, f in ADVANTAGE.items()}
                out.append(Paired(model, reference, n, len(pairs), advantage))
    return out


def _pm(mean: float, se: float, digits: int = 3) -> str:
    return f"{mean:.{digits}f}" if math.isnan(se) else f"{mean:.{digits}f} ± {se:.{digits}f}"


def metrics_table(rows: Sequence[Mapping]) -> str:
    """Markdown: every metric's mean ± standard error over seeds, per (n, model)."""
    lines = ["| model | n | folds | seeds | MLPD ↑ | mean density ↑ | RMSE ↓ | MAE ↓ | 95% coverage | fit s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    order = list(dict.fromkeys(r["model"] for r in rows))
    for r in sorted(rows, key=lambda r: (r["n"], order.index(r["model"]))):
        values = [_pm(r[m], r[m + "_se"]) for m in METRICS[:-1]]
        lines.append(f"| {r['model']} | {r['n']} | {r['folds']} | {r['seeds']} | " + " | ".join(values)
                     + f" | {r['fit_seconds']:.1f} |")
    return "\n".join(lines)


def paired_table(results: Sequence[Paired]) -> str:
    """Markdown: each model's advantage over the reference (negative means the reference is better)."""
    if not results:
        return ""
    reference = results[0].reference
    lines = [f"Paired by seed, each model's advantage over `{reference}` (positive: better than it; coverage: "
             "how much closer to 0.95); win / loss: at least two standard errors from zero",
             "| model | n | seeds | MLPD | mean density | RMSE | MAE | coverage | win/tie/loss |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for p in results:
        verdicts = [p.verdict(m) for m in ADVANTAGE]
        values = [f"{_pm(*p.advantage[m])} {v}" for m, v in zip(ADVANTAGE, verdicts)]
        tally = "/".join(str(verdicts.count(v)) for v in ("win", "tie", "loss"))
        lines.append(f"| {p.candidate} | {p.n} | {p.seeds} | " + " | ".join(values) + f" | {tally} |")
    return "\n".join(lines)


def folds_note(rows: Sequence[Mapping]) -> str:
    """Which cells scored a random subset of folds, e.g. 'n=120: 20 random folds (botorch_mixed: 10)'."""
    parts = []
    for n in sorted({r["n"] for r in rows}):
        by_folds: dict = {}
        for r in rows:
            if r["n"] == n:
                by_folds.setdefault(r["folds"], []).append(r["model"])
        if set(by_folds) == {n}:
            continue
        common = max(by_folds, key=lambda k: len(by_folds[k]))
        others = ", ".join(f"{'/'.join(models)}: {k}" for k, models in by_folds.items() if k != common)
        parts.append(f"n={n}: {common} random folds" + (f" ({others})" if others else ""))
    return "; ".join(parts) if parts else "every fold scored"


def plot(rows: Sequence[Mapping], models: Sequence[str], path: str | os.PathLike | None = None,
         title: str = "") -> "Figure":
    """Every metric against n, one line per model (mean ± s.e. over seeds); written as a PNG at ``path`` if given.

    Returns the ``matplotlib.figure.Figure`` (built without pyplot: the caller's backend is left alone).
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 8.5))
    axes = fig.subplots(2, 3)
    for ax, metric in zip(axes.flat, METRICS):
        for i, model in enumerate(models):
            cell = sorted((r for r in rows if r["model"] == model), key=lambda r: r["n"])
            offset = 0.015 * (i - (len(models) - 1) / 2)  # a small dodge keeps error bars apart
            err = [0.0 if math.isnan(r[metric + "_se"]) else r[metric + "_se"] for r in cell]
            ax.errorbar([r["n"] * (1 + offset) for r in cell], [r[metric] for r in cell], yerr=err,
                        marker="o", capsize=3, label=model)
        if metric == "coverage95":
            ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        if metric == "fit_seconds":
            ax.set_yscale("log")
        ax.set_xlabel("n (trials in the cross-validated subset)")
        ax.set_title(LABELS[metric], fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[0].legend(fontsize=8)
    fig.suptitle((title or "Leave-one-out cross-validation") + "; mean ± s.e. over seeds\n" + folds_note(rows),
                 fontsize=11)
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=110)
    return fig


def baseline(name: str, space, feature_chain=None, **kernel_options: Any) -> ModelFactory:
    """A named baseline on a search space's points.

    - ``botorch_default``: ``SingleTaskGP`` with botorch's default kernel and priors, inputs
      normalised to the unit cube by the space's bounds;
    - ``botorch_mixed``: ``MixedSingleTaskGP`` with the space's choices as ``cat_dims``;
    - ``plain_matern``: one ``matern52`` over every feature of ``feature_chain`` (no structure).
    """
    from botorch.models import MixedSingleTaskGP, SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from botorch.models.transforms.outcome import Standardize

    from ..model import KernelGP

    if name == "botorch_default":
        def botorch_default(train_X, train_Y):
            return SingleTaskGP(train_X, train_Y, input_transform=Normalize(d=space.dim, bounds=space.bounds),
                                outcome_transform=Standardize(m=1, batch_shape=train_X.shape[:-2]))
        return botorch_default
    if name == "botorch_mixed":
        cat_dims = sorted(space.cat_dims())
        ord_dims = [i for i in range(space.dim) if i not in cat_dims]

        def botorch_mixed(train_X, train_Y):
            return MixedSingleTaskGP(train_X, train_Y, cat_dims=cat_dims,
                                     input_transform=Normalize(d=space.dim, bounds=space.bounds, indices=ord_dims),
                                     outcome_transform=Standardize(m=1, batch_shape=train_X.shape[:-2]))
        return botorch_mixed
    if name == "plain_matern":
        if feature_chain is None:
            raise CrossValidationError("the plain_matern baseline needs a feature chain")
        return KernelGP("kernel = matern52(all)", feature_chain, **kernel_options)  # all: the built-in group
    raise CrossValidationError(f"unknown baseline {name!r}; named baselines: {', '.join(BASELINES)}")


def report(records: Sequence[Mapping], models: Sequence[str], sizes: Sequence[int], plot_path: str | None = None,
           title: str = "") -> str:
    """The metric table, the paired table against the first model and (with ``plot_path``) the plot."""
    rows = summarise(records, models, sizes)
    text = metrics_table(rows)
    table = paired_table(paired(records, models, sizes))
    if table:
        text += "\n\n" + table
    if plot_path:
        plot(rows, models, plot_path, title)
    return text


__all__ = ["Candidate", "Paired", "compare", "cells", "check_sizes", "summarise", "paired", "metrics_table",
           "paired_table", "plot", "report", "baseline", "read_records", "mean_se", "folds_note", "BASELINES",
           "METRICS", "ADVANTAGE"]
