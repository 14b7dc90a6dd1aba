"""Does hands-on pay? Leave-one-out cross-validation of four GP models on the real MNIST sweep.

Models (target: log of the test loss; trials without a loss are left out):

* ``hands_on``        SingleTaskGP with ``HANDS_ON_KERNEL`` of ``examples/mnist_space.py`` on its features;
* ``botorch_default`` SingleTaskGP with botorch's default kernel and priors on the search
                      coordinates, normalised to the unit cube by the space's bounds;
* ``botorch_mixed``   MixedSingleTaskGP with the choices (optimizer, nesterov) as ``cat_dims``,
                      the other coordinates normalised the same way;
* ``plain_matern``    SingleTaskGP with one ``matern52`` over all hands-on features (no structure).

For every ``n`` and seed the same shuffled subset of ``n`` trials is cross-validated by
every model (``kerneldsl.evaluation.cross_validate``): each fold refits the model on ``n - 1``
trials and predicts the held-out one. ``--held-out K`` evaluates only ``K`` of the ``n``
folds (a random subset, an unbiased estimate of the leave-one-out mean) to save time.
Prints a markdown table (mean and standard error over seeds), writes a plot of every
metric against ``n``, and with ``--json`` prints a JSON list of the means as its last line.

    python benchmarks/cv_mnist.py --data ../shared/data/mnist1_sweep.jsonl --n 20,40,80,120,160 --seeds 5

Runs single-threaded by default (``--threads``): on a small shared machine, torch's and
OpenBLAS's thread pools oversubscribe the cores and make fitting many times slower.
``--raw FILE`` appends each (model, n, seed) result as a JSON line as soon as it is done,
and ``--resume`` skips cells already in that file, so a long grid can run in pieces
(e.g. a slow model with fewer seeds, or fewer ``--held-out`` folds at large ``n``);
``--report-only`` then builds the table, plot and JSON from the grid's (model, n, seed)
cells found in that file, whatever their number of folds (the most folds if several),
computing nothing; the table's ``folds`` and ``seeds`` columns say what each row holds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mnist1_sweep.jsonl"
DEFAULT_PLOT = REPO_ROOT / "benchmarks" / "cv_mnist.png"
MODELS = ("hands_on", "botorch_default", "botorch_mixed", "plain_matern")
METRICS = ("mlpd", "mean_density", "rmse", "mae", "coverage95", "fit_seconds")
LABELS = {
    "mlpd": "mean log predictive density (higher is better)",
    "mean_density": "mean predictive density (higher is better)",
    "rmse": "RMSE of predictive mean (lower is better)",
    "mae": "MAE of predictive mean (lower is better)",
    "coverage95": "95% interval coverage (0.95 is ideal)",
    "fit_seconds": "fit seconds, all evaluated folds",
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for the models and options.")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="sweep file (default: %(default)s)")
    parser.add_argument("--n", default="20,40,80,120,160", help="comma-separated subset sizes (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="number of shuffle seeds, 0..S-1 (default: %(default)s)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma-separated models (default: all four)")
    parser.add_argument("--held-out", type=int, default=0, metavar="K",
                        help="evaluate K random folds per cell instead of all n (default: all)")
    parser.add_argument("--chunk-size", type=int, default=None, metavar="K",
                        help="folds per batched model (default: all folds in one model)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and BLAS (default: %(default)s)")
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG to write (default: %(default)s); '' for none")
    parser.add_argument("--raw", default="", help="append per-(model, n, seed) results to this JSON-lines file")
    parser.add_argument("--resume", action="store_true", help="reuse the cells already in --raw")
    parser.add_argument("--report-only", action="store_true",
                        help="report the grid's cells found in --raw without computing any")
    parser.add_argument("--json", action="store_true", help="print the means as a JSON list on the last line")
    args = parser.parse_args(argv)
    try:
        args.n = [int(v) for v in args.n.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--n must be comma-separated integers, got {args.n!r}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    unknown = [m for m in args.models if m not in MODELS]
    if unknown or not args.models:
        parser.error(f"--models: unknown {unknown}; choose from {', '.join(MODELS)}")
    if args.seeds < 1 or not args.n or min(args.n) < 3:
        parser.error("need --seeds >= 1 and every --n >= 3")
    if (args.resume or args.report_only) and not args.raw:
        parser.error("--resume and --report-only need --raw FILE")
    return args


def limit_threads(threads: int) -> None:
    """Cap torch's and the BLAS libraries' thread pools; must run before numpy or torch are imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def model_factories(mnist, names: list[str]) -> dict:
    """``(train_X, train_Y) -> model`` for every requested model; every model takes search coordinates."""
    from botorch.models import MixedSingleTaskGP, SingleTaskGP
    from botorch.models.transforms.input import Normalize
    from botorch.models.transforms.outcome import Standardize

    from kerneldsl.evaluation.cv import kernel_model

    space, chain = mnist.space, mnist.feature_chain
    bounds = space.bounds
    cat_dims = sorted(space.cat_dims())
    ord_dims = [i for i in range(space.dim) if i not in cat_dims]

    def botorch_default(train_X, train_Y):
        return SingleTaskGP(train_X, train_Y, input_transform=Normalize(d=space.dim, bounds=bounds),
                            outcome_transform=Standardize(m=1, batch_shape=train_X.shape[:-2]))

    def botorch_mixed(train_X, train_Y):
        return MixedSingleTaskGP(train_X, train_Y, cat_dims=cat_dims,
                                 input_transform=Normalize(d=space.dim, bounds=bounds, indices=ord_dims),
                                 outcome_transform=Standardize(m=1, batch_shape=train_X.shape[:-2]))

    factories = {
        "hands_on": lambda: kernel_model(mnist.HANDS_ON_KERNEL, chain, backend="torch"),
        "botorch_default": lambda: botorch_default,
        "botorch_mixed": lambda: botorch_mixed,
        "plain_matern": lambda: kernel_model("kernel = matern52(all)", chain, groups={"all": chain.feature_names},
                                             backend="torch"),
    }
    return {name: factories[name]() for name in names}


