"""The default proposer: fit the loss and cost models, then optimise the tick or tock acquisition with pending points.

`TickTockProposer` (a `kerneldsl.loop.proposer.BaseProposer`) turns a `History` into
new search points. One call of `TickTockProposer.propose` fits both GPs once (together, one batched
objective, where they share a kernel and their points: `kerneldsl.fitting.fit_together`; their joint
posterior then comes from `kerneldsl.model.CachedPosterior`: the same posterior as a ``ModelListGP``'s,
without gpytorch's per-call overhead) and proposes
one point per request, sequentially and greedily as botorch builds q-batches: every point
already chosen in the call joins the pending points (trials still running) of the next,
through botorch's ``X_pending``, so workers never get the same point or the same tiny
neighbourhood. A point proposed with nothing pending uses the closed forms of tick and tock
(`kerneldsl.loop.acquisition.analytic_tock`; ``AcquisitionOptions.analytic``), one with pending
points the Monte-Carlo forms. Stopped trials' partial losses are bounds (`TickTockProposer._fit_loss`).
Its models are built from `ModelOptions` (`output_models`), its optimisers set by
`AcquisitionOptions`.

Mixed spaces: choices and integers are optimised as discrete values.

* Few branches (at most `MAX_ENUMERATED_COMBINATIONS` active combinations of the
  choices, `kerneldsl.space.combinations.choice_combinations`): every branch is optimised
  with its choices fixed and the parameters it switches off fixed at their defaults
  (botorch's ``fixed_features``), and the best candidate over all branches wins, as in
  botorch's ``optimize_acqf_mixed`` with a fixed-feature list. A branch with active
  integers goes to botorch's ``optimize_acqf_mixed_alternating`` (its integers as
  ``discrete_dims``); a branch without them to ``optimize_acqf`` from starts drawn out of
  Sobol points of the branch and the observed points moved onto it (by the acquisition's value for the
  closed forms, by botorch's Boltzmann weights with pending points: `kerneldsl.loop.restarts`), a start
  stopping once it merges with a better one (`kerneldsl.loop.restarts.MergedRestarts`). ``num_restarts``
  and ``raw_samples`` are shared out among the branches (`TickTockProposer._per_branch`), so a
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
import re
import time
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from types import MappingProxyType
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.exceptions.errors import CandidateGenerationError
from botorch.generation.gen import gen_candidates_scipy
from botorch.optim import optimize_acqf, optimize_acqf_mixed_alternating
from botorch.optim.initializers import initialize_q_batch
from botorch.optim.optimize_mixed import SUPPORTED_OPTIONS as ALTERNATING_OPTIONS
from botorch.sampling import SobolQMCNormalSampler
from torch import Tensor

from ..compiler.priors import DimensionScaledLogNormal
from ..fitting import OutputModel, fit_together
from ..model import CachedPosterior, KernelGP, default_feature_chain
from ..space.combinations import Combination, choice_combinations
from ..space.sampling import SamplingError, sample
from ..space.space import Space
from .acquisition import Incumbent, analytic_tick, analytic_tock, qLogCostImprovement, tock_acquisition
from .history import History, ModelData, truncated_mean
from .options import SMALL_MODEL_POINTS, AcquisitionOptions, ModelOptions
from .proposer import BaseProposer, Proposal, ProposalRequest, is_duplicate, random_point, seed_for
from .restarts import HALTED_RESTART, MergedRestarts, StartWeights, starts_by_value
from .trial import Phase

__all__ = ["TickTockProposer", "output_models", "proposal_threads", "MAX_ENUMERATED_COMBINATIONS", "MAX_DISCRETE_INT_VALUES"]

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
DEFAULT_KERNEL_OPTIONS = MappingProxyType({"lengthscale_prior": DimensionScaledLogNormal(scale_by="term"),
                                           "fused_threshold": 0})
"""Compile options of the study's kernels unless ``kernel_options`` sets them (see `output_models`): the
dimension-scaled lengthscale prior, and the fused C kernels at every size on the CPU (``fused_threshold=0``)."""


def output_models(space: Space, options: ModelOptions) -> dict[str, OutputModel]:
    """The loss and cost models of ``options`` on ``space``: a `KernelGP` each (the default kernel over the group
    ``all`` of every feature), rounding search points before the feature chain.

    Every kernel, the default one and the user's, gets botorch's default lengthscale prior scaled by
    dimension, LogNormal(sqrt(2) + log(d) / 2, sqrt(3)) (`DimensionScaledLogNormal`; Hvarfner et al. 2024),
    with ``d`` the features of each base term (for the default kernel, one Matern over all D features, d = D).
    Typical distances between points grow like sqrt(d), and a prior that does not grow with them (Gamma(3, 6),
    the compiler's default, mode 1/3 on [0, 1] features) makes a model fitted to a few trials local: on the
    26-feature MNIST surrogate the hands-on kernel's 44 lengthscales stayed at that mode after 16 trials and the
    search took 30-50 trials to leave a poor start (issue 24, fourth session). ``d`` per term rather than per
    product (``scale_by="product"``, d = 22-26 for every term of that kernel): the two searched alike on the
    surrogate and digits, and in cross-validation on the MNIST sweep the product rule was over-confident
    (coverage 0.72) and fitted 5x slower (benchmarks/RESULTS.md). ``kernel_options={"lengthscale_prior": ...}``
    overrides it.

    On the CPU the kernels run the fused C kernels at every size (``fused_threshold=0``; ``kd.compile`` keeps
    them for K of about 256 x 256 and up): a study fits its models at every proposal and evaluates them
    thousands of times, so the first use's compilation (here 0.4 s for one Matern term, 3 s for the 25-term
    MNIST kernel; then cached on disk) is repaid within a few proposals. At n = 100 the fits' objective with
    its gradient costs 21% less on one Matern term and 2.25x less on the MNIST kernels, an acquisition
    evaluation 25% less on the MNIST and digits kernels and the same on one term (fifth session,
    benchmarks/RESULTS.md). Without a C compiler the torch path runs, with one warning."""
    chain = options.feature_chain if options.feature_chain is not None else default_feature_chain(space)
    rounding = space.rounding_transform(method="approximate")
    every_feature = {"all": list(chain.feature_names)}
    models = {}
    for name, source in (("loss", options.loss_kernel), ("cost", options.cost_kernel)):
        groups = {**every_feature, **dict(options.kernel_groups or {})} if source is None else options.kernel_groups
        factory = KernelGP(options.kernels[name], chain, rounding=rounding, groups=groups,
                           **{**DEFAULT_KERNEL_OPTIONS, **dict(options.kernel_options or {})})
        models[name] = OutputModel(name, factory, fit_options=dict(options.fit_options or {}))
    return models


class TickTockProposer(BaseProposer):
    """Fits the two output models and optimises the acquisition of each requested phase (tick or tock).

    ``models`` says how the loss and cost models are built, ``acquisition`` how the acquisitions are optimised,
    ``seed`` seeds every proposal (with the trial id)."""

    def __init__(self, space: Space, models: ModelOptions = ModelOptions(),
                 acquisition: AcquisitionOptions = AcquisitionOptions(), seed: int = 0):
        self.space, self.seed, self.options = space, seed, acquisition
        self.scale, self.device, self.dtype = models.loss_scale, models.torch_device, models.dtype
        self.models = output_models(space, models)
        self.combinations = choice_combinations(space, limit=MAX_ENUMERATED_COMBINATIONS)
        """The branches optimised one by one; None when there are too many (the alternating optimiser's turn)."""
        bounds = space.bounds.to(dtype=self.dtype)
        self.int_values = {  # botorch's discrete_dims: every valid search value, ends equal to the bounds
            i: [bounds[0, i].item(), *torch.tensor(values[1:-1], dtype=self.dtype).tolist(), bounds[1, i].item()]
            for i, values in space.discrete_dims().items()
        }

    def random_point(self, index: int, seen: Tensor | None) -> Tensor:
        """A Sobol point (seeded by the trial) that was not asked before."""
        return random_point(self.space, self.seed, index, seen, self.dtype, self.device)

    def propose(self, history: History, requests: Sequence[ProposalRequest]) -> list[Proposal]:
        """One point per request, each pending for the next; random points while the models cannot fit."""
        data = history.training_data(self.dtype, self.device)
        proposals: list[Proposal] = []
        seen, pending = data.X_seen, data.X_pending
        if data.models is None:
            for request in requests:
                x = self.random_point(request.trial_id, seen)
                proposals.append(Proposal(x, request.phase, "random: fewer than 2 finished trials to fit the models"))
                seen = _append(seen, x)
            return proposals
        points = max(len(data.models.X_loss), len(data.models.X_cost))
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []), \
                proposal_threads(self.options.threads, points):
            torch.manual_seed(seed_for(self.seed, requests[0].trial_id))
            start = time.perf_counter()
            model = CachedPosterior(self._fit(data.models))
            fit_seconds = time.perf_counter() - start
            search = _Search(model, data.models, history.max_cost)
            for k, request in enumerate(requests):
                proposal = self._propose_one(search, request.phase, request.trial_id, seen, pending)
                proposal.timings = {"fit": fit_seconds if k == 0 else 0.0, **proposal.timings}
                proposals.append(proposal)
                seen, pending = _append(seen, proposal.x), _append(pending, proposal.x)
        return proposals

    def _fit(self, data: ModelData) -> list:
        """The fitted loss and cost models: together (`kerneldsl.fitting.fit_together`) when they learn from the
        same points and no loss is a stopped trial's bound, else one by one."""
        if not data.stopped and torch.equal(data.X_loss, data.X_cost):
            return fit_together([self.models["loss"], self.models["cost"]], data.X_loss, [data.y_loss, data.y_cost])
        return [self._fit_loss(data), self.models["cost"].fit(data.X_cost, data.y_cost)]

    def _fit_loss(self, data: ModelData):
        """The fitted loss model. Stopped trials' partial losses are upper bounds of what they would have reached:
        a first fit without them predicts each (with observation noise), and each enters at the mean of that
        prediction truncated above at its partial loss (`truncated_mean`): the model's guess where it is below the
        bound, just under the bound where the model expected worse."""
        model = self.models["loss"]
        keep = len(data.y_loss) - data.stopped
        if not data.stopped or keep < 2:
            return model.fit(data.X_loss, data.y_loss)
        first = model.fit(data.X_loss[:keep], data.y_loss[:keep])
        with torch.no_grad():
            prediction = first.posterior(data.X_loss[keep:], observation_noise=True)
            bounds = data.y_loss[keep:]
            imputed = truncated_mean(prediction.mean.squeeze(-1), prediction.variance.squeeze(-1).sqrt(), bounds)
        return model.fit(data.X_loss, torch.cat([data.y_loss[:keep], imputed]))

    def _propose_one(self, search: "_Search", phase: Phase, index: int, seen: Tensor,
                     pending: Tensor | None) -> Proposal:
        start = time.perf_counter()
        min_tick_gain = self.options.min_tick_gain
        try:
            x, how, value = self._optimise(search, phase, index, seen, pending)
            gives_way = min_tick_gain > 0 and value is not None and value < math.log(min_tick_gain)
            if phase is Phase.TICK and gives_way:
                phase = Phase.TOCK
                x, how, value = self._optimise(search, phase, index, seen, pending)
                how += f" (the tick expected a relative cost reduction below min_tick_gain={min_tick_gain:g})"
        except (RuntimeError, ValueError, ArithmeticError) as exc:  # numerical trouble must not end a long run
            warnings.warn(f"{phase.value} acquisition failed at trial {index} ({exc}); using a random point",
                          RuntimeWarning, stacklevel=3)
            x, how, value = self.random_point(index, seen), f"random: acquisition failed ({type(exc).__name__}: {exc})", None
        seconds = time.perf_counter() - start
        with torch.no_grad():
            posterior = search.model.posterior(x[None])
            mean, variance = posterior.mean[0], posterior.variance[0]
        prediction = {"loss": self.scale.from_model(float(mean[0])), "cost": math.exp(float(mean[1])),
                      "log_cost": float(mean[1]), "log_cost_sd": math.sqrt(max(float(variance[1]), 0.0)),
                      "log_acquisition": value}
        if pending is not None:
            prediction["pending"] = int(pending.shape[0])
        return Proposal(x, phase, how, prediction, {"acquisition": seconds})

    def _optimise(self, search: "_Search", phase: Phase, index: int, seen: Tensor,
                  pending: Tensor | None) -> tuple[Tensor, str, float | None]:
        options, data = self.options, search.data
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([options.mc_samples]), seed=seed_for(self.seed, index))
        closed_form = options.analytic and pending is None and data.any_within
        if closed_form:
            make = analytic_tock if phase is Phase.TOCK else analytic_tick
            acquisition = make(search.model, search.incumbent, search.max_cost)
        elif phase is Phase.TOCK:
            acquisition = tock_acquisition(search.model, data.X_ok, search.max_cost, sampler=sampler, eta=options.eta,
                                           X_pending=pending)
        else:
            acquisition = qLogCostImprovement(search.model, data.X_within, search.max_cost, sampler=sampler,
                                              eta=options.eta, X_pending=pending)
        weights = options.start_weights if closed_form else StartWeights.BOLTZMANN
        found = self._maximise(acquisition, data.X_ok, index, weights)
        # Best first: the exactly rounded candidate must satisfy the constraints and be new.
        for rank, (candidate, value, how) in enumerate(sorted(found, key=lambda item: -item[1])):
            x = self.space.round(candidate.reshape(1, -1))[0]
            if bool(self.space.feasible(x[None])[0]) and not is_duplicate(x, seen):
                later = " (a later candidate: the better ones were asked already or infeasible once rounded)"
                return x, how + (later if rank else "") + (", closed form" if closed_form else ""), value
        return (self.random_point(index, seen),
                "random: every optimised candidate was already asked or infeasible after rounding", None)

    def _maximise(self, acquisition: AcquisitionFunction, X_ok: Tensor, index: int,
                  weights: StartWeights) -> list[tuple[Tensor, float, str]]:
        """Candidates ``(x [d], value, how)``: several per branch when branches are enumerated, else the
        alternating optimiser's best. ``weights``: how the continuous branches' restarts are drawn."""
        with warnings.catch_warnings():
            # A restart whose line search ends abnormally (scipy's status 2: at a flat optimum or against a bound)
            # keeps the best point it reached, as botorch says, and so does one `MergedRestarts` stopped; the
            # warning's remedies name botorch's arguments, which a study's user does not pass (it reached users
            # as "while proposing, 6 x RuntimeWarning: Optimization failed in `gen_candidates_scipy` ...").
            warnings.filterwarnings("ignore", message=STOPPED_RESTARTS, category=RuntimeWarning)
            return self._search(acquisition, X_ok, index, weights)

    def _search(self, acquisition: AcquisitionFunction, X_ok: Tensor, index: int,
                weights: StartWeights) -> list[tuple[Tensor, float, str]]:
        bounds = self.space.bounds.to(dtype=self.dtype, device=self.device)
        constraints = self.space.inequality_constraints(dtype=self.dtype, device=self.device) or None
        if self.combinations is None:
            x, value = optimize_acqf_mixed_alternating(
                _OnValidPoints(acquisition, self.space), bounds, discrete_dims=self.int_values,
                cat_dims=self.space.cat_dims(), options=self._alternating_options(), raw_samples=self.options.raw_samples,
                num_restarts=self.options.num_restarts, inequality_constraints=constraints,
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
                    starts = self._starting_points(target, X_ok, index, combination.fixed, restarts, raw_samples,
                                                   weights)
                    free = [i for i in range(bounds.shape[-1]) if i not in combination.fixed]  # what L-BFGS-B moves
                    options = {"maxiter": 200, "callback": MergedRestarts(bounds[:, free], len(starts)),
                               **self._continuous_options()}
                    x, value = optimize_acqf(
                        target, bounds=bounds, q=1, num_restarts=len(starts), batch_initial_conditions=starts,
                        fixed_features=combination.fixed, inequality_constraints=constraints,
                        options=options, return_best_only=False, gen_candidates=_gen_candidates,
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
        restarts = max(1, -(-self.options.num_restarts // branches))
        return restarts, max(restarts * MIN_RAW_PER_RESTART, -(-self.options.raw_samples // branches))

    def _alternating_options(self) -> dict[str, Any]:
        """Options of ``optimize_acqf_mixed_alternating``: its own keys of ``acq_options`` (``maxiter`` as the
        iterations of a continuous-relaxation start, if one is asked for) over this module's defaults."""
        acq_options = self.options.acq_options
        options = {key: value for key, value in acq_options.items() if key in ALTERNATING_OPTIONS}
        if "maxiter" in acq_options:
            options.setdefault("maxiter_init", acq_options["maxiter"])
        options.setdefault("max_discrete_values", MAX_DISCRETE_INT_VALUES)
        options.setdefault("maxiter_alternating", MAX_ALTERNATING_STEPS)
        options.setdefault("initialization_strategy", "random")
        return options

    def _continuous_options(self) -> dict[str, Any]:
        """Options of ``optimize_acqf`` (scipy's): the keys of ``acq_options`` the alternating optimiser does not take."""
        return {key: value for key, value in self.options.acq_options.items() if key not in ALTERNATING_OPTIONS}

    def _starting_points(self, acquisition: AcquisitionFunction, X_ok: Tensor, index: int, fixed: dict[int, float],
                         restarts: int, raw_samples: int, weights: StartWeights) -> Tensor:
        """Restarts for the gradient ascent on one branch: its Sobol points (valid, constraints honoured) and
        points next to the observed ones moved onto it, ``restarts`` of them drawn as ``weights`` says
        (`kerneldsl.loop.restarts`): the best always, the others with probability proportional to the acquisition's
        value, or to botorch's Boltzmann weights.

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
        if weights is StartWeights.VALUE:
            return starts_by_value(raw, values, min(restarts, len(raw)))
        starts, _ = initialize_q_batch(raw, values, n=min(restarts, len(raw)))
        return starts


_STOPPED_RESTART = (r"OptimizationWarning\('Optimization failed within `scipy.optimize.minimize` with status 2 and "
                    rf"message (?:ABNORMAL: [^']*|{re.escape(HALTED_RESTART)})\.'\)")
STOPPED_RESTARTS = (r"Optimization failed in `gen_candidates_scipy` with the following warning\(s\):\n"
                    rf"\[(?:{_STOPPED_RESTART}, )*{_STOPPED_RESTART}\]\n")
"""botorch's warning about restarts that stopped early and keep their points: L-BFGS-B line searches that ended
abnormally, and restarts `MergedRestarts` stopped. A warning that names anything else is shown."""


@dataclass(frozen=True)
class _Search:
    """One proposal call's fitted models (loss, cost), the data they were fitted to, and the budget."""

    model: CachedPosterior
    data: ModelData
    max_cost: float

    @cached_property
    def incumbent(self) -> Incumbent:
        """The observed point within budget with the lowest posterior mean loss (the analytic acquisitions')."""
        return Incumbent.of(self.model, self.data.X_within)


class _OnValidPoints(AcquisitionFunction):
    """An acquisition evaluated at each point's valid version: the parameters its choices (or values) switch
    off at their defaults (`Space.deactivate`), for optimisers that move choices without knowing conditions."""

    def __init__(self, acquisition: AcquisitionFunction, space: Space):
        super().__init__(model=acquisition.model)
        self.acquisition, self.space = acquisition, space

    def forward(self, X: Tensor) -> Tensor:
        return self.acquisition(self.space.deactivate(X))


def _gen_candidates(initial_conditions: Tensor, acquisition_function: AcquisitionFunction,
                    **kwargs: Any) -> tuple[Tensor, Tensor]:
    """botorch's ``gen_candidates_scipy`` with no fixed features passed as None: ``optimize_acqf`` passes an empty
    dict, with which each evaluation rebuilds its points column by column (``fix_features``) and the backward
    pass runs through every copy (a tenth of an evaluation on eight features)."""
    if not kwargs.get("fixed_features"):
        kwargs["fixed_features"] = None
    return gen_candidates_scipy(initial_conditions, acquisition_function, **kwargs)


def _describe(combination: Combination) -> str:
    return ", ".join(f"{name}={value!r}" for name, value in combination.values.items())


@contextmanager
def proposal_threads(threads: int | None, points: int) -> Iterator[int]:
    """Run the block on ``threads`` torch threads (None: one thread up to `SMALL_MODEL_POINTS` training points,
    torch's current setting above); the caller's thread count is restored afterwards."""
    before = torch.get_num_threads()
    chosen = threads if threads is not None else (1 if points <= SMALL_MODEL_POINTS else before)
    torch.set_num_threads(chosen)
    try:
        yield chosen
    finally:
        torch.set_num_threads(before)


def _append(points: Tensor | None, x: Tensor) -> Tensor:
    return x[None] if points is None else torch.cat([points, x[None]])
