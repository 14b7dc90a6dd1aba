"""Parallel trials: wall-clock scaling with workers, and the overhead of a Dask cluster against a process pool.

Three parts (``--part``), each a set of (setting, seed) runs of ``--trials`` trials
(``--n-init`` of them the seed's Sobol design, shared by every setting):

* ``synthetic``: `kd.SyntheticTask` whose trials sleep in proportion to their log cost,
  1 s (cheapest config) to 3 s (dearest), in a process pool of 1, 2 and 4 workers
  (``--workers``; 1 = the study's default, trials in this process). Sleeping uses no
  CPU, so 4 workers fit 2 cores. Reported: wall time, speed-up against 1 worker (paired
  by seed), best in-budget loss after all trials (exact, noise-free), and the model
  seconds per proposal (fit + acquisition) by the number of trials pending when it
  was asked.
* ``digits``: the digits MLP (`examples/digits_task.py`) with the hands-on kernels, 1
  worker (in this process) against 2 process workers. Costs are measured training
  seconds, so trials running side by side on a busy machine cost more.
* ``dask``: the same digits study on a ``distributed.LocalCluster`` (2 worker
  processes, 1 thread each, on 127.0.0.1), to compare with the 2-worker process pool
  (its rows join the digits table; the cluster's start is not timed).

Model settings are kept small (`FAST`: 2 restarts, 32 raw samples, 32 MC samples, 50
optimiser steps) so that proposals do not dominate the 1-3 s trials. Each run is appended as a JSON line to
``OUT/parallel.jsonl`` (``--resume`` skips runs already there); the markdown tables
are printed at the end (``--report-only``: from the raw file alone).

    nice python benchmarks/parallel.py --part synthetic --seeds 5 --trials 32 --workers 1,2,4
    nice python benchmarks/parallel.py --part digits --seeds 5 --trials 32
    nice python benchmarks/parallel.py --part dask --seeds 5 --trials 32
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
import warnings
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "examples"))

import kerneldsl as kd  # noqa: E402

RAW_NAME = "parallel.jsonl"
FAST = dict(num_restarts=2, raw_samples=32, mc_samples=32, acq_options={"maxiter": 50}, fit_options={"maxiter": 50})
COST_RANGE = (1.25, 2.0 * math.exp(2.0) * 3.0)  # costs of the cheapest and the dearest synthetic configs


@dataclass
class SleepyTask:
    """The synthetic task, sleeping 1-3 s in proportion to the log of each config's cost."""

    scale: float = 1.0

    def __call__(self, config: dict) -> dict:
        task = kd.SyntheticTask()
        low, high = map(math.log, COST_RANGE)
        fraction = min(max((math.log(task.cost(config)) - low) / (high - low), 0.0), 1.0)
        time.sleep(self.scale * (1.0 + 2.0 * fraction))
        return task(config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("synthetic", "digits", "dask"), default="synthetic")
    parser.add_argument("--seeds", type=int, default=5, help="seeds 0..S-1 (default: %(default)s)")
    parser.add_argument("--trials", type=int, default=32, help="trials per run (default: %(default)s)")
    parser.add_argument("--n-init", type=int, default=8, help="Sobol trials per run (default: %(default)s)")
    parser.add_argument("--workers", default="1,2,4", help="synthetic part: worker counts (default: %(default)s)")
    parser.add_argument("--max-cost", type=float, default=None, help="digits budget in s (default: 1.5x reference)")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks"))
    parser.add_argument("--resume", action="store_true", help="skip the runs already in the raw file")
    parser.add_argument("--report-only", action="store_true")
    return parser.parse_args(argv)


def pending_counts(trials: list[kd.Trial]) -> list[int]:
    """For each trial, how many others were running when it was asked."""
    return [sum(1 for o in trials[:i] if o.finished is not None and o.finished > t.started) for i, t in enumerate(trials)]


def record_of(part: str, setting: str, seed: int, result: kd.TickTockResult, wall: float, best_loss) -> dict:
    trials = result.trials
    return {"part": part, "setting": setting, "seed": seed, "wall_seconds": wall, "best_loss": best_loss,
            "n_trials": len(trials), "failed": sum(t.state is kd.TrialState.FAILED for t in trials),
            "training_seconds": sum(t.cost or 0.0 for t in trials),
            "proposals": [{"pending": p, "model_seconds": t.timings.get("fit", 0.0) + t.timings.get("acquisition", 0.0)}
                          for t, p in zip(trials, pending_counts(trials)) if t.phase is not kd.Phase.INIT]}