def load_target(mnist, path: str):
    """Search points and log(loss) of the trials that have a loss."""
    sweep = mnist.load(path)
    X, Y, _ = sweep.target("loss", log=True)
    return X, Y, len(sweep)


def read_raw(path: str) -> dict:
    """The records of a ``--raw`` file keyed by (model, n, seed, folds); empty if there is no file."""
    done = {}
    if Path(path).exists():
        for line in Path(path).read_text().splitlines():
            if line.strip():
                r = json.loads(line)
                done[(r["model"], r["n"], r["seed"], r["folds"])] = r
    return done


def grid_cells(args) -> list[tuple[int, int, str, int]]:
    """(n, seed, model, folds) of every cell of the requested grid."""
    return [(n, seed, model, min(args.held_out, n) if args.held_out else n)
            for n in args.n for seed in range(args.seeds) for model in args.models]


def run_grid(args, mnist, X, Y) -> list[dict]:
    """One record per (model, n, seed): the ``CVMetrics`` fields plus model and seed."""
    from tqdm import tqdm

    from kerneldsl.evaluation.cv import cross_validate

    factories = model_factories(mnist, args.models)
    done = read_raw(args.raw) if args.resume else {}
    records = []
    for n, seed, model, folds in tqdm(grid_cells(args), desc="cv cells", file=sys.stderr, disable=None):
        if (model, n, seed, folds) in done:
            records.append(done[(model, n, seed, folds)])
            continue
        held_out = range(folds) if folds < n else None
        result = cross_validate(factories[model], X, Y, n=n, seed=seed, held_out=held_out,
                                chunk_size=args.chunk_size)
        record = {"model": model, "seed": seed, **result.metrics().as_dict()}
        records.append(record)
        if args.raw:
            with open(args.raw, "a") as f:
                f.write(json.dumps(record) + "\n")
    return records


def summarise(records: list[dict], models: list[str], sizes: list[int]) -> list[dict]:
    """Mean and standard error over seeds of every metric, per (model, n)."""
    rows = []
    for model in models:
        for n in sizes:
            cell = [r for r in records if r["model"] == model and r["n"] == n]
            if not cell:
                continue
            folds = sorted({r["folds"] for r in cell})
            row = {"model": model, "n": n, "seeds": len(cell), "folds": folds[0] if len(folds) == 1 else
                   "-".join(map(str, folds))}
            for metric in METRICS:
                row[metric], row[metric + "_se"] = mean_se([r[metric] for r in cell])
            rows.append(row)
    return rows


