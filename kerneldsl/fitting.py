"""Fitting kernel-language GPs to their maximum a posteriori.

* `OutputModel`: the GP of one output of the optimisation loop, refitted at every proposal, warm-started
  from its last fit. A dense model (one data set, gpytorch's ``GaussianLikelihood``, at most
  ``max_cholesky_size`` points) is fitted by `fit_dense`: scipy's L-BFGS-B on `DenseMLL`, whose gradient
  comes in closed form; anything else, and any fit that fails there, by botorch's ``fit_gpytorch_mll``
  (with its retries from prior draws).
* `fit_together`: outputs that share a kernel and their training points (a study's loss and cost models
  when neither is given its own kernel) fitted by one batched objective, `SharedKernelMLL` (one fused
  kernel call for every K), each with its own L-BFGS-B iterations (`fit_dense_together`).
* `fit_map`: a model's MAP with restarts from prior draws (cross-validation, ``kerneldsl fit``).

Why not always ``fit_gpytorch_mll``: the loop fits two models at every proposal, and on small models the
fit's own machinery cost as much as its objective (profile of issue 23, eight features, n = 40: a refit
that needs four evaluations of a 1 ms objective took 11.7 ms: building the closure and its checkpoints,
and ``threadpoolctl`` scanning the process's libraries at every ``minimize``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gpytorch
import numpy as np
import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.optim.batched_lbfgs_b import fmin_l_bfgs_b_batched
from botorch.optim.closures import NdarrayOptimizationClosure
from botorch.optim.utils import get_parameters_and_bounds
from botorch.optim.utils.numpy_utils import get_bounds_as_ndarray
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import GammaPrior, LogNormalPrior, NormalPrior, Prior
from linear_operator.utils.cholesky import psd_safe_cholesky
from linear_operator.utils.errors import NanError, NotPSDError
from scipy.optimize import minimize
from torch import Tensor

from .compiler.backends.common import check_inputs
from .compiler.backends.torch_kernel import TorchKernel
from .compiler.errors import KernelError
from .model import KernelGP

__all__ = ["FIT_NATS", "OutputModel", "fit_together", "DenseMLL", "SharedKernelMLL", "dense_objective",
           "dense_mll_closure", "fit_dense", "fit_dense_together", "fit_map", "map_objective", "log_density"]

FIT_NATS = 1e-4
"""An output model's fit stops once an L-BFGS step gains less than about this many nats of log marginal
likelihood plus log prior (scipy's ``ftol`` on botorch's per-point objective, hence divided by the number of
points). scipy's default, 2.2e-9 per point, follows the ridges of a warm-started refit for a hundred steps
to gain hundredths of a nat (profile of issue 23: 104 steps on eight features at n = 100); 1e-4 stops within
0.015 nats of it, 1e-3 up to 1.4 nats short with botorch's broad default lengthscale prior, at the same
speed. ``fit_options`` may set ``ftol`` and any other option of scipy's L-BFGS-B."""


