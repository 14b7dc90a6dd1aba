"""Seconds per model-based proposal: kerneldsl's study against Optuna's GPSampler and TPESampler.

For each space and each n: a study is given n finished trials (Sobol configs of the space,
deterministic synthetic loss and cost, a budget at the median cost), then ``--asks`` model-based
asks, each told before the next. Reported per (space, n, method): median seconds per ask, and for
kerneldsl the median model fit and acquisition seconds and the medians of ticks and tocks apart
(from each trial's ``timings``). Every method models the loss and a cost or constraint: kerneldsl
fits its loss and cost GPs; Optuna's samplers get the constraint cost - budget <= 0
(``trial.set_constraint``, Optuna 5's API). One torch thread unless ``--threads``.

Spaces:

- ``mixed4``: a log scalar, two log ints and a 2-way choice (default kernels);
- ``cont8``: eight log scalars (default kernels);
- ``digits``: the digits MLP space of ``examples/digits_task.py`` with its hands-on loss and cost
  kernels and feature chain;
- ``mnist``: the MNIST sweep's space of ``examples/mnist_space.py`` with its hands-on kernel
  (26 features, 25 terms) for the loss, the default kernel for the cost.

Usage: ``python benchmarks/proposals.py [--spaces mixed4,cont8,digits,mnist] [--n 10,40,100,300]
[--asks 4] [--methods kerneldsl,gp,tpe] [--threads 1] [--out benchmarks/proposals.jsonl]``.
Time on a quiet machine (``uptime`` below 1.5), one benchmark at a time.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "examples"))

import kerneldsl as kd  # noqa: E402


@dataclass(frozen=True)
class Setup:
    """A space and the kernels kerneldsl uses on it."""

    space: kd.Space
    loss_kernel: str | None = None
    cost_kernel: str | None = None
    feature_chain: Any = None


def mixed4() -> Setup:
    return Setup(kd.Space([kd.Scalar("lr", 1e-4, 1.0, log=True), kd.Int("batch_size", 16, 512, log=True),
                           kd.Int("epochs", 1, 64, log=True), kd.Choice("optimizer", ["adam", "sgd"])]))


def cont8() -> Setup:
    return Setup(kd.Space([kd.Scalar(f"x{i}", 1e-3, 10.0, log=True) for i in range(8)]))


def digits() -> Setup:
    import digits_task

    space = digits_task.make_space()
    return Setup(space, digits_task.LOSS_KERNEL, digits_task.COST_KERNEL, digits_task.make_feature_chain(space))


def mnist() -> Setup:
    import mnist_space

    return Setup(mnist_space.space, mnist_space.HANDS_ON_KERNEL, None, mnist_space.feature_chain)


SPACES: dict[str, Callable[[], Setup]] = {"mixed4": mixed4, "cont8": cont8, "digits": digits, "mnist": mnist}


class Outputs:
    """Deterministic synthetic loss and cost of a config: smooth in the unit-scaled search coordinates."""

    def __init__(self, space: kd.Space, seed: int = 0):
        self.space = space
        g = torch.Generator().manual_seed(seed)
        self.centre = torch.rand(space.dim, generator=g, dtype=torch.float64)
        self.weight = 0.2 + torch.rand(space.dim, generator=g, dtype=torch.float64)
        self.slope = torch.randn(space.dim, generator=g, dtype=torch.float64)
        self.bounds = space.bounds.to(torch.float64)

    def __call__(self, config: dict) -> tuple[float, float]:
        x = self.space.to_search([config], dtype=torch.float64)[0]
        u = (x - self.bounds[0]) / (self.bounds[1] - self.bounds[0])
        loss = 0.05 + float((self.weight * (u - self.centre) ** 2).sum()) / self.space.dim
        cost = math.exp(float((self.slope * u).sum()) / math.sqrt(self.space.dim))
        return loss, cost


def initial_configs(space: kd.Space, n: int, seed: int) -> list[dict]:
    return space.to_configs(kd.sample(space, n, seed=seed, dtype=torch.float64))


def budget_of(outputs: Outputs, configs: list[dict]) -> float:
    return statistics.median(outputs(c)[1] for c in configs)


# --- kerneldsl -------------------------------------------------------------------------

def time_kerneldsl(setup: Setup, n: int, asks: int, seed: int) -> list[dict]:
    outputs = Outputs(setup.space, seed)
    configs = initial_configs(setup.space, n, seed)
    budget = budget_of(outputs, configs)
    rows = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study = kd.Study(setup.space, budget, n_init=0, initial_configs=configs, seed=seed,
                         loss_kernel=setup.loss_kernel, cost_kernel=setup.cost_kernel,
                         feature_chain=setup.feature_chain)
        for trial in study.ask(n):
            loss, cost = outputs(trial.config)
            study.tell(trial, {"loss": loss, "cost": cost})
        for _ in range(asks):
            start = time.perf_counter()
            trial = study.ask()
            seconds = time.perf_counter() - start
            loss, cost = outputs(trial.config)
            study.tell(trial, {"loss": loss, "cost": cost})
            rows.append({"seconds": seconds, "phase": trial.phase.value, "fit": trial.timings.get("fit"),
                         "acquisition": trial.timings.get("acquisition")})
    return rows


# --- Optuna ----------------------------------------------------------------------------

def suggest(trial, space: kd.Space) -> dict:
    """Define-by-run: suggest every active parameter of ``space`` in order (conditions on earlier values)."""
    config: dict[str, Any] = {}
    for p in space:
        condition = getattr(p, "condition", None)
        if condition is not None and not condition(config):
            continue
        if p.kind == "choice":
            index = trial.suggest_categorical(p.name, list(range(len(p.choices))))
            config[p.name] = p.choices[index]
        elif p.kind == "int":
            config[p.name] = trial.suggest_int(p.name, int(p.lower), int(p.upper), log=p.log)
        else:
            config[p.name] = trial.suggest_float(p.name, p.lower, p.upper, log=p.log)
    return config


def time_optuna(method: str, setup: Setup, n: int, asks: int, seed: int) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    outputs = Outputs(setup.space, seed)
    configs = initial_configs(setup.space, n, seed)
    budget = budget_of(outputs, configs)

    def run(trial) -> float:
        loss, cost = outputs(suggest(trial, setup.space))
        trial.set_user_attr("cost", cost)
        trial.set_constraint("cost", cost - budget)  # feasible when <= 0 (Optuna 5's constraint API)
        return loss

    if method == "gp":
        sampler = optuna.samplers.GPSampler(seed=seed, n_startup_trials=n, warn_independent_sampling=False)
    else:
        sampler = optuna.samplers.TPESampler(seed=seed, multivariate=True, n_startup_trials=n)
    study = optuna.create_study(sampler=sampler)  # the first n trials are enqueued: no model while < n finished
    for config in configs:
        study.enqueue_trial({p.name: (p.choices.index(config[p.name]) if p.kind == "choice" else config[p.name])
                             for p in setup.space if p.name in config})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        study.optimize(run, n_trials=n)
        rows = []
        for _ in range(asks):
            start = time.perf_counter()
            trial = study.ask()
            config = suggest(trial, setup.space)  # independent samples of conditional parameters happen here
            seconds = time.perf_counter() - start
            loss, cost = outputs(config)
            trial.set_user_attr("cost", cost)
            trial.set_constraint("cost", cost - budget)
            study.tell(trial, loss)
            rows.append({"seconds": seconds})
    return rows


METHODS = {"kerneldsl": time_kerneldsl, "gp": lambda *a: time_optuna("gp", *a), "tpe": lambda *a: time_optuna("tpe", *a)}
LABELS = {"kerneldsl": "`kd.Study.ask`", "gp": "Optuna `GPSampler`", "tpe": "Optuna `TPESampler`"}


def median(rows: list[dict], key: str, phase: str | None = None) -> float | None:
    values = [r[key] for r in rows if r.get(key) is not None and (phase is None or r.get("phase") == phase)]
    return statistics.median(values) if values else None


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--spaces", default=",".join(SPACES))
    parser.add_argument("--n", default="10,40,100,300")
    parser.add_argument("--asks", type=int, default=4, help="model-based asks per cell (median over them)")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="append one JSON line per cell")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# proposals: load average {os.getloadavg()[0]:.2f}, {args.threads} torch thread(s), "
          f"{args.asks} asks per cell, torch {torch.__version__}, kerneldsl {kd.__version__}", flush=True)
    methods = args.methods.split(",")
    print("| space | n | " + " | ".join(LABELS[m] for m in methods)
          + " | kd fit | kd acquisition | kd tick | kd tock |")
    print("|---|---:|" + "---:|" * (len(methods) + 4), flush=True)
    for space_name in args.spaces.split(","):
        setup = SPACES[space_name]()
        for n in (int(v) for v in args.n.split(",")):
            cells = {m: METHODS[m](setup, n, args.asks, args.seed) for m in methods}
            kd_rows = cells.get("kerneldsl", [])
            print(f"| {space_name} | {n} | " + " | ".join(fmt(median(cells[m], "seconds")) for m in methods)
                  + f" | {fmt(median(kd_rows, 'fit'))} | {fmt(median(kd_rows, 'acquisition'))}"
                  + f" | {fmt(median(kd_rows, 'seconds', 'tick'))} | {fmt(median(kd_rows, 'seconds', 'tock'))} |",
                  flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps({"space": space_name, "n": n, "threads": args.threads,
                                        "load": os.getloadavg()[0], "cells": cells}) + "\n")
    print(f"# load average at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
