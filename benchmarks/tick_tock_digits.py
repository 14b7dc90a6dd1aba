"""Does tick-tock pay on a real task? Tick-tock against Sobol search and plain noisy EI on the digits MLP.

The task is `examples/digits_task.py`: ``train(config)`` trains a PyTorch MLP on
scikit-learn's digits and returns loss = validation cross-entropy and cost =
measured training seconds. Every method runs the same number of trials per seed
and starts from that seed's Sobol design (``n_init`` points), so they differ only
after it:

* ``tick-tock``  ``kd.tick_tock`` with the hands-on kernels of the task, ``tick_ratio=0.5``, budget ``max_cost``;
* ``sobol``      more points of the same scrambled Sobol sequence (``kd.tick_tock`` with ``n_init`` = all
                 trials and ``n_iter=0``: its first ``n_init`` points are the shared design, checked at start);
* ``noisy-EI``   plain log noisy EI of the loss alone, ignoring cost while proposing (``kd.tick_tock`` with
                 ``tick_ratio=0`` and ``max_cost=inf``, same kernels), judged afterwards against ``max_cost``;
* ``tick-tock-q4`` tick-tock through ``kd.Study`` ask/tell, four trials asked per round (``ask(4)``: a q-batch
                 built greedily with the earlier points pending) and then told, as four workers would;
* ``tick-tock-stop`` tick-tock whose trials report after every epoch and are stopped when their estimated final
                 cost overruns the budget (``stopping=kd.CostStopping()``); the other methods never stop a trial.

``max_cost`` is fixed once for all runs: 1.5x the measured training time of the
task's reference config (``--max-cost`` overrides it). Reported per method, mean
and standard error over seeds: the best loss among trials with cost <=
max_cost, the cost of that trial, total training seconds spent, and the fraction
of trials over budget. Each finished (method, seed) run is appended as a JSON
line to ``OUT/tick_tock_digits.jsonl``; ``--resume`` skips the runs already
there and continues an interrupted run from its ``kd.tick_tock`` journal
(``--journals``; a resumed run's wall time counts only its resumed part). Writes ``OUT/tick_tock_digits.png`` (best feasible loss so far
and cumulative cost against trial number) and prints a markdown table.

    nice python benchmarks/tick_tock_digits.py --seeds 5 --n-init 8 --n-iter 16

Runs single-threaded (``torch.set_num_threads(1)``): costs are measured seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch
from linear_operator.utils.warnings import NumericalWarning

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "examples"))

import kerneldsl as kd  # noqa: E402
from kerneldsl.loop.results import best_feasible, best_so_far  # noqa: E402
from kerneldsl.space.sampling import balanced_sample  # noqa: E402
from digits_task import (COST_KERNEL, DEFAULT_CONFIG, LOSS_KERNEL, make_feature_chain, make_space,  # noqa: E402
                         default_max_cost, train)

METHODS = ("tick-tock", "sobol", "noisy-EI", "tick-tock-q4", "tick-tock-stop")
RAW_NAME, PLOT_NAME = "tick_tock_digits.jsonl", "tick_tock_digits.png"
COLORS = {"tick-tock": "tab:red", "sobol": "tab:grey", "noisy-EI": "tab:blue", "tick-tock-q4": "tab:orange",
          "tick-tock-stop": "tab:green"}


class BenchmarkError(ValueError):
    """Inconsistent options or raw results (e.g. resuming with a different max_cost)."""


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for the methods and metrics.")
    parser.add_argument("--seeds", type=int, default=5, help="number of seeds, 0..S-1 (default: %(default)s)")
    parser.add_argument("--n-init", type=int, default=8, help="shared initial Sobol trials (default: %(default)s)")
    parser.add_argument("--n-iter", type=int, default=16, help="trials after the initial design (default: %(default)s)")
    parser.add_argument("--max-cost", type=float, default=None,
                        help="training-seconds budget (default: 1.5x the reference config's time, measured once)")
    parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated methods (default: all)")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks"),
                        help=f"folder for the raw results {RAW_NAME} and the plot {PLOT_NAME} (default: %(default)s)")
    parser.add_argument("--journals", default=str(REPO_ROOT / "out" / "tick_tock_digits"),
                        help="folder for the kd.tick_tock journal of every run (default: %(default)s)")
    parser.add_argument("--resume", action="store_true",
                        help="keep the runs already in the raw file and continue interrupted ones from their journals")
    parser.add_argument("--report-only", action="store_true", help="only print the table and draw the plot from the raw file")
    args = parser.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(METHODS)}")
    if args.seeds < 1 or args.n_init < 2 or args.n_iter < 0:
        parser.error("--seeds must be >= 1, --n-init >= 2 (the models need two trials) and --n-iter >= 0")
    if args.max_cost is not None and not args.max_cost > 0:
        parser.error(f"--max-cost must be positive, got {args.max_cost}")
    return args


# ---------------------------------------------------------------------- running


def check_shared_design(space: kd.Space, n_init: int, total: int, seed: int) -> None:
    """The sobol method draws all its points at once; its first ``n_init`` must be the shared design."""
    if not torch.equal(balanced_sample(space, n_init, seed=seed), balanced_sample(space, total, seed=seed)[:n_init]):
        raise BenchmarkError(f"seed {seed}: the first {n_init} of {total} Sobol points differ from the {n_init}-point "
                             "design, so the sobol method would not share the initial design")


def run_method(method: str, seed: int, n_init: int, n_iter: int, max_cost: float, journal: Path) -> kd.TickTockResult:
    """One run of ``method``: ``n_init + n_iter`` trials of the digits task, all recorded in ``journal``."""
    space = make_space()
    common = dict(seed=seed, journal=str(journal), progress=False,
                  stopping=kd.CostStopping() if method == "tick-tock-stop" else None)
    if method == "sobol":
        return kd.tick_tock(train, space, max_cost, n_init=n_init + n_iter, n_iter=0, **common)
    hands_on = dict(loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL, feature_chain=make_feature_chain(space))
    if method in ("tick-tock", "tick-tock-stop"):
        return kd.tick_tock(train, space, max_cost, n_init=n_init, n_iter=n_iter, tick_ratio=0.5, **hands_on, **common)
    if method == "tick-tock-q4":
        with kd.Study(space, max_cost, str(journal), n_init=n_init, n_trials=n_init + n_iter, seed=seed, tick_ratio=0.5,
                      stopping=None, **hands_on) as study:
            for trial in study.running:  # resumed: trials asked before an interruption run now
                study.tell(trial, train(trial.config))
            while not study.finished:
                batch = study.ask(min(4, study.n_trials - study.n_counted))
                for trial in batch:
                    study.tell(trial, train(trial.config))
            return study.result()
    return kd.tick_tock(train, space, math.inf, n_init=n_init, n_iter=n_iter, tick_ratio=0.0, **hands_on, **common)


def run_record(method: str, seed: int, args: argparse.Namespace, max_cost: float, journal: Path) -> dict:
    """Run one (method, seed) cell and return its raw record (per-trial outcomes and timings)."""
    start = time.perf_counter()
    result = run_method(method, seed, args.n_init, args.n_iter, max_cost, journal)
    trials = [{"phase": t.phase.value, "status": t.state.value, "loss": t.loss, "cost": t.cost,
               "estimated_cost": t.estimated_cost,
               "accuracy": t.outputs.get("accuracy"), "model_seconds": t.timings.get("fit", 0.0)
               + t.timings.get("acquisition", 0.0)} for t in result.trials]
    return {"method": method, "seed": seed, "max_cost": max_cost, "n_init": args.n_init, "n_iter": args.n_iter,
            "wall_seconds": time.perf_counter() - start, "journal": str(journal), "trials": trials}


def read_raw(path: Path) -> list[dict]:
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{number}: damaged raw result line ({exc})") from None
    return records


def choose_max_cost(args: argparse.Namespace, records: list[dict]) -> float:
    """The one budget of the whole benchmark: from earlier records when resuming, else given or measured."""
    previous = {r["max_cost"] for r in records}
    if len(previous) > 1:
        raise BenchmarkError(f"the raw results mix budgets {sorted(previous)}; start a new --out folder")
    if previous:
        (max_cost,) = previous
        if args.max_cost is not None and not math.isclose(args.max_cost, max_cost):
            raise BenchmarkError(f"--max-cost {args.max_cost} differs from the {max_cost} of the runs being resumed")
        print(f"resuming with max_cost = {max_cost:.3f} s (from the raw results)")
        return max_cost
    if args.max_cost is not None:
        print(f"max_cost = {args.max_cost:.3f} s (given)")
        return args.max_cost
    return default_max_cost()


def run_all(args: argparse.Namespace, raw_path: Path) -> list[dict]:
    journals = Path(args.journals)
    if not args.resume:
        raw_path.unlink(missing_ok=True)
    records = read_raw(raw_path)
    for r in records:
        if (r["n_init"], r["n_iter"]) != (args.n_init, args.n_iter):
            raise BenchmarkError(f"{raw_path}: run ({r['method']}, seed {r['seed']}) has n_init={r['n_init']}, "
                                 f"n_iter={r['n_iter']}, not {args.n_init}, {args.n_iter}; use another --out folder")
    train(DEFAULT_CONFIG)  # warm-up: the first training in a process runs slower and would tilt the first trial's cost
    max_cost = choose_max_cost(args, records)
    done = {(r["method"], r["seed"]) for r in records}
    space = make_space()
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    for seed in range(args.seeds):
        check_shared_design(space, args.n_init, args.n_init + args.n_iter, seed)
        for method in args.methods:
            if (method, seed) in done:
                continue
            journal = journals / f"{method}_seed{seed}.jsonl"
            if not args.resume:
                journal.unlink(missing_ok=True)
            record = run_record(method, seed, args, max_cost, journal)
            with raw_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            records.append(record)
            m = metrics(record)
            print(f"{method:9s} seed {seed}: best feasible loss {m['best_loss']:.4f} (cost {m['best_cost']:.3f} s), "
                  f"total cost {m['total_cost']:.1f} s, over budget {m['over_all']:.0%}, "
                  f"wall {record['wall_seconds']:.0f} s", flush=True)
    return records


# ---------------------------------------------------------------------- reporting


def as_trials(records: list[dict]) -> list[kd.Trial]:
    """Raw per-trial records as `kd.Trial` objects (what `best_feasible` and `best_so_far` read)."""
    return [kd.Trial(id=i, config={}, phase=kd.Phase(t["phase"]), state=kd.TrialState(t["status"]), loss=t["loss"],
                     cost=t["cost"]) for i, t in enumerate(records)]


def metrics(record: dict) -> dict:
    """The reported numbers of one run, judged against the benchmark's max_cost."""
    trials, max_cost, n_init = record["trials"], record["max_cost"], record["n_init"]
    best = best_feasible(as_trials(trials), max_cost)
    over = lambda group: sum(t["cost"] is None or t["cost"] > max_cost for t in group) / max(len(group), 1)  # noqa: E731
    return {
        "best_loss": best.loss if best else math.nan,
        "best_cost": best.cost if best else math.nan,
        "total_cost": sum(t["cost"] or 0.0 for t in trials),
        "over_all": over(trials),
        "stopped": sum(t["status"] == "stopped" for t in trials),
        "saved": sum(max((t.get("estimated_cost") or 0.0) - (t["cost"] or 0.0), 0.0)
                     for t in trials if t["status"] == "stopped"),
        "over_after_init": over(trials[n_init:]),
        "model_seconds": sum(t["model_seconds"] for t in trials[n_init:]) / max(len(trials) - n_init, 1),
        "wall_seconds": record["wall_seconds"],
    }


