"""A study's options as three frozen dataclasses, the journal header written from them, and keyword routing.

* `Schedule`: what the study runs (the initial design, how many trials, the tick share);
* `ModelOptions`: how the loss and cost models are built (kernels, features, fitting, the loss scale);
* `AcquisitionOptions`: how the acquisitions are optimised (restarts, raw and MC samples, tick give-way).

`Study`, `tick_tock` and `Study.load` take the same options as keywords (``n_init=...,
num_restarts=...``): `StudyOptions.of` routes each keyword to the dataclass that has a
field of its name (a keyword overrides the field of a dataclass passed whole) and names
an unknown keyword with the valid ones. `header` writes the settings that a journal keeps
and `settings_of` reads them back; `SETTINGS` is the one list of their keys.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from typing import Any

import torch

from ..model import DEFAULT_KERNEL
from .budget import Budget
from .history import LossScale
from .restarts import StartWeights
from .trial import Phase, phase_of

__all__ = ["Schedule", "ModelOptions", "AcquisitionOptions", "StudyOptions", "SETTINGS", "CHECKED_SETTINGS",
           "header", "settings_of", "check_count", "SMALL_MODEL_POINTS"]

SETTINGS = ("n_trials", "max_cost", "seed", "n_init", "initial_configs", "loss_kernel", "cost_kernel", "tick_ratio",
            "log_loss")
"""Study settings a journal's header records (after ``parameters``, the space's names), in this order."""
CHECKED_SETTINGS = ("parameters", "seed", "n_init", "initial_configs")
"""Header keys that decide what a journal's trials mean: a study resumes a journal only when they match (the
budget may move: each trial records the one it ran under)."""


def check_count(owner: str, name: str, value: Any, positive: bool = False) -> int:
    """``value`` when it is a (positive) non-negative integer, else a ValueError naming ``owner`` and ``name``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if positive else 0):
        raise ValueError(f"{owner}: {name} must be a {'positive' if positive else 'non-negative'} integer, got {value!r}")
    return value


def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


@dataclass(frozen=True)
class Schedule:
    """What a study runs: ``initial_configs`` (as given), then ``n_init`` scrambled Sobol points seeded by
    ``seed``, then model-based iterations, a share ``tick_ratio`` of them ticks (`phase_of`); ``n_trials``
    (optional) fixes how many trials the study has."""

    n_init: int = 10
    n_trials: int | None = None
    seed: int = 0
    initial_configs: Sequence[Mapping[str, Any]] = ()
    tick_ratio: float = 0.5

    def __post_init__(self):
        check_count("Schedule", "n_init", self.n_init)
        check_count("Schedule", "seed", self.seed)
        if self.n_trials is not None:
            check_count("Schedule", "n_trials", self.n_trials)
        if not _is_real(self.tick_ratio) or not 0.0 <= self.tick_ratio <= 1.0:
            raise ValueError(f"Schedule: tick_ratio must lie in [0, 1], got {self.tick_ratio!r}")
        configs = self.initial_configs if self.initial_configs is not None else ()
        if isinstance(configs, Mapping) or not all(isinstance(c, Mapping) for c in configs):
            raise TypeError(f"Schedule: initial_configs must be a list of config dicts, got {configs!r}")
        object.__setattr__(self, "initial_configs", tuple(dict(c) for c in configs))
        object.__setattr__(self, "tick_ratio", float(self.tick_ratio))

    @property
    def n_initial(self) -> int:
        """Trials of the initial design: the given configs and the Sobol points."""
        return len(self.initial_configs) + self.n_init

    def slot(self, position: int) -> tuple[int, Phase]:
        """``(iteration, phase)`` of the trial at ``position`` (trials counted without lost ones): iteration 0
        and `Phase.INIT` in the initial design, then model-based iteration ``k = position - n_initial + 1``."""
        if position < self.n_initial:
            return 0, Phase.INIT
        iteration = position - self.n_initial + 1
        return iteration, phase_of(iteration, self.tick_ratio)