def run_synthetic(workers: int, seed: int, args) -> dict:
    task = kd.SyntheticTask()
    study = kd.Study(task.space(), task.max_cost, n_init=args.n_init, n_trials=args.trials, seed=seed, **FAST)
    start = time.perf_counter()
    result = study.optimize(SleepyTask(), n_workers=workers, progress=False)
    best = study.best
    return record_of("synthetic", f"{workers} worker{'s' if workers > 1 else ''}", seed, result,
                     time.perf_counter() - start, task.loss(best.config) if best else None)


def digits_study(seed: int, args, max_cost: float) -> kd.Study:
    from digits_task import COST_KERNEL, LOSS_KERNEL, make_feature_chain, make_space

    space = make_space()
    return kd.Study(space, max_cost, n_init=args.n_init, n_trials=args.trials, seed=seed, loss_kernel=LOSS_KERNEL,
                    cost_kernel=COST_KERNEL, feature_chain=make_feature_chain(space), **FAST)


def run_digits(setting: str, seed: int, args, max_cost: float, client=None) -> dict:
    from digits_task import train

    study = digits_study(seed, args, max_cost)
    start = time.perf_counter()
    if setting == "dask, 2 workers":
        result = study.optimize(train, executor=client, n_workers=2, progress=False)
    else:
        result = study.optimize(train, n_workers=1 if setting == "1 worker" else 2, progress=False)
    best = study.best
    return record_of("digits", setting, seed, result, time.perf_counter() - start, best.loss if best else None)


def read_raw(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def mean_se(values: list[float]) -> str:
    if not values:
        return "-"
    mean = statistics.fmean(values)
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else float("nan")
    return f"{mean:.3g} ± {se:.2g}"


def tables(records: list[dict]) -> str:
    out = []
    for part in ("synthetic", "digits"):
        rows = [r for r in records if r["part"] == part]
        if not rows:
            continue
        settings = list(dict.fromkeys(r["setting"] for r in rows))
        base = {r["seed"]: r["wall_seconds"] for r in rows if r["setting"] == settings[0]}
        out.append(f"\n### {part} ({rows[0]['n_trials']} trials per run)\n")
        out.append(f"| setting | seeds | wall s | speed-up vs {settings[0]} (paired) | best in-budget loss | "
                   "failed | total cost | model s / proposal |")
        out.append("|---|---|---|---|---|---|---|---|")
        for setting in settings:
            mine = [r for r in rows if r["setting"] == setting]
            ratios = [base[r["seed"]] / r["wall_seconds"] for r in mine if r["seed"] in base]
            model = [p["model_seconds"] for r in mine for p in r["proposals"]]
            out.append(f"| {setting} | {len(mine)} | {mean_se([r['wall_seconds'] for r in mine])} | "
                       f"{mean_se(ratios)} | {mean_se([r['best_loss'] for r in mine if r['best_loss'] is not None])} | "
                       f"{sum(r['failed'] for r in mine)} | {mean_se([r['training_seconds'] for r in mine])} | "
                       f"{mean_se(model)} |")
        by_pending = defaultdict(list)
        for r in rows:
            for p in r["proposals"]:
                by_pending[p["pending"]].append(p["model_seconds"])
        out.append("\nmodel seconds per proposal by trials pending when asked: " + ", ".join(
            f"{k} pending: {mean_se(v)} (n={len(v)})" for k, v in sorted(by_pending.items())))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    raw_path = Path(args.out) / RAW_NAME
    if not args.report_only:
        import torch

        torch.set_num_threads(1)
        warnings.filterwarnings("ignore")
        done = {(r["part"], r["setting"], r["seed"]) for r in read_raw(raw_path)} if args.resume else set()
        client = cluster = None
        if args.part == "synthetic":
            settings = [int(w) for w in args.workers.split(",")]
        else:
            from digits_task import default_max_cost

            max_cost = args.max_cost or default_max_cost()
            settings = ["dask, 2 workers"] if args.part == "dask" else ["1 worker", "2 process workers"]
        if args.part == "dask":
            import distributed

            cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                                               dashboard_address=None)
            client = distributed.Client(cluster)
        try:
            for seed in range(args.seeds):
                for setting in settings:
                    name = f"{setting} worker{'s' if setting > 1 else ''}" if isinstance(setting, int) else setting
                    if ("synthetic" if args.part == "synthetic" else "digits", name, seed) in done:
                        continue
                    record = (run_synthetic(setting, seed, args) if args.part == "synthetic"
                              else run_digits(setting, seed, args, max_cost, client))
                    print(f"{args.part} seed {seed} {name}: {record['wall_seconds']:.1f} s, best {record['best_loss']}",
                          flush=True)
                    with raw_path.open("a") as handle:
                        handle.write(json.dumps(record) + "\n")
        finally:
            if client is not None:
                client.close()
                cluster.close()
    print(tables(read_raw(raw_path)))


if __name__ == "__main__":
    main()
