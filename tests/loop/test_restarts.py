"""`kerneldsl.loop.restarts.MergedRestarts`: a start stops once a start at least as good is near it."""

from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from botorch.acquisition import AcquisitionFunction
from botorch.models import SingleTaskGP
from botorch.optim import optimize_acqf
from scipy.optimize import OptimizeResult

from kerneldsl.loop.proposals import STOPPED_RESTARTS
from kerneldsl.loop.restarts import MERGE_DISTANCE, MergedRestarts

BOUNDS = torch.tensor([[0.0, -10.0], [1.0, 10.0]], dtype=torch.float64)


def step(callback: MergedRestarts, x: np.ndarray, value: float) -> bool:
    """Report ``x`` (the same array object for one start, as L-BFGS-B's iterate) at ``value``; True if it stopped."""
    try:
        callback(OptimizeResult(x=x, fun=value))
    except StopIteration:
        return True
    return False


def test_a_start_near_a_better_one_stops_and_a_far_or_better_one_goes_on():
    callback = MergedRestarts(BOUNDS, starts=3)
    a, b, c = np.array([0.5, 0.0]), np.array([0.9, 5.0]), np.array([0.1, -5.0])
    assert not step(callback, a, -2.0)
    assert not step(callback, b, -1.0)  # far from a
    assert not step(callback, c, -3.0)
    a[:] = [0.1 + MERGE_DISTANCE / 2, -5.0]  # near c, worse than c: stops
    assert step(callback, a, -2.5)
    b[:] = [0.1, -5.0 + 20 * MERGE_DISTANCE / 2]  # near c (distances are fractions of each bound's range), better
    assert not step(callback, b, -3.5)
    c[:] = [0.1, -5.0 + 20 * MERGE_DISTANCE * 0.9]  # now c is near b and worse: c stops
    assert step(callback, c, -3.2)
    assert callback.halted == 2


def test_a_start_as_near_as_the_distance_or_farther_goes_on():
    callback = MergedRestarts(BOUNDS, starts=2)
    a, b = np.array([0.5, 0.0]), np.array([0.5 + 1.01 * MERGE_DISTANCE, 0.0])
    assert not step(callback, a, -2.0)
    assert not step(callback, b, -1.0)


def test_starts_that_cannot_be_told_apart_are_never_stopped():
    """An optimiser that passes a fresh array at every iteration: once more arrays than starts arrive, nothing stops."""
    callback = MergedRestarts(BOUNDS, starts=2)
    assert not step(callback, np.array([0.5, 0.0]), -2.0)
    assert not step(callback, np.array([0.9, 5.0]), -1.0)
    assert not step(callback, np.array([0.5, 0.0]), -1.5)  # a third array, at the first one's point: not stopped
    assert not step(callback, np.array([0.5, 0.0]), -1.0)
    assert callback.halted == 0


class Bumps(AcquisitionFunction):
    """Two smooth bumps on [0, 1]^3, the higher at (0.7, 0.7, 0.7), ill-conditioned so that starts converge slowly;
    counts its evaluations."""

    def __init__(self):
        X = torch.rand(4, 3, dtype=torch.float64)
        super().__init__(model=SingleTaskGP(X, X.sum(-1, keepdim=True)))
        self.evaluations = 0

    def forward(self, X: torch.Tensor) -> torch.Tensor:
        self.evaluations += 1
        x = X.squeeze(-2)
        scale = torch.tensor([1.0, 30.0, 300.0], dtype=x.dtype)
        high = torch.exp(-((x - 0.7) ** 2 * scale).sum(-1))
        low = 0.8 * torch.exp(-((x - 0.2) ** 2 * scale).sum(-1))
        return torch.log(high + low + 1e-3)


def optimise(acquisition: Bumps, starts: torch.Tensor, callback: MergedRestarts | None):
    options = {"maxiter": 200} if callback is None else {"maxiter": 200, "callback": callback}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        x, value = optimize_acqf(acquisition, bounds=torch.tensor([[0.0] * 3, [1.0] * 3], dtype=torch.float64), q=1,
                                 num_restarts=len(starts), batch_initial_conditions=starts, options=options,
                                 return_best_only=False)
    return x, value, [str(w.message) for w in caught if issubclass(w.category, RuntimeWarning)]


def test_in_botorchs_optimiser_merged_starts_stop_the_best_value_stays_and_its_warning_is_recognised():
    torch.manual_seed(0)
    starts = torch.rand(8, 1, 3, dtype=torch.float64)
    plain = Bumps()
    _, value, _ = optimise(plain, starts, None)
    merging = Bumps()
    callback = MergedRestarts(torch.tensor([[0.0] * 3, [1.0] * 3], dtype=torch.float64), len(starts))
    _, merged_value, messages = optimise(merging, starts, callback)
    assert callback.halted >= 1
    assert merging.evaluations < plain.evaluations
    assert float(merged_value.max()) == pytest.approx(float(value.max()), abs=1e-8)
    assert messages and all(re.match(STOPPED_RESTARTS, m, re.I) for m in messages), messages
    other = messages[0].replace("CALLBACK REQUESTED HALT", "TOTAL NO. OF ITERATIONS REACHED LIMIT")
    assert not re.match(STOPPED_RESTARTS, other, re.I)


def test_iterates_of_another_size_than_the_box_are_never_stopped():
    callback = MergedRestarts(BOUNDS, starts=2)
    assert not step(callback, np.array([0.5, 0.0, 1.0]), -2.0)
    assert not step(callback, np.array([0.5, 0.0, 1.0]), -1.0)
    assert callback.halted == 0
