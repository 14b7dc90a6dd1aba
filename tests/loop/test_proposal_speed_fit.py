"""`dense_mll_closure`, the fits' fast loss closure, is botorch's ``ExactMarginalLogLikelihood`` closure in value
and gradient."""

import torch
from botorch.optim.closures import get_loss_closure_with_grads
from botorch.optim.utils import get_parameters
from gpytorch.mlls import ExactMarginalLogLikelihood

import kerneldsl as kd
from kerneldsl.loop.options import ModelOptions
from kerneldsl.loop.proposals import output_models
from kerneldsl.model import dense_mll_closure


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
