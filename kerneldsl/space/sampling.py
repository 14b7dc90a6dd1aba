"""Random search over a ``Space``: scrambled Sobol or uniform points that are valid configs.

Points are drawn in the unit cube, mapped to search coordinates (equal mass per int value
and per choice), rounded (inactive parameters to their defaults) and filtered by the linear
constraints. Rejection is bounded: too small a feasible fraction is a clear error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from .parameters import ConfigError, SpaceError
from .space import Space

_BATCH = 1024


class SamplingError(SpaceError):
    """Not enough feasible points could be drawn within the draw budget."""


def sample(
    space: Space,
    n: int,
    seed: int | None = 0,
    method: str = "sobol",
    max_draws: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
) -> Tensor:
    """``n`` valid search points ``[n, d]`` drawn by ``method`` ("sobol": scrambled Sobol, or "uniform").

    The same ``seed`` gives the same points. At most ``max_draws`` raw points are drawn
    (default ``max(10_000, 100 * n)``) before giving up with ``SamplingError``.
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise SpaceError(f"number of samples must be a non-negative integer, got {n!r}")
    if method not in ("sobol", "uniform"):
        raise SpaceError(f"unknown sampling method {method!r}; use 'sobol' or 'uniform'")
    if max_draws is None:
        max_draws = max(10_000, 100 * n)
    if method == "sobol":
        engine = SobolEngine(space.dim, scramble=True, seed=seed)
        draw = lambda m: engine.draw(m, dtype=torch.float64)  # noqa: E731
    else:
        generator = torch.Generator()
        generator.manual_seed(seed if seed is not None else int(torch.seed() % 2**63))
        draw = lambda m: torch.rand(m, space.dim, generator=generator, dtype=torch.float64)  # noqa: E731

    accepted: list[Tensor] = []
    count = drawn = 0
    while count < n and drawn < max_draws:
        m = min(max(_BATCH, n - count), max_draws - drawn)
        X = space.round(space.from_unit(draw(m)))
        X = X[space.feasible(X)]
        accepted.append(X)
        count += len(X)
        drawn += m
    if count < n:
        raise SamplingError(
            f"only {count} of {drawn} random points satisfy the linear constraints "
            f"(feasible fraction about {count / drawn:.2g}) but {n} were asked for; "
            f"loosen the constraints {[str(c) for c in space.constraints]} or raise max_draws (now {max_draws})"
        )
    out = torch.cat(accepted)[:n] if accepted else torch.empty(0, space.dim, dtype=torch.float64)
    return out.to(dtype=dtype, device=device)


def initial_design(
    space: Space,
    n: int,
    configs: Sequence[Mapping[str, Any]] = (),
    seed: int | None = 0,
    method: str = "sobol",
    **kwargs: Any,
) -> Tensor:
    """The user's own configs first, then random points up to ``n`` in total (all configs if more than ``n``)."""
    manual = space.to_search(list(configs))
    ok = space.feasible(manual)
    for i in (~ok).nonzero().flatten().tolist():
        broken = [str(c) for c in space.violated_constraints(manual[i])]
        raise ConfigError(f"config {i}: {configs[i]!r} violates the linear constraint(s) {broken}")
    extra = sample(space, max(n - len(manual), 0), seed=seed, method=method, **kwargs)
    return torch.cat([manual, extra.to(manual)])
