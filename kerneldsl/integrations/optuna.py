"""kerneldsl's cost-aware proposals as an Optuna sampler (``pip install -e '.[optuna]' in a clone of kerneldsl``).

`HandsOnSampler` is an ``optuna.samplers.BaseSampler``: an Optuna study (any storage, any
number of processes, pruners, ``enqueue_trial``, Ray Tune's ``OptunaSearch``) gets its
model-based trials from kerneldsl's `TickTockProposer`, with kernel-language kernels over
kerneldsl's features of the study's parameters::

    sampler = HandsOnSampler(loss_kernel="matern52(log_lr) * categorical(opt)", max_cost=60.0)
    study = optuna.create_study(sampler=sampler, storage="sqlite:///study.db")
    study.optimize(objective, n_trials=40)      # the objective calls trial.set_user_attr("cost", seconds)

How Optuna's parts map onto kerneldsl's:

* the search space: Optuna's distributions (`OptunaSpace.from_distributions`) as a
  kerneldsl `Space` (``FloatDistribution`` -> `Scalar`, ``IntDistribution`` -> `Int`, both
  with ``log``; a ``step`` grid -> an `Int` over the grid's positions, which the feature
  chain scales as it scales the value; ``CategoricalDistribution`` -> `Choice`); the
  parameters every finished trial has (Optuna's intersection search space, as
  ``GPSampler`` takes it) are modelled jointly and the others (define-by-run conditional
  ones) sampled at random; or the kerneldsl ``space=`` you pass, conditions and all.
  Features are named as `kerneldsl.default_feature_chain` names them (``log_lr`` for a
  log-scaled ``lr``, ``opt_adam``, ``opt_sgd`` for a categorical ``opt``), or as your
  ``feature_chain`` does;
* the trials (`HandsOnSampler.history`): COMPLETE trials are what the loss and cost
  models learn from, FAIL ones enter the loss model at an imputed bad loss (and the cost
  model when they recorded a cost), PRUNED ones the cost model only (at the cost they
  recorded; Optuna's intermediate values carry no progress, so unlike kerneldsl's stopped
  trials they do not enter the loss model), RUNNING ones (other processes) are pending
  points;
* the phases: trial ``n`` has the phase kerneldsl's `Schedule` gives position ``n``
  (``n_startup_trials`` initial points, then tocks and ticks by ``tick_ratio``), so any
  number of processes agree without talking to each other;
* what a trial records (user attributes, shown by optuna-dashboard): ``kerneldsl:phase``,
  ``kerneldsl:iteration``, ``kerneldsl:how`` (how its point was found),
  ``kerneldsl:prediction`` (the models' loss and cost there) and ``kerneldsl:seconds``
  (fit and acquisition); the proposed parameters as the system attribute
  ``kerneldsl:params`` (so that other processes see a running trial as a pending point);
  with ``max_cost`` the Optuna constraint ``max_cost`` (cost - max_cost, feasible when
  <= 0), which ``study.best_trial`` and the dashboard honour.

The sampler keeps nothing that matters between trials in its process: a new process (or a
new sampler on ``optuna.load_study``) continues from the storage alone.
"""

from __future__ import annotations

import math
import random
import threading
import warnings
import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler, RandomSampler
from optuna.search_space import intersection_search_space
from optuna.study import Study, StudyDirection
from optuna.trial import FrozenTrial
from optuna.trial import TrialState as OptunaState

from ..compiler.errors import KernelError, KernelNameError
from ..compiler.lower import compile_ir
from ..loop.history import History, LossScale
from ..loop.options import AcquisitionOptions, ModelOptions, Schedule
from ..loop.proposals import TickTockProposer
from ..loop.proposer import Proposal, ProposalRequest, seed_for
from ..loop.stopping import CostEstimate, CostStopping
from ..loop.trial import Phase, Trial, TrialState
from ..model import DEFAULT_KERNEL, default_feature_chain
from ..space.parameters import Choice, ConfigError, Int, Parameter, Scalar, SpaceError
from ..space.sampling import balanced_sample
from ..space.space import Space
from ..space.transforms import Chain

__all__ = ["HandsOnSampler", "CostPruner", "OptunaSpace", "Outcomes", "PHASE_ATTR", "ITERATION_ATTR", "HOW_ATTR",
           "PREDICTION_ATTR", "SECONDS_ATTR", "PARAMS_ATTR", "ESTIMATED_COST_ATTR", "STOPPED_ATTR", "COST_CONSTRAINT"]

