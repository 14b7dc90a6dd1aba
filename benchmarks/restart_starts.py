"""Acquisition restarts drawn by the acquisition's value against botorch's Boltzmann weights (`kerneldsl.StartWeights`).

``--part acquisition``: a study of ``--n`` Sobol trials on each function (botorch's Hartmann 6-D, Rosenbrock 4-D,
Ackley 5-D, or ``benchmarks/proposals.py``'s cont8), then ``--asks`` asks of ``--batch`` trials each. Every
continuous acquisition optimisation of those proposals runs twice on the same acquisition and the same raw points:
from the starts the study draws and from the starts botorch's ``initialize_q_batch`` draws out of them, the same
number, both with the merged-start stop (`kerneldsl.loop.restarts.MergedRestarts`). Printed: the evaluations of
each and how far the best values differ. With ``--batch`` above 1 the later points of a batch have the earlier ones
pending (Monte-Carlo acquisitions, whose starts the study draws by botorch's weights: ``--weights value`` makes it
draw those by value too, to see why it does not).

``--part search``: each seed runs a ``kd.Study`` on each function (8 Sobol trials, then ``--trials`` in all) with
the starts by value and with ``start_weights="boltzmann"``; the paired best losses as in
``benchmarks/merged_restarts.py``.

Usage: ``OMP_NUM_THREADS=1 python benchmarks/restart_starts.py --part acquisition --functions cont8,hartmann6
--n 10,40 --asks 12 [--batch 3] [--out benchmarks/restart_starts.jsonl]``;
``... --part search --functions hartmann6,rosenbrock4,ackley5 --seeds 40 --trials 30``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kerneldsl.loop.proposals as proposals_module  # noqa: E402
from kerneldsl.loop.restarts import MergedRestarts  # noqa: E402
from merged_restarts import Counting, arguments, dispatch, run_asks  # noqa: E402

VARIANTS = {"by value": {}, "Boltzmann": {"start_weights": "boltzmann"}}


class PairedStarts:
    """Stands in for ``optimize_acqf`` and the start rules in `kerneldsl.loop.proposals`: keeps the raw points and
    values each start rule is given, and runs each optimisation from the study's starts (the result the study goes
    on with) and from botorch's Boltzmann starts out of the same raw points."""

    def __init__(self, monte_carlo_by_value: bool = False):
        self.monte_carlo_by_value = monte_carlo_by_value
        self.optimize_acqf = proposals_module.optimize_acqf
        self.by_value = proposals_module.starts_by_value
        self.boltzmann = proposals_module.initialize_q_batch
        self.raw = None
        self.rows: list[dict] = []

    def install(self) -> None:
        proposals_module.optimize_acqf = self.optimise
        proposals_module.starts_by_value = self.starts_by_value
        proposals_module.initialize_q_batch = self.initialize_q_batch

    def starts_by_value(self, X, values, n):
        self.raw = (X, values, "value")
        return self.by_value(X, values, n)

    def initialize_q_batch(self, X, values, n):
        if self.monte_carlo_by_value:
            self.raw = (X, values, "value (Monte Carlo)")
            return self.by_value(X, values, n), None
        self.raw = (X, values, "Boltzmann")
        return self.boltzmann(X, values, n=n)

    def optimise(self, acquisition, **kwargs):
        counted = Counting(acquisition)
        x, value = self.optimize_acqf(counted, **kwargs)
        drawn = counted.evaluations
        raw, values, rule = self.raw
        with torch.random.fork_rng():
            other, _ = self.boltzmann(raw, values, n=len(kwargs["batch_initial_conditions"]))
        counted.evaluations = 0
        options = {**kwargs["options"], "callback": MergedRestarts(kwargs["bounds"], len(other))}
        _, boltzmann = self.optimize_acqf(counted, **{**kwargs, "batch_initial_conditions": other,
                                                      "num_restarts": len(other), "options": options})
        self.rows.append({"rule": rule, "evaluations": [drawn, counted.evaluations],
                          "best": [float(value.max()), float(boltzmann.max())]})
        return x, value


def acquisition_part(args: argparse.Namespace) -> None:
    paired = PairedStarts(monte_carlo_by_value=args.weights == "value")
    paired.install()  # the benchmark's own harness: the proposer calls these by their module names
    for name in args.functions.split(","):
        for n in (int(v) for v in args.n.split(",")):
            paired.rows = []
            run_asks(name, n, args.asks, args.batch)
            for rule in ("value", "value (Monte Carlo)", "Boltzmann"):
                rows = [r for r in paired.rows if r["rule"] == rule]
                if not rows:
                    continue
                drawn = sum(r["evaluations"][0] for r in rows)
                boltzmann = sum(r["evaluations"][1] for r in rows)
                gaps = [r["best"][0] - r["best"][1] for r in rows]
                print(f"{name}, n = {n}, batches of {args.batch}, study's starts {rule}: {len(rows)} optimisations, "
                      f"evaluations {boltzmann} from Boltzmann starts, {drawn} from the study's "
                      f"({drawn / boltzmann - 1:+.0%}); the study's best value lower by at most {max(gaps):.1e}, "
                      f"higher by at most {-min(gaps):.1e} (lower in {sum(g > 1e-6 for g in gaps)}, higher in "
                      f"{sum(g < -1e-6 for g in gaps)})")
            if args.out:
                with open(args.out, "a") as out:
                    out.write(json.dumps({"part": "acquisition", "function": name, "n": n, "batch": args.batch,
                                          "weights": args.weights, "rows": paired.rows}) + "\n")


def main() -> None:
    parser = arguments(__doc__.splitlines()[0], "hartmann6,rosenbrock4,ackley5")
    parser.add_argument("--weights", choices=("default", "value"), default="default",
                        help="acquisition part: 'value' draws the Monte-Carlo acquisitions' starts by value too")
    dispatch(parser, acquisition_part, VARIANTS)


if __name__ == "__main__":
    main()
