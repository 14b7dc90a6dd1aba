"""The proposer protocol: the strategy behind `Study.ask`, like Optuna's ``BaseSampler``.

A study decides which trials come next and in which phase (`Schedule.slot`); the
initial design it makes itself. For every model-based trial it asks its proposer, with
one `ProposalRequest` per trial, for a `Proposal`: a point of the search space, the phase
it ran as and how it was found. The proposer sees the trials through a `History` (space,
trials, budget, loss scale), so it can be driven without a study as well::

    history = History(space, trials, max_cost)
    proposals = proposer.propose(history, [ProposalRequest(trial_id=7, iteration=3, phase=Phase.TOCK)])
    configs = space.to_configs(torch.stack([p.x for p in proposals]))

Implementations: `kerneldsl.loop.proposals.TickTockProposer` (the default: the tick and
tock acquisitions on the loss and cost models) and `RandomProposer` (Sobol points).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from ..space.sampling import sample
from ..space.space import Space
from .history import History
from .trial import Phase

__all__ = ["BaseProposer", "ProposalRequest", "Proposal", "RandomProposer", "random_point", "seed_for",
           "is_duplicate"]

DUPLICATE_TOL = 1e-9


def seed_for(seed: int, trial: int) -> int:
    """A deterministic seed per (study seed, trial id)."""
    return (seed * 1_000_003 + 7919 * (trial + 1)) % (2**31 - 1)


def is_duplicate(x: Tensor, seen: Tensor | None) -> bool:
    """Whether the search point ``x`` is (within `DUPLICATE_TOL`) one of the points ``seen`` ``[n, d]``."""
    return seen is not None and len(seen) > 0 and bool(((seen - x).abs().amax(-1) <= DUPLICATE_TOL).any())


def random_point(space: Space, seed: int, trial: int, seen: Tensor | None, dtype: torch.dtype = torch.float64,
                 device: torch.device | None = None) -> Tensor:
    """A Sobol point of ``space`` (seeded by ``seed`` and the trial id) that is not among ``seen``."""
    candidates = sample(space, 32, seed=seed_for(seed, trial), dtype=dtype, device=device)
    for x in candidates:
        if not is_duplicate(x, seen):
            return x
    return candidates[0]


@dataclass(frozen=True)
class ProposalRequest:
    """One trial to propose a point for: its id, its model-based iteration (1, 2, ...) and its phase."""

    trial_id: int
    iteration: int
    phase: Phase


@dataclass
class Proposal:
    """One proposed point: the search point ``x`` [d], the phase it ran as, how it was found, the models'
    prediction there (None without models) and the seconds spent (``fit``, ``acquisition``)."""

    x: Tensor
    phase: Phase
    how: str
    prediction: dict[str, Any] | None = None
    timings: dict[str, float] = field(default_factory=dict)


class BaseProposer(ABC):
    """Proposes search points for the model-based trials of a study (the strategy behind `Study.ask`)."""

    @abstractmethod
    def propose(self, history: History, requests: Sequence[ProposalRequest]) -> list[Proposal]:
        """One `Proposal` per request, in order, each point pending for the later ones (a q-batch built
        sequentially and greedily); ``history`` holds the trials so far, running ones as pending points.

        A proposal must be a valid point of ``history.space`` (rounded, feasible) and should not repeat a seen
        point; it keeps the requested phase unless the proposer ran it as another one (and says so in ``how``).
        """


class RandomProposer(BaseProposer):
    """Scrambled Sobol points seeded by ``seed`` and the trial id, never a seen one: a baseline strategy."""

    def __init__(self, space: Space, seed: int = 0, dtype: torch.dtype = torch.float64,
                 device: torch.device | str | None = None):
        self.space, self.seed, self.dtype = space, seed, dtype
        self.device = torch.device(device) if device is not None else torch.device("cpu")

    def propose(self, history: History, requests: Sequence[ProposalRequest]) -> list[Proposal]:
        seen = history.points(self.dtype, self.device)
        proposals = []
        for request in requests:
            x = random_point(self.space, self.seed, request.trial_id, seen, self.dtype, self.device)
            proposals.append(Proposal(x, request.phase, "random: Sobol point (RandomProposer)"))
            seen = x[None] if seen is None else torch.cat([seen, x[None]])
        return proposals
