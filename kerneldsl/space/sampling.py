"""Random search over a ``Space``: scrambled Sobol or uniform points that are valid configs.

Points are drawn in the unit cube, mapped to search coordinates (equal mass per int value
and per choice), rounded (inactive parameters to their defaults) and filtered by the linear
constraints. Rejection is bounded: too small a feasible fraction is a clear error.

`balanced_sample` is the initial design of a study: the space's branches (active
combinations of its choices) take turns, so every choice value is seen as soon as the
number of points allows, and each branch gets its own Sobol draw.

These functions take any `kerneldsl.space.protocol.SearchSpace` (a ``Space``); ``Space.sample``
calls `sample`.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.quasirandom import SobolEngine

from .combinations import Combination, choice_combinations
from .parameters import Choice, ConfigError, SpaceError
from .protocol import SearchSpace

_BATCH = 1024
MAX_BRANCHES = 64
"""`balanced_sample` draws per branch up to this many branches; beyond it, it balances each choice on its own."""


class SamplingError(SpaceError):
    """Not enough feasible points could be drawn within the draw budget."""


def sample(
    space: SearchSpace,
    n: int,
    seed: int | None = 0,
    method: str = "sobol",
    max_draws: int | None = None,
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    fixed: Mapping[int, float] | None = None,
) -> Tensor:
    """``n`` valid search points ``[n, d]`` drawn by ``method`` ("sobol": scrambled Sobol, or "uniform").

    The same ``seed`` gives the same points, and the first ``k`` of ``n`` points are the
    ``k``-point draw (for ``n`` up to 1024). ``fixed`` (column -> search value) pins
    coordinates, e.g. a branch's choices (`kerneldsl.space.combinations.Combination.fixed`).
    At most ``max_draws`` raw points are drawn (default ``max(10_000, 100 * n)``) before
    giving up with ``SamplingError``.
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
        X = space.from_unit(draw(m))
        for column, value in (fixed or {}).items():
            X[:, column] = value
        X = space.round(X)
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
    space: SearchSpace,
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
    extra = balanced_sample(space, max(n - len(manual), 0), seed=seed, method=method, **kwargs)
    return torch.cat([manual, extra.to(manual)])


def balanced_sample(
    space: SearchSpace,
    n: int,
    seed: int | None = 0,
    method: str = "sobol",
    dtype: torch.dtype = torch.float64,
    device: torch.device | str | None = None,
    **kwargs: Any,
) -> Tensor:
    """``n`` valid search points whose choices are balanced: a draw per branch, the branches taking turns.

    The branches (`choice_combinations`) are ordered, seeded by ``seed``, so that each next
    branch adds as many not yet seen choice values as possible; point ``i`` belongs to
    branch ``order[i % K]`` and is the next point of that branch's own draw (``seed + b``
    for branch ``b``, the choices fixed). So every choice value appears once ``n`` reaches
    the length of the covering prefix (at most ``K``), branch counts differ by at most
    one, and the first ``k`` of ``n`` points are the ``k``-point design. A space without
    choices gets `sample`'s points. With more than `MAX_BRANCHES` branches each choice is
    balanced on its own instead: a plain draw whose active choices cycle through their
    values (seeded order).
    """
    options = dict(seed=seed, method=method, dtype=dtype, device=device, **kwargs)
    branches = choice_combinations(space, limit=MAX_BRANCHES)
    if branches is None:
        return _stratify_choices(space, sample(space, n, **options), seed)
    if len(branches) == 1:
        return sample(space, n, **options)
    order = _covering_order(space, branches, seed)
    slots = [order[i % len(order)] for i in range(n)]
    draws = {b: iter(sample(space, slots.count(b), **{**options, "seed": _branch_seed(seed, b)},
                            fixed=branches[b].fixed)) for b in set(slots)}
    out = [next(draws[b]) for b in slots]
    return torch.stack(out) if out else torch.empty(0, space.dim, dtype=dtype, device=device)


def _branch_seed(seed: int | None, branch: int) -> int | None:
    return None if seed is None else seed + branch


def _covering_order(space: SearchSpace, branches: list[Combination], seed: int | None) -> list[int]:
    """Branch indices, greedily ordered so that each adds the most unseen (choice, value) pairs (ties: seeded)."""
    def pairs(b: int) -> set[tuple[int, float]]:
        return {(space.index(name), branches[b].fixed[space.index(name)]) for name in branches[b].values}

    rest = list(range(len(branches)))
    random.Random(seed).shuffle(rest)
    order: list[int] = []
    seen: set[tuple[int, float]] = set()
    while rest:
        gains = [len(pairs(b) - seen) for b in rest]
        if max(gains) == 0:
            seen = set()  # every value seen: start another round of covering
            gains = [len(pairs(b)) for b in rest]
        best = rest[gains.index(max(gains))]
        order.append(best)
        rest.remove(best)
        seen |= pairs(best)
    return order


def _stratify_choices(space: SearchSpace, X: Tensor, seed: int | None) -> Tensor:
    """``X`` with each choice, in parameter order, balanced over the rows where it is active: every block of
    ``k`` such rows holds each of its ``k`` values once, in a seeded order per block (so choices do not move in step).

    A row that a new choice makes infeasible (a switched-off parameter's default breaks a
    linear constraint) keeps its drawn values."""
    def value(j: int, k: int, size: int) -> int:
        block = list(range(size))
        random.Random(f"{seed}/{j}/{k // size}").shuffle(block)
        return block[k % size]

    for j, p in enumerate(space.parameters):
        if not isinstance(p, Choice):
            continue
        rows = space.active_mask(X)[:, j].nonzero().flatten()
        proposal = X.clone()
        proposal[rows, j] = torch.tensor([value(j, k, len(p.choices)) for k in range(len(rows))], dtype=X.dtype,
                                         device=X.device)
        proposal = space.round(proposal)
        X = torch.where(space.feasible(proposal)[:, None], proposal, X)
    return X