@dataclass(frozen=True)
class ModelOptions:
    """How the two output models are built: one ``SingleTaskGP`` per output over the compiled
    ``loss_kernel`` / ``cost_kernel`` (default `DEFAULT_KERNEL`) on the features of ``feature_chain``
    (default: `kerneldsl.model.default_feature_chain`), with ``kernel_groups`` and ``kernel_options`` for
    `kerneldsl.build` and ``fit_options`` for the fit; the loss in log space unless ``log_loss=False``; on
    ``device`` in ``dtype``."""

    loss_kernel: str | None = None
    cost_kernel: str | None = None
    feature_chain: Any = None
    kernel_groups: Mapping[str, Sequence[str]] | None = None
    kernel_options: Mapping[str, Any] | None = None
    fit_options: Mapping[str, Any] | None = None
    log_loss: bool = True
    device: torch.device | str | None = None
    dtype: torch.dtype = torch.float64

    def __post_init__(self):
        for name in ("loss_kernel", "cost_kernel"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise TypeError(f"ModelOptions: {name} must be kernel-language source (a str) or None, "
                                f"got {type(value).__name__}")
        for name in ("kernel_groups", "kernel_options", "fit_options"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Mapping):
                raise TypeError(f"ModelOptions: {name} must be a mapping or None, got {type(value).__name__}")
        object.__setattr__(self, "log_loss", bool(self.log_loss))

    @property
    def kernels(self) -> dict[str, str]:
        """The kernel source of each output (``loss``, ``cost``), defaults filled in."""
        return {"loss": self.loss_kernel or DEFAULT_KERNEL, "cost": self.cost_kernel or DEFAULT_KERNEL}

    @property
    def loss_scale(self) -> LossScale:
        """The scale the loss model works on (log or plain)."""
        return LossScale(log=self.log_loss)

    @property
    def torch_device(self) -> torch.device:
        return torch.device(self.device) if self.device is not None else torch.device("cpu")


@dataclass(frozen=True)
class AcquisitionOptions:
    """How the acquisitions are optimised: ``num_restarts`` starts from the best of ``raw_samples`` points,
    ``mc_samples`` QMC samples, ``acq_options`` for botorch's optimisers, ``eta`` the temperature of the
    outcome constraints; a tick whose best expected relative cost reduction is below ``min_tick_gain`` runs
    as a tock (0: never). ``threads``: torch threads while a proposal is made (fits and acquisition);
    None picks them: one thread for models of up to `SMALL_MODEL_POINTS` training points (their many tiny
    operations lose more to thread hand-offs than they gain, and a busy neighbour on the machine multiplies
    that: a 20-trial study took 515 s instead of 37 s beside one busy process), torch's own setting above.
    The caller's thread count is restored after each proposal. ``analytic``: when no trial is pending and
    some finished trial is within budget, use the closed forms of tick and tock (log EI times the probability
    of feasibility, incumbent at its posterior mean; `kerneldsl.loop.acquisition.analytic_tock`) instead of
    Monte Carlo over joint samples with the reference points; with pending points it is always Monte Carlo.
    ``start_weights``: how the closed forms' restarts are drawn from the raw points (`StartWeights`, or its value
    as a string): by the acquisition's value (default), or by botorch's Boltzmann weights, which the Monte-Carlo
    forms always use (`kerneldsl.loop.restarts`)."""

    num_restarts: int = 8
    raw_samples: int = 256
    mc_samples: int = 128
    acq_options: Mapping[str, Any] = field(default_factory=dict)
    eta: float = 1e-3
    min_tick_gain: float = 1e-3
    threads: int | None = None
    analytic: bool = True
    start_weights: StartWeights = StartWeights.VALUE

    def __post_init__(self):
        if not isinstance(self.start_weights, StartWeights):
            valid = ", ".join(repr(w.value) for w in StartWeights)
            try:
                object.__setattr__(self, "start_weights", StartWeights(self.start_weights))
            except ValueError:
                raise ValueError(f"AcquisitionOptions: start_weights must be a kerneldsl.StartWeights or one of "
                                 f"{valid}, got {self.start_weights!r}") from None
        for name in ("num_restarts", "raw_samples", "mc_samples"):
            check_count("AcquisitionOptions", name, getattr(self, name), positive=True)
        if self.threads is not None:
            check_count("AcquisitionOptions", "threads", self.threads, positive=True)
        if not _is_real(self.min_tick_gain) or not self.min_tick_gain >= 0:
            raise ValueError(f"AcquisitionOptions: min_tick_gain must be a non-negative number (0: ticks never "
                             f"give way), got {self.min_tick_gain!r}")
        if self.acq_options is not None and not isinstance(self.acq_options, Mapping):
            raise TypeError(f"AcquisitionOptions: acq_options must be a mapping, got {type(self.acq_options).__name__}")
        object.__setattr__(self, "acq_options", dict(self.acq_options or {}))


SMALL_MODEL_POINTS = 1000
"""Models with at most this many training points are fitted and queried on one torch thread (``threads=None``)."""

_GROUPS = {"schedule": Schedule, "models": ModelOptions, "acquisition": AcquisitionOptions}


@dataclass(frozen=True)
class StudyOptions:
    """The three option groups of a study together."""

    schedule: Schedule = field(default_factory=Schedule)
    models: ModelOptions = field(default_factory=ModelOptions)
    acquisition: AcquisitionOptions = field(default_factory=AcquisitionOptions)

    @classmethod
    def of(cls, owner: str, schedule: Schedule | None = None, models: ModelOptions | None = None,
           acquisition: AcquisitionOptions | None = None, **options: Any) -> "StudyOptions":
        """The groups passed whole (or their defaults) with each keyword of ``options`` set on the group that has
        a field of its name; an unknown keyword is a TypeError naming it and listing the valid ones."""
        given = {"schedule": schedule, "models": models, "acquisition": acquisition}
        routed: dict[str, dict[str, Any]] = {name: {} for name in _GROUPS}
        owners = {f.name: name for name, kind in _GROUPS.items() for f in fields(kind)}
        for key, value in options.items():
            if key not in owners:
                raise TypeError(_unknown(owner, key, owners))
            routed[owners[key]][key] = value
        groups = {}
        for name, kind in _GROUPS.items():
            base = given[name]
            if base is not None and not isinstance(base, kind):
                raise TypeError(f"{owner}: {name} must be a kerneldsl.{kind.__name__}, got {type(base).__name__}")
            groups[name] = replace(base, **routed[name]) if base is not None else kind(**routed[name])
        return cls(**groups)


def _unknown(owner: str, key: str, valid: Mapping[str, str]) -> str:
    close = difflib.get_close_matches(key, list(valid), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    listed = "; ".join(f"{kind.__name__}: {', '.join(f.name for f in fields(kind))}" for kind in _GROUPS.values())
    return f"{owner}: unknown option {key!r}{hint}; the options are {listed}"


def header(parameters: Sequence[str], budget: Budget, schedule: Schedule, models: ModelOptions) -> dict[str, Any]:
    """The settings a journal's header records: the space's parameter names, then `SETTINGS`."""
    first = budget.first
    values = {"max_cost": first if math.isfinite(first) else "inf", "loss_kernel": models.kernels["loss"],
              "cost_kernel": models.kernels["cost"], "log_loss": models.log_loss,
              "initial_configs": [dict(c) for c in schedule.initial_configs]}
    return {"parameters": list(parameters),
            **{key: values[key] if key in values else getattr(schedule, key) for key in SETTINGS}}


def settings_of(journal_header: Mapping[str, Any]) -> dict[str, Any]:
    """The study keywords a journal's header records (headers of format 1 have fewer); default kernels are left
    out (the default kernel is built over the group ``all`` of every feature, which a given source is not)."""
    settings: dict[str, Any] = {}
    for key in SETTINGS:
        value = journal_header.get(key)
        if value is None or (key in ("loss_kernel", "cost_kernel") and value == DEFAULT_KERNEL):
            continue
        settings[key] = math.inf if key == "max_cost" and value == "inf" else value
    settings.setdefault("max_cost", journal_header.get("max_cost"))
    return settings
