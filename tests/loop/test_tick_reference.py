"""The tick's reference set: only points that can be its incumbent (lowest loss in some posterior sample) stay."""

import math

import torch
from botorch.models import ModelListGP, SingleTaskGP
from botorch.sampling import SobolQMCNormalSampler

from kerneldsl.loop.acquisition import possible_incumbents, qLogCostImprovement


def two_output_model(X: torch.Tensor, loss: torch.Tensor, cost: torch.Tensor) -> ModelListGP:
    models = []
    for y in (loss, cost):
        model = SingleTaskGP(X, y.unsqueeze(-1))
        with torch.no_grad():  # fixed, short lengthscale and little noise: the points are nearly independent
            model.covar_module.lengthscale = 0.1
            model.likelihood.noise = 1e-4
        models.append(model.eval())
    return ModelListGP(*models)


def test_points_that_never_have_the_lowest_loss_are_dropped_and_the_rng_is_untouched():
    X = torch.linspace(0, 1, 9, dtype=torch.float64).unsqueeze(-1)
    loss = torch.tensor([0.0, 0.01, 3.0, 3.5, 4.0, 3.0, 3.5, 4.0, 3.0], dtype=torch.float64)
    model = two_output_model(X, loss, X.reshape(-1))
    state = torch.random.get_rng_state()
    kept = possible_incumbents(model, X)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert {round(float(x), 3) for x in kept.reshape(-1)} == {0.0, 0.125}

    acquisition = qLogCostImprovement(model, X, math.inf, sampler=SobolQMCNormalSampler(torch.Size([64]), seed=1),
                                      prune_reference=0)
    assert acquisition.X_reference.shape == (2, 1)
    full = qLogCostImprovement(model, X, math.inf, sampler=SobolQMCNormalSampler(torch.Size([64]), seed=1),
                               prune_reference=None)
    assert full.X_reference.shape == (9, 1)
    candidates = torch.tensor([[[0.06]], [[0.5]]], dtype=torch.float64)
    with torch.no_grad():  # the same incumbents: values agree up to the base samples' draw
        assert torch.allclose(acquisition(candidates), full(candidates), atol=0.2)


def test_small_reference_sets_are_kept_whole():
    X = torch.linspace(0, 1, 9, dtype=torch.float64).unsqueeze(-1)
    loss = torch.tensor([0.0, 0.01, 3.0, 3.5, 4.0, 3.0, 3.5, 4.0, 3.0], dtype=torch.float64)
    model = two_output_model(X, loss, X.reshape(-1))
    assert qLogCostImprovement(model, X, math.inf, prune_reference=8).X_reference.shape == (2, 1)
    assert qLogCostImprovement(model, X, math.inf, prune_reference=9).X_reference.shape == (9, 1)
    assert qLogCostImprovement(model, X, math.inf).X_reference.shape == (9, 1)  # PRUNE_REFERENCE_ABOVE = 32
