"""`kerneldsl.loop.log_ei`: log EI and log Phi of a normal variable with their derivatives in closed form (against
60-digit arithmetic), `log_ei_within_bounds` (against its composition, gradcheck), and `LogEIWithinBounds`,
botorch's constrained log EI for one point per batch (mirrored in ``test_proposal_speed_posterior.py`` on fitted
models)."""

import math

import mpmath
import pytest
import torch
from botorch.acquisition.analytic import LogConstrainedExpectedImprovement
from botorch.models import ModelListGP, SingleTaskGP
from botorch.utils.probability.utils import log_ndtr

from kerneldsl.loop.acquisition import LogEIWithinBounds
from kerneldsl.loop.log_ei import VARIANCE_FLOOR, log_ei_within_bounds, log_h, log_Phi

# from far in the lower tail (where the naive formulas underflow to log 0) through the branch points to the upper side
GRID = torch.cat([-torch.logspace(7, -3, 300, dtype=torch.float64), torch.tensor([0.0, -1.0], dtype=torch.float64),
                  torch.logspace(-3, 2, 100, dtype=torch.float64)])


def _exact(u: float) -> tuple[float, float]:
    """``log h(u)`` and ``Phi(u) / h(u)`` in 60-digit arithmetic."""
    with mpmath.workdps(60):
        x = mpmath.mpf(u)
        Phi = mpmath.ncdf(x)
        h = mpmath.npdf(x) + x * Phi
        return float(mpmath.log(h)), float(Phi / h)


def test_log_h_and_its_slope_against_high_precision():
    """The values are botorch's log-EI helper's; the slopes are good to 1e-9 where botorch's autograd slope loses
    up to four digits (u near -1e6, where ``w`` nears zero)."""
    u = GRID.clone().requires_grad_(True)
    got = log_h(u)
    (gradient,) = torch.autograd.grad(got.sum(), u)
    exact = torch.tensor([_exact(x) for x in GRID.tolist()], dtype=torch.float64)
    assert got.isfinite().all() and gradient.isfinite().all()
    torch.testing.assert_close(got, exact[:, 0], rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gradient, exact[:, 1], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("function", [log_h, log_Phi])
def test_derivatives_pass_gradcheck(function):
    x = torch.tensor([-40.0, -3.0, -1.0 - 1e-3, -0.5, 0.0, 2.0, 9.0], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(function, (x,))


def test_float32_stays_finite_in_the_tail():
    u = torch.tensor([-1e4, -300.0, -20.0, -1.0, 0.0, 5.0], requires_grad=True)
    value = log_h(u)
    (slope,) = torch.autograd.grad(value.sum(), u)
    assert value.dtype == torch.float32 and value.isfinite().all() and slope.isfinite().all()
    exact = torch.tensor([_exact(x)[0] for x in u.detach().tolist()])
    torch.testing.assert_close(value, exact, rtol=1e-5, atol=1e-5)


def test_log_ei_within_bounds_is_its_composition_in_value_and_gradient():
    """One node equals log_h(u) + log s + sum log_Phi(z) built from autograd operations, for three outputs (the
    objective and two bounds), a clamped variance included (no gradient through the clamp, as ``clamp_min``)."""
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(6, 3, generator=g, dtype=torch.float64) * 3
    variance = torch.rand(6, 3, generator=g, dtype=torch.float64) + 0.05
    variance[2, 0], variance[4, 2] = 1e-15, 1e-20  # below the floor
    upper = {1: 0.4, 2: -1.0}

    def composed(m, v):
        s = v.clamp_min(VARIANCE_FLOOR).sqrt()
        z = (torch.tensor([0.4, -1.0], dtype=m.dtype) - m[..., 1:]) / s[..., 1:]
        return log_h((-0.7 - m[..., 0]) / s[..., 0]) + s[..., 0].log() + log_Phi(z).sum(-1)

    results = []
    for function in (lambda m, v: log_ei_within_bounds(m, v, -0.7, 0, upper), composed):
        m, v = mean.clone().requires_grad_(True), variance.clone().requires_grad_(True)
        value = function(m, v)
        results.append((value.detach(), *torch.autograd.grad((value * torch.arange(1.0, 7.0)).sum(), (m, v))))
    for got, want in zip(*results):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert results[0][2][2, 0] == 0 and results[0][2][4, 2] == 0
    smooth = variance.clamp_min(0.05)  # finite differences need a smooth neighbourhood (not s = 1e-6)
    inputs = (mean.clone().requires_grad_(True), smooth.requires_grad_(True))
    assert torch.autograd.gradcheck(lambda m, v: log_ei_within_bounds(m, v, -0.7, 0, upper), inputs)


@pytest.fixture(scope="module")
def two_outputs():
    g = torch.Generator().manual_seed(0)
    X = torch.rand(10, 3, generator=g, dtype=torch.float64)
    gps = [SingleTaskGP(X, (X @ torch.tensor([[1.0], [-2.0], [0.5]], dtype=torch.float64)).sin()),
           SingleTaskGP(X, X.sum(-1, keepdim=True).square())]
    for gp in gps:
        gp.eval()
    return ModelListGP(*gps)


def test_on_any_model_it_is_botorchs_constrained_log_ei(two_outputs):
    """Through the model's ``posterior`` (here a ``ModelListGP``), the tock's and the tick's forms agree with
    ``LogConstrainedExpectedImprovement`` in values and gradients, far from the data too."""
    X = torch.rand(9, 1, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 4 - 1.5
    cases = [(LogEIWithinBounds(two_outputs, -0.2, objective=0, upper={1: 0.8}),
              LogConstrainedExpectedImprovement(two_outputs, -0.2, 0, {1: (None, 0.8)}, maximize=False)),
             (LogEIWithinBounds(two_outputs, 1.1, objective=1, upper={0: 0.3}),
              LogConstrainedExpectedImprovement(two_outputs, 1.1, 1, {0: (None, 0.3)}, maximize=False))]
    for got, expected in cases:
        results = []
        for acquisition in (got, expected):
            Xg = X.clone().requires_grad_(True)
            value = acquisition(Xg)
            results.append((value.detach(), torch.autograd.grad(value.sum(), Xg)[0]))
        assert results[0][0].shape == (9,)
        torch.testing.assert_close(results[0][0], results[1][0])
        torch.testing.assert_close(results[0][1], results[1][1])


def test_shapes(two_outputs):
    acquisition = LogEIWithinBounds(two_outputs, 0.0, objective=0, upper={})
    assert acquisition(torch.zeros(1, 3, dtype=torch.float64)).shape == (1,)
    assert acquisition(torch.zeros(2, 4, 1, 3, dtype=torch.float64)).shape == (2, 4)
    with pytest.raises(ValueError, match=r"one point per batch \(\[b, 1, d\]\), got shape \(4, 2, 3\)"):
        acquisition(torch.zeros(4, 2, 3, dtype=torch.float64))
    with torch.no_grad():
        assert math.isfinite(float(acquisition(torch.full((1, 3), 50.0, dtype=torch.float64))))