@dataclass
class OutputModel:
    """The GP of one output of the optimisation loop; ``fit`` fits it warm-started from the previous fit (see
    `FIT_NATS` for when it stops)."""

    name: str
    factory: KernelGP
    fit_options: Mapping = field(default_factory=dict)
    _state: dict | None = None  # previous fit's hyperparameters
    last_fit_error: str | None = None

    def prepared(self, X: Tensor, y: Tensor) -> SingleTaskGP:
        """An unfitted GP of ``y`` [n] (modelled output) on ``X`` [n, d] (search space) at the last fit's
        hyperparameters (the prior's before the first fit)."""
        model = self.factory(X, y.unsqueeze(-1))
        if self._state is not None:
            for part, state in self._state.items():
                getattr(model, part).load_state_dict(state)
        return model

    def options(self, n: int) -> dict[str, Any]:
        """scipy's L-BFGS-B options of a fit to ``n`` points (`FIT_NATS` over ``fit_options``)."""
        return {"ftol": FIT_NATS / n, **self.fit_options}

    def fit(self, X: Tensor, y: Tensor) -> SingleTaskGP:
        """Fit a GP to ``X`` [n, d] (search space) and ``y`` [n] (modelled output), warm-started from the last fit."""
        model = self.prepared(X, y)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        self.last_fit_error = None
        options = self.options(len(y))
        try:
            if not fit_dense(mll, options):
                fit_gpytorch_mll(mll, closure=dense_mll_closure(mll), optimizer_kwargs={"options": options})
        except ModelFittingError as exc:
            # Keep the loop alive: use the warm-started (or prior) hyperparameters and say so.
            self.last_fit_error = f"{self.name} model fit failed, using previous hyperparameters: {exc}"
            warnings.warn(self.last_fit_error, RuntimeWarning, stacklevel=2)
        self.keep(model)
        return model

    def keep(self, model: SingleTaskGP) -> None:
        """Put fitted ``model`` in eval mode and remember its hyperparameters for the next fit's warm start."""
        model.eval()
        self._state = {part: {k: v.detach().clone() for k, v in getattr(model, part).state_dict().items()}
                       for part in ("covar_module", "mean_module", "likelihood")}


def fit_together(outputs: Sequence[OutputModel], X: Tensor, ys: Sequence[Tensor]) -> list[SingleTaskGP]:
    """Each of ``outputs`` fitted to its ``ys[i]`` [n] on the same ``X`` [n, d], warm-started as `OutputModel.fit`
    does: together by `fit_dense_together` where they share a kernel (the loss and cost models of a study
    that gives neither its own kernel), else one by one."""
    models = [output.prepared(X, y) for output, y in zip(outputs, ys)]
    options = [output.options(len(X)) for output in outputs]
    mlls = [ExactMarginalLogLikelihood(model.likelihood, model) for model in models]
    if all(o == options[0] for o in options) and fit_dense_together(mlls, options[0]):
        for output, model in zip(outputs, models):
            output.last_fit_error = None
            output.keep(model)
        return models
    return [output.fit(X, y) for output, y in zip(outputs, ys)]


class DenseMLL:
    """botorch's loss closure for a dense exact GP: ``closure() -> (loss, gradients)``, the loss being the
    negative log marginal likelihood minus the log priors, per training point, as botorch's
    ``ExactMarginalLogLikelihood`` closure computes it, the gradients those of ``parameters`` (None for one the
    loss does not use).

    The gradient comes in closed form (`dense_objective`) instead of through autograd's Cholesky, so a single
    backward pass runs through the kernel (its fused backward) and the priors only. The training inputs are
    transformed once; gpytorch's lazy tensors and kernel call wrapper are skipped (the kernel's ``forward`` is
    called). Build it with `dense_mll_closure`, which says where it applies.
    """

    def __init__(self, mll: ExactMarginalLogLikelihood, parameters: Mapping[str, Tensor] | None = None):
        model = self.model = mll.model
        model.train()  # train_inputs: the untransformed inputs
        (train_X,) = model.train_inputs
        with torch.no_grad():
            self.X = model.transform_inputs(train_X)
        self.y, self.n = model.train_targets, train_X.shape[0]
        self.constant = 0.5 * self.n * math.log(2 * math.pi)
        self.priors = [(module, log_density(prior), closure) for _, module, prior, closure, _ in model.named_priors()]
        if parameters is None:
            parameters, _ = get_parameters_and_bounds(mll, requires_grad=True)
        self.parameters = list(parameters.values())

    def __call__(self) -> tuple[Tensor, tuple[Tensor | None, ...]]:
        model, n = self.model, self.n
        K = model.covar_module.forward(self.X, self.X)
        noise = model.likelihood.noise.reshape(-1).expand(n)
        fit, surrogate = dense_objective(K, noise, model.mean_module(self.X), self.y, self.constant)
        log_prior = self.log_prior()
        gradients = torch.autograd.grad((surrogate - log_prior) / n, self.parameters, allow_unused=True)
        return (fit - log_prior.detach()) / n, gradients

    def log_prior(self) -> Tensor:
        """The sum of the log priors of the model's hyperparameters, differentiable in them."""
        total = self.X.new_zeros(())
        for module, density, closure in self.priors:
            total = total + density(closure(module)).sum()
        return total


