"""The budget ``max_cost`` of a study: a number, or a schedule over the number of finished trials.

A schedule lets one call write the outer loop that raises or lowers the budget over
time: ``Budget.of(lambda finished: 10.0 if finished < 20 else 5.0)`` or the steps
``Budget.of([(0, 10.0), (20, 5.0)])`` (from trial 20 on, 5.0). Every trial records the
budget it was asked under; feasibility and the best trial are judged against the
budget in force now.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["Budget", "BudgetLike"]


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or math.isnan(value):
        raise ValueError(f"{what} must be a positive number (math.inf for no budget), got {value!r}")
    return float(value)


@dataclass(frozen=True)
class Budget:
    """``at(finished)``: the budget after ``finished`` finished trials."""

    fixed: float | None = None
    schedule: Callable[[int], float] | None = None
    steps: tuple[tuple[int, float], ...] = ()

    @classmethod
    def of(cls, value: BudgetLike, owner: str = "Study") -> "Budget":
        if isinstance(value, Budget):
            return value
        if callable(value):
            return cls(schedule=value)
        if isinstance(value, (list, tuple)):
            steps = []
            for item in value:
                if not (isinstance(item, (list, tuple)) and len(item) == 2 and isinstance(item[0], int)
                        and not isinstance(item[0], bool) and item[0] >= 0):
                    raise ValueError(f"{owner}: a max_cost schedule of steps is a list of (trial, budget) pairs with "
                                     f"trial >= 0, got {item!r}")
                steps.append((item[0], _positive(item[1], f"{owner}: the budget of step {item!r}")))
            steps.sort()
            if not steps or steps[0][0] != 0:
                raise ValueError(f"{owner}: a max_cost schedule of steps must start at trial 0, got {value!r}")
            return cls(steps=tuple(steps))
        return cls(fixed=_positive(value, f"{owner}: max_cost"))

    @property
    def moving(self) -> bool:
        return self.fixed is None

    @property
    def first(self) -> float:
        """The budget before any trial finished (what a journal's header records)."""
        return self.at(0)

    def at(self, finished: int) -> float:
        """The budget after ``finished`` trials finished; raises ValueError if a schedule gives a bad value."""
        if self.fixed is not None:
            return self.fixed
        if self.steps:
            return [budget for start, budget in self.steps if start <= finished][-1]
        return _positive(self.schedule(finished), f"max_cost schedule at {finished} finished trials")


BudgetLike = float | int | Callable[[int], float] | Sequence[tuple[int, float]] | Budget
"""What ``max_cost`` may be: a number, a callable of the number of finished trials, (trial, budget) steps."""
