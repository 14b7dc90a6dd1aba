"""`kerneldsl.loop.restarts`: starts drawn by the acquisition's value (`starts_by_value`), and `MergedRestarts` (a start
stops once a start at least as good is near it); the proposer's choice between the start rules."""

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

import kerneldsl as kd
import kerneldsl.loop.proposals as proposals_module
from kerneldsl.loop.options import AcquisitionOptions
from kerneldsl.loop.proposals import STOPPED_RESTARTS
from kerneldsl.loop.restarts import MERGE_DISTANCE, MergedRestarts, StartWeights, starts_by_value

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


# --------------------------------------------------------------------------- starts drawn by value


def test_starts_by_value_put_the_best_first_and_draw_the_others_in_proportion_to_the_value():
    X = torch.arange(4, dtype=torch.float64).reshape(4, 1, 1)  # point i is i
    log_values = torch.tensor([0.5, 2.0, 2.0 + np.log(0.5), 2.0 + np.log(0.25)], dtype=torch.float64)
    torch.manual_seed(0)
    second = [int(starts_by_value(X, log_values, 2)[1]) for _ in range(3000)]
    counts = np.bincount(second, minlength=4) / 3000
    weights = np.exp(log_values.numpy() - 2.0)
    weights[1] = 0.0
    expected = weights / weights.sum()  # point 0: 0.22/1.47, point 2: 0.5/1.47, point 3: 0.25/1.47
    assert counts[1] == 0
    np.testing.assert_allclose(counts, expected, atol=0.03)
    assert all(int(starts_by_value(X, log_values, 3)[0]) == 1 for _ in range(20))
    assert sorted(int(x) for x in starts_by_value(X, log_values, 4)) == [0, 1, 2, 3]  # without replacement


def test_starts_by_value_are_fewer_where_few_points_have_a_value_and_random_where_none_has():
    X = torch.arange(5, dtype=torch.float64).reshape(5, 1, 1)
    log_values = torch.tensor([-torch.inf, 1.0, float("nan"), -torch.inf, 0.0], dtype=torch.float64)
    starts = starts_by_value(X, log_values, 4)
    assert [int(x) for x in starts] == [1, 4]
    torch.manual_seed(0)
    nothing = starts_by_value(X, torch.full((5,), -torch.inf, dtype=torch.float64), 3)
    assert len(nothing) == 3 and len(set(int(x) for x in nothing)) == 3


def test_from_starts_by_value_the_optimiser_needs_fewer_evaluations_for_the_same_best_than_from_boltzmann_starts():
    """Raw points mostly where the acquisition is flat (``Bumps``): botorch's weights start many restarts there."""
    torch.manual_seed(0)
    raw = torch.rand(256, 1, 3, dtype=torch.float64)
    with torch.no_grad():
        values = Bumps()(raw)
    torch.manual_seed(1)
    by_value = starts_by_value(raw, values, 8)
    boltzmann, _ = proposals_module.initialize_q_batch(raw, values, n=8)
    results = {}
    for name, starts in (("value", by_value), ("boltzmann", boltzmann)):
        acquisition = Bumps()
        _, value, _ = optimise(acquisition, starts, MergedRestarts(torch.tensor([[0.0] * 3, [1.0] * 3]), len(starts)))
        results[name] = (acquisition.evaluations, float(value.max()))
    assert results["value"][0] < results["boltzmann"][0], results
    assert results["value"][1] == pytest.approx(results["boltzmann"][1], abs=1e-8)


def test_start_weights_take_their_names_and_a_wrong_one_is_named():
    assert AcquisitionOptions(start_weights="boltzmann").start_weights is StartWeights.BOLTZMANN
    assert AcquisitionOptions().start_weights is StartWeights.VALUE
    with pytest.raises(ValueError, match="start_weights must be a kerneldsl.StartWeights or one of 'value', "
                                         "'boltzmann', got 'softmax'"):
        AcquisitionOptions(start_weights="softmax")


def continuous_study(**options) -> kd.Study:
    space = kd.Space([kd.Scalar("a", 1e-3, 1.0, log=True), kd.Scalar("b", 0.0, 1.0)])
    study = kd.Study(space, max_cost=1.0, n_init=4, seed=0, **options)
    for _ in range(4):
        trial = study.ask()
        a, b = trial.config["a"], trial.config["b"]
        study.tell(trial, {"loss": (np.log10(a) + 1.5) ** 2 + (b - 0.3) ** 2, "cost": 0.1 + 0.1 * b})
    return study


@pytest.mark.parametrize("options, alone, pending", [({}, "value", "boltzmann"),
                                                    ({"start_weights": "boltzmann"}, "boltzmann", "boltzmann")])
def test_closed_form_proposals_draw_their_starts_as_the_options_say_and_pending_ones_by_boltzmann(
        monkeypatch, options, alone, pending):
    study = continuous_study(**options)
    used: list[str] = []
    by_value, boltzmann = proposals_module.starts_by_value, proposals_module.initialize_q_batch
    monkeypatch.setattr(proposals_module, "starts_by_value", lambda *a, **k: used.append("value") or by_value(*a, **k))
    monkeypatch.setattr(proposals_module, "initialize_q_batch",
                        lambda *a, **k: used.append("boltzmann") or boltzmann(*a, **k))
    first, second = study.ask(2)  # the second with the first pending: Monte Carlo
    assert first.proposal.endswith("closed form") and not second.proposal.endswith("closed form")
    assert used == [alone, pending]
