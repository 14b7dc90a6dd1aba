"""Rounding of search coordinates to valid discrete values (ints in user units, choice indices).

``round_search`` does it exactly (``Space.round``) or differentiably for acquisition
optimisation: ``"ste"`` rounds with a straight-through gradient and ``"approximate"``
uses botorch's tanh-based ``approximate_round``, as botorch's ``Round`` transform does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from botorch.models.transforms.input import InputTransform
from botorch.utils.rounding import RoundSTE, approximate_round
from torch import Tensor

RoundingMethod = Literal["exact", "ste", "approximate"]


@dataclass(frozen=True)
class DiscreteLayout:
    """Which search coordinates are discrete and their valid ranges (user units for ints)."""

    int_linear: tuple[int, ...]
    int_linear_lower: tuple[float, ...]
    int_linear_upper: tuple[float, ...]
    int_log: tuple[int, ...]
    int_log_lower: tuple[float, ...]
    int_log_upper: tuple[float, ...]
    choices: tuple[int, ...]
    choice_last: tuple[float, ...]

    def subset(self, columns: list[int]) -> DiscreteLayout:
        """The layout of ``X[..., columns]``."""
        where = {c: i for i, c in enumerate(columns)}

        def pick(idx: tuple[int, ...], *values: tuple[float, ...]):
            keep = [k for k, c in enumerate(idx) if c in where]
            return (tuple(where[idx[k]] for k in keep), *(tuple(v[k] for k in keep) for v in values))

        return DiscreteLayout(
            *pick(self.int_linear, self.int_linear_lower, self.int_linear_upper),
            *pick(self.int_log, self.int_log_lower, self.int_log_upper),
            *pick(self.choices, self.choice_last),
        )


def _rounder(method: RoundingMethod, tau: float):
    if method == "exact":
        return torch.round
    if method == "ste":
        return RoundSTE.apply
    if method == "approximate":
        return lambda v: approximate_round(v, tau=tau)
    raise ValueError(f"unknown rounding method {method!r}; use 'exact', 'ste' or 'approximate'")


def round_search(X: Tensor, layout: DiscreteLayout, method: RoundingMethod = "exact", tau: float = 1e-3) -> Tensor:
    """Round the discrete coordinates of ``X`` (``[..., d]``); continuous ones pass unchanged."""
    rnd = _rounder(method, tau)
    out = X.clone()

    def bounds(values: tuple[float, ...]) -> Tensor:
        return torch.tensor(values, dtype=X.dtype, device=X.device)

    if layout.int_linear:
        idx = list(layout.int_linear)
        lo, hi = bounds(layout.int_linear_lower), bounds(layout.int_linear_upper)
        out[..., idx] = torch.clamp(rnd(X[..., idx]), lo, hi)
    if layout.int_log:
        idx = list(layout.int_log)
        lo, hi = bounds(layout.int_log_lower), bounds(layout.int_log_upper)
        out[..., idx] = torch.clamp(rnd(X[..., idx].exp()), lo, hi).log()
    if layout.choices:
        idx = list(layout.choices)
        out[..., idx] = torch.clamp(rnd(X[..., idx]), torch.zeros_like(bounds(layout.choice_last)), bounds(layout.choice_last))
    return out


class SpaceRounding(InputTransform):
    """botorch input transform that rounds a space's ints and choice indices (like botorch's ``Round``).

    Use it before the feature ``Chain`` (e.g. in a ``ChainedInputTransform``) so that the model
    sees valid discrete values while the acquisition optimiser moves continuously.
    """

    def __init__(
        self,
        layout: DiscreteLayout,
        method: RoundingMethod = "ste",
        tau: float = 1e-3,
        transform_on_train: bool = True,
        transform_on_eval: bool = True,
        transform_on_fantasize: bool = True,
    ) -> None:
        super().__init__()
        _rounder(method, tau)  # validate early
        self.layout = layout
        self.method = method
        self.tau = tau
        self.transform_on_train = transform_on_train
        self.transform_on_eval = transform_on_eval
        self.transform_on_fantasize = transform_on_fantasize

    def transform(self, X: Tensor) -> Tensor:
        return round_search(X, self.layout, self.method, self.tau)

    def equals(self, other: InputTransform) -> bool:
        return (
            super().equals(other)
            and self.layout == other.layout
            and self.method == other.method
            and self.tau == other.tau
        )

    def get_init_args(self) -> dict[str, Any]:
        return {
            "layout": self.layout,
            "method": self.method,
            "tau": self.tau,
            "transform_on_train": self.transform_on_train,
            "transform_on_eval": self.transform_on_eval,
            "transform_on_fantasize": self.transform_on_fantasize,
        }