def mean_se(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return statistics.fmean(values), se


def by_method(records: list[dict]) -> dict[str, list[dict]]:
    groups: dict[str, list[dict]] = {}
    for r in sorted(records, key=lambda r: (METHODS.index(r["method"]), r["seed"])):
        groups.setdefault(r["method"], []).append(r)
    return groups


def markdown_table(records: list[dict]) -> str:
    columns = [("best_loss", "best feasible loss", "{:.4f}"), ("best_cost", "its cost (s)", "{:.3f}"),
               ("total_cost", "total cost (s)", "{:.1f}"), ("stopped", "stopped trials", "{:.1f}"),
               ("saved", "est. s saved by stopping", "{:.1f}"), ("over_all", "over budget, all trials", "{:.0%}"),
               ("over_after_init", "over budget, after init", "{:.0%}"),
               ("model_seconds", "model s / proposal", "{:.1f}"), ("wall_seconds", "wall s / run", "{:.0f}")]
    lines = ["| method | seeds | " + " | ".join(label for _, label, _ in columns) + " |",
             "|---|---:|" + "---:|" * len(columns)]
    for method, group in by_method(records).items():
        rows = [metrics(r) for r in group]
        cells = []
        for key, _, fmt in columns:
            mean, se = mean_se([row[key] for row in rows])
            cells.append(fmt.format(mean) + ("" if math.isnan(se) else " ± " + fmt.format(se)))
        lines.append(f"| {method} | {len(group)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(records: list[dict]) -> str:
    groups = by_method(records)
    seeds = sorted({r["seed"] for r in records})
    lines = ["| best feasible loss | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
    for method, group in groups.items():
        values = {r["seed"]: metrics(r)["best_loss"] for r in group}
        lines.append(f"| {method} | " + " | ".join(f"{values[s]:.4f}" if s in values else "-" for s in seeds) + " |")
    return "\n".join(lines)


def plot(records: list[dict], path: Path) -> None:
    """Best feasible loss so far and cumulative cost against trial number: mean over seeds, band = standard error."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.6), layout="constrained")
    ax_loss, ax_cost = fig.subplots(1, 2)
    for method, group in by_method(records).items():
        curves = {
            ax_loss: torch.tensor([[math.nan if v is None else v for v in best_so_far(as_trials(r["trials"]), r["max_cost"])]
                                   for r in group], dtype=torch.float64),
            ax_cost: torch.tensor([[t["cost"] or 0.0 for t in r["trials"]] for r in group], dtype=torch.float64).cumsum(-1),
        }
        for ax, values in curves.items():
            mean = values.mean(0)  # NaN until every seed has a feasible trial
            se = values.std(0) / math.sqrt(len(group)) if len(group) > 1 else torch.zeros_like(mean)
            x = torch.arange(1, values.shape[1] + 1)
            ax.plot(x, mean, color=COLORS[method], lw=1.8, drawstyle="steps-post", label=f"{method} ({len(group)} seeds)")
            ax.fill_between(x, mean - se, mean + se, color=COLORS[method], alpha=0.18, lw=0, step="post")
    n_init, max_cost = records[0]["n_init"], records[0]["max_cost"]
    for ax in (ax_loss, ax_cost):
        ax.axvline(n_init + 0.5, color="k", ls=":", lw=1, label="end of shared Sobol design")
        ax.set_xlabel("trial number")
        ax.legend(fontsize=8)
    ax_loss.set_yscale("log")
    ax_loss.set_ylabel("validation cross-entropy")
    ax_loss.set_title(f"best loss among trials with cost <= max_cost = {max_cost:.3g} s")
    ax_cost.set_ylabel("training seconds")
    ax_cost.set_title("cumulative cost (training seconds)")
    fig.suptitle("tick-tock (one at a time and ask(4) q-batches) vs Sobol vs noisy EI on the digits MLP (mean ± se over seeds)")
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", category=NumericalWarning)  # "added jitter" notes from GP fits: benign, and many
    out = Path(args.out)
    raw_path, plot_path = out / RAW_NAME, out / PLOT_NAME
    records = read_raw(raw_path) if args.report_only else run_all(args, raw_path)
    if not records:
        raise BenchmarkError(f"no results in {raw_path}")
    print(f"\nmax_cost = {records[0]['max_cost']:.3f} s; {records[0]['n_init']} shared Sobol + "
          f"{records[0]['n_iter']} more trials per run\n")
    print(markdown_table(records))
    print()
    print(per_seed_table(records))
    plot(records, plot_path)
    print(f"\nraw results: {raw_path}; plot: {plot_path}")


if __name__ == "__main__":
    main()
