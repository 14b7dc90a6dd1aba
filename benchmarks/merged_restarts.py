"""Acquisitions and searches with and without stopping merged restarts (`kerneldsl.loop.restarts.MergedRestarts`).

``--part acquisition``: a study of ``--n`` Sobol trials on each function (and on ``benchmarks/proposals.py``'s
cont8), then ``--asks`` asks of ``--batch`` trials each; every continuous acquisition optimisation of those
proposals runs twice on the same acquisition and starts, with the stop and without, and the pair's acquisition
evaluations and best values are compared (the study goes on with the run without). A batch of more than one
proposes its later points with the earlier ones pending (the Monte-Carlo acquisitions).

``--part search`` (the default): on continuous test functions (botorch's Hartmann 6-D, Rosenbrock 4-D, Ackley 5-D), each seed runs a ``kd.Study``
twice for ``--trials`` trials: as it is (an acquisition start stops once it is within `MERGE_DISTANCE` of a
better start) and with ``acq_options={"callback": None}`` (every start runs to convergence). Reported per
function: the mean best loss of each, their paired difference with its standard error, how often merging
found the better one, and the median acquisition seconds per model-based proposal. The searches part at
their first differing proposal (rounding), so only the distribution over seeds compares. The cost is the
synthetic one of ``benchmarks/proposals.py`` with the budget at its median (tick-tock runs).

Usage: ``OMP_NUM_THREADS=1 python benchmarks/merged_restarts.py [--part search] [--functions hartmann6,rosenbrock4]
[--seeds 40] [--trials 30] [--out benchmarks/merged_restarts.jsonl]``; ``... --part acquisition --functions
cont8,hartmann6 --n 10,40 --asks 12 [--batch 3]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.test_functions import Ackley, Hartmann, Rosenbrock

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kerneldsl as kd  # noqa: E402
import kerneldsl.loop.proposals as proposals_module  # noqa: E402
from kerneldsl.loop.restarts import MergedRestarts  # noqa: E402
from proposals import Outputs, budget_of, cont8, initial_configs  # noqa: E402

FUNCTIONS = {
    "hartmann6": (lambda: Hartmann(dim=6), 0.0, 1.0, 3.33),  # function, lower, upper, added to the loss (> 0)
    "rosenbrock4": (lambda: Rosenbrock(dim=4), -2.0, 2.0, 0.0),
    "ackley5": (lambda: Ackley(dim=5), -5.0, 5.0, 0.0),
}
VARIANTS = {"merged": {}, "every start": {"acq_options": {"callback": None}}}


def problem(name: str):
    """The function's space and its objective (loss and synthetic cost)."""
    if name == "cont8":
        space = cont8().space
        outputs = Outputs(space, 0)
        return space, lambda config: dict(zip(("loss", "cost"), outputs(config)))
    make, lower, upper, shift = FUNCTIONS[name]
    function = make()
    space = kd.Space([kd.Scalar(f"x{i}", lower, upper) for i in range(function.dim)])
    cost = Outputs(space, 0)

    def objective(config: dict) -> dict:
        x = space.to_search([config], dtype=torch.float64)
        return {"loss": float(function(x)[0]) + shift, "cost": cost(config)[1]}

    return space, objective


def budget(space: kd.Space) -> float:
    return budget_of(Outputs(space, 0), initial_configs(space, 64, 0))


def run(name: str, seed: int, trials: int, options: dict) -> dict:
    space, objective = problem(name)
    study = kd.Study(space, budget(space), n_init=8, seed=seed, **options)
    acquisition = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(trials):
            trial = study.ask()
            study.tell(trial, objective(trial.config))
            if "acquisition" in trial.timings and trial.proposal.startswith("acquisition"):
                acquisition.append(trial.timings["acquisition"])
    return {"best": study.best.loss, "acquisition_seconds": statistics.median(acquisition)}


class PairedOptimisations:
    """Stands in for ``optimize_acqf`` in `kerneldsl.loop.proposals`: runs each optimisation without the stop (the
    result the study goes on with) and with it, and records both runs' evaluations and best values."""

    def __init__(self, optimize_acqf):
        self.optimize_acqf, self.rows = optimize_acqf, []

    def __call__(self, acquisition, **kwargs):
        options = {key: value for key, value in kwargs["options"].items() if key != "callback"}
        counted = Counting(acquisition)
        x, value = self.optimize_acqf(counted, **{**kwargs, "options": options})
        without = counted.evaluations
        counted.evaluations = 0
        callback = MergedRestarts(kwargs["bounds"][:, [i for i in range(kwargs["bounds"].shape[-1])
                                                       if i not in (kwargs.get("fixed_features") or {})]],
                                  len(kwargs["batch_initial_conditions"]))
        _, merged = self.optimize_acqf(counted, **{**kwargs, "options": {**options, "callback": callback}})
        self.rows.append({"evaluations": [without, counted.evaluations], "best": [float(value.max()),
                                                                                  float(merged.max())],
                          "stopped": callback.halted})
        return x, value


