"""`dense_mll_closure`, the fits' fast loss closure, is botorch's ``ExactMarginalLogLikelihood`` closure in value
and gradient."""

import math

import pytest
import torch
from botorch.optim.closures import get_loss_closure_with_grads
from botorch.optim.utils import get_parameters
from gpytorch.mlls import ExactMarginalLogLikelihood

import kerneldsl as kd
from kerneldsl.loop.options import ModelOptions
from kerneldsl.loop.proposals import output_models
from kerneldsl.fitting import SharedKernelMLL, dense_mll_closure, fit_dense_together, fit_together


def test_value_and_gradients_equal_gpytorchs():
    space = kd.Space([kd.Scalar("lr", 1e-3, 1.0, log=True), kd.Int("layers", 1, 6), kd.Choice("act", ["relu", "tanh"])])
    X = kd.sample(space, 12, seed=0, dtype=torch.float64)
    y = (X[:, 0] - 0.3 * X[:, 1]).sin() + 0.1 * X[:, 2]
    factory = output_models(space, ModelOptions())["loss"].factory
    model = factory(X, y.unsqueeze(-1))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    with torch.no_grad():  # away from the initial values, so that every prior and parameter counts
        for p in model.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel()), dtype=p.dtype))
    dense = dense_mll_closure(mll)
    reference = get_loss_closure_with_grads(mll, parameters=get_parameters(mll, requires_grad=True))
    model.train()
    value, grads = dense()
    value, grads = value.detach().clone(), [None if g is None else g.clone() for g in grads]
    expected, expected_grads = reference()
    torch.testing.assert_close(value, expected.detach())
    assert len(grads) == len(expected_grads) and sum(g is not None for g in grads) > 2
    for got, want in zip(grads, expected_grads):  # None for the empty sum-weight logits of a single kernel
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want)


def test_batched_models_keep_gpytorchs_closure():
    space = kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Scalar("y", 0.0, 1.0)])
    X = kd.sample(space, 12, seed=0, dtype=torch.float64).reshape(2, 6, 2)
    model = output_models(space, ModelOptions())["loss"].factory(X, X.sum(-1, keepdim=True))
    assert dense_mll_closure(ExactMarginalLogLikelihood(model.likelihood, model)) is None


def test_a_refit_stops_within_a_twentieth_of_a_nat_of_scipys_default_tolerance():
    """`FIT_NATS`: a warm-started refit after one more point stops once a step gains about 1e-4 nats; scipy's
    default tolerance (2.2e-9 per point) walks on for many more steps and gains less than 0.05 nats (with
    FIT_NATS = 1e-3: 0.40 nats short here)."""
    space = kd.Space([kd.Scalar(f"x{i}", 1e-3, 10.0, log=True) for i in range(4)])
    X = kd.sample(space, 41, seed=0, dtype=torch.float64)
    u = (X - math.log(1e-3)) / math.log(1e4)  # search coordinates of log scalars are logs
    y = (0.01 + (u - 0.4).square() @ torch.tensor([1.0, 0.5, 0.3, 0.1], dtype=torch.float64)).log()
    objective = {}
    for name, options in (("default", {}), ("scipy", {"ftol": 2.2e-9})):
        model = output_models(space, ModelOptions(fit_options=options))["loss"]
        model.fit(X[:-1], y[:-1])
        fitted = model.fit(X, y)
        fitted.train()
        objective[name] = -float(dense_mll_closure(ExactMarginalLogLikelihood(fitted.likelihood, fitted))()[0]) * len(y)
    assert abs(objective["scipy"] - objective["default"]) < 0.05, objective


def test_study_kernels_get_the_dimension_scaled_prior_of_their_terms():
    """Every kernel of the study (the user's too) has botorch's lengthscale prior with d = the features of each
    base term, LogNormal(sqrt(2) + log(d) / 2, sqrt(3)); ``kernel_options`` overrides it."""
    import math

    from gpytorch.priors import GammaPrior, LogNormalPrior

    space = kd.Space([kd.Scalar("a", 0.0, 1.0), kd.Scalar("b", 0.0, 1.0), kd.Scalar("c", 0.0, 1.0)])
    source = "matern52({a, b}) * matern52({c}) + matern52({c})"  # d = 2 (two slots), 1 and 1
    models = output_models(space, ModelOptions(loss_kernel=source))
    for name, dims in (("loss", [2, 2, 1, 1]), ("cost", [3, 3, 3])):  # per lengthscale slot
        kernel = models[name].factory.kernel()
        prior = kernel.lengthscale_prior
        assert isinstance(prior, LogNormalPrior)
        expected = [math.sqrt(2) + math.log(d) / 2 for d in dims]
        torch.testing.assert_close(prior.loc.double(), torch.tensor(expected, dtype=torch.float64))
        torch.testing.assert_close(prior.scale.double(), torch.full_like(prior.scale.double(), math.sqrt(3)))
    gamma = GammaPrior(3.0, 6.0)
    own = output_models(space, ModelOptions(loss_kernel=source, kernel_options={"lengthscale_prior": gamma}))
    assert own["loss"].factory.kernel().lengthscale_prior is gamma
    assert own["loss"].factory.kernel().options.fused_threshold == 0, "the study's kernels are fused at every size"


def _two_outputs(loss_kernel=None, n=14):
    space = kd.Space([kd.Scalar(f"x{i}", 1e-3, 10.0, log=True) for i in range(3)] + [kd.Int("layers", 1, 6)])
    X = kd.sample(space, n, seed=3, dtype=torch.float64)
    ys = [(X[:, 0] - 0.5 * X[:, 3]).sin() + 0.2 * X[:, 1], 0.3 * X[:, 2] - 0.1 * X[:, 3]]
    return X, ys, output_models(space, ModelOptions(loss_kernel=loss_kernel))