PHASE_ATTR = "kerneldsl:phase"
"""User attribute: the trial's phase, ``init``, ``tick`` or ``tock``."""
ITERATION_ATTR = "kerneldsl:iteration"
"""User attribute: 0 in the initial design, then the model-based iteration 1, 2, ..."""
HOW_ATTR = "kerneldsl:how"
"""User attribute: how the trial's point was found."""
PREDICTION_ATTR = "kerneldsl:prediction"
"""User attribute: the models' prediction at the point (loss, cost, log_cost, log_cost_sd, log_acquisition)."""
SECONDS_ATTR = "kerneldsl:seconds"
"""User attribute: seconds spent fitting the models and optimising the acquisition."""
PARAMS_ATTR = "kerneldsl:params"
"""System attribute: the parameters the sampler proposed (a running trial is a pending point before it suggests them)."""
ESTIMATED_COST_ATTR = "kerneldsl:estimated_cost"
"""System attribute: the final cost `CostPruner` estimated for a trial it stopped (what the cost model sees)."""
STOPPED_ATTR = "kerneldsl:stopped"
"""User attribute: why `CostPruner` stopped the trial."""
COST_CONSTRAINT = "max_cost"
"""The key of the Optuna constraint the sampler sets with ``max_cost``: ``cost - max_cost`` (feasible when <= 0)."""
FIXED_PARAMS = "fixed_params"
"""The system attribute where Optuna keeps the parameters given to ``study.enqueue_trial``."""


# --------------------------------------------------------------------------------------------- the search space
def _grid(distribution: BaseDistribution) -> tuple[float, float, int] | None:
    """``(low, step, positions - 1)`` of a numeric distribution on a grid other than the integers, else None."""
    if isinstance(distribution, FloatDistribution) and distribution.step is not None:
        return distribution.low, distribution.step, round((distribution.high - distribution.low) / distribution.step)
    if isinstance(distribution, IntDistribution) and distribution.step != 1:
        return distribution.low, distribution.step, (distribution.high - distribution.low) // distribution.step
    return None


def _parameter(name: str, distribution: BaseDistribution) -> Parameter:
    """The kerneldsl parameter of one Optuna distribution (a grid as an `Int` over its positions)."""
    grid = _grid(distribution)
    try:
        if grid is not None:
            return Int(name, 0, grid[2])
        if isinstance(distribution, FloatDistribution):
            return Scalar(name, distribution.low, distribution.high, log=distribution.log)
        if isinstance(distribution, IntDistribution):
            return Int(name, distribution.low, distribution.high, log=distribution.log)
        if isinstance(distribution, CategoricalDistribution):
            return Choice(name, list(distribution.choices))
    except SpaceError as err:
        raise SpaceError(f"HandsOnSampler: parameter {name!r} ({distribution}) cannot be modelled: {err}") from None
    raise TypeError(f"HandsOnSampler: parameter {name!r} has a distribution kerneldsl does not know: {distribution!r} "
                    "(FloatDistribution, IntDistribution and CategoricalDistribution are)")


def _distribution(parameter: Parameter) -> BaseDistribution:
    """The Optuna distribution a kerneldsl parameter stands for."""
    if isinstance(parameter, Choice):
        return CategoricalDistribution(list(parameter.choices))
    if isinstance(parameter, Int):
        return IntDistribution(int(parameter.lower), int(parameter.upper), log=parameter.log)
    return FloatDistribution(parameter.lower, parameter.upper, log=parameter.log)


