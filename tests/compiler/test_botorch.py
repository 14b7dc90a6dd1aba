"""End to end with botorch: fit a compiled kernel, predict held-out points, optimise an acquisition."""

import math
import warnings

import pytest
import torch
from botorch.acquisition.logei import qLogNoisyExpectedImprovement
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.outcome import Standardize
from botorch.optim import optimize_acqf
from gpytorch.mlls import ExactMarginalLogLikelihood

import kerneldsl as kd

FEATURES = ["x0", "x1", "x2", "x3"]
SOURCE = "additive({x0, x1}) + matern52({x2, x3})"


def objective(X):
    """Additive in (x0, x1) plus a joint part in (x2, x3)."""
    return (torch.sin(6 * X[:, 0]) + 4 * (X[:, 1] - 0.5) ** 2 + torch.cos(5 * X[:, 2]) * X[:, 3]).unsqueeze(-1)


@pytest.fixture(scope="module")
def data():
    g = torch.Generator().manual_seed(0)
    train_X = torch.rand(40, 4, generator=g, dtype=torch.float64)
    test_X = torch.rand(200, 4, generator=g, dtype=torch.float64)
    return train_X, objective(train_X), test_X, objective(test_X)


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_fit_predicts_better_than_chance_and_acquisition_optimises(data, backend):
    train_X, train_Y, test_X, test_Y = data
    kernel = kd.compile(SOURCE, features=FEATURES, backend=backend)
    model = SingleTaskGP(train_X, train_Y, covar_module=kernel, outcome_transform=Standardize(m=1))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    model.eval()
    with torch.no_grad():
        mean = model.posterior(test_X).mean
    rmse = (mean - test_Y).pow(2).mean().sqrt().item()
    chance = test_Y.std().item()
    assert rmse < 0.35 * chance, f"{backend}: RMSE {rmse:.3f} vs chance {chance:.3f}"
    # The fit moved the hyperparameters and the learned sum weights stay on the simplex.
    hp = kernel.get_hyperparameters()
    weights = [v for k, v in hp.items() if ".weight[" in k]
    assert math.isclose(float(sum(weights)), 1.0, rel_tol=1e-9)
    assert "kernel = " in kernel.describe()

    acqf = qLogNoisyExpectedImprovement(model, X_baseline=train_X)
    bounds = torch.stack([torch.zeros(4), torch.ones(4)]).to(train_X)
    candidates, value = optimize_acqf(acqf, bounds=bounds, q=2, num_restarts=2, raw_samples=32,
                                      options={"maxiter": 30})
    assert candidates.shape == (2, 4)
    assert ((candidates >= 0) & (candidates <= 1)).all()
    assert torch.isfinite(value).all()


def test_batched_model_fits(data):
    """A batch of 3 models (e.g. LOO folds) through batch_shape, fitted jointly."""
    train_X, train_Y, _, _ = data
    X = torch.stack([train_X[:30], train_X[5:35], train_X[10:40]])
    Y = torch.stack([train_Y[:30], train_Y[5:35], train_Y[10:40]])
    kernel = kd.compile(SOURCE, features=FEATURES, backend="torch", batch_shape=torch.Size([3]))
    model = SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=Standardize(m=1, batch_shape=torch.Size([3])))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit_gpytorch_mll(mll)
    assert kernel.get_hyperparameters()["outputscale"].shape == (3,)
    values = torch.stack(list(kernel.get_hyperparameters().values()))
    assert not torch.allclose(values[:, 0], values[:, 1])  # each batch element has its own fit
