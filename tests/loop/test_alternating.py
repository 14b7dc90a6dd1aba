"""`kerneldsl.loop.alternating.alternate`: batched local searches from given starts over mixed spaces."""

from __future__ import annotations

import torch
from botorch.acquisition import AcquisitionFunction
from torch import Tensor

from kerneldsl.loop.alternating import alternate

BOUNDS = torch.tensor([[0.0, 0.0, 0.0], [1.0, 6.0, 1.0]], dtype=torch.float64)
INTS = {1: [float(v) for v in range(7)]}
CHOICE = {2: [0.0, 1.0]}


class Bowl(AcquisitionFunction):
    """Highest at x = 0.3, k = 4, c = 1 (value 0.5); ``b x 1 x 3`` points."""

    def __init__(self):
        super().__init__(model=None)

    def forward(self, X: Tensor) -> Tensor:
        x, k, c = X[..., 0, 0], X[..., 0, 1], X[..., 0, 2]
        return -(x - 0.3) ** 2 - 0.1 * (k - 4) ** 2 + 0.5 * c


def test_every_start_climbs_to_the_optimum_over_integers_choices_and_scalars():
    starts = torch.tensor([[0.9, 0.0, 0.0], [0.1, 6.0, 1.0], [0.5, 2.4, 0.2]], dtype=torch.float64)
    X, values = alternate(Bowl(), starts, BOUNDS, INTS, CHOICE)
    torch.testing.assert_close(X, torch.tensor([[0.3, 4.0, 1.0]] * 3, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(values, torch.full((3,), 0.5, dtype=torch.float64), atol=1e-6, rtol=0)


def test_starts_are_rounded_and_no_round_leaves_them_where_they_are():
    starts = torch.tensor([[0.9, 2.4, 0.7]], dtype=torch.float64)
    X, values = alternate(Bowl(), starts, BOUNDS, INTS, CHOICE, options={"maxiter_alternating": 0})
    torch.testing.assert_close(X, torch.tensor([[0.9, 2.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(values, Bowl()(X.unsqueeze(-2)))


def test_linear_constraints_hold_at_the_end_points():
    """x + 0.1 k <= 0.5 (botorch's form: -x - 0.1 k >= -0.5) cuts the optimum off."""
    constraint = [(torch.tensor([0, 1]), torch.tensor([-1.0, -0.1], dtype=torch.float64), -0.5)]
    starts = torch.tensor([[0.1, 1.0, 0.0], [0.0, 2.0, 1.0]], dtype=torch.float64)
    X, values = alternate(Bowl(), starts, BOUNDS, INTS, CHOICE, inequality_constraints=constraint)
    assert bool((X[:, 0] + 0.1 * X[:, 1] <= 0.5 + 1e-6).all()), X
    assert bool((values > Bowl()(starts.unsqueeze(-2))).all()), "every start must improve"
    assert set(X[:, 1].tolist()) <= set(INTS[1]), X
