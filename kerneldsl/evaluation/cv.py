"""Leave-one-out cross-validation of GP models, batched over folds as botorch does it.

For ``n`` observations, fold ``i`` trains on every observation but ``i`` and predicts
``i``. All folds (or chunks of ``chunk_size`` folds, to bound memory) are one batched
botorch model with training inputs ``[k, n-1, d]`` and test inputs ``[k, 1, d]``
(``botorch.cross_validation.gen_loo_cv_folds``), fitted at once by
``botorch.fit.fit_gpytorch_mll``: for a batched model botorch runs one L-BFGS-B per fold
(``fmin_l_bfgs_b_batched``) on that fold's marginal log likelihood, evaluating all the
chunk's folds in each call, so every fold gets its own hyperparameters and convergence.
A chunk costs (slowest fold's iterations) x (all its folds), so smaller chunks waste less
on stragglers and need less memory; larger ones amortise per-call overhead.

``held_out`` restricts the evaluation to some folds (each still trains on the other
``n-1`` observations): averaging over a random subset of folds is an unbiased estimate
of the leave-one-out mean at a fraction of the cost.

Metrics are computed in the outcome space of the ``Y`` you pass in (``model.posterior``
undoes the model's outcome transform, e.g. ``Standardize``): pass ``log(loss)`` and the
densities are densities of log loss. The predictive distribution of the held-out
observation is Gaussian and includes observation noise.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from botorch.cross_validation import gen_loo_cv_folds
from botorch.models.model import Model
from botorch.models.transforms.input import InputTransform
from torch import Tensor

from ..fitting import fit_map
from ..model import KernelGP

ModelFactory = Callable[[Tensor, Tensor], Model]
"""``(train_X [*b, n, d], train_Y [*b, n, 1]) -> model`` with batch shape ``b`` (a botorch class fits)."""

Z95 = 1.959963984540054
"""Half-width of the central 95% interval of a standard normal."""


class CrossValidationError(ValueError):
    """Cross-validation was asked for with inputs that cannot work (shapes, sizes, NaNs)."""


@dataclass(frozen=True)
class FoldPrediction:
    """One fold: the held-out observation and its Gaussian predictive (outcome space, incl. noise)."""

    index: int
    """Row of the held-out observation in the ``X``/``Y`` given to ``loo_cv`` (``cross_validate``)."""
    observed: float
    mean: float
    std: float
    log_density: float

    @property
    def density(self) -> float:
        return math.exp(self.log_density)

    @property
    def error(self) -> float:
        """Predictive mean minus observation."""
        return self.mean - self.observed

    @property
    def covered95(self) -> bool:
        """Whether the observation lies in the central 95% predictive interval."""
        return abs(self.error) <= Z95 * self.std


@dataclass(frozen=True)
class CVMetrics:
    """Aggregated leave-one-out metrics over ``n`` folds (all in the outcome space of ``Y``)."""

    n: int
    """Observations in the cross-validated data (each fold trains on ``n - 1``)."""
    folds: int
    """Folds evaluated (``n`` for full leave-one-out)."""
    mlpd: float
    """Mean log predictive density of the held-out observations (higher is better)."""
    mean_density: float
    """Mean predictive density, ``mean(exp(log density))`` (higher is better)."""
    rmse: float
    """Root mean squared error of the predictive mean (lower is better)."""
    mae: float
    """Mean absolute error of the predictive mean (lower is better)."""
    coverage95: float
    """Fraction of observations inside their central 95% predictive interval (0.95 is ideal)."""
    fit_seconds: float
    """Wall-clock time of model construction and fitting, all folds."""

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class CVResult:
    """Per-fold predictions of a leave-one-out run; ``metrics`` aggregates them."""

    observed: Tensor
    """``[k]`` held-out observations, one per evaluated fold (``k = n`` for full leave-one-out)."""
    mean: Tensor
    """``[k]`` predictive means."""
    variance: Tensor
    """``[k]`` predictive variances, including observation noise."""
    fit_seconds: float
    chunk_size: int
    """Folds per batched model."""
    held_out: tuple[int, ...]
    """Row of each fold's held-out observation in the data given to ``loo_cv`` (``cross_validate``)."""
    n: int
    """Observations in the data given to ``loo_cv``."""

    @property
    def log_density(self) -> Tensor:
        """``[k]`` log predictive density of each held-out observation."""
        return torch.distributions.Normal(self.mean, self.variance.sqrt()).log_prob(self.observed)

    def folds(self) -> list[FoldPrediction]:
        """One record per evaluated fold."""
        rows = zip(self.observed.tolist(), self.mean.tolist(), self.variance.sqrt().tolist(),
                   self.log_density.tolist())
        return [FoldPrediction(i, y, m, s, lp) for i, (y, m, s, lp) in zip(self.held_out, rows)]

    def metrics(self) -> CVMetrics:
        log_density = self.log_density
        error = self.mean - self.observed
        covered = error.abs() <= Z95 * self.variance.sqrt()
        return CVMetrics(
            n=self.n,
            folds=self.observed.numel(),
            mlpd=log_density.mean().item(),
            mean_density=log_density.exp().mean().item(),
            rmse=error.square().mean().sqrt().item(),
            mae=error.abs().mean().item(),
            coverage95=covered.double().mean().item(),
            fit_seconds=self.fit_seconds,
        )


