"""Search-space parameters: what a user can tune, and how each maps to one search coordinate.

Every parameter owns exactly one search coordinate:

* ``Scalar`` / ``Int``: the value itself, or its natural log when ``log=True``
  (the coordinate is then named ``log_<name>``). Ints are rounded in user units
  (``round(exp(x))`` for log ints), so rounding is idempotent.
* ``Choice``: the index of the chosen value, ``0 .. k-1``. An index (rather than
  a one-hot block) keeps one coordinate per parameter, works with botorch's
  ``optimize_acqf_mixed`` (fixed features) and ``optimize_acqf_mixed_alternating``
  (``cat_dims``); feature transforms (``OneHot``) build the kernel's one-hot view.

An inactive parameter (its ``condition`` is false) is absent from user configs and
sits at a defined search value (``inactive``, by default the lower bound or the
first choice) so that the GP input is well defined.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

Condition = Callable[[Mapping[str, Any]], Any]


class _FirstChoice:
    """Marker for the default inactive value of a Choice (None may be a real choice)."""

    def __repr__(self) -> str:
        return "<first choice>"


FIRST_CHOICE = _FirstChoice()


class SpaceError(ValueError):
    """A search space, constraint or transform chain is declared wrongly."""


class ConfigError(SpaceError):
    """A user config (or search tensor) does not fit the space."""


def is_number(value: Any) -> bool:
    """Whether ``value`` is a real number (``bool`` is not)."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def same_value(a: Any, b: Any) -> bool:
    """Equality that keeps bools apart from numbers (``True != 1`` here)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    try:
        return bool(a == b)
    except Exception:  # exotic user objects with odd __eq__
        return False


@dataclass(frozen=True)
class Parameter:
    """Common part of all parameters: a name and an optional activity condition."""

    name: str

    @property
    def coordinate_name(self) -> str:
        """Name of this parameter's search coordinate (``log_<name>`` when searched in log space)."""
        return self.name

    def _check_name(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise SpaceError(f"parameter names must be non-empty strings, got {self.name!r}")
        condition = getattr(self, "condition", None)
        if condition is not None and not callable(condition):
            raise SpaceError(f"parameter {self.name!r}: condition must be callable, got {condition!r}")


@dataclass(frozen=True)
class _Numeric(Parameter):
    lower: float
    upper: float
    log: bool = False
    condition: Condition | None = field(default=None, compare=False)
    inactive: float | None = None

    kind = "scalar"

    def __post_init__(self) -> None:
        self._check_name()
        for side in ("lower", "upper"):
            value = getattr(self, side)
            if not is_number(value) or not math.isfinite(value):
                raise SpaceError(f"parameter {self.name!r}: {side} bound must be a finite number, got {value!r}")
        if not self.lower < self.upper:
            raise SpaceError(f"parameter {self.name!r}: lower bound {self.lower!r} must be below upper bound {self.upper!r}")
        if self.log and self.lower <= 0:
            raise SpaceError(f"parameter {self.name!r}: log=True needs a positive lower bound, got {self.lower!r}")
        if self.inactive is not None:
            self.encode(self.inactive, where=f"parameter {self.name!r} (inactive value)")

    @property
    def coordinate_name(self) -> str:
        return f"log_{self.name}" if self.log else self.name

    @property
    def search_bounds(self) -> tuple[float, float]:
        if self.log:
            return math.log(self.lower), math.log(self.upper)
        return float(self.lower), float(self.upper)

    @property
    def default_search(self) -> float:
        """Search value used while the parameter is inactive."""
        value = self.lower if self.inactive is None else self.inactive
        return math.log(value) if self.log else float(value)

    def _checked_number(self, value: Any, where: str, clip: bool) -> float:
        if not is_number(value):
            raise ConfigError(f"{where}: parameter {self.name!r} = {value!r} is not a number")
        number = float(value)
        if math.isnan(number):
            raise ConfigError(f"{where}: parameter {self.name!r} = {value!r} is NaN")
        if clip:
            number = float(min(max(number, self.lower), self.upper))
        elif not self.lower <= number <= self.upper:
            raise ConfigError(
                f"{where}: parameter {self.name!r} = {value!r} is outside its bounds [{self.lower!r}, {self.upper!r}]"
            )
        return number

    def encode(self, value: Any, where: str, clip: bool = False) -> float:
        """User value -> search coordinate (validated)."""
        number = self._checked_number(value, where, clip)
        return math.log(number) if self.log else number

    def decode(self, x: float) -> Any:
        """Search coordinate -> user value, clamped to the bounds (floating-point noise of exp/log)."""
        value = math.exp(x) if self.log else x
        return float(min(max(value, self.lower), self.upper))


@dataclass(frozen=True)
class Scalar(_Numeric):
    """A real-valued parameter in ``[lower, upper]``; ``log=True`` searches it on a log scale."""

    kind = "scalar"


@dataclass(frozen=True)
class Int(_Numeric):
    """An integer parameter in ``[lower, upper]``; ``log=True`` searches it on a log scale."""

    kind = "int"

    def __post_init__(self) -> None:
        for side in ("lower", "upper"):
            value = getattr(self, side)
            if is_number(value) and math.isfinite(value) and not float(value).is_integer():
                raise SpaceError(f"parameter {self.name!r}: {side} bound of an Int must be an integer, got {value!r}")
        super().__post_init__()

    def encode(self, value: Any, where: str, clip: bool = False) -> float:
        number = self._checked_number(value, where, clip)
        if not number.is_integer():
            raise ConfigError(f"{where}: parameter {self.name!r} = {value!r} is not an integer")
        return math.log(number) if self.log else number

    def decode(self, x: float) -> int:
        value = round(math.exp(x)) if self.log else round(x)
        return int(min(max(value, self.lower), self.upper))


@dataclass(frozen=True)
class Choice(Parameter):
    """One value out of a list (strings, bools, numbers, ...); searched as the index of the value."""

    choices: Sequence[Any] = ()
    condition: Condition | None = field(default=None, compare=False)
    inactive: Any = FIRST_CHOICE

    kind = "choice"

    def __post_init__(self) -> None:
        self._check_name()
        if isinstance(self.choices, (str, bytes)) or not isinstance(self.choices, Sequence):
            raise SpaceError(f"parameter {self.name!r}: choices must be a list of values, got {self.choices!r}")
        object.__setattr__(self, "choices", tuple(self.choices))
        if len(self.choices) < 2:
            raise SpaceError(f"parameter {self.name!r}: a Choice needs at least two choices, got {list(self.choices)!r}")
        for i, a in enumerate(self.choices):
            if isinstance(a, float) and math.isnan(a):
                raise SpaceError(f"parameter {self.name!r}: NaN is not a valid choice")
            for b in self.choices[:i]:
                if same_value(a, b):
                    raise SpaceError(f"parameter {self.name!r}: choice {a!r} is listed twice")
        if self.inactive is not FIRST_CHOICE:
            self.index(self.inactive, where=f"parameter {self.name!r} (inactive value)")

    @property
    def search_bounds(self) -> tuple[float, float]:
        return 0.0, float(len(self.choices) - 1)

    @property
    def default_search(self) -> float:
        """Search value used while the parameter is inactive."""
        if self.inactive is FIRST_CHOICE:
            return 0.0
        return float(self.index(self.inactive, where=f"parameter {self.name!r} (inactive value)"))

    def index(self, value: Any, where: str) -> int:
        for i, choice in enumerate(self.choices):
            if same_value(value, choice):
                return i
        raise ConfigError(f"{where}: parameter {self.name!r} = {value!r} is not among its choices {list(self.choices)!r}")

    def encode(self, value: Any, where: str, clip: bool = False) -> float:
        return float(self.index(value, where))

    def decode(self, x: float) -> Any:
        return self.choices[int(min(max(round(x), 0), len(self.choices) - 1))]