def dense_objective(K: Tensor, noise: Tensor, mean: Tensor, y: Tensor, constant: float) -> tuple[Tensor, Tensor]:
    """The negative log marginal likelihood ``[...]`` of ``y [..., n]`` under ``N(mean, K + diag(noise))`` (no
    gradient), and a surrogate ``[...]`` whose gradient in ``K``, ``noise`` and ``mean`` is the likelihood's: with
    ``A = K + noise``, ``alpha = A^-1 (y - mean)`` and ``G = (A^-1 - alpha alpha^T) / 2``, the derivative is ``G``
    in ``K``, ``diag G`` in the noise and ``-alpha`` in the mean. ``constant``: ``n log(2 pi) / 2``."""
    with torch.no_grad():
        L = psd_safe_cholesky(K + torch.diag_embed(noise))
        residual = (y - mean).unsqueeze(-1)
        alpha = torch.cholesky_solve(residual, L)
        fit = 0.5 * (residual * alpha).sum((-1, -2)) + L.diagonal(dim1=-2, dim2=-1).log().sum(-1) + constant
        G = 0.5 * (torch.cholesky_inverse(L) - alpha @ alpha.mT)
    surrogate = ((G * K).sum((-1, -2)) + (G.diagonal(dim1=-2, dim2=-1) * noise).sum(-1)
                 - (alpha.squeeze(-1) * mean).sum(-1))
    return fit, surrogate


def log_density(prior: Prior) -> Callable[[Tensor], Tensor]:
    """``prior.log_prob`` as a function, in a few tensor operations for the priors kernel-language kernels and
    botorch's likelihood use (gpytorch's ``LogNormalPrior``, ``GammaPrior``, ``NormalPrior``): without
    ``torch.distributions``' argument checks and transforms, which made the priors a third of a fit's
    objective with its gradient (eight features, n = 40). Any other prior keeps its own ``log_prob``."""
    kind = type(prior)
    if kind is LogNormalPrior or kind is NormalPrior:
        loc, scale = prior.loc, prior.scale
        shift = -scale.log() - 0.5 * math.log(2 * math.pi)

        def normal(x: Tensor) -> Tensor:
            return shift - 0.5 * ((x - loc) / scale).square()

        def log_normal(x: Tensor) -> Tensor:
            z = prior.transform(x).log()
            return normal(z) - z

        return log_normal if kind is LogNormalPrior else lambda x: normal(prior.transform(x))
    if kind is GammaPrior:
        a, b = prior.concentration, prior.rate
        shift = a * b.log() - torch.lgamma(a)

        def gamma(x: Tensor) -> Tensor:
            x = prior.transform(x)
            return shift + torch.xlogy(a - 1, x) - b * x

        return gamma
    return prior.log_prob


def dense_mll_closure(mll: ExactMarginalLogLikelihood,
                      parameters: Mapping[str, Tensor] | None = None) -> DenseMLL | None:
    """`DenseMLL` of ``mll`` (for ``parameters``, default every parameter that requires gradients), or None
    where it does not apply: batched models, input transforms with trainable parameters, likelihoods other
    than gpytorch's ``GaussianLikelihood``, added loss terms, more than ``max_cholesky_size`` points (where
    gpytorch would not use a Cholesky factor either)."""
    model = mll.model
    (train_X,) = model.train_inputs
    transform = getattr(model, "input_transform", None)
    if (train_X.dim() != 2 or type(model.likelihood) is not GaussianLikelihood
            or any(True for _ in model.added_loss_terms())
            or train_X.shape[0] > gpytorch.settings.max_cholesky_size.value()
            or (transform is not None and any(p.requires_grad for p in transform.parameters()))):
        return None
    return DenseMLL(mll, parameters)


