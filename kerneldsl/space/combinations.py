"""The active combinations of a space's choices (its branches), for enumerating optimisers and designs.

A combination fixes every ``Choice`` of the space: an active choice to one of its
values, an inactive one (its condition is false for the values chosen before it) at
its default. Every other parameter is then either switched off by the combination
(fixed at its default as well) or free. Combinations are enumerated depth-first in
parameter order, so a choice that only matters on one branch (``nesterov`` under
``optimizer == "sgd"``) multiplies that branch alone.

A condition that reads a free parameter (an ``Int`` or ``Scalar``, say ``depth >= 4``)
cannot be decided by the choices: the parameters it governs stay free (``undetermined``)
and a choice it governs is enumerated as if active; `Space.deactivate` settles such
points exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .parameters import Choice, Int
from .protocol import SearchSpace

__all__ = ["Combination", "choice_combinations"]


@dataclass(frozen=True)
class Combination:
    """One branch of a space: the values of its choices and the search coordinates they fix."""

    values: dict[str, Any]
    """User values of the choices this combination sets (active or undetermined ones)."""
    fixed: dict[int, float]
    """Search coordinates fixed by it (column -> value): every choice, and every parameter it switches off."""
    undetermined: tuple[int, ...] = ()
    """Columns whose activity depends on free parameters (conditions reading an Int or Scalar)."""

    def free(self, space: SearchSpace) -> list[int]:
        """Columns left to optimise in this combination."""
        return [i for i in range(space.dim) if i not in self.fixed]

    def free_ints(self, space: SearchSpace) -> list[int]:
        """Columns of the ``Int`` parameters left to optimise in this combination."""
        return [i for i in self.free(space) if isinstance(space.parameters[i], Int)]


def choice_combinations(space: SearchSpace, limit: int | None = None) -> list[Combination] | None:
    """Every active combination of the choices of ``space``, in parameter order; None if there are more than ``limit``.

    A space without choices has one combination (nothing fixed but the parameters that are
    never active).
    """
    out: list[Combination] = []

    def walk(i: int, chosen: dict[str, Any], known: frozenset[str], fixed: dict[int, float],
             undetermined: tuple[int, ...]) -> bool:
        """Depth-first from parameter ``i``; False once more than ``limit`` combinations were found."""
        if i == space.dim:
            out.append(Combination({n: v for n, v in chosen.items() if isinstance(space[n], Choice)}, dict(fixed),
                                   undetermined))
            return limit is None or len(out) <= limit
        p = space.parameters[i]
        active = space.parameter_active(i, chosen, set(known), "enumerating choice combinations")
        more = undetermined + ((i,) if active is None else ())
        if active is False:
            return walk(i + 1, chosen, known | {p.name}, {**fixed, i: p.default_search}, more)
        if not isinstance(p, Choice):
            return walk(i + 1, chosen, known, fixed, more)
        for k, value in enumerate(p.choices):
            if not walk(i + 1, {**chosen, p.name: value}, known | {p.name}, {**fixed, i: float(k)}, more):
                return False
        return True

    if not walk(0, {}, frozenset(), {}, ()):
        return None
    return out