class Counting(AcquisitionFunction):
    def __init__(self, acquisition: AcquisitionFunction):
        super().__init__(model=acquisition.model)
        self.acquisition, self.evaluations = acquisition, 0

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        return self.acquisition(X)


def run_asks(name: str, n: int, asks: int, batch: int) -> None:
    """A study on function ``name``: ``n`` Sobol trials told, then ``asks`` asks of ``batch`` trials, each told."""
    space, objective = problem(name)
    study = kd.Study(space, budget(space), n_init=0, initial_configs=initial_configs(space, n, 0), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for trial in study.ask(n):
            study.tell(trial, objective(trial.config))
        for _ in range(asks):
            for trial in study.ask(batch):
                study.tell(trial, objective(trial.config))


def acquisition_part(args: argparse.Namespace) -> None:
    paired = PairedOptimisations(proposals_module.optimize_acqf)
    proposals_module.optimize_acqf = paired  # the benchmark's own harness: the proposer calls it by this name
    for name in args.functions.split(","):
        for n in (int(v) for v in args.n.split(",")):
            paired.rows = []
            run_asks(name, n, args.asks, args.batch)
            rows = paired.rows
            without = sum(r["evaluations"][0] for r in rows)
            merged = sum(r["evaluations"][1] for r in rows)
            lost = max(r["best"][0] - r["best"][1] for r in rows)
            print(f"{name}, n = {n}, batches of {args.batch}: {len(rows)} optimisations, evaluations {without} -> "
                  f"{merged} ({merged / without:.2f}), best value at most {lost:.1e} lower with the stop")
            if args.out:
                with open(args.out, "a") as out:
                    out.write(json.dumps({"part": "acquisition", "function": name, "n": n, "batch": args.batch,
                                          "rows": rows}) + "\n")


def arguments(description: str, functions: str) -> argparse.ArgumentParser:
    """The arguments of the paired benchmarks of acquisition restarts (this one and ``restart_starts.py``)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--part", choices=("search", "acquisition"), default="search")
    parser.add_argument("--functions", default=functions)
    parser.add_argument("--seeds", type=int, default=40)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument("--n", default="10,40", help="acquisition part: finished trials before the asks")
    parser.add_argument("--asks", type=int, default=12, help="acquisition part: asks per function and n")
    parser.add_argument("--batch", type=int, default=1, help="acquisition part: trials per ask")
    parser.add_argument("--out", default=None, help="append one JSON line per function")
    return parser


def dispatch(parser: argparse.ArgumentParser, acquisition: Callable[[argparse.Namespace], None],
             variants: dict[str, dict]) -> None:
    """Parse the command line and run its part on one torch thread: ``acquisition``, or `search_part` over
    ``variants``."""
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.part == "acquisition":
        acquisition(args)
    else:
        search_part(args, variants)


def main() -> None:
    dispatch(arguments(__doc__.splitlines()[0], "hartmann6,rosenbrock4"), acquisition_part, VARIANTS)


def search_part(args: argparse.Namespace, variants: dict[str, dict]) -> None:
    """Each seed's search with each of the two ``variants`` (study keywords), the first against the second, paired."""
    first, second = variants
    for name in args.functions.split(","):
        runs = {variant: [run(name, seed, args.trials, options) for seed in range(args.seeds)]
                for variant, options in variants.items()}
        best = {variant: [r["best"] for r in rows] for variant, rows in runs.items()}
        diffs = [a - b for a, b in zip(best[first], best[second])]
        mean = statistics.fmean(diffs)
        se = statistics.stdev(diffs) / len(diffs) ** 0.5
        seconds = {variant: statistics.median(r["acquisition_seconds"] for r in rows) for variant, rows in runs.items()}
        print(f"{name}: best loss {first} {statistics.fmean(best[first]):.4f}, {second} "
              f"{statistics.fmean(best[second]):.4f}; paired {mean:+.4f} ± {se:.4f} ({first} better on "
              f"{sum(d < 0 for d in diffs)} of {len(diffs)}, worse on {sum(d > 0 for d in diffs)}); acquisition "
              f"seconds {seconds[first]:.4f} against {seconds[second]:.4f}")
        if args.out:
            with open(args.out, "a") as out:
                out.write(json.dumps({"part": "search", "function": name, "seeds": args.seeds, "trials": args.trials,
                                      "runs": runs}) + "\n")

if __name__ == "__main__":
    main()