def fit_dense(mll: ExactMarginalLogLikelihood, options: Mapping[str, Any] | None = None) -> bool:
    """Fit ``mll``'s parameters from their current values by scipy's L-BFGS-B (``options``) on `DenseMLL`, with
    the bounds botorch derives from their constraints; True when done (converged or out of iterations), with
    the model in eval mode.

    False, with the parameters put back, where `DenseMLL` does not apply or the fit failed (a factor that is
    not positive definite, a non-finite loss, an abnormal line search): the caller then fits with botorch's
    ``fit_gpytorch_mll``, which retries from prior draws as it does for its own failures.
    """
    parameters, bounds = get_parameters_and_bounds(mll, requires_grad=True)
    closure = dense_mll_closure(mll, parameters)
    if closure is None or not parameters:
        return False
    problem = NdarrayOptimizationClosure(closure, parameters)
    start = problem.state
    try:
        result = minimize(problem, start, jac=True, method="L-BFGS-B",
                          bounds=get_bounds_as_ndarray(parameters, bounds), options=dict(options or {}))
    except NotPSDError:
        result = None
    if result is None or result.status not in (0, 1) or not np.isfinite(result.fun):  # 1: iteration limit
        problem.state = start
        return False
    problem.state = result.x
    mll.eval()
    return True


class SharedKernelMLL:
    """The `DenseMLL` of several models with one kernel IR and the same training inputs, evaluated together:
    every ``K`` from one fused kernel call (the models' hyperparameters as its batch), the Cholesky factors and
    closed-form gradients batched. Each model's loss and gradient are those of its own `DenseMLL`; the fixed
    cost of a call, most of it on small models, is paid once. Build it with `SharedKernelMLL.of`."""

    def __init__(self, closures: list[DenseMLL]):
        self.closures = closures
        first = closures[0]
        self.X, self.n = first.X, first.n
        self.kernels = [closure.model.covar_module for closure in closures]
        self.y = torch.stack([closure.y for closure in closures])  # [k, n]
        self.constant = first.constant

    @classmethod
    def of(cls, mlls: Sequence[ExactMarginalLogLikelihood],
           parameters: Sequence[Mapping[str, Tensor]] | None = None) -> "SharedKernelMLL | None":
        """None unless every model has a `DenseMLL` and a non-batched kernel of the ``torch`` or ``auto`` backend
        (``TorchKernel``, whose ``fused`` takes prepared hyperparameters) of one IR, and the transformed training
        inputs are equal. ``parameters``: each model's, as `dense_mll_closure` takes them."""
        parameters = parameters if parameters is not None else [None] * len(mlls)
        closures = [dense_mll_closure(mll, group) for mll, group in zip(mlls, parameters)]
        if len(closures) < 2 or any(closure is None for closure in closures):
            return None
        first = closures[0]
        for closure in closures:
            kernel = closure.model.covar_module
            if (not isinstance(kernel, TorchKernel) or kernel.raw_outputscale.dim() != 0
                    or kernel.ir != first.model.covar_module.ir
                    or not torch.equal(closure.X, first.X)):
                return None
        try:
            check_inputs(first.model.covar_module.ir, first.X, first.X)  # what a kernel's forward checks first
        except KernelError:
            return None
        return cls(closures)

    def _K(self, models: Sequence[int]) -> Tensor:
        """``K`` of each of ``models`` (indices) at the training inputs, ``[k, n, n]``, with gradients for the
        hyperparameters."""
        kernels = [self.kernels[i] for i in models]
        X = self.X.expand(len(kernels), *self.X.shape)  # x1 is x2: the symmetric kernels
        if kernels[0].uses_fused_path(X, X, False):
            stacked = zip(*(kernel.fused_parameters() for kernel in kernels))
            hyperparameters = tuple(torch.stack(group) for group in stacked)
            K = kernels[0].fused(X, X, False, hyperparameters)
            if K is not None:
                return K
        return torch.stack([kernel.forward(self.X, self.X) for kernel in kernels])

    def __call__(self, models: Sequence[int] | None = None) -> tuple[Tensor, list[tuple[Tensor | None, ...]]]:
        """The loss ``[k]`` and the gradients (as `DenseMLL` returns them) of each of ``models`` (indices; default
        all), in that order: a model whose fit has finished costs nothing more."""
        n = self.n
        models = list(range(len(self.closures)) if models is None else models)
        chosen = [self.closures[i] for i in models]
        K = self._K(models)
        noise = torch.stack([c.model.likelihood.noise.reshape(-1).expand(n) for c in chosen])  # [k, n]
        mean = torch.stack([c.model.mean_module(self.X) for c in chosen])
        fit, surrogate = dense_objective(K, noise, mean, self.y[models], self.constant)
        log_prior = torch.stack([c.log_prior() for c in chosen])
        parameters = [c.parameters for c in chosen]
        gradients = torch.autograd.grad((surrogate - log_prior).sum() / n, [p for group in parameters for p in group],
                                        allow_unused=True)
        split, start = [], 0
        for group in parameters:
            split.append(gradients[start:start + len(group)])
            start += len(group)
        return (fit - log_prior.detach()) / n, split


