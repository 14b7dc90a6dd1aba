"""`CachedPosterior`, the proposer's fast joint posterior, is the ``ModelListGP`` posterior of the same models; the
closed-form tick and tock are botorch's constrained log EI on it."""

import math

import pytest
import torch
from botorch.acquisition.analytic import LogConstrainedExpectedImprovement, LogExpectedImprovement
from botorch.models import ModelListGP, SingleTaskGP
from botorch.sampling import SobolQMCNormalSampler

import kerneldsl as kd
from kerneldsl.loop.acquisition import Incumbent, analytic_tick, analytic_tock, qLogCostImprovement, tock_acquisition
from kerneldsl.loop.options import ModelOptions
from kerneldsl.loop.proposals import output_models
from kerneldsl.model import CachedPosterior, PointPosterior


@pytest.fixture(scope="module", params=[None, "matern52({log_lr, layers}) * matern52({act_relu, act_tanh})"],
                ids=["one kernel", "two kernels"])
def fitted(request):
    """Loss and cost models of the default kernel (the posterior computes both in one stacked kernel call), or of
    two kernels."""
    space = kd.Space([kd.Scalar("lr", 1e-3, 1.0, log=True), kd.Int("layers", 1, 6), kd.Choice("act", ["relu", "tanh"])])
    X = kd.sample(space, 12, seed=0, dtype=torch.float64)
    y_loss, y_cost = (X[:, 0] - 0.3 * X[:, 1]).sin(), 0.5 * X[:, 1] + X[:, 2]
    models = output_models(space, ModelOptions(loss_kernel=request.param))
    gps = [models["loss"].fit(X, y_loss), models["cost"].fit(X, y_cost)]
    return space, X, gps


@pytest.mark.parametrize("outputs", [2, 1])
@pytest.mark.parametrize("shape", [(1,), (4,), (5, 3), (2, 3, 2), (3, 1), (2, 2, 1)])
def test_same_posterior_and_samples_as_a_model_list(fitted, shape, outputs):
    """Means, covariances and samples from base samples; at one point per batch (shape ending in 1) the
    posterior is a `PointPosterior`, whose moments are plain tensors."""
    space, _, gps = fitted
    gps = gps[:outputs]
    reference, cached = ModelListGP(*gps), CachedPosterior(gps)
    X = kd.sample(space, int(torch.tensor(shape).prod()), seed=1, dtype=torch.float64).reshape(*shape, -1)
    expected, got = reference.posterior(X), cached.posterior(X)
    assert isinstance(got, PointPosterior) == (X.shape[-2] == 1)
    assert got.mean.shape == expected.mean.shape and got.variance.shape == expected.variance.shape
    torch.testing.assert_close(got.mean, expected.mean)
    torch.testing.assert_close(got.variance, expected.variance)
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


def test_closed_form_acquisitions_are_botorchs_constrained_log_ei_on_the_model_list(fitted):
    """The tock is log EI of the loss below the incumbent's mean plus log P(cost <= budget); the tick log EI of the
    log cost below the incumbent's (or the budget's) plus log P(loss <= incumbent's mean): botorch's
    ``LogConstrainedExpectedImprovement`` on a ``ModelListGP`` of the same models, values and gradients."""
    space, X_train, gps = fitted
    cached, reference = CachedPosterior(gps), ModelListGP(*gps)
    incumbent = Incumbent.of(cached, X_train)
    with torch.no_grad():
        means = reference.posterior(X_train.unsqueeze(-2)).mean.squeeze(-2)
    best = int(means[:, 0].argmin())
    assert torch.equal(incumbent.x, X_train[best])
    assert incumbent.loss == pytest.approx(float(means[best, 0])) and incumbent.log_cost == pytest.approx(float(means[best, 1]))
    budget = 3.0
    expected = {
        "tock": LogConstrainedExpectedImprovement(reference, incumbent.loss, 0, {1: (None, math.log(budget))}, maximize=False),
        "tick": LogConstrainedExpectedImprovement(reference, min(incumbent.log_cost, math.log(budget)), 1,
                                                  {0: (None, incumbent.loss)}, maximize=False),
    }
    got = {"tock": analytic_tock(cached, incumbent, budget), "tick": analytic_tick(cached, incumbent, budget)}
    X = kd.sample(space, 7, seed=4, dtype=torch.float64).unsqueeze(-2)
    for phase in ("tock", "tick"):
        values = []
        for acquisition in (expected[phase], got[phase]):
            Xg = X.clone().requires_grad_(True)
            value = acquisition(Xg)
            values.append((value.detach(), torch.autograd.grad(value.sum(), Xg)[0]))
        assert values[0][0].isfinite().all()
        torch.testing.assert_close(values[1][0], values[0][0])
        # gradients to 1e-6: a small posterior variance (prior minus explained variance, computed by the cached
        # inverse factor here and by gpytorch's solves there) carries rounding at the 1e-7 level into them
        torch.testing.assert_close(values[1][1], values[0][1], rtol=1e-6, atol=1e-9)


def test_closed_form_without_a_budget_is_log_ei_of_the_loss(fitted):
    space, X_train, gps = fitted
    cached = CachedPosterior(gps)
    incumbent = Incumbent.of(cached, X_train)
    X = kd.sample(space, 5, seed=5, dtype=torch.float64).unsqueeze(-2)
    expected = LogExpectedImprovement(gps[0], incumbent.loss, maximize=False)(X)
    torch.testing.assert_close(analytic_tock(cached, incumbent, math.inf)(X), expected)


def test_proposals_use_the_closed_form_only_when_nothing_is_pending():
    task = kd.SyntheticTask()
    study = kd.Study(task.space(), task.max_cost, n_init=5, seed=0, num_restarts=2, raw_samples=32, mc_samples=16)
    for trial in study.ask(5):
        study.tell(trial, task(trial.config))
    first, second = study.ask(2)
    assert first.proposal.endswith(", closed form") and "pending" not in first.prediction, first.proposal
    assert not second.proposal.endswith(", closed form") and second.prediction["pending"] == 1, second.proposal
    study.tell(first, task(first.config))
    study.tell(second, task(second.config))
    monte_carlo = kd.Study(task.space(), task.max_cost, n_init=5, seed=0, num_restarts=2, raw_samples=32, mc_samples=16,
                           analytic=False)
    for trial in monte_carlo.ask(5):
        monte_carlo.tell(trial, task(trial.config))
    assert not monte_carlo.ask().proposal.endswith(", closed form")


def test_models_with_different_input_transforms_each_see_their_own_features(fitted):
    """One input transform is applied once for the outputs that share it; a model with another transform (here
    the default chain without rounding) gets its own features."""
    space, X_train, gps = fitted
    y = (X_train[:, 0] * X_train[:, 1]).cos()
    factory = output_models(space, ModelOptions())["cost"].factory
    other = SingleTaskGP(X_train, y.unsqueeze(-1), input_transform=factory.feature_chain)
    models = [gps[0], other]
    X = kd.sample(space, 4, seed=6, dtype=torch.float64).reshape(2, 2, -1)
    X[..., 1] += 0.3  # off the integer grid: the rounding transform matters
    torch.testing.assert_close(CachedPosterior(models).posterior(X).mean, ModelListGP(*models).posterior(X).mean)
