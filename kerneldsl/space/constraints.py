"""Linear constraints on named search coordinates (``sum(coefficient * coordinate) <= bound``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .parameters import SpaceError, is_number

__all__ = ["LinearConstraint"]


@dataclass(frozen=True)
class LinearConstraint:
    """``sum(coefficient * coordinate) <= bound`` over named search coordinates.

    Coordinates are named as in ``Space.coordinate_names``: ``log_<name>`` for parameters
    searched in log space (the coordinate is then the natural log of the value).
    """

    coefficients: Mapping[str, float]
    bound: float

    def __post_init__(self) -> None:
        if not isinstance(self.coefficients, Mapping) or not self.coefficients:
            raise SpaceError(f"LinearConstraint needs a non-empty dict of coefficients, got {self.coefficients!r}")
        for name, coef in self.coefficients.items():
            if not is_number(coef) or not math.isfinite(coef):
                raise SpaceError(f"LinearConstraint: coefficient of {name!r} must be a finite number, got {coef!r}")
        if all(coef == 0 for coef in self.coefficients.values()):
            raise SpaceError(f"LinearConstraint {dict(self.coefficients)!r}: all coefficients are zero")
        if not is_number(self.bound) or not math.isfinite(self.bound):
            raise SpaceError(f"LinearConstraint: bound must be a finite number, got {self.bound!r}")
        object.__setattr__(self, "coefficients", dict(self.coefficients))

    def __str__(self) -> str:
        terms = " + ".join(f"{coef:g}*{name}" for name, coef in self.coefficients.items())
        return f"{terms} <= {self.bound:g}"
