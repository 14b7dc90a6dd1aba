"""Feature transforms: reshape search coordinates into the named features a kernel refers to.

A ``Chain`` starts from the space's search coordinates (named ``Space.coordinate_names``:
``log_<name>`` for log-scale parameters, ``<name>`` otherwise; a Choice coordinate is its
index). Each transform reads named columns (coordinates or earlier outputs) and emits
new named features; the chain's output is every transform's output, in order. Every
transform also maps its input bounds to output bounds, so the chain can scale each
feature to ``[0, 1]`` from the space's bounds alone (independent of the data).

The chain is a botorch ``InputTransform``: it canonicalises inactive parameters to
their defaults, runs on ``[..., d]`` batches on any device, and is differentiable.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from botorch.models.transforms.input import InputTransform
from torch import Tensor

from .parameters import Choice, SpaceError
from .space import Space

Interval = tuple[float, float]
Columns = Mapping[str, Tensor]
Activity = Mapping[str, Tensor]


@dataclass(frozen=True)
class Origin:
    """How one output of a transform is made: a readable formula and the columns it reads."""

    formula: str
    inputs: tuple[str, ...]


@dataclass(frozen=True)
class FeatureOrigin:
    """Where a feature of a ``Chain`` comes from (``Chain.origins``)."""

    feature: str
    transform: str
    """The class name of the transform that makes it (``Log``, ``OneHot``, ...)."""
    formula: str
    """How it is computed from its inputs, e.g. ``log(epochs)``, ``optimizer == 'sgd'``, ``log_a + log_b``."""
    parameters: tuple[str, ...]
    """The search-space parameters it depends on, in space order."""


@dataclass(frozen=True)
class Step:
    """A transform bound to a chain: its output names and bounds and how to compute them."""

    transform: FeatureTransform
    feature_names: tuple[str, ...]
    bounds: tuple[Interval, ...]
    compute: Callable[[Columns, Activity], list[Tensor]]
    same_as: tuple[str | None, ...] = ()  # per output: the input column it merely copies, if any
    origins: tuple[Origin, ...] = ()  # per output: how it is made (empty: unknown, e.g. a user's transform)


class ChainContext:
    """What a transform may read while binding: the space and every named column with its bounds."""

    def __init__(self, space: Space) -> None:
        self.space = space
        self.bounds: dict[str, Interval] = {
            name: (float(lo), float(hi)) for name, (lo, hi) in zip(space.coordinate_names, space.bounds.T.tolist())
        }
        self.choice_columns = {p.coordinate_name for p in space if isinstance(p, Choice)}

    def require(self, name: str, transform: FeatureTransform, numeric: bool = True) -> Interval:
        """Bounds of column ``name``; a clear error if it does not exist (or is a choice index where numbers are needed)."""
        if name not in self.bounds:
            hint = ""
            if name in self.space and self.space[name].coordinate_name != name:
                hint = f" (parameter {name!r} is searched in log space: its coordinate is {self.space[name].coordinate_name!r})"
            raise SpaceError(f"{transform!r}: no feature or coordinate named {name!r}{hint}; available: {list(self.bounds)}")
        if numeric and name in self.choice_columns:
            raise SpaceError(f"{transform!r}: {name!r} is a Choice index; use OneHot({name!r}) to turn it into features")
        return self.bounds[name]


def _names(values: Iterable[str], what: str, transform_name: str) -> tuple[str, ...]:
    out = tuple(values)
    for v in out:
        if not isinstance(v, str) or not v:
            raise SpaceError(f"{transform_name}: {what} must be non-empty strings, got {v!r}")
    if len(set(out)) != len(out):
        raise SpaceError(f"{transform_name}: {what} {list(out)} repeat a name")
    return out


def _out_names(out: str | Sequence[str] | None, default: Sequence[str], transform_name: str) -> tuple[str, ...]:
    if out is None:
        return tuple(default)
    names = _names([out] if isinstance(out, str) else out, "output names", transform_name)
    if len(names) != len(default):
        raise SpaceError(f"{transform_name}: {len(default)} inputs but {len(names)} output names {list(names)}")
    return names


class FeatureTransform(ABC):
    """One step of a ``Chain``: reads named columns, emits named features with bounds."""

    @abstractmethod
    def bind(self, context: ChainContext) -> Step:
        """Check the inputs against ``context`` and return the bound ``Step``."""

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


class Log(FeatureTransform):
    """``log_<name>`` = natural log of a quantity.

    ``name`` may be a parameter searched in log space (its coordinate already is the log:
    the feature is a copy) or any positive feature/coordinate.
    """

    def __init__(self, *names: str, out: str | Sequence[str] | None = None) -> None:
        self.names = _names(names, "names", "Log")
        if not self.names:
            raise SpaceError("Log needs at least one name")
        self.out = _out_names(out, [f"log_{n}" for n in self.names], "Log")

    def bind(self, context: ChainContext) -> Step:
        sources, bounds, copies = [], [], []
        for name in self.names:
            param = context.space[name] if name in context.space else None
            if name not in context.bounds and param is not None and param.coordinate_name in context.bounds:
                coord = param.coordinate_name  # already natural log of the value
                sources.append((coord, False))
                bounds.append(context.require(coord, self))
                copies.append(coord)
                continue
            lo, hi = context.require(name, self)
            if lo <= 0:
                raise SpaceError(f"{self!r}: {name!r} can be as low as {lo!r}; its log needs positive values")
            sources.append((name, True))
            bounds.append((math.log(lo), math.log(hi)))
            copies.append(None)

        def compute(columns: Columns, active: Activity) -> list[Tensor]:
            return [columns[n].log() if take_log else columns[n] for n, take_log in sources]

        origins = tuple(Origin(f"log({name})", (column,)) for name, (column, _) in zip(self.names, sources))
        return Step(self, self.out, tuple(bounds), compute, tuple(copies), origins)


class PassThrough(FeatureTransform):
    """Copy columns unchanged into the output (optionally renamed)."""

    def __init__(self, *names: str, out: str | Sequence[str] | None = None) -> None:
        self.names = _names(names, "names", "PassThrough")
        if not self.names:
            raise SpaceError("PassThrough needs at least one name")
        self.out = _out_names(out, self.names, "PassThrough")

    def bind(self, context: ChainContext) -> Step:
        bounds = tuple(context.require(n, self, numeric=False) for n in self.names)

        def compute(columns: Columns, active: Activity) -> list[Tensor]:
            return [columns[n] for n in self.names]

        return Step(self, self.out, bounds, compute, self.names, tuple(Origin(n, (n,)) for n in self.names))


class _Combine(FeatureTransform):
    """One output from several numeric inputs."""

    symbol = "?"
    min_inputs = 2

    def __init__(self, out: str, *inputs: str) -> None:
        name = type(self).__name__
        self.out = _names([out], "output name", name)[0]
        self.inputs = _names(inputs, "inputs", name)
        if len(self.inputs) < self.min_inputs:
            raise SpaceError(f"{name}({out!r}, ...) needs at least {self.min_inputs} inputs, got {list(self.inputs)}")

    def formula(self) -> str:
        """The output as an expression of the inputs, e.g. ``log_a + log_b``."""
        return f" {self.symbol} ".join(self.inputs)

    @abstractmethod
    def _bounds(self, bounds: list[Interval]) -> Interval: ...

    @abstractmethod
    def _apply(self, values: list[Tensor]) -> Tensor: ...

    def bind(self, context: ChainContext) -> Step:
        bounds = self._bounds([context.require(n, self) for n in self.inputs])

        def compute(columns: Columns, active: Activity) -> list[Tensor]:
            return [self._apply([columns[n] for n in self.inputs])]

        return Step(self, (self.out,), (bounds,), compute, (None,), (Origin(self.formula(), self.inputs),))


class Add(_Combine):
    """``out = a + b + ...`` (a product of quantities when the inputs are logs)."""

    symbol = "+"

    def _bounds(self, bounds: list[Interval]) -> Interval:
        return sum(lo for lo, _ in bounds), sum(hi for _, hi in bounds)

    def _apply(self, values: list[Tensor]) -> Tensor:
        return torch.stack(values, -1).sum(-1)


class Subtract(_Combine):
    """``out = a - b`` (a ratio of quantities when the inputs are logs)."""

    symbol = "-"

    def __init__(self, out: str, a: str, b: str) -> None:
        super().__init__(out, a, b)

    def _bounds(self, bounds: list[Interval]) -> Interval:
        (alo, ahi), (blo, bhi) = bounds
        return alo - bhi, ahi - blo

    def _apply(self, values: list[Tensor]) -> Tensor:
        return values[0] - values[1]


class Multiply(_Combine):
    """``out = a * b * ...`` of plain (linear-scale) features."""

    symbol = "*"

    def _bounds(self, bounds: list[Interval]) -> Interval:
        lo, hi = bounds[0]
        for blo, bhi in bounds[1:]:
            corners = (lo * blo, lo * bhi, hi * blo, hi * bhi)
            lo, hi = min(corners), max(corners)
        return lo, hi

    def _apply(self, values: list[Tensor]) -> Tensor:
        return torch.stack(values, -1).prod(-1)


class Mean(_Combine):
    """``out = mean(a, b, ...)`` (the log of the geometric mean when the inputs are logs)."""

    def formula(self) -> str:
        return f"mean({', '.join(self.inputs)})"

    def _bounds(self, bounds: list[Interval]) -> Interval:
        n = len(bounds)
        return sum(lo for lo, _ in bounds) / n, sum(hi for _, hi in bounds) / n

    def _apply(self, values: list[Tensor]) -> Tensor:
        return torch.stack(values, -1).mean(-1)


class RelativeToMean(FeatureTransform):
    """Append the mean of several features, then each feature minus that mean.

    On log features this is the log geometric mean and each log ratio to it. Default
    output names: ``rel_<input>`` with a leading ``log_`` of the input dropped.
    """

    def __init__(self, inputs: Sequence[str], mean: str, out: Sequence[str] | None = None) -> None:
        if isinstance(inputs, str):
            raise SpaceError(f"RelativeToMean takes a list of inputs, got the string {inputs!r}")
        self.inputs = _names(inputs, "inputs", "RelativeToMean")
        if len(self.inputs) < 2:
            raise SpaceError(f"RelativeToMean needs at least two inputs, got {list(self.inputs)}")
        self.mean = _names([mean], "mean name", "RelativeToMean")[0]
        default = [f"rel_{n[4:] if n.startswith('log_') else n}" for n in self.inputs]
        self.out = _out_names(out, default, "RelativeToMean")

    def bind(self, context: ChainContext) -> Step:
        bounds = [context.require(n, self) for n in self.inputs]
        n = len(bounds)
        lows, highs = [lo for lo, _ in bounds], [hi for _, hi in bounds]
        mean_bounds = (sum(lows) / n, sum(highs) / n)
        rel_bounds = [
            ((1 - 1 / n) * lo - (sum(highs) - hi) / n, (1 - 1 / n) * hi - (sum(lows) - lo) / n) for lo, hi in bounds
        ]

        def compute(columns: Columns, active: Activity) -> list[Tensor]:
            values = torch.stack([columns[c] for c in self.inputs], -1)
            mean = values.mean(-1, keepdim=True)
            return [mean.squeeze(-1), *(values - mean).unbind(-1)]

        names = (self.mean, *self.out)
        origins = (Origin(f"mean({', '.join(self.inputs)})", self.inputs),
                   *(Origin(f"{n} - {self.mean}", self.inputs) for n in self.inputs))
        return Step(self, names, (mean_bounds, *rel_bounds), compute, (None,) * len(names), origins)


def _label(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value).lower()
    return str(value)


class OneHot(FeatureTransform):
    """One feature ``<name>_<choice>`` per choice of each Choice parameter; all zeros while inactive.

    Between integer indices (continuous relaxation during acquisition optimisation) the
    features interpolate linearly between neighbouring choices.
    """

    def __init__(self, *names: str, sep: str = "_") -> None:
        self.names = _names(names, "names", "OneHot")
        if not self.names:
            raise SpaceError("OneHot needs at least one Choice parameter name")
        self.sep = sep

    def bind(self, context: ChainContext) -> Step:
        params = []
        for name in self.names:
            if name not in context.space or not isinstance(context.space[name], Choice):
                choices = [p.name for p in context.space if isinstance(p, Choice)]
                raise SpaceError(f"{self!r}: {name!r} is not a Choice parameter; Choice parameters: {choices}")
            params.append(context.space[name])
        names = tuple(f"{p.name}{self.sep}{_label(v)}" for p in params for v in p.choices)

        def compute(columns: Columns, active: Activity) -> list[Tensor]:
            out = []
            for p in params:
                x = columns[p.coordinate_name].unsqueeze(-1)
                levels = torch.arange(len(p.choices), dtype=x.dtype, device=x.device)
                hot = torch.clamp(1 - (x - levels).abs(), min=0)
                on = active.get(p.name)
                if on is not None:
                    hot = hot * on.unsqueeze(-1).to(hot)
                out.extend(hot.unbind(-1))
            return out

        origins = tuple(Origin(f"{p.name} == {v!r}", (p.coordinate_name,)) for p in params for v in p.choices)
        return Step(self, names, ((0.0, 1.0),) * len(names), compute, (None,) * len(names), origins)


class Chain(InputTransform):
    """Composes feature transforms over a space; a botorch input transform from search points to features.

    ``normalize=True`` scales every feature to ``[0, 1]`` using bounds propagated from the
    space's bounds (matching the kernel priors, which assume inputs on about unit scale).
    """

    def __init__(
        self,
        space: Space,
        transforms: Sequence[FeatureTransform],
        normalize: bool = True,
        transform_on_train: bool = True,
        transform_on_eval: bool = True,
        transform_on_fantasize: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(space, Space):
            raise SpaceError(f"Chain needs a Space as its first argument, got {space!r}")
        self.space = space
        self.transforms = tuple(transforms)
        self.normalize = normalize
        self.transform_on_train = transform_on_train
        self.transform_on_eval = transform_on_eval
        self.transform_on_fantasize = transform_on_fantasize
        context = ChainContext(space)
        steps: list[Step] = []
        produced: dict[str, FeatureTransform] = {}
        for t in self.transforms:
            if not isinstance(t, FeatureTransform):
                raise SpaceError(f"Chain entries must be feature transforms (Log, Add, OneHot, ...), got {t!r}")
            step = t.bind(context)
            for name, bounds, copy in zip(step.feature_names, step.bounds, step.same_as or (None,) * len(step.bounds)):
                if name in produced:
                    raise SpaceError(f"{t!r}: feature {name!r} is already produced by {produced[name]!r}")
                if name in context.bounds and copy != name:
                    raise SpaceError(f"{t!r}: output {name!r} would shadow the existing column {name!r}; rename it")
                if not all(math.isfinite(b) for b in bounds):
                    raise SpaceError(f"{t!r}: feature {name!r} has unbounded range {bounds}")
                produced[name] = t
                context.bounds[name] = bounds
            steps.append(step)
        self.steps: tuple[Step, ...] = tuple(steps)
        if not produced:
            raise SpaceError("a Chain needs at least one transform producing features")
        lower = torch.tensor([lo for s in steps for lo, _ in s.bounds], dtype=torch.float64)
        upper = torch.tensor([hi for s in steps for _, hi in s.bounds], dtype=torch.float64)
        if normalize:
            flat = [(n, b) for s in steps for n, b in zip(s.feature_names, s.bounds) if not b[0] < b[1]]
            if flat:
                raise SpaceError(f"cannot normalise constant features {flat}; pass normalize=False or drop them")
        self.register_buffer("feature_lower", lower)
        self.register_buffer("feature_upper", upper)
        self.register_buffer("search_defaults", space.defaults)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Output feature names, in column order: the names kernel sources refer to."""
        return tuple(n for s in self.steps for n in s.feature_names)

    @property
    def feature_bounds(self) -> Tensor:
        """``[2, m]`` bounds of the features before normalisation."""
        return torch.stack([self.feature_lower, self.feature_upper])

    def origins(self) -> list[FeatureOrigin]:
        """Where every feature comes from, in column order: its transform, formula and search parameters."""
        parameters: dict[str, set[int]] = {name: {i} for i, name in enumerate(self.space.coordinate_names)}
        out = []
        for step in self.steps:
            origins = step.origins or (Origin(repr(step.transform), ()),) * len(step.feature_names)
            for name, origin in zip(step.feature_names, origins):
                used = set().union(*(parameters.get(column, set()) for column in origin.inputs))
                parameters[name] = used
                out.append(FeatureOrigin(name, type(step.transform).__name__, origin.formula,
                                         tuple(self.space.parameters[i].name for i in sorted(used))))
        return out

    def describe(self) -> str:
        """A table of features, their (pre-normalisation) bounds and the transform producing each."""
        rows = [
            f"{n:<34} [{lo:10.4g}, {hi:10.4g}]  {type(s.transform).__name__}"
            for s in self.steps
            for n, (lo, hi) in zip(s.feature_names, s.bounds)
        ]
        return "\n".join(rows)

    def transform(self, X: Tensor) -> Tensor:
        """Search points ``[..., d]`` -> features ``[..., m]``."""
        X = self.space.check_width(X)
        activity: dict[str, Tensor] = {}
        if self.space.conditional:
            active = self.space.active_mask(X)
            X = torch.where(active, X, self.search_defaults.to(X))
            activity = {p.name: active[..., i] for i, p in enumerate(self.space.parameters) if p.condition is not None}
        columns: dict[str, Tensor] = dict(zip(self.space.coordinate_names, X.unbind(-1)))
        outputs: list[Tensor] = []
        for step in self.steps:
            values = step.compute(columns, activity)
            columns.update(zip(step.feature_names, values))
            outputs.extend(values)
        F = torch.stack(outputs, dim=-1)
        if self.normalize:
            lower = self.feature_lower.to(F)
            F = (F - lower) / (self.feature_upper.to(F) - lower)
        return F

    def equals(self, other: InputTransform) -> bool:
        return (
            super().equals(other)
            and self.space is other.space
            and self.feature_names == other.feature_names
            and self.normalize == other.normalize
        )
