"""Proposals: fit the loss and cost models, then optimise the tick or tock acquisition with pending points.

A `Proposer` turns the study's training data into new search points. One call of
`Proposer.propose` fits both GPs once and proposes one point per requested phase,
sequentially and greedily as botorch builds q-batches: every point already chosen in
the call joins the pending points (trials still running) of the next, through botorch's
``X_pending``, so workers never get the same point or the same tiny neighbourhood.

Mixed spaces: choices and integers are optimised as discrete values.

* Few branches (at most `MAX_ENUMERATED_COMBINATIONS` active combinations of the
  choices, `kerneldsl.space.combinations.choice_combinations`): every branch is optimised
  with its choices fixed and the parameters it switches off fixed at their defaults
  (botorch's ``fixed_features``), and the best candidate over all branches wins, as in
  botorch's ``optimize_acqf_mixed`` with a fixed-feature list. A branch with active
  integers goes to botorch's ``optimize_acqf_mixed_alternating`` (its integers as
  ``discrete_dims``); a branch without them to ``optimize_acqf`` from starts drawn out of
  Sobol points of the branch and the observed points moved onto it. ``num_restarts``
  and ``raw_samples`` are shared out among the branches (`Proposer._per_branch`), so a
  proposal's effort does not grow with the number of branches.
* Many branches: one ``optimize_acqf_mixed_alternating`` run over the whole space
  (choices as ``cat_dims``, integers as ``discrete_dims``; ``num_restarts`` local
  searches started from the best of ``raw_samples`` points), on the acquisition of
  each point's valid version (`Space.deactivate`: switched-off parameters at their
  defaults), so a branch change is judged by the config it stands for.

The alternating optimiser starts from the best of its raw points (botorch's "random"
initialisation) and runs at most `MAX_ALTERNATING_STEPS` rounds of integer neighbour
moves and continuous L-BFGS steps; these two bounds keep a proposal within about twice
the old continuous-relaxation cost (``acq_options`` may set any of its options:
``initialization_strategy``, ``maxiter_alternating``, ``max_discrete_values``, ...;
``maxiter`` sets the continuous optimisations). Integers with at most
`MAX_DISCRETE_INT_VALUES` values move by integer neighbour steps; wider ones are
optimised relaxed and rounded, as botorch does for wide ranges. The models see rounded
inputs either way (their rounding input transform). Linear constraints go to every
optimiser as ``inequality_constraints``; a candidate is taken only when its exact
rounding is feasible and new.
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
from botorch.acquisition import AcquisitionFunction
from botorch.exceptions.errors import CandidateGenerationError
from botorch.optim import optimize_acqf, optimize_acqf_mixed_alternating
from botorch.optim.initializers import initialize_q_batch
from botorch.optim.optimize_mixed import SUPPORTED_OPTIONS as ALTERNATING_OPTIONS
from botorch.sampling import SobolQMCNormalSampler
from torch import Tensor

from ..model import OutputModel
from ..space.combinations import Combination, choice_combinations
from ..space.sampling import SamplingError, sample
from ..space.space import Space
from .acquisition import qLogCostImprovement, tock_acquisition
from .trial import Phase

__all__ = ["TrainingData", "ModelData", "Proposal", "Proposer", "seed_for", "MAX_ENUMERATED_COMBINATIONS",
           "MAX_DISCRETE_INT_VALUES"]

DUPLICATE_TOL = 1e-9
NEAR_OBSERVED = 0.01
"""How far (as a fraction of the way to a Sobol point) a starting point next to an observed point lies."""
MAX_ENUMERATED_COMBINATIONS = 10
"""Spaces with at most this many active choice combinations have every one optimised; more go to botorch's
alternating optimiser (the bound botorch uses between the two, ``ALTERNATING_OPTIMIZER_THRESHOLD``)."""
MAX_DISCRETE_INT_VALUES = 100
"""Integers with at most this many values move as integers in the alternating optimiser; wider ones are relaxed
and rounded (botorch's ``max_discrete_values``, default 20; 100 is its bound for local search over discrete
values, ``MAX_CARDINALITY_FOR_LOCAL_SEARCH``)."""
MAX_ALTERNATING_STEPS = 3
"""Discrete-then-continuous rounds of the alternating optimiser (botorch's default, 64, is rarely reached but
each round costs a continuous optimisation); ``acq_options={"maxiter_alternating": ...}`` changes it."""
MIN_RAW_PER_RESTART = 8
"""Each enumerated branch draws at least this many raw points per restart."""


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
        self.combinations = choice_combinations(space, limit=MAX_ENUMERATED_COMBINATIONS)
        """The branches optimised one by one; None when there are too many (the alternating optimiser's turn)."""
        bounds = space.bounds.to(dtype=dtype)
        self.int_values = {  # botorch's discrete_dims: every valid search value, ends equal to the bounds
            i: [bounds[0, i].item(), *torch.tensor(values[1:-1], dtype=dtype).tolist(), bounds[1, i].item()]
            for i, values in space.discrete_dims().items()
        }

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
        found = self._maximise(acquisition, data.X_ok, index)
        # Best first: the exactly rounded candidate must satisfy the constraints and be new.
        for rank, (candidate, value, how) in enumerate(sorted(found, key=lambda item: -item[1])):
            x = self.space.round(candidate.reshape(1, -1))[0]
            if bool(self.space.feasible(x[None])[0]) and not _is_duplicate(x, seen):
                later = " (a later candidate: the better ones were asked already or infeasible once rounded)"
                return x, how + (later if rank else ""), value
        return (self.random_point(index, seen),
                "random: every optimised candidate was already asked or infeasible after rounding", None)

    def _maximise(self, acquisition: AcquisitionFunction, X_ok: Tensor, index: int) -> list[tuple[Tensor, float, str]]:
        """Candidates ``(x [d], value, how)``: several per branch when branches are enumerated, else the
        alternating optimiser's best."""
        bounds = self.space.bounds.to(dtype=self.dtype, device=self.device)
        constraints = self.space.inequality_constraints(dtype=self.dtype, device=self.device) or None
        if self.combinations is None:
            x, value = optimize_acqf_mixed_alternating(
                _OnValidPoints(acquisition, self.space), bounds, discrete_dims=self.int_values,
                cat_dims=self.space.cat_dims(), options=self._alternating_options(), raw_samples=self.raw_samples,
                num_restarts=self.num_restarts, inequality_constraints=constraints,
            )
            how = f"acquisition (alternating optimiser: more than {MAX_ENUMERATED_COMBINATIONS} choice combinations)"
            return [(x[0], float(value.reshape(-1)[0]), how)]
        found: list[tuple[Tensor, float, str]] = []
        skipped: list[str] = []
        restarts, raw_samples = self._per_branch(len(self.combinations))
        for combination in self.combinations:
            how = "acquisition" + (f" (branch {_describe(combination)})" if combination.values else "")
            target = _OnValidPoints(acquisition, self.space) if combination.undetermined else acquisition
            ints = {i: self.int_values[i] for i in combination.free_ints(self.space)}
            try:
                if ints:
                    x, value = optimize_acqf_mixed_alternating(
                        target, bounds, discrete_dims=ints, options=self._alternating_options(),
                        raw_samples=raw_samples, num_restarts=restarts,
                        fixed_features=combination.fixed, inequality_constraints=constraints,
                    )
                else:
                    starts = self._starting_points(target, X_ok, index, combination.fixed, restarts, raw_samples)
                    x, value = optimize_acqf(
                        target, bounds=bounds, q=1, num_restarts=len(starts), batch_initial_conditions=starts,
                        fixed_features=combination.fixed, inequality_constraints=constraints,
                        options={"maxiter": 200, **self._continuous_options()}, return_best_only=False,
                    )
            except (SamplingError, CandidateGenerationError) as exc:  # no feasible point on this branch
                skipped.append(f"{_describe(combination)}: {exc}")
                continue
            found += [(xk.reshape(-1), float(vk), how) for xk, vk in zip(x, value.reshape(-1))]
        if not found:
            raise RuntimeError(f"no branch of the space has a feasible point to optimise ({'; '.join(skipped)})")
        return found

    def _per_branch(self, branches: int) -> tuple[int, int]:
        """Restarts and raw samples of each of ``branches`` enumerated branches: ``num_restarts`` and ``raw_samples``
        are shared out (at least one restart and ``MIN_RAW_PER_RESTART`` raw points per restart each), so a proposal
        costs about the same however many branches the space has."""
        restarts = max(1, -(-self.num_restarts // branches))
        return restarts, max(restarts * MIN_RAW_PER_RESTART, -(-self.raw_samples // branches))

    def _alternating_options(self) -> dict[str, Any]:
        """Options of ``optimize_acqf_mixed_alternating``: its own keys of ``acq_options`` (``maxiter`` as the
        iterations of a continuous-relaxation start, if one is asked for) over this module's defaults."""
        options = {key: value for key, value in self.acq_options.items() if key in ALTERNATING_OPTIONS}
        if "maxiter" in self.acq_options:
            options.setdefault("maxiter_init", self.acq_options["maxiter"])
        options.setdefault("max_discrete_values", MAX_DISCRETE_INT_VALUES)
        options.setdefault("maxiter_alternating", MAX_ALTERNATING_STEPS)
        options.setdefault("initialization_strategy", "random")
        return options

    def _continuous_options(self) -> dict[str, Any]:
        """Options of ``optimize_acqf`` (scipy's): the keys of ``acq_options`` the alternating optimiser does not take."""
        return {key: value for key, value in self.acq_options.items() if key not in ALTERNATING_OPTIONS}

    def _starting_points(self, acquisition: AcquisitionFunction, X_ok: Tensor, index: int, fixed: dict[int, float],
                         restarts: int, raw_samples: int) -> Tensor:
        """Restarts for the gradient ascent on one branch: its Sobol points (valid, constraints honoured) and
        points next to the observed ones moved onto it, ``num_restarts`` of them drawn by acquisition value with
        botorch's Boltzmann heuristic.

        A start is never an observed point itself: the acquisitions sample the joint posterior of the observed
        points and the candidate, which is singular when the candidate repeats one of them (gpytorch then adds
        jitter and warns). Each observed point moves 1% of the way towards a Sobol point of the branch instead,
        which keeps it on the branch, inside the bounds and the linear constraints (a convex combination of
        feasible points).
        """
        raw = sample(self.space, raw_samples, seed=seed_for(self.seed, index) + 1, dtype=self.dtype,
                     device=self.device, fixed=fixed)
        observed = X_ok.clone()
        for column, value in fixed.items():
            observed[:, column] = value
        observed = observed[self.space.feasible(observed)]
        towards = raw[torch.arange(len(observed), device=raw.device) % len(raw)]
        raw = torch.cat([raw, observed + NEAR_OBSERVED * (towards - observed)]).unsqueeze(-2)  # b x 1 x d
        with torch.no_grad():
            values = torch.cat([acquisition(chunk) for chunk in raw.split(512)])
        starts, _ = initialize_q_batch(raw, values, n=min(restarts, len(raw)))
        return starts


class _OnValidPoints(AcquisitionFunction):
    """An acquisition evaluated at each point's valid version: the parameters its choices (or values) switch
    off at their defaults (`Space.deactivate`), for optimisers that move choices without knowing conditions."""

    def __init__(self, acquisition: AcquisitionFunction, space: Space):
        super().__init__(model=acquisition.model)
        self.acquisition, self.space = acquisition, space

    def forward(self, X: Tensor) -> Tensor:
        return self.acquisition(self.space.deactivate(X))


def _describe(combination: Combination) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in combination.values.items())


def _is_duplicate(x: Tensor, seen: Tensor | None) -> bool:
    return seen is not None and len(seen) > 0 and bool(((seen - x).abs().amax(-1) <= DUPLICATE_TOL).any())


def _append(points: Tensor | None, x: Tensor) -> Tensor:
    return x[None] if points is None else torch.cat([points, x[None]])
