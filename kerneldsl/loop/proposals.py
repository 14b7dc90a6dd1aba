"""Proposals: fit the loss and cost models, then optimise the tick or tock acquisition with pending points.

A `Proposer` turns the study's training data into new search points. One call of
`Proposer.propose` fits both GPs once and proposes one point per requested phase,
sequentially and greedily as botorch builds q-batches: every point already chosen in
the call joins the pending points (trials still running) of the next, through botorch's
``X_pending``, so workers never get the same point or the same tiny neighbourhood.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from botorch.models import ModelListGP
from botorch.optim import optimize_acqf
from botorch.optim.initializers import initialize_q_batch
from botorch.sampling import SobolQMCNormalSampler
from torch import Tensor

from ..model import OutputModel
from ..space.sampling import sample
from ..space.space import Space
from .acquisition import qLogCostImprovement, tock_acquisition
from .trial import Phase

__all__ = ["TrainingData", "ModelData", "Proposal", "Proposer", "seed_for"]

DUPLICATE_TOL = 1e-9
NEAR_OBSERVED = 0.01
"""How far (as a fraction of the way to a Sobol point) a starting point next to an observed point lies."""


def seed_for(seed: int, trial: int) -> int:
    """A deterministic seed per (study seed, trial id)."""
    return (seed * 1_000_003 + 7919 * (trial + 1)) % (2**31 - 1)


@dataclass
class ModelData:
    """What the models learn from and what the acquisitions compare against (search-space points)."""

    X_loss: Tensor
    y_loss: Tensor
    """Modelled loss (log loss by default); failed trials at their imputed value."""
    X_cost: Tensor
    y_cost: Tensor
    """Log cost."""
    X_ok: Tensor
    """Points of finished trials with a loss (the tock's baseline)."""
    X_within: Tensor
    """Points of finished trials within the budget (the tick's reference; X_ok if none is)."""


@dataclass
class TrainingData:
    """The study's state as proposals see it."""

    X_seen: Tensor | None
    """Every point asked so far, running trials included (never proposed again)."""
    X_pending: Tensor | None
    """Points of running trials."""
    models: ModelData | None = None
    """None while the models cannot be fitted yet (fewer than two trials with a loss or a cost)."""


@dataclass
class Proposal:
    """One proposed point: the phase it ran as, how it was found, the models' prediction there."""

    x: Tensor
    phase: Phase
    how: str
    prediction: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


class Proposer:
    """Fits the two output models and optimises the acquisition of each requested phase."""

    def __init__(self, space: Space, max_cost: float, models: Mapping[str, OutputModel], seed: int, log_loss: bool,
                 device: torch.device, dtype: torch.dtype, num_restarts: int, raw_samples: int, mc_samples: int,
                 acq_options: Mapping[str, Any], eta: float, min_tick_gain: float):
        self.space, self.max_cost, self.models, self.seed, self.log_loss = space, max_cost, models, seed, log_loss
        self.device, self.dtype = device, dtype
        self.num_restarts, self.raw_samples, self.mc_samples = num_restarts, raw_samples, mc_samples
        self.acq_options, self.eta, self.min_tick_gain = dict(acq_options), eta, min_tick_gain

    def loss_from_model(self, y: float) -> float:
        return math.exp(y) if self.log_loss else y

    def random_point(self, index: int, seen: Tensor | None) -> Tensor:
        """A Sobol point (seeded by the trial) that was not asked before."""
        candidates = sample(self.space, 32, seed=seed_for(self.seed, index), dtype=self.dtype, device=self.device)
        for x in candidates:
            if not _is_duplicate(x, seen):
                return x
        return candidates[0]

    def propose(self, phases: Sequence[Phase], indices: Sequence[int], data: TrainingData) -> list[Proposal]:
        """One point per (phase, trial id), each pending for the next; random points while the models cannot fit."""
        proposals: list[Proposal] = []
        seen, pending = data.X_seen, data.X_pending
        if data.models is None:
            for phase, index in zip(phases, indices):
                x = self.random_point(index, seen)
                proposals.append(Proposal(x, phase, "random: fewer than 2 finished trials to fit the models"))
                seen = _append(seen, x)
            return proposals
        models = data.models
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(seed_for(self.seed, indices[0]))
            start = time.perf_counter()
            model = ModelListGP(self.models["loss"].fit(models.X_loss, models.y_loss),
                                self.models["cost"].fit(models.X_cost, models.y_cost))
            fit_seconds = time.perf_counter() - start
            for k, (phase, index) in enumerate(zip(phases, indices)):
                proposal = self._propose_one(model, phase, index, models, seen, pending)
                proposal.timings = {"fit": fit_seconds if k == 0 else 0.0, **proposal.timings}
                proposals.append(proposal)
                seen, pending = _append(seen, proposal.x), _append(pending, proposal.x)
        return proposals

    def _propose_one(self, model: ModelListGP, phase: Phase, index: int, data: ModelData, seen: Tensor,
                     pending: Tensor | None) -> Proposal:
        start = time.perf_counter()
        try:
            x, how, value = self._optimise(model, phase, index, data, seen, pending)
            gives_way = self.min_tick_gain > 0 and value is not None and value < math.log(self.min_tick_gain)
            if phase is Phase.TICK and gives_way:
                phase = Phase.TOCK
                x, how, value = self._optimise(model, phase, index, data, seen, pending)
                how += f" (the tick expected a relative cost reduction below min_tick_gain={self.min_tick_gain:g})"
        except (RuntimeError, ValueError, ArithmeticError) as exc:  # numerical trouble must not end a long run
            warnings.warn(f"{phase.value} acquisition failed at trial {index} ({exc}); using a random point",
                          RuntimeWarning, stacklevel=3)
            x, how, value = self.random_point(index, seen), f"random: acquisition failed ({type(exc).__name__}: {exc})", None
        seconds = time.perf_counter() - start
        with torch.no_grad():
            posterior = model.posterior(x[None])
            mean, variance = posterior.mean[0], posterior.variance[0]
        prediction = {"loss": self.loss_from_model(float(mean[0])), "cost": math.exp(float(mean[1])),
                      "log_cost": float(mean[1]), "log_cost_sd": math.sqrt(max(float(variance[1]), 0.0)),
                      "log_acquisition": value}
        if pending is not None:
            prediction["pending"] = int(pending.shape[0])
        return Proposal(x, phase, how, prediction, {"acquisition": seconds})

    def _optimise(self, model: ModelListGP, phase: Phase, index: int, data: ModelData, seen: Tensor,
                  pending: Tensor | None) -> tuple[Tensor, str, float | None]:
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([self.mc_samples]), seed=seed_for(self.seed, index))
        if phase is Phase.TOCK:
            acquisition = tock_acquisition(model, data.X_ok, self.max_cost, sampler=sampler, eta=self.eta,
                                           X_pending=pending)
        else:
            acquisition = qLogCostImprovement(model, data.X_within, self.max_cost, sampler=sampler, eta=self.eta,
                                              X_pending=pending)
        starts = self._starting_points(acquisition, data.X_ok, index)
        bounds = self.space.bounds.to(dtype=self.dtype, device=self.device)
        constraints = self.space.inequality_constraints(dtype=self.dtype, device=self.device) or None
        candidates, values = optimize_acqf(
            acquisition, bounds=bounds, q=1, num_restarts=len(starts), batch_initial_conditions=starts,
            inequality_constraints=constraints, options={"maxiter": 200, **self.acq_options}, return_best_only=False,
        )
        # Best first: the exactly rounded candidate must satisfy the constraints and be new.
        for k in torch.argsort(values.reshape(-1), descending=True).tolist():
            x = self.space.round(candidates[k].reshape(1, -1))[0]
            if bool(self.space.feasible(x[None])[0]) and not _is_duplicate(x, seen):
                how = "acquisition" if k == int(values.argmax()) else "acquisition (a later restart: the best was taken)"
                return x, how, float(values.reshape(-1)[k])
        return (self.random_point(index, seen),
                "random: every optimised candidate was already asked or infeasible after rounding", None)

    def _starting_points(self, acquisition, X_ok: Tensor, index: int) -> Tensor:
        """Restarts for the gradient ascent: Sobol points of the space (valid, constraints honoured) and points
        next to the observed ones, ``num_restarts`` of them drawn by acquisition value with botorch's Boltzmann
        heuristic.

        A start is never an observed point itself: the acquisitions sample the joint posterior of the
        observed points and the candidate, which is singular when the candidate repeats one of them (gpytorch
        then adds jitter and warns). Each observed point moves 1% of the way towards a Sobol point instead,
        which keeps it inside the bounds and the linear constraints (a convex combination of feasible points).
        """
        raw = sample(self.space, self.raw_samples, seed=seed_for(self.seed, index) + 1, dtype=self.dtype,
                     device=self.device)
        towards = raw[torch.arange(len(X_ok), device=raw.device) % len(raw)]
        raw = torch.cat([raw, X_ok + NEAR_OBSERVED * (towards - X_ok)]).unsqueeze(-2)  # b x 1 x d
        with torch.no_grad():
            values = torch.cat([acquisition(chunk) for chunk in raw.split(512)])
        starts, _ = initialize_q_batch(raw, values, n=min(self.num_restarts, len(raw)))
        return starts


def _is_duplicate(x: Tensor, seen: Tensor | None) -> bool:
    return seen is not None and len(seen) > 0 and bool(((seen - x).abs().amax(-1) <= DUPLICATE_TOL).any())


def _append(points: Tensor | None, x: Tensor) -> Tensor:
    return x[None] if points is None else torch.cat([points, x[None]])