@dataclass(frozen=True)
class OptunaSpace:
    """Optuna parameters as a kerneldsl `Space`, both ways.

    ``space`` is the kerneldsl space, ``distributions`` the Optuna distributions it models (the
    relative search space handed to Optuna), ``grids`` the parameters on a ``step`` grid (``name ->
    (low, step, positions - 1)``: the kerneldsl `Int` counts positions), ``left_out`` the study's
    parameters that have no feature, with the reason (a distribution with a single value, which
    Optuna fills in itself).
    """

    space: Space
    distributions: Mapping[str, BaseDistribution]
    grids: Mapping[str, tuple[float, float, int]] = field(default_factory=dict)
    left_out: Mapping[str, str] = field(default_factory=dict)
    given: bool = False
    """Whether ``space`` is the user's (``space=``) rather than built from the study's distributions."""

    @classmethod
    def from_distributions(cls, distributions: Mapping[str, BaseDistribution]) -> "OptunaSpace | None":
        """The space of ``distributions`` (in name order); None when none of them has more than one value."""
        kept = {name: d for name, d in sorted(distributions.items()) if not d.single()}
        left_out = {name: f"{d} has a single value, which Optuna fills in without a sampler"
                    for name, d in distributions.items() if d.single()}
        if not kept:
            return None
        space = Space([_parameter(name, d) for name, d in kept.items()])
        grids = {name: grid for name, d in kept.items() if (grid := _grid(d)) is not None}
        return cls(space, kept, grids, left_out)

    @classmethod
    def from_space(cls, space: Space) -> "OptunaSpace":
        """A kerneldsl space given whole (conditions included); its distributions are derived from it."""
        if not isinstance(space, Space):
            raise TypeError(f"HandsOnSampler: space must be a kerneldsl.Space, got {type(space).__name__}")
        return cls(space, {p.name: _distribution(p) for p in space.parameters}, given=True)

    def check_trial(self, trial: FrozenTrial) -> None:
        """For a given space: a ValueError when ``trial`` suggested one of its parameters differently."""
        if not self.given:
            return
        for name, distribution in self.distributions.items():
            used = trial.distributions.get(name)
            if used is not None and used != distribution:
                raise ValueError(f"HandsOnSampler: trial {trial.number} suggested {name!r} as {used}, but space= "
                                 f"declares it as {self.space[name]!r} (Optuna: {distribution}); make the objective "
                                 "suggest what the space declares (bounds, log, choices; no step)")

    def config_of(self, params: Mapping[str, Any]) -> dict[str, Any]:
        """The kerneldsl config of Optuna parameters (parameters outside the space left out)."""
        config = {}
        for name in self.space.names:
            if name in params:
                value = params[name]
                grid = self.grids.get(name)
                config[name] = value if grid is None else round((value - grid[0]) / grid[1])
        return config

    def params_of(self, config: Mapping[str, Any]) -> dict[str, Any]:
        """The Optuna parameters (external values) of a kerneldsl config."""
        params = {}
        for name, value in config.items():
            distribution, grid = self.distributions[name], self.grids.get(name)
            if grid is not None:
                value = min(grid[0] + value * grid[1], distribution.high)
            if isinstance(distribution, IntDistribution):
                value = int(value)
            elif isinstance(distribution, FloatDistribution):
                value = float(value)
            params[name] = value
        return params

    def describe_features(self, chain: Chain) -> str:
        """The features a kernel can name here, and the parameters without one: for error messages."""
        text = f"the features of this study's search space: {', '.join(chain.feature_names)}"
        if self.left_out:
            text += "; parameters without a feature: " + "; ".join(f"{n} ({why})" for n, why in self.left_out.items())
        if not self.given:
            text += ("; modelled are the parameters every finished trial has (Optuna's intersection search space): "
                     "for conditional parameters pass space=kd.Space([...]) with their conditions")
        return text


# --------------------------------------------------------------------------------------------- the outcomes
def _positive(value: Any) -> float | None:
    """``value`` as a float when it is a finite positive number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) and value > 0 else None


@dataclass(frozen=True)
class Outcomes:
    """How a study's trials read as kerneldsl's loss and cost.

    The loss is the first objective (negated when maximised). The cost, with a budget
    (``budgeted``), is the second objective of a two-objective study or else the user attribute
    ``cost_attr``; without one every finished trial costs 1 (the loss model alone matters).
    """

    directions: tuple[StudyDirection, ...]
    cost_attr: str = "cost"
    budgeted: bool = False

    @classmethod
    def of(cls, study: Study, cost_attr: str, budgeted: bool) -> "Outcomes":
        """The outcomes of ``study``; a ValueError for a study the sampler cannot model."""
        directions = tuple(study.directions)
        if len(directions) > 2 or (len(directions) == 2 and not budgeted):
            raise ValueError(f"HandsOnSampler models one loss (the first objective) and, with max_cost, one cost (the "
                             f"second objective, or the user attribute {cost_attr!r}); this study has "
                             f"{len(directions)} objectives" + ("" if budgeted else " and no max_cost was given"))
        if len(directions) == 2 and directions[1] is not StudyDirection.MINIMIZE:
            raise ValueError("HandsOnSampler: the second objective of a two-objective study is the cost, which is "
                             "minimised; create the study with directions=[..., 'minimize']")
        return cls(directions, cost_attr, budgeted)

    @property
    def cost_from_values(self) -> bool:
        return len(self.directions) == 2

    def loss(self, trial: FrozenTrial) -> float | None:
        """The loss of a COMPLETE trial (the first objective, minimised)."""
        if trial.values is None:
            return None
        value = float(trial.values[0])
        return -value if self.directions[0] is StudyDirection.MAXIMIZE else value

    def recorded_cost(self, trial: FrozenTrial, values: Sequence[float] | None = None) -> Any:
        """What the trial recorded as its cost (None if nothing); ``values`` are its values when it finishes
        (``after_trial`` sees the trial before they are stored)."""
        values = trial.values if values is None else values
        if self.cost_from_values and values is not None and len(values) == 2:
            return values[1]
        return trial.user_attrs.get(self.cost_attr)

    def cost(self, trial: FrozenTrial, values: Sequence[float] | None = None) -> float | None:
        """The trial's cost: finite and positive, else None; 1 without a budget."""
        if not self.budgeted:
            return 1.0
        return _positive(self.recorded_cost(trial, values))

    def stopped_cost(self, trial: FrozenTrial) -> float | None:
        """The cost of a PRUNED trial: the final cost `CostPruner` estimated when it stopped it, else the cost it
        recorded."""
        estimated = _positive(trial.system_attrs.get(ESTIMATED_COST_ATTR))
        return estimated if estimated is not None else self.cost(trial)

    def missing_cost(self, trial: FrozenTrial, values: Sequence[float] | None = None) -> str:
        """Why a COMPLETE trial has no usable cost: for error messages."""
        where = "its second objective" if self.cost_from_values else f"the user attribute {self.cost_attr!r}"
        recorded = self.recorded_cost(trial, values)
        found = "is missing" if recorded is None else f"is {recorded!r}, not a finite positive number"
        fix = "" if self.cost_from_values else f": call trial.set_user_attr({self.cost_attr!r}, cost) in the objective"
        return f"trial {trial.number} is COMPLETE but its cost ({where}) {found}{fix}"


