"""The two acquisition functions of tick-tock, on a two-output model of (log loss, log cost).

Both are botorch Monte-Carlo acquisition functions in the log-EI family, with
outcome constraints passed as ``constraints=`` callables on posterior samples
(smoothed by botorch's fat sigmoid with temperature ``eta``), as botorch's
current constraint mechanism asks.

* Tock (`tock_acquisition`): ``qLogNoisyExpectedImprovement`` of the loss,
  constrained by cost <= max_cost.
* Tick (`qLogCostImprovement`): expected reduction of cost below the current
  best feasible trial's, constrained per posterior sample by "loss no worse than
  the best feasible loss" and cost <= max_cost (see its docstring).

When no point is pending and some observed point is within budget, each has a closed form
(`analytic_tock`, `analytic_tick`): `LogEIWithinBounds`, the value of botorch's
``LogConstrainedExpectedImprovement`` (log EI of one output plus the log probability of the
others' bounds, outputs independent, as the two models are), with the incumbent fixed at its
posterior mean instead of drawn per sample. This is the acquisition Optuna's ``GPSampler`` uses
for constrained problems (log EI times the probability of feasibility, Gardner et al. 2014); an
evaluation needs the posterior mean and variance at the candidate only, not a joint sample with
the reference points.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import torch
from botorch.acquisition.acquisition import AcquisitionFunction
from botorch.acquisition.logei import TAU_MAX, TAU_RELU, LogImprovementMCAcquisitionFunction
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.acquisition.objective import GenericMCObjective
from botorch.acquisition.utils import prune_inferior_points
from botorch.exceptions.warnings import BotorchWarning
from botorch.models.model import Model
from botorch.sampling import SobolQMCNormalSampler
from botorch.sampling.base import MCSampler
from botorch.utils.safe_math import log_fatplus, log_softplus
from botorch.utils.transforms import match_batch_shape
from torch import Tensor

from ..model import CachedPosterior
from .log_ei import log_ei_within_bounds

__all__ = ["LOSS", "COST", "qLogCostImprovement", "tock_acquisition", "cost_constraint", "possible_incumbents",
           "PRUNE_SAMPLES", "PRUNE_REFERENCE_ABOVE", "Incumbent", "LogEIWithinBounds", "analytic_tock", "analytic_tick"]

LOSS, COST = 0, 1  # output columns of the model: log loss, log cost


def _negative_log_loss(Y: Tensor, X: Tensor | None = None) -> Tensor:
    return -Y[..., LOSS]


def _negative_log_cost(Y: Tensor, X: Tensor | None = None) -> Tensor:
    return -Y[..., COST]


def cost_constraint(max_cost: float):
    """Constraint callable on samples: negative where log cost <= log max_cost (None for an infinite budget)."""
    if math.isinf(max_cost):
        return None
    log_max_cost = math.log(max_cost)
    return lambda Y: Y[..., COST] - log_max_cost


def tock_acquisition(model: Model, X_baseline: Tensor, max_cost: float, sampler: MCSampler | None = None,
                     eta: float = 1e-3, X_pending: Tensor | None = None) -> qLogNoisyExpectedImprovement:
    """Tock: log noisy EI of the loss (as -log loss), subject to cost <= max_cost per sample.

    ``X_baseline`` are the observed points; botorch draws the incumbent from the
    same joint samples as the candidate. With no feasible observed point botorch
    falls back to improving on a lower bound, i.e. to feasibility-weighted loss.
    ``X_pending`` are points being evaluated (botorch's convention: they join every
    candidate's joint sample, so a candidate is worth only what it adds to them).
    """
    constraint = cost_constraint(max_cost)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="When all training points are infeasible", category=BotorchWarning)
        return qLogNoisyExpectedImprovement(
            model=model, X_baseline=X_baseline, sampler=sampler, objective=GenericMCObjective(_negative_log_loss),
            constraints=None if constraint is None else [constraint], eta=eta, fat=True,
            prune_baseline=True, cache_root=False, X_pending=X_pending,
        )


@dataclass(frozen=True)
class Incumbent:
    """The reference point with the lowest posterior mean loss, and its posterior means (model scale)."""

    x: Tensor
    loss: float
    log_cost: float

    @classmethod
    def of(cls, model: Model, X_reference: Tensor) -> "Incumbent":
        """The incumbent of ``X_reference [n, d]`` (the observed points within budget) under ``model``."""
        with torch.no_grad():
            mean = model.posterior(X_reference.unsqueeze(-2)).mean.squeeze(-2)  # n x 2
        best = int(mean[:, LOSS].argmin())
        return cls(X_reference[best], float(mean[best, LOSS]), float(mean[best, COST]))


class LogEIWithinBounds(AcquisitionFunction):
    """``log EI`` of output ``objective`` below ``best_f`` plus, for each output ``j`` in ``upper``, the log
    probability that it is at most ``upper[j]``: botorch's ``LogConstrainedExpectedImprovement`` with
    ``maximize=False`` and upper bounds only, for one point per batch (``X [b, 1, d] -> [b]``, or ``[1, d] ->
    [1]``), on a model whose outputs are independent.

    It reads the posterior mean and variance straight from a `kerneldsl.model.CachedPosterior`
    (``point_moments``; any other model through its ``posterior``) and computes the value from them as one
    autograd node with closed-form derivatives (`kerneldsl.loop.log_ei.log_ei_within_bounds`): without
    botorch's batch-shape decorators, posterior object and helper graph, a tock evaluation with its gradient at
    8 points took 0.78 ms instead of botorch's 1.98 (eight features, n = 40, both models of one kernel; 2.0
    instead of 2.9 on the digits kernels; issue 23). Variances are clamped at 1e-12, as botorch does;
    ``best_f`` and the bounds stay in float64 (botorch's buffers, built from Python floats, round them to
    float32).
    """

    def __init__(self, model: Model, best_f: float, objective: int, upper: dict[int, float]):
        super().__init__(model=model)
        self.best_f, self.objective, self.upper = best_f, objective, dict(upper)

    def forward(self, X: Tensor) -> Tensor:
        if X.dim() == 2:
            X = X.unsqueeze(0)
        if X.shape[-2] != 1:
            raise ValueError(f"LogEIWithinBounds takes one point per batch ([b, 1, d]), got shape {tuple(X.shape)}")
        if isinstance(self.model, CachedPosterior):
            mean, variance = self.model.point_moments(X)
        else:
            posterior = self.model.posterior(X)
            mean, variance = posterior.mean.squeeze(-2), posterior.variance.squeeze(-2)
        return log_ei_within_bounds(mean, variance, self.best_f, self.objective, self.upper)


def analytic_tock(model: Model, incumbent: Incumbent, max_cost: float) -> LogEIWithinBounds:
    """Tock in closed form: log EI of the loss below the incumbent's posterior mean loss, plus the log
    probability that cost <= max_cost (none for an infinite budget). For ``b x 1 x d`` candidates, no pending
    points."""
    upper = {} if math.isinf(max_cost) else {COST: math.log(max_cost)}
    return LogEIWithinBounds(model, incumbent.loss, objective=LOSS, upper=upper)


def analytic_tick(model: Model, incumbent: Incumbent, max_cost: float) -> LogEIWithinBounds:
    """Tick in closed form: log EI of the log cost below the incumbent's (or the budget's, if lower), plus the
    log probability that the loss is no worse than the incumbent's posterior mean loss. An improvement is
    within budget by construction."""
    best_f = min(incumbent.log_cost, math.log(max_cost)) if not math.isinf(max_cost) else incumbent.log_cost
    return LogEIWithinBounds(model, best_f, objective=COST, upper={LOSS: incumbent.loss})


PRUNE_SAMPLES = 2048
"""Posterior samples that decide which reference points of a tick can be its incumbent (botorch's default)."""
PRUNE_REFERENCE_ABOVE = 32
"""A tick's reference set is pruned to its possible incumbents when it has more points than this."""


def possible_incumbents(model: Model, X: Tensor, num_samples: int = PRUNE_SAMPLES) -> Tensor:
    """The points of ``X [n, d]`` that have the lowest modelled loss in at least one of ``num_samples`` joint
    posterior samples (botorch's ``prune_inferior_points`` on the negative loss, fixed base samples so the global
    random state is left alone)."""
    sampler = SobolQMCNormalSampler(sample_shape=torch.Size([num_samples]), seed=0)
    return prune_inferior_points(model, X, objective=GenericMCObjective(_negative_log_loss), sampler=sampler)


class qLogCostImprovement(LogImprovementMCAcquisitionFunction):
    r"""Tick: log expected cost reduction at equal-or-better loss, judged per posterior sample.

    For each joint posterior sample ``s`` of (log loss, log cost) at the observed
    reference points ``R`` and the candidate ``x``:

    * the incumbent ``i_s = argmin_{r in R} loss_s(r)`` and the loss threshold
      ``t_s = loss_s(i_s)`` come from the *same* sample as the candidate, so a
      candidate is not rewarded for noise in its own sample: where the model is
      sure ``x`` behaves like the incumbent, loss_s(x) and t_s move together;
    * the utility is the improvement in log cost, ``log cost_s(i_s) - log
      cost_s(x)`` (a relative cost reduction), smoothed as in log-EI;
    * it counts only where ``loss_s(x) <= t_s`` and ``cost_s(x) <= max_cost``,
      two constraints applied with botorch's smoothed (fat) feasibility indicator.

    The value is ``log mean_s [ softplus(improvement_s) * feasible_s ]``, like
    botorch's ``qLogNoisyExpectedImprovement``. ``R`` should be the observed
    points within budget (the caller falls back to all observed points when none
    is). Sample draws use fixed base samples, so the function is deterministic and
    smooth for gradient-based optimisation. ``X_pending`` are points being evaluated,
    handled as botorch's MC acquisition functions do: they are appended to every
    candidate batch, so the value is that of the best of candidate and pending points
    per sample, and a candidate near a pending point gains little.

    A reference set of more than ``prune_reference`` points (default `PRUNE_REFERENCE_ABOVE`;
    None: never) keeps only the points that can be the incumbent: those with the lowest loss of
    ``R`` in some of `PRUNE_SAMPLES` posterior samples (`possible_incumbents`, as
    ``qLogNoisyExpectedImprovement`` prunes its baseline). A point that is never the incumbent
    changes no sample's utility, and each evaluation then samples the joint posterior of the
    remaining points and the candidate only (cont8, n = 100: 39 -> 21 ms CPU per evaluation
    with its gradient). Small sets are kept whole: there pruning saves little and only redraws
    the Monte-Carlo noise (the base samples meet fewer points).
    """

    def __init__(self, model: Model, X_reference: Tensor, max_cost: float, sampler: MCSampler | None = None,
                 eta: float = 1e-3, fat: bool = True, tau_relu: float = TAU_RELU, tau_max: float = TAU_MAX,
                 X_pending: Tensor | None = None, prune_reference: int | None = PRUNE_REFERENCE_ABOVE):
        if X_reference.dim() != 2 or X_reference.shape[0] == 0:
            raise ValueError(f"qLogCostImprovement needs a non-empty [n, d] X_reference, got shape {tuple(X_reference.shape)}")
        if prune_reference is not None and X_reference.shape[0] > max(prune_reference, 1):
            X_reference = possible_incumbents(model, X_reference)
        constraints = [self._loss_constraint]
        budget = cost_constraint(max_cost)
        if budget is not None:
            constraints.append(budget)
        super().__init__(model=model, sampler=sampler, objective=GenericMCObjective(_negative_log_cost),
                         constraints=constraints, eta=eta, fat=fat, tau_max=tau_max, X_pending=X_pending)
        self.register_buffer("X_reference", X_reference)
        self.tau_relu, self._fat_improvement = tau_relu, fat
        self._threshold: Tensor | None = None
        self._reference_obj: Tensor | None = None

    def _loss_constraint(self, Y: Tensor) -> Tensor:
        return Y[..., LOSS] - self._threshold.unsqueeze(-1)

    def _get_samples_and_objectives(self, X: Tensor) -> tuple[Tensor, Tensor]:
        n, q = self.X_reference.shape[-2], X.shape[-2]
        X_full = torch.cat([match_batch_shape(self.X_reference, X), X], dim=-2)
        samples_full = self.get_posterior_samples(self.model.posterior(X_full))  # S x b x (n + q) x 2
        reference, samples = samples_full.split([n, q], dim=-2)
        incumbent = reference[..., LOSS].argmin(dim=-1, keepdim=True)  # S x b x 1
        self._threshold = reference[..., LOSS].gather(-1, incumbent).squeeze(-1)  # S x b
        self._reference_obj = -reference[..., COST].gather(-1, incumbent).squeeze(-1)  # S x b
        return samples, self.objective(samples, X=X)

    def _sample_forward(self, obj: Tensor) -> Tensor:
        # log of the softplus-smoothed improvement, as botorch's log-EI family computes it
        log_soft_clamp = log_fatplus if self._fat_improvement else log_softplus
        return log_soft_clamp(obj - self._reference_obj.unsqueeze(-1).to(obj), tau=self.tau_relu)
