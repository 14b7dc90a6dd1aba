"""A cheap synthetic tuning task with closed-form loss and cost and a known best feasible point.

It mimics the shape of real model tuning: a conditional choice (the ``large``
model has an extra knob ``z``), a continuous ``effort`` that lowers the loss
and raises the cost, an integer ``depth`` that costs more and has a sweet
spot, a nuisance ``shift`` with a best value, and a linear constraint
(``shift - effort <= 0.8``). Because loss and cost separate into closed forms,
the best loss within a budget is found exactly by enumerating the discrete
choices and solving for the largest affordable effort (`best_feasible`).
Optional noise and failure regions make it a test bed for the loop's failure
handling.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

__all__ = ["SyntheticTask"]

BASE_LOSS = {"small": 0.30, "large": 0.15}
BASE_COST = {"small": 1.0, "large": 2.0}
BEST_SHIFT, BEST_Z, BEST_DEPTH = 0.3, 0.7, 3
DEPTHS = range(1, 9)


@dataclass
class SyntheticTask:
    """Callable objective ``config -> {"loss", "cost"}`` on `space()`, with its known optimum.

    ``loss = base(model) + (shift - 0.3)^2 + 0.6 exp(-3 effort) + 0.02 (depth - 3)^2
    [+ 0.3 (z - 0.7)^2 for the large model]`` and
    ``cost = base_cost(model) * exp(2 effort) * (1 + 0.25 depth)``.

    ``noise``: relative log-normal noise on both outputs (seeded per call by
    ``seed`` and the config, so a config always gives the same value).
    ``fail_above``: configs with ``shift`` above it raise ``RuntimeError``;
    ``nan_below``: configs with ``shift`` below it return a NaN loss.
    """

    max_cost: float = 6.0
    noise: float = 0.0
    fail_above: float | None = None
    nan_below: float | None = None
    seed: int = 0

    def space(self):
        """The task's search space (a `kerneldsl.Space`)."""
        from ..space.space import LinearConstraint, Space
        from ..space.parameters import Choice, Int, Scalar

        return Space(
            [
                Choice("model", ["small", "large"]),
                Scalar("effort", 0.0, 1.0),
                Scalar("shift", -1.0, 1.0),
                Int("depth", 1, 8),
                Scalar("z", 0.0, 1.0, condition=lambda c: c["model"] == "large"),
            ],
            constraints=[LinearConstraint({"shift": 1.0, "effort": -1.0}, 0.8)],
        )

    @staticmethod
    def loss(config: dict) -> float:
        loss = (BASE_LOSS[config["model"]] + (config["shift"] - BEST_SHIFT) ** 2
                + 0.6 * math.exp(-3.0 * config["effort"]) + 0.02 * (config["depth"] - BEST_DEPTH) ** 2)
        if config["model"] == "large":
            loss += 0.3 * (config["z"] - BEST_Z) ** 2
        return loss

    @staticmethod
    def cost(config: dict) -> float:
        return BASE_COST[config["model"]] * math.exp(2.0 * config["effort"]) * (1.0 + 0.25 * config["depth"])

    def __call__(self, config: dict) -> dict:
        if self.fail_above is not None and config["shift"] > self.fail_above:
            raise RuntimeError(f"synthetic failure: shift={config['shift']:.3f} > {self.fail_above}")
        loss, cost = self.loss(config), self.cost(config)
        if self.nan_below is not None and config["shift"] < self.nan_below:
            loss = math.nan
        if self.noise:
            rng = random.Random(f"{self.seed}:{sorted(config.items())}")
            loss *= math.exp(self.noise * rng.gauss(0.0, 1.0))
            cost *= math.exp(self.noise * rng.gauss(0.0, 1.0))
        return {"loss": loss, "cost": cost}

    def best_feasible(self, max_cost: float | None = None) -> tuple[dict, float, float]:
        """(config, loss, cost) of the exact best noise-free loss with cost <= max_cost."""
        max_cost = self.max_cost if max_cost is None else max_cost
        best = None
        for model in BASE_LOSS:
            for depth in DEPTHS:
                # cost grows with effort and loss falls with it: spend the whole budget, within [0, 1].
                effort = 0.5 * math.log(max_cost / (BASE_COST[model] * (1.0 + 0.25 * depth)))
                if effort < 0.0:
                    continue
                config = {"model": model, "effort": min(effort, 1.0), "shift": BEST_SHIFT, "depth": depth}
                if model == "large":
                    config["z"] = BEST_Z
                loss = self.loss(config)
                if best is None or loss < best[1]:
                    best = (config, loss, self.cost(config))
        if best is None:
            raise ValueError(f"SyntheticTask.best_feasible: no config costs at most max_cost={max_cost}")
        return best