# --------------------------------------------------------------------------------------------- the sampler
@dataclass
class _Prepared:
    """One search space ready for proposals: its mapping, feature chain, initial design and proposers by scale."""

    mapping: OptunaSpace
    chain: Chain
    design: torch.Tensor | None = None
    proposers: dict[bool, TickTockProposer] = field(default_factory=dict)


class _TrialAttrs:
    """Writes a trial's attributes into the study's storage from inside the sampler.

    A sampler is handed ``FrozenTrial`` objects, which have no setters, and Optuna offers no
    public way from a sampler to the storage; Optuna's own samplers (``GPSampler``'s relative
    parameters, ``NSGAIISampler``'s generation, the constraints of ``constraints_func``) write
    through ``study._storage`` by ``trial._trial_id``, and this class does the same. It is the one
    place this module touches Optuna's non-public names.
    """

    def __init__(self, study: Study, trial: FrozenTrial):
        self.storage, self.trial_id = study._storage, trial._trial_id

    def user(self, values: Mapping[str, Any]) -> None:
        for key, value in values.items():
            self.storage.set_trial_user_attr(self.trial_id, key, value)

    def system(self, key: str, value: Any) -> None:
        self.storage.set_trial_system_attr(self.trial_id, key, value)


class HandsOnSampler(BaseSampler):
    """An Optuna sampler whose model-based trials come from kerneldsl's tick-tock proposals.

    Args:
        loss_kernel: kernel-language source of the loss model (default ``matern52(all)``: every feature).
        cost_kernel: kernel-language source of the cost model (default ``matern52(all)``).
        feature_chain: the features the kernels name: a `kerneldsl.Chain` (over ``space``, or its space is
            taken as ``space``), or a callable building one from the `Space` the sampler builds from the study's
            distributions; default `kerneldsl.default_feature_chain`.
        max_cost: the budget: tick-tock on the cost each trial records (the user attribute ``cost_attr``, or
            the second objective of a two-objective study) with tocks lowering the loss within the budget and
            ticks lowering the cost at no worse loss; each finished trial gets the Optuna constraint
            ``max_cost`` (``cost - max_cost``). None: loss-only log noisy EI (every model-based trial a tock).
        cost_attr: the user attribute the objective records its cost in (``trial.set_user_attr("cost", s)``).
        n_startup_trials: trials ``0 .. n_startup_trials - 1`` are the initial design (random points of
            Optuna's ``RandomSampler``, or scrambled Sobol points balanced over the choices of ``space``).
        seed: seeds the initial design and every proposal (with the trial number); None: a random seed.
        space: a kerneldsl `Space` declaring the study's parameters (conditions included): every parameter of
            it is modelled, instead of the parameters every finished trial has. The objective must suggest each
            as the space declares it (`Scalar`: ``suggest_float``, `Int`: ``suggest_int``, `Choice`:
            ``suggest_categorical`` with the same choices; the same bounds and log; no step).
        tick_ratio: the share of model-based trials that are ticks (default 0.5 with ``max_cost``, 0 without).
        log_loss: model the log of the loss (True), the loss (False), or None: the log while every finished
            loss is positive and the loss is minimised.
        models: a `kerneldsl.ModelOptions` for the rest of the models (kernel groups and options, fit
            options, device, dtype); ``loss_kernel``, ``cost_kernel`` and ``feature_chain`` override its fields.
        acquisition: a `kerneldsl.AcquisitionOptions` (restarts, raw and MC samples, ...).
    """

    def __init__(self, loss_kernel: str | None = None, cost_kernel: str | None = None,
                 feature_chain: Chain | Callable[[Space], Chain] | None = None, max_cost: float | None = None,
                 cost_attr: str = "cost", n_startup_trials: int = 10, seed: int | None = None, *,
                 space: Space | None = None, tick_ratio: float | None = None, log_loss: bool | None = None,
                 models: ModelOptions | None = None, acquisition: AcquisitionOptions | None = None):
        if max_cost is not None and _positive(max_cost) is None:
            raise ValueError(f"HandsOnSampler: max_cost must be a finite positive number (or None), got {max_cost!r}")
        if not isinstance(cost_attr, str) or not cost_attr:
            raise ValueError(f"HandsOnSampler: cost_attr must be a non-empty str, got {cost_attr!r}")
        if tick_ratio is not None and max_cost is None and tick_ratio != 0:
            raise ValueError(f"HandsOnSampler: tick_ratio={tick_ratio!r} needs max_cost (ticks lower the cost)")
        if log_loss is not None and not isinstance(log_loss, bool):
            raise TypeError(f"HandsOnSampler: log_loss must be True, False or None, got {log_loss!r}")
        if seed is None:
            seed = random.SystemRandom().randrange(2**31 - 1)
        if isinstance(feature_chain, Chain):
            if space is not None and feature_chain.space is not space:
                raise ValueError("HandsOnSampler: feature_chain is built over another Space than space=")
            space = feature_chain.space
        elif feature_chain is not None and not callable(feature_chain):
            raise TypeError("HandsOnSampler: feature_chain must be a kerneldsl.Chain or a callable Space -> Chain, "
                            f"got {type(feature_chain).__name__}")
        self.max_cost, self.cost_attr, self.seed, self.log_loss = max_cost, cost_attr, seed, log_loss
        self.schedule = Schedule(n_init=n_startup_trials, seed=seed,
                                 tick_ratio=(0.5 if max_cost is not None else 0.0) if tick_ratio is None else tick_ratio)
        self.models = models if models is not None else ModelOptions()
        if not isinstance(self.models, ModelOptions):
            raise TypeError(f"HandsOnSampler: models must be a kerneldsl.ModelOptions, got {type(models).__name__}")
        self.models = replace(self.models, loss_kernel=loss_kernel or self.models.loss_kernel,
                              cost_kernel=cost_kernel or self.models.cost_kernel, feature_chain=None)
        self.acquisition = acquisition if acquisition is not None else AcquisitionOptions()
        if not isinstance(self.acquisition, AcquisitionOptions):
            raise TypeError("HandsOnSampler: acquisition must be a kerneldsl.AcquisitionOptions, "
                            f"got {type(acquisition).__name__}")
        self.feature_chain = feature_chain
        self.space = OptunaSpace.from_space(space) if space is not None else None
        self._lock = threading.RLock()
        self._prepared: _Prepared | None = None
        if self.space is not None:
            self._prepared = self._prepare(self.space)  # a kernel naming an unknown feature fails here

    # ------------------------------------------------------------------ pickling (Ray Tune copies searchers)
    def __getstate__(self) -> dict[str, Any]:
        """Everything but the lock and the prepared space (feature chain, models), rebuilt when next needed."""
        return {**self.__dict__, "_lock": None, "_prepared": None}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ the search space
    def _prepare(self, mapping: OptunaSpace) -> _Prepared:
        """The feature chain of ``mapping``'s space, with both kernels checked against its features."""
        if isinstance(self.feature_chain, Chain):
            chain = self.feature_chain
        elif self.feature_chain is not None:
            chain = self.feature_chain(mapping.space)
            if not isinstance(chain, Chain) or chain.space is not mapping.space:
                raise TypeError("HandsOnSampler: feature_chain(space) must return a kerneldsl.Chain over that space, "
                                f"got {chain!r}")
        else:
            chain = default_feature_chain(mapping.space)
        groups = self.models.kernel_groups
        every = {"all": list(chain.feature_names), **dict(groups or {})}
        for name, source in (("loss_kernel", self.models.loss_kernel), ("cost_kernel", self.models.cost_kernel)):
            try:
                compile_ir(source or DEFAULT_KERNEL, chain.feature_names, every if source is None else groups)
            except KernelNameError as err:
                listing = f"in HandsOnSampler's {name}; {mapping.describe_features(chain)}"
                hint = f"{err.hint}\n{listing}" if err.hint else listing
                raise KernelNameError(err.message, source=source, line=err.line, column=err.column,
                                      hint=hint) from None
        return _Prepared(mapping, chain)

    def _prepared_for(self, search_space: Mapping[str, BaseDistribution]) -> _Prepared | None:
        """The prepared space of ``search_space``, rebuilt only when it changed."""
        if self.space is not None:
            if self._prepared is None:
                self._prepared = self._prepare(self.space)
            return self._prepared
        prepared = self._prepared
        if prepared is None or dict(prepared.mapping.distributions) != {
                n: d for n, d in search_space.items() if not d.single()}:
            mapping = OptunaSpace.from_distributions(search_space)
            self._prepared = prepared = None if mapping is None else self._prepare(mapping)
        return prepared

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        """The parameters modelled jointly: those of ``space=``, else those every finished trial has (their
        kerneldsl space is built, and the kernels checked against its features, when they change)."""
        Outcomes.of(study, self.cost_attr, self.max_cost is not None)
        if self.space is not None:
            return dict(self.space.distributions)
        search_space = intersection_search_space(study.get_trials(deepcopy=False))
        with self._lock:
            prepared = self._prepared_for(search_space)
        return {} if prepared is None else dict(prepared.mapping.distributions)

    # ------------------------------------------------------------------ the trials
    def history(self, study: Study, exclude: int | None = None) -> History:
        """The study's trials as kerneldsl's proposals see them, over the space modelled now (trial
        ``exclude``, the one being sampled, left out). Trials whose parameters do not fit that space are
        left out; a COMPLETE trial without a cost is seen but teaches nothing (with a warning)."""
        with self._lock:
            prepared = self._prepared_for(self.infer_relative_search_space(study, None))
        if prepared is None:
            raise ValueError("HandsOnSampler.history: no parameter is modelled yet (no finished trial has one)")
        return self._history(study, prepared.mapping, exclude)

    def _history(self, study: Study, mapping: OptunaSpace, exclude: int | None) -> History:
        outcomes = Outcomes.of(study, self.cost_attr, self.max_cost is not None)
        trials, points = [], []
        for frozen in study.get_trials(deepcopy=False):
            if frozen.number == exclude or frozen.state is OptunaState.WAITING:
                continue
            if frozen.state.is_finished():
                mapping.check_trial(frozen)
            params = frozen.params
            if frozen.state is OptunaState.RUNNING:
                params = {**(frozen.system_attrs.get(PARAMS_ATTR) or {}), **params}
            try:
                config = mapping.config_of(params)
                point = mapping.space.to_search([config])[0]
            except ConfigError:
                continue  # another branch's parameters, a parameter not suggested yet, or other bounds
            trials.append(self._trial(frozen, config, outcomes))
            points.append(point)
        scale = self._scale(trials)
        return History(mapping.space, trials, self.max_cost or math.inf, scale, points)

    def _trial(self, frozen: FrozenTrial, config: dict[str, Any], outcomes: Outcomes) -> Trial:
        """A kerneldsl `Trial` of an Optuna trial (id: its number)."""
        phase = frozen.user_attrs.get(PHASE_ATTR)
        trial = Trial(id=frozen.number, config=config, phase=Phase(phase) if phase in ("tick", "tock") else Phase.INIT)
        if frozen.state is OptunaState.COMPLETE:
            trial.loss, trial.cost = outcomes.loss(frozen), outcomes.cost(frozen)
            if trial.cost is None:
                warnings.warn(f"HandsOnSampler: {outcomes.missing_cost(frozen)}; the models leave it out",
                              RuntimeWarning, stacklevel=4)
                trial.state = TrialState.LOST
            else:
                trial.state = TrialState.OK if math.isfinite(trial.loss) else TrialState.FAILED
        elif frozen.state is OptunaState.FAIL:
            trial.state, trial.cost = TrialState.FAILED, outcomes.cost(frozen)
        elif frozen.state is OptunaState.PRUNED:
            trial.state = TrialState.STOPPED
            trial.estimated_cost = outcomes.stopped_cost(frozen) if outcomes.budgeted else None
        return trial

    def _scale(self, trials: Sequence[Trial]) -> LossScale:
        """The loss model's scale: ``log_loss``, or (None) the log while every loss is positive."""
        losses = [(t.id, t.loss) for t in trials if t.state is TrialState.OK]
        if self.log_loss is None:
            return LossScale(log=all(loss > 0 for _, loss in losses))
        if self.log_loss:
            for number, loss in losses:
                if loss <= 0:
                    raise ValueError(f"HandsOnSampler(log_loss=True): trial {number} has loss {loss!r}, whose log is "
                                     "not defined; use log_loss=None or False")
        return LossScale(log=self.log_loss)

    # ------------------------------------------------------------------ sampling
    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        """The jointly modelled parameters of ``trial``: its phase's proposal (a point of the initial design,
        a tock or a tick), recorded on the trial; {} where Optuna's random sampling does it."""
        iteration, phase = self.schedule.slot(trial.number)
        attrs = _TrialAttrs(study, trial)
        fixed = trial.system_attrs.get(FIXED_PARAMS) or {}
        with self._lock:
            prepared = self._prepared_for(search_space) if search_space else None
            if prepared is None:
                how = ("random: no finished trial has a parameter yet" if phase is not Phase.INIT
                       else "random: initial design (Optuna's RandomSampler)")
                attrs.user({PHASE_ATTR: phase.value, ITERATION_ATTR: iteration, HOW_ATTR: how})
                return {}
            if fixed and set(prepared.mapping.distributions) <= set(fixed):
                return {}  # before_trial recorded it
            if phase is Phase.INIT:
                return self._initial(prepared, trial, attrs)
            proposal = self._propose(study, prepared, ProposalRequest(trial.number, iteration, phase))
        params = prepared.mapping.params_of(prepared.mapping.space.to_configs(proposal.x[None])[0])
        prediction = proposal.prediction
        if prediction is not None and self.max_cost is None:
            prediction = {k: v for k, v in prediction.items() if k in ("loss", "log_acquisition", "pending")}
        how = proposal.how + (" (params given to study.enqueue_trial win)" if fixed else "")
        attrs.user({PHASE_ATTR: proposal.phase.value, ITERATION_ATTR: iteration, HOW_ATTR: how,
                    PREDICTION_ATTR: prediction, SECONDS_ATTR: dict(proposal.timings)})
        attrs.system(PARAMS_ATTR, params)
        return params

    def _initial(self, prepared: _Prepared, trial: FrozenTrial, attrs: _TrialAttrs) -> dict[str, Any]:
        """A point of the initial design: Sobol points balanced over the choices of ``space=``, else {} (random)."""
        if not prepared.mapping.given:
            attrs.user({PHASE_ATTR: Phase.INIT.value, ITERATION_ATTR: 0,
                        HOW_ATTR: "random: initial design (Optuna's RandomSampler)"})
            return {}
        if prepared.design is None:
            prepared.design = balanced_sample(prepared.mapping.space, self.schedule.n_init, seed=self.seed)
        config = prepared.mapping.space.to_configs(prepared.design[trial.number][None])[0]
        params = prepared.mapping.params_of(config)
        attrs.user({PHASE_ATTR: Phase.INIT.value, ITERATION_ATTR: 0, HOW_ATTR: "sobol: initial design"})
        attrs.system(PARAMS_ATTR, params)
        return params

    def _propose(self, study: Study, prepared: _Prepared, request: ProposalRequest) -> Proposal:
        """kerneldsl's proposal for one trial over the study's other trials."""
        history = self._history(study, prepared.mapping, exclude=request.trial_id)
        proposer = prepared.proposers.get(history.scale.log)
        if proposer is None:
            models = replace(self.models, feature_chain=prepared.chain, log_loss=history.scale.log)
            proposer = prepared.proposers[history.scale.log] = TickTockProposer(
                prepared.mapping.space, models, self.acquisition, seed=self.seed)
        return proposer.propose(history, [request])[0]

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        """Records a trial whose parameters were given to ``study.enqueue_trial`` as such (phase ``init``)."""
        if trial.system_attrs.get(FIXED_PARAMS):
            _TrialAttrs(study, trial).user({PHASE_ATTR: Phase.INIT.value, ITERATION_ATTR: 0,
                                            HOW_ATTR: "given (study.enqueue_trial)"})

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        """A parameter outside the modelled ones: at random, seeded by the seed, the trial number and the name
        (so that processes sharing a seed do not draw the same values)."""
        seed = (seed_for(self.seed, trial.number) + zlib.crc32(param_name.encode())) % (2**31 - 1)
        return RandomSampler(seed=seed).sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study: Study, trial: FrozenTrial, state: OptunaState,
                    values: Sequence[float] | None) -> None:
        """With ``max_cost``: the trial's Optuna constraint ``max_cost`` (cost - max_cost), and a ValueError
        for a COMPLETE trial that recorded no cost (the trial is stored as it finished)."""
        if self.max_cost is None or state not in (OptunaState.COMPLETE, OptunaState.PRUNED):
            return
        outcomes = Outcomes.of(study, self.cost_attr, budgeted=True)
        cost = outcomes.cost(trial, values) if state is OptunaState.COMPLETE else outcomes.stopped_cost(trial)
        if cost is not None:
            _TrialAttrs(study, trial).system(f"constraints:{COST_CONSTRAINT}", cost - self.max_cost)
        elif state is OptunaState.COMPLETE:
            raise ValueError(f"HandsOnSampler(max_cost={self.max_cost!r}): {outcomes.missing_cost(trial, values)}")


