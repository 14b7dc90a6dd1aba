"""`CachedPosterior`, the proposer's fast joint posterior, is the ``ModelListGP`` posterior of the same models."""

import pytest
import torch
from botorch.models import ModelListGP
from botorch.sampling import SobolQMCNormalSampler

import kerneldsl as kd
from kerneldsl.loop.acquisition import qLogCostImprovement, tock_acquisition
from kerneldsl.loop.options import ModelOptions
from kerneldsl.loop.proposals import output_models
from kerneldsl.model import CachedPosterior


@pytest.fixture(scope="module")
def fitted():
    space = kd.Space([kd.Scalar("lr", 1e-3, 1.0, log=True), kd.Int("layers", 1, 6), kd.Choice("act", ["relu", "tanh"])])
    X = kd.sample(space, 12, seed=0, dtype=torch.float64)
    y_loss, y_cost = (X[:, 0] - 0.3 * X[:, 1]).sin(), 0.5 * X[:, 1] + X[:, 2]
    models = output_models(space, ModelOptions())
    gps = [models["loss"].fit(X, y_loss), models["cost"].fit(X, y_cost)]
    return space, X, gps


@pytest.mark.parametrize("shape", [(1,), (4,), (5, 3), (2, 3, 2)])
def test_same_posterior_and_samples_as_a_model_list(fitted, shape):
    space, _, gps = fitted
    reference, cached = ModelListGP(*gps), CachedPosterior(gps)
    X = kd.sample(space, int(torch.tensor(shape).prod()), seed=1, dtype=torch.float64).reshape(*shape, -1)
    expected, got = reference.posterior(X), cached.posterior(X)
    assert got.mean.shape == expected.mean.shape
    torch.testing.assert_close(got.mean, expected.mean)
    torch.testing.assert_close(got.distribution.covariance_matrix, expected.distribution.covariance_matrix)
    base = torch.randn(8, *expected.base_sample_shape, dtype=torch.float64)
    torch.testing.assert_close(got.rsample_from_base_samples(torch.Size([8]), base),
                               expected.rsample_from_base_samples(torch.Size([8]), base))


def test_acquisition_values_and_gradients_match(fitted):
    space, X_train, gps = fitted
    X = kd.sample(space, 6, seed=2, dtype=torch.float64).unsqueeze(-2)
    results = []
    for model in (ModelListGP(*gps), CachedPosterior(gps)):
        torch.manual_seed(0)  # the tock prunes its baseline with random samples
        for acquisition in (tock_acquisition(model, X_train, 3.0, sampler=SobolQMCNormalSampler(torch.Size([32]), seed=0),
                                             X_pending=X_train[:1]),
                            qLogCostImprovement(model, X_train, 3.0, sampler=SobolQMCNormalSampler(torch.Size([32]), seed=0))):
            Xg = X.clone().requires_grad_(True)
            value = acquisition(Xg)
            (gradient,) = torch.autograd.grad(value.sum(), Xg)
            results.append((value.detach(), gradient))
    for (value, gradient), (value_cached, gradient_cached) in zip(results[:2], results[2:]):
        torch.testing.assert_close(value_cached, value)
        torch.testing.assert_close(gradient_cached, gradient)


def test_observation_noise_goes_to_the_model_list(fitted):
    space, _, gps = fitted
    X = kd.sample(space, 3, seed=3, dtype=torch.float64)
    noisy = CachedPosterior(gps).posterior(X, observation_noise=True)
    torch.testing.assert_close(noisy.variance, ModelListGP(*gps).posterior(X, observation_noise=True).variance)
    assert (noisy.variance > CachedPosterior(gps).posterior(X).variance).all()
