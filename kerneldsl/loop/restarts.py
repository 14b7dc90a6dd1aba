"""Where acquisition restarts start, and stopping those that climb an optimum another restart is already on.

`starts_by_value` draws the starts from the raw points with probability proportional to the acquisition's value
(`StartWeights.VALUE`), as Optuna's ``GPSampler`` does, instead of botorch's Boltzmann weights on the standardised
log values (``initialize_q_batch``, `StartWeights.BOLTZMANN`); the best raw point starts one either way. A log
acquisition's raw values span tens of units, most of them from regions where the acquisition is nearly zero;
botorch's weights gave those regions most of the starts, and each crawled across a plateau for 15-25 evaluations
before reaching the optimum the best raw point's start had found (eight features, n = 10: all eight starts on one
optimum in 6 of 8 proposals, seven in the other two). Drawn by value, the evaluations of closed-form proposals fell
by 42-56% on eight log scalars (n = 10, 40, 100) and by 1-42% on Hartmann 6-D, Ackley 5-D and Rosenbrock 4-D (one
cell 4% more), and no best value moved by more than 2e-8 (``benchmarks/restart_starts.py``). With pending points
(Monte Carlo acquisitions, each pending point a hole in the surface) the proposer keeps botorch's weights, whose
starts spread wider: drawn by value there, the evaluations did not fall consistently (-21% to +18% over four
functions) and, though the best value came out higher more often than lower (31 against 17 of 88 optimisations),
one optimisation missed the best optimum by 11 in log acquisition value.

botorch optimises an acquisition from several starting points at once (``optimize_acqf`` with
``gen_candidates_scipy``: one L-BFGS-B per start, batched), and the batch runs until its slowest start
has converged. On small models the starts mostly climb one optimum (eight features, n = 10: in 12
proposals 6-7 of 8 starts ended on the best one's optimum), so most evaluations after the first few
iterations refine one point several times over. `MergedRestarts` is the optimiser's callback that stops a
start once it is within `MERGE_DISTANCE` of a start whose value is at least as good: the better start goes
on to the optimum; the stopped one keeps the point it reached. In those 12 proposals (starts by botorch's
weights) it cut the acquisition's evaluations by 22% and moved no best value by more than 1e-9
(``benchmarks/merged_restarts.py``; with pending points, Monte-Carlo acquisitions, by at most 4e-4 in log
acquisition value).
"""

from __future__ import annotations

from enum import Enum

import numpy as np
import torch
from scipy.optimize import OptimizeResult
from torch import Tensor

__all__ = ["MERGE_DISTANCE", "MergedRestarts", "HALTED_RESTART", "StartWeights", "starts_by_value"]

MERGE_DISTANCE = 0.03
"""Two starts are on one optimum once every coordinate is within this fraction of its bounds' range."""

HALTED_RESTART = "STOP: CALLBACK REQUESTED HALT"
"""scipy's L-BFGS-B message for a start `MergedRestarts` stopped (botorch reports it as a failed start)."""


class StartWeights(Enum):
    """How an acquisition's restarts are drawn from its raw points (the best raw point always starts one)."""

    VALUE = "value"
    """With probability proportional to the acquisition's value, the exponential of its log (`starts_by_value`)."""
    BOLTZMANN = "boltzmann"
    """botorch's ``initialize_q_batch``: proportional to the exponential of the standardised log values."""


def starts_by_value(X: Tensor, log_values: Tensor, n: int) -> Tensor:
    """Up to ``n`` of the raw points ``X [b, ...]`` as restarts: the best first, then drawn without replacement
    (torch's generator) with probability proportional to ``exp(log_values [b])``, the acquisition's value; fewer
    than ``n`` when fewer points have a value above zero (NaN counts as zero); ``n`` at random when none has."""
    log_values = torch.nan_to_num(log_values.detach().reshape(-1), nan=-torch.inf)
    best = int(log_values.argmax())
    if not torch.isfinite(log_values[best]):
        return X[torch.randperm(len(X), device=X.device)[:n]]
    weights = (log_values - log_values[best]).exp()
    weights[best] = 0.0
    others = min(n - 1, int((weights > 0).sum()))
    chosen = torch.multinomial(weights, others).tolist() if others > 0 else []
    return X[[best, *chosen]]


class MergedRestarts:
    """A callback of botorch's batched L-BFGS-B (``options={"callback": ...}`` of ``optimize_acqf``): raises
    ``StopIteration`` (scipy's way to halt one optimisation) for a start within `MERGE_DISTANCE` of another
    start's last point whose value is as good or better (values are minimised: botorch's negated acquisition).

    ``bounds [2, d]``: the box of the coordinates the optimiser moves (without fixed features), whose ranges
    distances are measured in fractions of; ``starts``: how many starts the batch holds. Starts are told apart by
    the identity of the iterate array L-BFGS-B updates in place; if more distinct arrays arrive than there are
    starts (an optimiser that copies its iterates), or iterates of another size than ``d``, nothing is stopped.
    One object per optimisation.
    """

    def __init__(self, bounds: Tensor, starts: int):
        width = (bounds[1] - bounds[0]).detach().cpu().double().numpy()
        self.scale = np.where(width > 0, width, 1.0)
        self.rows: dict[int, int] = {}  # iterate array's id -> its start's row
        self.points = np.full((starts, len(self.scale)), np.nan)  # each start's last point, in fractions of the box
        self.values = np.full(starts, np.inf)  # and its value (inf: not seen yet, or stopped)
        self.active = True
        self.halted = 0

    def __call__(self, intermediate_result: OptimizeResult) -> None:
        if not self.active:
            return
        key = id(intermediate_result.x)
        point = np.asarray(intermediate_result.x, dtype=np.float64).reshape(-1)
        row = self.rows.get(key)
        if row is None:
            row = len(self.rows)
            if row >= len(self.values) or point.shape != self.scale.shape:
                self.active = False  # starts that cannot be told apart, or not the box they move in
                return
            self.rows[key] = row
        point = point / self.scale
        value = float(intermediate_result.fun)
        near = (np.abs(self.points - point).max(axis=1) < MERGE_DISTANCE) & (self.values <= value)
        near[row] = False
        if near.any():
            self.values[row] = np.inf
            self.halted += 1
            raise StopIteration
        self.points[row], self.values[row] = point, value