def test_models_sharing_a_kernel_are_evaluated_together_as_each_alone():
    """`SharedKernelMLL`: the loss and cost models of the default kernels, at different hyperparameters, get each
    one's `DenseMLL` loss and gradients from one batched evaluation; models of different kernels are not shared."""
    X, ys, outputs = _two_outputs()
    models = [outputs[name].prepared(X, y) for name, y in zip(("loss", "cost"), ys)]
    for k, model in enumerate(models):
        with torch.no_grad():
            for p in model.parameters():
                p.add_((0.2 + 0.3 * k) * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel() + k),
                                                     dtype=p.dtype))
    mlls = [ExactMarginalLogLikelihood(model.likelihood, model) for model in models]
    joint = SharedKernelMLL.of(mlls)
    assert joint is not None
    values, gradients = joint()
    for mll, value, grads in zip(mlls, values, gradients):
        expected, expected_grads = dense_mll_closure(mll)()
        torch.testing.assert_close(value, expected.detach())
        for got, want in zip(grads, expected_grads):
            assert (got is None) == (want is None)
            if got is not None:
                torch.testing.assert_close(got, want)
    assert not torch.allclose(values[0], values[1])
    assert fit_dense_together(mlls, {"ftol": 1e-10}) and not any(model.training for model in models)
    for mll in mlls:  # each at its own optimum: the gradient (per training point) is near zero
        mll.train()
        _, grads = dense_mll_closure(mll)()
        assert max(float(g.abs().max()) for g in grads if g is not None) < 1e-3
    assert not fit_dense_together(mlls, {"maxfun": 10})  # an option the batched optimiser does not take
    X, ys, different = _two_outputs(loss_kernel="matern52({log_x0, log_x1}) + matern52({log_x2, layers})")
    mlls = [ExactMarginalLogLikelihood(m.likelihood, m) for m in (different["loss"].prepared(X, ys[0]),
                                                                   different["cost"].prepared(X, ys[1]))]
    assert SharedKernelMLL.of(mlls) is None


@pytest.mark.parametrize("loss_kernel", [None, "matern52({log_x0, log_x1}) + matern52({log_x2, layers})"])
def test_fitting_together_gives_each_models_own_fit(loss_kernel):
    """`fit_together` (one batched L-BFGS-B, each model its own iterations) reaches the hyperparameters of fitting
    each model alone, twice in a row (warm starts); with different kernels it fits them one by one."""
    X, ys, together = _two_outputs(loss_kernel)
    _, _, alone = _two_outputs(loss_kernel)
    names = ("loss", "cost")
    for n in (len(X) - 3, len(X)):
        fitted = fit_together([together[name] for name in names], X[:n], [y[:n] for y in ys])
        for name, y, model in zip(names, ys, fitted):
            expected = alone[name].fit(X[:n], y[:n])
            assert not model.training and together[name].last_fit_error is None
            for (key, got), (_, want) in zip(model.named_parameters(), expected.named_parameters()):
                torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-8, msg=f"{name} {key} at n = {n}")


def test_a_joint_fit_that_meets_nan_kernel_entries_falls_back_to_fitting_one_by_one(monkeypatch):
    """A step to extreme hyperparameters can make kernel entries NaN (a Matern at a zero lengthscale), which
    ``psd_safe_cholesky`` reports as ``NanError``: the joint fit gives up with every parameter put back, and
    `fit_together` fits the models one by one (botorch's fit and its retries where the dense one fails too)."""
    from linear_operator.utils.errors import NanError

    X, ys, outputs = _two_outputs()
    models = [outputs[name].prepared(X, y) for name, y in zip(("loss", "cost"), ys)]
    mlls = [ExactMarginalLogLikelihood(model.likelihood, model) for model in models]
    before = [{k: v.clone() for k, v in model.state_dict().items()} for model in models]

    def nan_kernel(self, models=None):
        raise NanError("cholesky_cpu: 196 of 196 elements of the torch.Size([1, 14, 14]) tensor are NaN.")

    monkeypatch.setattr(SharedKernelMLL, "__call__", nan_kernel)
    assert not fit_dense_together(mlls, {"ftol": 1e-6})
    for model, state in zip(models, before):
        for key, value in model.state_dict().items():
            torch.testing.assert_close(value, state[key], msg=key)
    fitted = fit_together([outputs["loss"], outputs["cost"]], X, ys)
    assert len(fitted) == 2 and not any(model.training for model in fitted)
    assert outputs["loss"].last_fit_error is None and outputs["cost"].last_fit_error is None


def test_a_study_on_a_steep_function_survives_a_fit_step_to_nan_kernel_entries():
    """Rosenbrock in 4-D (losses from 0 to thousands), seed 2: the first model-based ask's joint fit stepped to
    NaN kernel entries, and the ``NanError`` ended the study (sessions 6 and before)."""
    import warnings

    from botorch.test_functions import Rosenbrock

    space = kd.Space([kd.Scalar(f"x{i}", -2.0, 2.0) for i in range(4)])
    rosenbrock = Rosenbrock(dim=4)

    def objective(config):
        x = space.to_search([config], dtype=torch.float64)
        return {"loss": float(rosenbrock(x)[0]), "cost": 1.0 + float(x[0, 0].abs())}

    study = kd.Study(space, 2.0, n_init=8, seed=2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _ in range(10):
            trial = study.ask()
            study.tell(trial, objective(trial.config))
    assert len([t for t in study.trials if t.loss is not None]) == 10