_BATCHED_OPTIONS = {"ftol": "ftol", "gtol": "pgtol", "maxiter": "maxiter", "maxcor": "maxcor", "maxls": "maxls"}
"""scipy's L-BFGS-B options (``minimize``'s names) and their names in botorch's batched L-BFGS-B."""


def fit_dense_together(mlls: Sequence[ExactMarginalLogLikelihood], options: Mapping[str, Any] | None = None) -> bool:
    """Fit models that share a kernel and training inputs (`SharedKernelMLL`) from their current parameters,
    each by its own L-BFGS-B (botorch's batched ``fmin_l_bfgs_b_batched``, the same iterations as scipy's on
    each alone, with the bounds of their constraints) on one batched objective; True when all finished
    (converged or out of iterations), with the models in eval mode.

    False, with every parameter put back, where they cannot be fitted together (no `SharedKernelMLL`, options
    the batched optimiser does not take) or a fit failed (a factor that is not positive definite, NaN kernel
    entries, an abnormal line search): the caller fits them one by one.
    """
    options = dict(options or {})
    if any(key not in _BATCHED_OPTIONS for key in options):
        return False
    found = [get_parameters_and_bounds(mll, requires_grad=True) for mll in mlls]
    joint = SharedKernelMLL.of(mlls, [parameters for parameters, _ in found])
    if joint is None:
        return False
    problems = [NdarrayOptimizationClosure(closure, parameters)
                for closure, (parameters, _) in zip(joint.closures, found)]
    bounds = [get_bounds_as_ndarray(parameters, parameter_bounds) for parameters, parameter_bounds in found]
    sizes = {problem.state.size for problem in problems}
    if len(sizes) != 1 or any((b is None) != (bounds[0] is None) for b in bounds) or (
            bounds[0] is not None and any(not np.array_equal(b, bounds[0]) for b in bounds)):
        return False
    starts = [problem.state for problem in problems]

    def objective(x: np.ndarray, batch_indices: list[int]) -> tuple[np.ndarray, np.ndarray]:
        for row, i in zip(x, batch_indices):
            problems[i].state = row
        values, gradients = joint(batch_indices)
        flat = [_flat_gradient(g, problems[i]) for g, i in zip(gradients, batch_indices)]
        return values.detach().cpu().numpy(), np.stack(flat)

    settings = {_BATCHED_OPTIONS[key]: value for key, value in options.items()}
    if "ftol" in settings:
        settings["factr"] = None
    try:
        xs, fs, results = fmin_l_bfgs_b_batched(
            objective, np.stack(starts), bounds=None if bounds[0] is None else [tuple(b) for b in bounds[0]],
            pass_batch_indices=True, **settings)
    except (NotPSDError, NanError):  # e.g. a step to a lengthscale of 0: NaN kernel entries
        results = None
    if results is None or any(result.status not in (0, 1) for result in results) or not np.isfinite(fs).all():
        for problem, start in zip(problems, starts):
            problem.state = start
        return False
    for problem, x in zip(problems, xs):
        problem.state = x
    for mll in mlls:
        mll.eval()
    return True