def kernel_model(
    source: str,
    feature_chain: InputTransform,
    groups: Mapping[str, Sequence[str]] | None = None,
    backend: str = "auto",
    features: Sequence[str] | None = None,
    **options: Any,
) -> ModelFactory:
    """A factory for ``SingleTaskGP`` with a compiled kernel-language kernel (``kerneldsl.model.KernelGP``).

    The model takes search points, ``feature_chain`` turns them into the kernel's
    features (``features`` defaults to ``feature_chain.feature_names``), and the
    outcome is standardised per fold (``Standardize(m=1, batch_shape=...)``).
    ``options`` go to ``kerneldsl.compile`` (priors, constraints).
    """
    return KernelGP(source, feature_chain, groups=groups, backend=backend, features=features, **options)


def subset_order(total: int, n: int | None, seed: int) -> Tensor:
    """Row indices of the first ``n`` of ``total`` rows after a shuffle seeded by ``seed`` (all if ``n`` is None)."""
    n = total if n is None else n
    if not 3 <= n <= total:
        raise CrossValidationError(f"subset size n={n} must be between 3 and the {total} available observations")
    return torch.randperm(total, generator=torch.Generator().manual_seed(seed))[:n]


def shuffled_subset(X: Tensor, Y: Tensor, n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """The first ``n`` rows of ``X`` and ``Y`` after a shuffle seeded by ``seed``."""
    order = subset_order(X.shape[-2], n, seed).to(X.device)
    return X[..., order, :], Y[..., order, :]


def loo_cv(
    model: ModelFactory,
    X: Tensor,
    Y: Tensor,
    chunk_size: int | None = None,
    held_out: Sequence[int] | None = None,
    fit: bool = True,
    fit_kwargs: Mapping[str, Any] | None = None,
    progress: Callable[[int, int], None] | None = None,
    restarts: int = 0,
) -> CVResult:
    """Leave-one-out cross-validation of ``model`` on ``X [n, d]``, ``Y [n, 1]`` (or ``[n]``).

    ``model`` builds a (batched) botorch model from ``(train_X, train_Y)``: a botorch
    model class such as ``SingleTaskGP``, a ``functools.partial`` of one, or
    ``kernel_model(...)``. Folds are processed ``chunk_size`` at a time (default: all at
    once); each chunk is one batched model. ``held_out``: indices of the folds to evaluate
    (default: all). ``fit=False`` skips fitting (the factory's
    hyperparameters are used as they are). ``fit_kwargs`` go to ``fit_gpytorch_mll``;
    ``restarts`` refits each fold from that many draws from the priors and keeps its best
    maximum a posteriori (``kerneldsl.fitting.fit_map``); ``progress(done, n)`` is called after each chunk.
    """
    X, Y = _check_data(X, Y)
    indices = _held_out(held_out, X.shape[0])
    k = len(indices)
    chunk_size = k if chunk_size is None else int(chunk_size)
    if chunk_size < 1:
        raise CrossValidationError(f"chunk_size must be a positive number of folds, got {chunk_size}")
    folds = gen_loo_cv_folds(X, Y)
    means, variances, seconds = [], [], 0.0
    for start in range(0, k, chunk_size):
        part = indices[start:start + chunk_size]
        began = time.perf_counter()
        fitted = model(folds.train_X[part], folds.train_Y[part])
        if fit:
            _freeze_empty_parameters(fitted)
            fit_map(fitted, restarts=restarts, fit_kwargs=fit_kwargs)
        seconds += time.perf_counter() - began
        fitted.eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*not contained in the unit cube.*")
            posterior = fitted.posterior(folds.test_X[part], observation_noise=True)
            mean, variance = posterior.mean, posterior.variance
        expected = (len(part), 1, 1)
        if tuple(mean.shape) != expected:
            raise CrossValidationError(
                f"the model's posterior for {expected[0]} held-out points has shape {tuple(mean.shape)}, "
                f"expected {expected}: does the model factory honour the batch shape of train_X?"
            )
        means.append(mean.reshape(-1))
        variances.append(variance.reshape(-1))
        if progress is not None:
            progress(start + len(part), k)
    observed = folds.test_Y[indices].reshape(-1)
    return CVResult(observed, torch.cat(means), torch.cat(variances), seconds, chunk_size,
                    tuple(indices.tolist()), X.shape[0])


def cross_validate(
    model: ModelFactory,
    X: Tensor,
    Y: Tensor,
    n: int | None = None,
    seed: int = 0,
    **kwargs: Any,
) -> CVResult:
    """``loo_cv`` on the first ``n`` observations after a shuffle seeded by ``seed``.

    The result's ``held_out`` are rows of the given ``X``.
    The shuffled subset is itself random, so ``held_out=range(k)`` evaluates ``k`` random
    folds. The seed also seeds torch's global generator, which botorch uses to restart
    failed fits, so a run is reproducible.
    """
    X, Y = _check_data(X, Y)
    order = subset_order(X.shape[0], n, seed)
    torch.manual_seed(seed)
    result = loo_cv(model, X[order], Y[order], **kwargs)
    return replace(result, held_out=tuple(order[list(result.held_out)].tolist()))


def _freeze_empty_parameters(model: torch.nn.Module) -> None:
    """Exclude zero-size parameters (e.g. a kernel without learned weights) from fitting.

    botorch's batched L-BFGS-B reshapes every parameter to ``[batch, -1]``, which fails on them.
    """
    for parameter in model.parameters():
        if parameter.numel() == 0:
            parameter.requires_grad_(False)


def _held_out(held_out: Sequence[int] | None, n: int) -> Tensor:
    if held_out is None:
        return torch.arange(n)
    indices = torch.as_tensor(list(held_out), dtype=torch.long)
    if indices.dim() != 1 or not len(indices):
        raise CrossValidationError(f"held_out must be a non-empty list of fold indices, got {held_out!r}")
    if (indices < 0).any() or (indices >= n).any() or len(set(indices.tolist())) != len(indices):
        raise CrossValidationError(f"held_out must list distinct fold indices in 0..{n - 1}, got {indices.tolist()}")
    return indices


def _check_data(X: Tensor, Y: Tensor) -> tuple[Tensor, Tensor]:
    if not isinstance(X, Tensor) or not isinstance(Y, Tensor):
        raise CrossValidationError("X and Y must be torch tensors")
    if Y.dim() == 1:
        Y = Y.unsqueeze(-1)
    if X.dim() != 2 or Y.dim() != 2 or Y.shape[-1] != 1 or X.shape[0] != Y.shape[0]:
        raise CrossValidationError(
            f"expected X [n, d] and Y [n] or [n, 1] with the same n, got X {tuple(X.shape)} and Y {tuple(Y.shape)}"
        )
    if X.shape[0] < 3:
        raise CrossValidationError(f"leave-one-out needs at least 3 observations, got {X.shape[0]}")
    if not torch.isfinite(X).all() or not torch.isfinite(Y).all():
        raise CrossValidationError("X and Y must be finite: leave out trials with missing outputs (NaN) first")
    return X, Y
