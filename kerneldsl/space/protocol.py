"""``SearchSpace``: what sampling and choice enumeration read of a search space.

`kerneldsl.space.space.Space` implements it. The modules below ``Space``
(``sampling``, ``combinations``) are written against this protocol rather than the
class, so ``Space`` can offer them as methods (``Space.sample``) without an import circle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
from torch import Tensor

from .constraints import LinearConstraint
from .parameters import Parameter

__all__ = ["SearchSpace"]


class SearchSpace(Protocol):
    """Ordered parameters, linear constraints, and the conversions sampling needs."""

    parameters: tuple[Parameter, ...]
    """The parameters, in column order."""
    constraints: tuple[LinearConstraint, ...]
    """Linear constraints on the search coordinates."""

    @property
    def dim(self) -> int:
        """Number of search coordinates (one per parameter)."""

    def __getitem__(self, name: str) -> Parameter:
        """The parameter named ``name``."""

    def index(self, name: str) -> int:
        """Column of a parameter, by parameter or coordinate name."""

    def parameter_active(self, index: int, chosen: Mapping[str, Any], known: set[str],
                         where: str = "config") -> bool | None:
        """Whether parameter ``index`` is active given the values ``chosen`` for the active parameters
        before it, None when its condition reads a parameter outside ``known`` (still undecided)."""

    def from_unit(self, U: Tensor) -> Tensor:
        """Points of the unit cube ``[..., d]`` -> unrounded search points."""

    def round(self, X: Tensor) -> Tensor:
        """Exact rounding, inactive parameters at their defaults."""

    def feasible(self, X: Tensor, tol: float = 1e-8) -> Tensor:
        """Which rows of ``X`` satisfy every linear constraint."""

    def violated_constraints(self, x: Tensor, tol: float = 1e-8) -> list[LinearConstraint]:
        """The constraints one search point violates."""

    def active_mask(self, X: Tensor) -> Tensor:
        """Which parameters are active in each row of ``X``."""

    def to_search(self, configs: Sequence[Mapping[str, Any]], clip: bool = False,
                  dtype: torch.dtype = torch.float64, device: torch.device | str | None = None) -> Tensor:
        """User configs -> search tensor ``[n, d]``."""
