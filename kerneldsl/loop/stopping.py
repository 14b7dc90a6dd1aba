"""Stopping for cost: estimate a running trial's final cost from its reports and stop it when it will overrun.

The rule, in log cost (costs are modelled in log space):

* extrapolation: a report of ``cost`` at ``progress`` p says the final cost is about
  ``cost / p``; its log has standard deviation ``extrapolation_sd * sqrt((1 - p) / p)``
  (no doubt left at p = 1, much early on, when warm-up and the first epoch's
  overheads weigh most);
* model: the cost model's prediction for the config when it was asked, ``N(m, s^2)``
  in log cost (none for trials of the initial design);
* both combined by precision weighting (a product of two Gaussians), so the
  extrapolation counts more as progress grows;
* stop when the estimate says, with probability at least ``confidence``, that the
  final cost exceeds ``max_cost * (1 + margin)``:
  ``mean - z(confidence) * sd > log(max_cost * (1 + margin))``.

A stopped trial enters the cost model at ``exp(mean)`` of the estimate when it was stopped, and
the loss model below the last loss it reported (`kerneldsl.loop.history.stopped_loss`, a bound: the proposer
imputes the truncated mean of its prediction, `kerneldsl.loop.history.truncated_mean`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from statistics import NormalDist

__all__ = ["CostStopping", "CostEstimate"]


@dataclass(frozen=True)
class CostEstimate:
    """A Gaussian belief about a trial's final log cost."""

    log_mean: float
    log_sd: float

    @property
    def cost(self) -> float:
        """The median final cost."""
        return math.exp(self.log_mean)


@dataclass(frozen=True)
class CostStopping:
    """Stop a running trial whose final cost will exceed ``max_cost * (1 + margin)`` with probability
    ``confidence``, judged from its reports and the cost model (see the module's docstring)."""

    margin: float = 0.1
    confidence: float = 0.9
    extrapolation_sd: float = 0.3
    """Log-scale standard deviation of ``cost / progress`` at progress 1/2."""

    def __post_init__(self):
        for name, value, ok in (("margin", self.margin, self.margin >= 0),
                                ("confidence", self.confidence, 0.5 <= self.confidence < 1),
                                ("extrapolation_sd", self.extrapolation_sd, self.extrapolation_sd > 0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok:
                raise ValueError(f"CostStopping: {name}={value!r} is out of range (margin >= 0, "
                                 "0.5 <= confidence < 1, extrapolation_sd > 0)")

    def estimate(self, cost: float, progress: float, prior: CostEstimate | None = None) -> CostEstimate:
        """The final log cost after a report of ``cost`` at ``progress``, combined with the model's ``prior``."""
        mean = math.log(cost / progress)
        if progress >= 1.0:
            return CostEstimate(mean, 0.0)
        sd = self.extrapolation_sd * math.sqrt((1.0 - progress) / progress)
        if prior is None or not prior.log_sd > 0:
            return CostEstimate(mean, sd)
        w_report, w_prior = 1.0 / sd**2, 1.0 / prior.log_sd**2
        combined = (w_report * mean + w_prior * prior.log_mean) / (w_report + w_prior)
        return CostEstimate(combined, math.sqrt(1.0 / (w_report + w_prior)))

    def should_stop(self, estimate: CostEstimate, max_cost: float) -> bool:
        """Whether the final cost exceeds the budget's margin with at least ``confidence``."""
        if not math.isfinite(max_cost):
            return False
        z = NormalDist().inv_cdf(self.confidence)
        return estimate.log_mean - z * estimate.log_sd > math.log(max_cost * (1.0 + self.margin))
