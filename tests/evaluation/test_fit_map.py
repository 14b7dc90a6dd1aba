"""MAP fitting with restarts from prior draws keeps, per batch element, the best objective."""

import torch

import kerneldsl as kd
from kerneldsl.fitting import fit_map, map_objective
from botorch.models import SingleTaskGP
from gpytorch.mlls import ExactMarginalLogLikelihood


FAST = {"optimizer_kwargs": {"options": {"maxiter": 25}}}


def _model(seed: int):
    g = torch.Generator().manual_seed(seed)
    X = torch.rand(2, 8, 2, generator=g, dtype=torch.float64)  # a batch of two data sets
    Y = torch.sin(6 * X[..., :1]) * torch.cos(3 * X[..., 1:]) + 0.05 * torch.randn(2, 8, 1, generator=g,
                                                                                   dtype=torch.float64)
    kernel = kd.compile("matern52(a) + matern52(b) + matern52({a, b})", ["a", "b"], backend="torch",
                        batch_shape=torch.Size([2]))
    return SingleTaskGP(X, Y, covar_module=kernel.double())


def test_restarts_never_lower_the_objective_of_any_batch_element():
    torch.manual_seed(0)
    single = _model(1)
    plain = fit_map(single, fit_kwargs=FAST)
    torch.manual_seed(0)
    restarted_model = _model(1)
    restarted = fit_map(restarted_model, restarts=2, fit_kwargs=FAST)
    assert plain.shape == restarted.shape == torch.Size([2])
    assert (restarted >= plain - 1e-6).all()
    # the kept parameters are the ones the returned objective was computed with
    again = map_objective(ExactMarginalLogLikelihood(restarted_model.likelihood, restarted_model))
    assert torch.allclose(again, restarted, atol=1e-8)