class CostPruner(BasePruner):
    """An Optuna pruner that stops a trial whose final cost will overrun the budget (kerneldsl's `CostStopping`).

    The objective records, while it trains, its cost so far and its progress in (0, 1] as user
    attributes, then asks ``trial.should_prune()`` as usual::

        trial.set_user_attr("cost", seconds_so_far)
        trial.set_user_attr("progress", epoch / epochs)
        if trial.should_prune():
            raise optuna.TrialPruned()

    (user attributes rather than ``trial.report``, which stays the loss a ``pruner=`` of Optuna's
    judges). From a report of ``cost`` at ``progress`` the rule extrapolates the final cost, combines
    it with the cost model's prediction for the trial (``kerneldsl:prediction``, recorded by
    `HandsOnSampler`) and stops when the final cost exceeds ``max_cost * (1 + margin)`` with
    probability ``confidence`` (see `kerneldsl.CostStopping`). A stopped trial records the estimate
    (``kerneldsl:estimated_cost``, which `HandsOnSampler` gives the cost model, and a sentence in
    ``kerneldsl:stopped``). A report that cannot be right (a cost that is not a positive number, a
    progress outside (0, 1]) is ignored with a warning.

    Args:
        max_cost: the budget (as given to `HandsOnSampler`).
        stopping: the rule's margin, confidence and extrapolation spread.
        cost_attr, progress_attr: the user attributes the objective records.
        pruner: another pruner asked first (e.g. ``optuna.pruners.MedianPruner()`` on the reported loss).
    """

    def __init__(self, max_cost: float, stopping: CostStopping = CostStopping(), cost_attr: str = "cost",
                 progress_attr: str = "progress", pruner: BasePruner | None = None):
        if _positive(max_cost) is None:
            raise ValueError(f"CostPruner: max_cost must be a finite positive number, got {max_cost!r}")
        if not isinstance(stopping, CostStopping):
            raise TypeError(f"CostPruner: stopping must be a kerneldsl.CostStopping, got {type(stopping).__name__}")
        if pruner is not None and not isinstance(pruner, BasePruner):
            raise TypeError(f"CostPruner: pruner must be an optuna.pruners.BasePruner, got {type(pruner).__name__}")
        self.max_cost, self.stopping, self.pruner = float(max_cost), stopping, pruner
        self.cost_attr, self.progress_attr = cost_attr, progress_attr

    def estimate(self, trial: FrozenTrial) -> CostEstimate | None:
        """The final cost of ``trial`` estimated from its last report (None without a usable one)."""
        cost, progress = trial.user_attrs.get(self.cost_attr), trial.user_attrs.get(self.progress_attr)
        if cost is None or progress is None:
            return None
        if _positive(cost) is None or _positive(progress) is None or progress > 1:
            warnings.warn(f"CostPruner: trial {trial.number} reports {self.cost_attr}={cost!r} at "
                          f"{self.progress_attr}={progress!r} (a positive cost at a progress in (0, 1] is needed); "
                          "ignored", RuntimeWarning, stacklevel=3)
            return None
        prediction = trial.user_attrs.get(PREDICTION_ATTR) or {}
        prior = None
        if _positive(prediction.get("log_cost_sd")) is not None and prediction.get("log_cost") is not None:
            prior = CostEstimate(float(prediction["log_cost"]), float(prediction["log_cost_sd"]))
        return self.stopping.estimate(float(cost), float(progress), prior)

    def prune(self, study: Study, trial: FrozenTrial) -> bool:
        """Whether to stop ``trial``: ``pruner`` says so, or its final cost will overrun the budget."""
        if self.pruner is not None and self.pruner.prune(study, trial):
            return True
        estimate = self.estimate(trial)
        if estimate is None or not self.stopping.should_stop(estimate, self.max_cost):
            return False
        attrs = _TrialAttrs(study, trial)
        attrs.system(ESTIMATED_COST_ATTR, estimate.cost)
        attrs.user({STOPPED_ATTR: f"estimated final cost {estimate.cost:.4g} (log sd {estimate.log_sd:.2f}) "
                                  f"exceeds max_cost={self.max_cost:g} by more than {self.stopping.margin:.0%}"})
        return True