def mean_se(values: list[float]) -> tuple[float, float]:
    """Mean and standard error of the mean (NaN with fewer than two values)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, math.nan
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1) / len(values))


ADVANTAGE = {  # hands-on's advantage over a baseline on one seed's cell; positive means hands-on is better
    "mlpd": lambda h, b: h["mlpd"] - b["mlpd"],
    "mean_density": lambda h, b: h["mean_density"] - b["mean_density"],
    "rmse": lambda h, b: b["rmse"] - h["rmse"],
    "mae": lambda h, b: b["mae"] - h["mae"],
    "coverage95": lambda h, b: abs(b["coverage95"] - 0.95) - abs(h["coverage95"] - 0.95),
}


def paired_table(records: list[dict], models: list[str], sizes: list[int]) -> str:
    """Hands-on minus each baseline, paired by seed (same subset and folds), mean ± s.e. over seeds."""
    if "hands_on" not in models:
        return ""
    cells = {(r["model"], r["n"], r["seed"]): r for r in records}
    lines = ["Paired by seed: hands_on's advantage over each baseline (positive = hands_on better; "
             "coverage: how much closer to 0.95)",
             "| baseline | n | seeds | MLPD | mean density | RMSE | MAE | coverage |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for baseline in (m for m in models if m != "hands_on"):
        for n in sizes:
            pairs = [(h, cells[(baseline, n, seed)]) for (model, size, seed), h in cells.items()
                     if model == "hands_on" and size == n and (baseline, n, seed) in cells
                     and cells[(baseline, n, seed)]["folds"] == h["folds"]]
            if not pairs:
                continue
            out = []
            for metric, advantage in ADVANTAGE.items():
                mean, se = mean_se([advantage(h, b) for h, b in pairs])
                out.append(f"{mean:+.3f}" + ("" if math.isnan(se) else f" ± {se:.3f}"))
            lines.append(f"| {baseline} | {n} | {len(pairs)} | " + " | ".join(out) + " |")
    return "\n".join(lines)


def markdown_table(rows: list[dict]) -> str:
    header = ("| model | n | folds | seeds | MLPD ↑ | mean density ↑ | RMSE ↓ | MAE ↓ | 95% coverage | fit s |\n"
              "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    lines = [header]
    for r in sorted(rows, key=lambda r: (r["n"], MODELS.index(r["model"]))):
        cells = [f"{r[m]:.3f} ± {r[m + '_se']:.3f}" if not math.isnan(r[m + "_se"]) else f"{r[m]:.3f}"
                 for m in METRICS[:-1]]
        fit = f"{r['fit_seconds']:.1f}"
        lines.append(f"| {r['model']} | {r['n']} | {r['folds']} | {r['seeds']} | " + " | ".join(cells) + f" | {fit} |")
    return "\n".join(lines)


def folds_note(rows: list[dict]) -> str:
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


def plot(rows: list[dict], models: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(15, 8.5))
    for ax, metric in zip(axes.flat, METRICS):
        for i, model in enumerate(models):
            cell = sorted((r for r in rows if r["model"] == model), key=lambda r: r["n"])
            ns = [r["n"] * (1 + 0.015 * (i - 1.5)) for r in cell]  # a small dodge keeps error bars apart
            err = [0.0 if math.isnan(r[metric + "_se"]) else r[metric + "_se"] for r in cell]
            ax.errorbar(ns, [r[metric] for r in cell], yerr=err, marker="o", capsize=3, label=model)
        if metric == "coverage95":
            ax.axhline(0.95, color="grey", linestyle=":", linewidth=1)
        if metric == "fit_seconds":
            ax.set_yscale("log")
        ax.set_xlabel("n (trials in the cross-validated subset)")
        ax.set_title(LABELS[metric], fontsize=10)
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.suptitle("Leave-one-out cross-validation on the MNIST sweep, target log(loss); mean ± s.e. over seeds\n"
                 + folds_note(rows), fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    sys.path.insert(0, str(REPO_ROOT))
    from examples import mnist_space as mnist
    from kerneldsl.evaluation.sweep import SweepError

    try:
        X, Y, total = load_target(mnist, args.data)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if max(args.n) > len(X):
        raise SystemExit(f"--n {max(args.n)} exceeds the {len(X)} trials with a loss")
    began = time.perf_counter()
    if args.report_only:
        found = {}
        for (model, n, seed, folds), record in sorted(read_raw(args.raw).items(), key=lambda item: item[0][3]):
            found[(model, n, seed)] = record  # the most folds wins
        records = [found[(model, n, seed)] for n, seed, model, _ in grid_cells(args) if (model, n, seed) in found]
        if not records:
            print(f"error: no cell of the requested grid in {args.raw}", file=sys.stderr)
            return 2
    else:
        records = run_grid(args, mnist, X, Y)
    rows = summarise(records, args.models, args.n)
    print(f"{args.data}: {total} trials, {len(X)} with a loss; target log(loss); seeds 0..{args.seeds - 1}; "
          f"{time.perf_counter() - began:.0f} s")
    print(markdown_table(rows))
    paired = paired_table(records, args.models, args.n)
    if paired:
        print()
        print(paired)
    if args.plot:
        plot(rows, args.models, args.plot)
        print(f"plot: {args.plot}")
    if args.json:
        print(json.dumps([{"model": r["model"], "n": r["n"], **{m: r[m] for m in METRICS}} for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