def _flat_gradient(gradients: Sequence[Tensor | None], problem: NdarrayOptimizationClosure) -> np.ndarray:
    """One model's gradients as the flat vector of its parameters (zeros for an unused one)."""
    return np.concatenate([np.zeros(p.numel()) if g is None else g.detach().reshape(-1).cpu().numpy()
                           for g, p in zip(gradients, problem.parameters.values())])


def fit_map(model: SingleTaskGP, restarts: int = 0, fit_kwargs: Mapping[str, Any] | None = None,
            generator: torch.Generator | None = None) -> Tensor:
    """Fit ``model``'s hyperparameters to their maximum a posteriori, from ``1 + restarts`` starts.

    The first start is the model's current hyperparameters; each restart draws every
    hyperparameter that has a prior from it (the softmax logits of learned sum weights from a
    standard normal), refits with ``fit_gpytorch_mll`` and keeps, per batch element (for
    cross-validation: per fold), the start with the best marginal log likelihood plus log prior.
    A restart whose fit fails is skipped. Returns that objective, shape ``batch_shape``.
    """
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    fit_gpytorch_mll(mll, **dict(fit_kwargs or {}))
    best_value = map_objective(mll)
    if not restarts:
        return best_value
    best = {name: p.detach().clone() for name, p in model.named_parameters()}
    for _ in range(restarts):
        _sample_from_priors(model, generator)
        try:
            fit_gpytorch_mll(mll, **dict(fit_kwargs or {}))
        except ModelFittingError:
            continue
        value = map_objective(mll)
        better = value > best_value  # a NaN objective never wins
        best_value = torch.where(better, value, best_value)
        for name, p in model.named_parameters():
            mask = better.reshape(better.shape + (1,) * (p.dim() - better.dim()))
            best[name] = torch.where(mask, p.detach(), best[name])
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(best[name])
    return best_value


def map_objective(mll: ExactMarginalLogLikelihood) -> Tensor:
    """Marginal log likelihood plus log prior (per training point), one value per batch element."""
    model = mll.model
    model.train()
    with torch.no_grad():
        value = mll(model(*model.train_inputs), model.train_targets)
    return torch.nan_to_num(value.detach(), nan=-torch.inf)


def _sample_from_priors(model: torch.nn.Module, generator: torch.Generator | None) -> None:
    """Set every hyperparameter with a prior (and a setter) to a draw from it; sum-weight logits to N(0, 1)."""
    with torch.no_grad():
        for _, module, prior, closure, setting_closure in model.named_priors():
            if setting_closure is None:
                continue
            shape = closure(module).shape
            prior_shape = prior.batch_shape + prior.event_shape
            sample_shape = shape if prior_shape.numel() == 1 else shape[:len(shape) - len(prior_shape)]
            setting_closure(module, prior.sample(sample_shape).reshape(shape))
        for name, p in model.named_parameters():
            if name.endswith("weight_logits") and p.numel():
                p.copy_(torch.randn(p.shape, generator=generator, dtype=p.dtype).to(p.device))
