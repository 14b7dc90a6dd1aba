"""A search space: ordered parameters with conditions, linear constraints and conversions.

Users speak in configs (plain dicts, inactive parameters absent); botorch speaks in
search tensors ``[n, d]`` with one coordinate per parameter (see ``parameters``).
``Space`` converts both ways, rounds, reports which parameters are active, and hands
botorch its bounds, inequality constraints and discrete dimensions.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from .constraints import LinearConstraint
from .parameters import Choice, ConfigError, Int, Parameter, SpaceError
from .rounding import DiscreteLayout, RoundingMethod, SpaceRounding, round_search
from .sampling import sample

__all__ = ["Space", "LinearConstraint"]

_MAX_PROBE_PRODUCT = 256
_RANDOM_PROBES = 16


class _NeedKey(Exception):
    """Internal: a condition read a parameter outside the set decoded so far."""

    def __init__(self, name: str | None) -> None:
        super().__init__(name)
        self.name = name


class _ConditionView(Mapping):
    """The read-only config a condition sees: the active values of earlier parameters."""

    def __init__(self, parameters: Sequence[Parameter], positions: Mapping[str, int], owner: int,
                 values: Mapping[str, Any], known: set[str], reads: set[str] | None):
        self._parameters, self._positions, self._owner = parameters, positions, owner
        self._values, self._known, self._reads = values, known, reads

    def __getitem__(self, key: Any) -> Any:
        if self._reads is not None and isinstance(key, str):
            self._reads.add(key)
        if key in self._values:
            return self._values[key]
        owner = self._parameters[self._owner].name
        index = self._positions.get(key) if isinstance(key, str) else None
        if index is None:
            earlier = [p.name for p in self._parameters[: self._owner]]
            raise SpaceError(
                f"condition of parameter {owner!r} reads unknown name {key!r}; parameters declared before it: {earlier}"
            )
        if index >= self._owner:
            where = "is the parameter itself" if index == self._owner else "is declared after it"
            raise SpaceError(
                f"condition of parameter {owner!r} reads {key!r}, which {where}; "
                "a condition may only depend on parameters declared before it"
            )
        if key not in self._known:
            raise _NeedKey(key)
        raise KeyError(key)  # an earlier parameter that is inactive here

    def __iter__(self) -> Iterator[str]:
        if any(p.name not in self._known for p in self._parameters[: self._owner]):
            raise _NeedKey(None)
        return iter(self._values)

    def __len__(self) -> int:
        return sum(1 for _ in self)


def _unique_rows(keys: Tensor) -> tuple[Tensor, Tensor]:
    """Distinct rows of ``keys`` ``[n, k]`` and each row's index among them.

    Column by column with 1-D ``torch.unique`` (much faster than ``unique(dim=0)``),
    compressing the combined code after each column so it never overflows.
    """
    n = keys.shape[0]
    code = torch.zeros(n, dtype=torch.long, device=keys.device)
    for j in range(keys.shape[1]):
        values, column = torch.unique(keys[:, j], return_inverse=True)
        code = code * len(values) + column
        _, code = torch.unique(code, return_inverse=True)
    count = int(code.max()) + 1 if n else 0
    first = torch.full((count,), n, dtype=torch.long, device=keys.device)
    first = first.scatter_reduce(0, code, torch.arange(n, device=keys.device), reduce="amin")
    return keys[first], code


class Space:
    """Ordered parameters (``Scalar``, ``Int``, ``Choice``) plus linear constraints on search coordinates."""

    def __init__(self, parameters: Iterable[Parameter], constraints: Iterable[LinearConstraint] = ()) -> None:
        self.parameters: tuple[Parameter, ...] = tuple(parameters)
        if not self.parameters:
            raise SpaceError("a Space needs at least one parameter")
        self._index: dict[str, int] = {}
        self._coordinate_index: dict[str, int] = {}
        for i, p in enumerate(self.parameters):
            if not isinstance(p, Parameter):
                raise SpaceError(f"Space entry {i} is {p!r}, not a Scalar, Int or Choice")
            if p.name in self._index:
                raise SpaceError(f"parameter name {p.name!r} is declared twice")
            self._index[p.name] = i
        for i, p in enumerate(self.parameters):
            coord = p.coordinate_name
            clash = self._coordinate_index.get(coord, self._index.get(coord) if coord != p.name else None)
            if clash is not None:
                raise SpaceError(
                    f"search coordinate {coord!r} of parameter {p.name!r} clashes with parameter "
                    f"{self.parameters[clash].name!r}; rename one of them"
                )
            self._coordinate_index[coord] = i
        self.constraints: tuple[LinearConstraint, ...] = tuple(constraints)
        for c in self.constraints:
            self._check_constraint(c)
        # parameters whose values decide activity; grows if a condition turns out to read more
        self._condition_inputs: set[str] = set()
        self.discrete_layout: DiscreteLayout = self._discrete_layout()
        self._conditional = any(getattr(p, "condition", None) is not None for p in self.parameters)
        if self._conditional:
            self._probe_conditions()

    @property
    def conditional(self) -> bool:
        """Whether any parameter has a condition (otherwise every parameter is always active)."""
        return self._conditional

    # ----------------------------------------------------------------- description
    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names, in column order."""
        return tuple(p.name for p in self.parameters)

    @property
    def coordinate_names(self) -> tuple[str, ...]:
        """Names of the search coordinates, in column order (``log_<name>`` for log-scale parameters)."""
        return tuple(p.coordinate_name for p in self.parameters)

    @property
    def dim(self) -> int:
        """Number of search coordinates (one per parameter)."""
        return len(self.parameters)

    def __len__(self) -> int:
        return len(self.parameters)

    def __iter__(self) -> Iterator[Parameter]:
        return iter(self.parameters)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __getitem__(self, name: str) -> Parameter:
        try:
            return self.parameters[self._index[name]]
        except KeyError:
            raise SpaceError(f"no parameter named {name!r}; parameters: {list(self.names)}") from None

    def index(self, name: str) -> int:
        """Column of a parameter, by parameter name or coordinate name."""
        if name in self._index:
            return self._index[name]
        if name in self._coordinate_index:
            return self._coordinate_index[name]
        raise SpaceError(f"no parameter or coordinate named {name!r}; coordinates: {list(self.coordinate_names)}")

    def __repr__(self) -> str:
        return f"Space({list(self.parameters)!r}, constraints={list(self.constraints)!r})"

    @property
    def bounds(self) -> Tensor:
        """``[2, d]`` float64 tensor of search bounds, as botorch's optimisers take it."""
        return torch.tensor([p.search_bounds for p in self.parameters], dtype=torch.float64).T.contiguous()

    @property
    def defaults(self) -> Tensor:
        """``[d]`` float64 tensor: the search value of every parameter while inactive."""
        return torch.tensor([p.default_search for p in self.parameters], dtype=torch.float64)

    def _discrete_layout(self) -> DiscreteLayout:
        """Which coordinates ``round`` touches (kept as ``self.discrete_layout``)."""
        ints = [(i, p) for i, p in enumerate(self.parameters) if isinstance(p, Int)]
        linear = [(i, p) for i, p in ints if not p.log]
        logs = [(i, p) for i, p in ints if p.log]
        choices = [(i, p) for i, p in enumerate(self.parameters) if isinstance(p, Choice)]
        return DiscreteLayout(
            int_linear=tuple(i for i, _ in linear),
            int_linear_lower=tuple(float(p.lower) for _, p in linear),
            int_linear_upper=tuple(float(p.upper) for _, p in linear),
            int_log=tuple(i for i, _ in logs),
            int_log_lower=tuple(float(p.lower) for _, p in logs),
            int_log_upper=tuple(float(p.upper) for _, p in logs),
            choices=tuple(i for i, _ in choices),
            choice_last=tuple(float(len(p.choices) - 1) for _, p in choices),
        )

    def discrete_dims(self) -> dict[int, list[float]]:
        """Int coordinates and their valid search values (``discrete_dims`` of ``optimize_acqf_mixed_alternating``)."""
        out = {}
        for i, p in enumerate(self.parameters):
            if isinstance(p, Int):
                values = range(int(p.lower), int(p.upper) + 1)
                out[i] = [math.log(v) if p.log else float(v) for v in values]
        return out

    def cat_dims(self) -> dict[int, list[float]]:
        """Choice coordinates and their indices (``cat_dims`` of ``optimize_acqf_mixed_alternating``)."""
        return {i: [float(k) for k in range(len(p.choices))] for i, p in enumerate(self.parameters) if isinstance(p, Choice)}

    # ----------------------------------------------------------------- constraints
    def _check_constraint(self, constraint: Any) -> None:
        if not isinstance(constraint, LinearConstraint):
            raise SpaceError(f"constraints must be LinearConstraint objects, got {constraint!r}")
        for name in constraint.coefficients:
            if name not in self._coordinate_index:
                hint = ""
                if name in self._index:
                    hint = f" ({name!r} is searched in log space; its coordinate is {self[name].coordinate_name!r})"
                raise SpaceError(
                    f"constraint {constraint}: {name!r} is not a search coordinate{hint}; "
                    f"coordinates: {list(self.coordinate_names)}"
                )
            if isinstance(self.parameters[self._coordinate_index[name]], Choice):
                raise SpaceError(f"constraint {constraint}: {name!r} is a Choice; constraints apply to Scalar and Int coordinates")

    def inequality_constraints(
        self, dtype: torch.dtype = torch.float64, device: torch.device | str | None = None
    ) -> list[tuple[Tensor, Tensor, float]]:
        """The constraints in botorch's ``inequality_constraints`` form (``sum(coef * x) >= rhs``)."""
        out = []
        for c in self.constraints:
            idx = torch.tensor([self._coordinate_index[n] for n in c.coefficients], dtype=torch.long, device=device)
            coef = torch.tensor([-float(v) for v in c.coefficients.values()], dtype=dtype, device=device)
            out.append((idx, coef, -float(c.bound)))
        return out

    def feasible(self, X: Tensor, tol: float = 1e-8) -> Tensor:
        """Boolean ``[...]``: which rows of ``X`` (``[..., d]``) satisfy every linear constraint."""
        X = self.check_width(X)
        ok = torch.ones(X.shape[:-1], dtype=torch.bool, device=X.device)
        for c in self.constraints:
            ok &= self._satisfies(c, X, tol)
        return ok

    def violated_constraints(self, x: Tensor, tol: float = 1e-8) -> list[LinearConstraint]:
        """The constraints that one search point ``x`` (``[d]``) violates."""
        x = self.check_width(x)
        return [c for c in self.constraints if not bool(self._satisfies(c, x, tol).all())]

    def _satisfies(self, c: LinearConstraint, X: Tensor, tol: float) -> Tensor:
        lhs = sum(float(v) * X[..., self._coordinate_index[n]] for n, v in c.coefficients.items())
        return lhs <= c.bound + tol * (1.0 + abs(c.bound))

    # ----------------------------------------------------------------- conditions
    def parameter_active(self, index: int, chosen: Mapping[str, Any], known: set[str],
                         where: str = "config") -> bool | None:
        """Whether parameter ``index`` is active, deciding from what is known so far.

        Args:
            index: the parameter's column.
            chosen: the values of the active parameters before it (inactive ones absent).
            known: names of the parameters whose values are decided (``chosen`` holds the active ones).
            where: what is being evaluated, for error messages.

        Returns:
            True or False, or None when its condition reads a parameter outside ``known``
            (so activity depends on a value not decided yet). A condition that fails, or
            reads an inactive parameter, raises ``SpaceError`` naming the parameter and ``where``.
        """
        if self.parameters[index].condition is None:
            return True
        try:
            return self._evaluate(index, chosen, known, where, None)
        except _NeedKey:
            return None

    def _evaluate(self, owner: int, values: Mapping[str, Any], known: set[str], where: str, reads: set[str] | None) -> bool:
        p = self.parameters[owner]
        view = _ConditionView(self.parameters, self._index, owner, values, known, reads)
        try:
            result = p.condition(view)
            return bool(result)
        except (_NeedKey, SpaceError):
            raise
        except KeyError as exc:
            key = exc.args[0] if exc.args else None
            if isinstance(key, str) and key in self._index and self._index[key] < owner:
                raise SpaceError(
                    f"{where}: condition of parameter {p.name!r} reads {key!r}, which is inactive here "
                    f"(config {dict(values)!r}); use c.get({key!r}) for parameters that may be inactive"
                ) from None
            raise SpaceError(f"{where}: condition of parameter {p.name!r} raised KeyError({key!r})") from exc
        except Exception as exc:
            raise SpaceError(
                f"{where}: condition of parameter {p.name!r} failed on config {dict(values)!r}: {exc!r}"
            ) from exc

    def _walk(self, values: Mapping[str, Any], known: set[str], where: str, reads: set[str] | None = None) -> list[bool]:
        """Activity of every parameter, given decoded values of (at least) the ``known`` parameters."""
        chosen: dict[str, Any] = {}
        active = []
        for i, p in enumerate(self.parameters):
            on = p.condition is None or self._evaluate(i, chosen, known, where, reads)
            active.append(on)
            if on and p.name in known:
                chosen[p.name] = values[p.name]
        return active

    def _probe_values(self) -> list[dict[str, Any]]:
        """Configs (all parameters set) that exercise conditions at construction."""
        def pick(p: Parameter, where: float) -> Any:
            if isinstance(p, Choice):
                return p.choices[min(int(where * len(p.choices)), len(p.choices) - 1)]
            lo, hi = p.search_bounds
            return p.decode(lo + where * (hi - lo))

        probes = [{p.name: pick(p, w) for p in self.parameters} for w in (0.0, 0.5, 1.0)]
        choices = [p for p in self.parameters if isinstance(p, Choice)]
        for c in choices:
            for value in c.choices:
                probes.append({**probes[0], c.name: value})
        if choices and math.prod(len(c.choices) for c in choices) <= _MAX_PROBE_PRODUCT:
            for combo in itertools.product(*(c.choices for c in choices)):
                probes.append({**probes[0], **{c.name: v for c, v in zip(choices, combo)}})
        rng = random.Random(0)
        probes += [{p.name: pick(p, rng.random()) for p in self.parameters} for _ in range(_RANDOM_PROBES)]
        return probes

    def _probe_conditions(self) -> None:
        reads: set[str] = set()
        everything = set(self.names)
        for values in self._probe_values():
            self._walk(values, everything, "space declaration", reads)
        self._condition_inputs = reads & everything

    def active_mask(self, X: Tensor) -> Tensor:
        """Boolean ``[..., d]``: which parameters are active in each row of ``X`` (``[..., d]``).

        Conditions see the exactly rounded values; they are evaluated once per distinct
        combination of the parameters they read, so this stays cheap on large batches.
        """
        X = self.check_width(X)
        shape = X.shape[:-1] + (self.dim,)
        if not self._conditional:
            return torch.ones(shape, dtype=torch.bool, device=X.device)
        flat = X.detach().reshape(-1, self.dim)
        while True:
            known = sorted(self._condition_inputs, key=self._index.__getitem__)
            cols = [self._index[n] for n in known]
            keys = round_search(flat[:, cols], self.discrete_layout.subset(cols))
            if torch.isnan(keys).any():
                bad = known[int(torch.isnan(keys).any(0).nonzero()[0])]
                raise ConfigError(f"search tensor holds NaN in coordinate {self[bad].coordinate_name!r}")
            unique, inverse = _unique_rows(keys)
            try:
                table = [
                    self._walk({n: self[n].decode(x) for n, x in zip(known, row)}, set(known), "search tensor")
                    for row in unique.cpu().tolist()
                ]
            except _NeedKey as need:
                self._condition_inputs |= set(self.names) if need.name is None else {need.name}
                continue
            break
        table_t = torch.tensor(table, dtype=torch.bool, device=X.device).reshape(-1, self.dim)
        return table_t.index_select(0, inverse).reshape(shape)

    # ----------------------------------------------------------------- conversions
    def encode(self, config: Mapping[str, Any], where: str = "config", clip: bool = False) -> list[float]:
        """One user config -> list of search coordinates, validated (errors are prefixed with ``where``)."""
        if not isinstance(config, Mapping):
            raise ConfigError(f"{where}: a config must be a dict of parameter values, got {config!r}")
        for name, value in config.items():
            if name not in self._index:
                raise ConfigError(
                    f"{where}: unknown parameter {name!r} (value {value!r}); parameters: {list(self.names)}"
                )
        everything = set(self.names)
        chosen: dict[str, Any] = {}
        row = []
        for i, p in enumerate(self.parameters):
            on = p.condition is None or self._evaluate(i, chosen, everything, where, None)
            if on:
                if p.name not in config:
                    raise ConfigError(f"{where}: parameter {p.name!r} is active but missing")
                x = p.encode(config[p.name], where, clip)
                chosen[p.name] = p.decode(x)
                row.append(x)
            else:
                if p.name in config:
                    raise ConfigError(
                        f"{where}: parameter {p.name!r} = {config[p.name]!r} is given but inactive "
                        "(its condition is false for this config)"
                    )
                row.append(p.default_search)
        return row

    def to_search(
        self,
        configs: Sequence[Mapping[str, Any]],
        clip: bool = False,
        dtype: torch.dtype = torch.float64,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """User configs -> search tensor ``[n, d]``; ``clip=True`` clips numbers into their bounds instead of failing."""
        if isinstance(configs, Mapping):
            raise ConfigError("to_search takes a list of configs; wrap a single config in a list")
        rows = [self.encode(c, f"config {i}", clip) for i, c in enumerate(configs)]
        return torch.tensor(rows, dtype=dtype, device=device).reshape(len(rows), self.dim)

    def to_configs(self, X: Tensor, clip: bool = False) -> list[dict[str, Any]]:
        """Search tensor ``[n, d]`` -> user configs (rounded; inactive parameters absent).

        Coordinates outside the bounds (beyond floating-point noise) are an error unless ``clip=True``.
        """
        X = self.check_width(X)
        if X.dim() != 2:
            raise ConfigError(f"to_configs takes a [n, {self.dim}] tensor, got shape {tuple(X.shape)}")
        X = X.detach().to(torch.float64)
        lower, upper = self.bounds.to(X.device)
        for r, c in (~torch.isfinite(X)).nonzero().tolist():
            raise ConfigError(f"row {r}: coordinate {self.coordinate_names[c]!r} = {X[r, c].item()!r} is not finite")
        slack = 1e-9 * (upper - lower).clamp(min=1.0)
        if not clip:
            for r, c in ((X < lower - slack) | (X > upper + slack)).nonzero().tolist():
                raise ConfigError(
                    f"row {r}: coordinate {self.coordinate_names[c]!r} = {X[r, c].item()!r} is outside its "
                    f"bounds [{lower[c].item()!r}, {upper[c].item()!r}] (pass clip=True to clip)"
                )
        X = round_search(torch.clamp(X, lower, upper), self.discrete_layout)
        everything = set(self.names)
        configs = []
        for r, row in enumerate(X.cpu().tolist()):
            values = {p.name: p.decode(x) for p, x in zip(self.parameters, row)}
            active = self._walk(values, everything, f"row {r}")
            configs.append({n: v for (n, v), on in zip(values.items(), active) if on})
        return configs

    def round(self, X: Tensor) -> Tensor:
        """Exact rounding: ints and choice indices to valid values, inactive parameters to their defaults."""
        return self.deactivate(round_search(self.check_width(X), self.discrete_layout))

    def deactivate(self, X: Tensor) -> Tensor:
        """``X`` with every inactive parameter at its default (no rounding): differentiable in the active
        coordinates, so an acquisition evaluated on ``deactivate(X)`` sees each point as the config it stands for."""
        X = self.check_width(X)
        if not self._conditional:
            return X
        return torch.where(self.active_mask(X), X, self.defaults.to(X))

    def rounding_transform(self, method: RoundingMethod = "ste", tau: float = 1e-3) -> SpaceRounding:
        """A botorch input transform rounding ints and choices, differentiable-friendly by default.

        ``method="ste"``: exact values, straight-through gradients; ``"approximate"``: botorch's
        tanh-smoothed rounding (temperature ``tau``); ``"exact"``: plain rounding (zero gradients).
        """
        return SpaceRounding(self.discrete_layout, method=method, tau=tau)

    def sample(self, n: int, seed: int | None = 0, method: str = "sobol", **kwargs: Any) -> Tensor:
        """``n`` valid search points (conditions, rounding, constraints honoured); see ``kerneldsl.space.sampling.sample``."""
        return sample(self, n, seed=seed, method=method, **kwargs)

    def from_unit(self, U: Tensor) -> Tensor:
        """Map points of the unit cube ``[..., d]`` to (unrounded) search points, equal mass per int and choice."""
        U = self.check_width(U)
        cols = []
        for j, p in enumerate(self.parameters):
            u = U[..., j]
            if isinstance(p, Choice):
                cols.append(torch.clamp(torch.floor(u * len(p.choices)), max=len(p.choices) - 1))
                continue
            lo, hi = (p.lower - 0.5, p.upper + 0.5) if isinstance(p, Int) else (p.lower, p.upper)
            if p.log:
                lo, hi = math.log(lo), math.log(hi)
            cols.append(lo + u * (hi - lo))
        return torch.stack(cols, dim=-1)

    def check_width(self, X: Tensor) -> Tensor:
        """``X`` itself if it is a tensor of search points ``[..., d]``; else a ``ConfigError`` naming the coordinates."""
        if not isinstance(X, Tensor):
            raise ConfigError(f"expected a torch tensor of search points, got {type(X).__name__}")
        if X.dim() < 1 or X.shape[-1] != self.dim:
            raise ConfigError(
                f"search tensor has shape {tuple(X.shape)}; its last dimension must be {self.dim} "
                f"(coordinates {list(self.coordinate_names)})"
            )
        return X
