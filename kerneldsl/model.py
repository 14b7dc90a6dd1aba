"""The kernel-language GP: one factory for every place that builds a model from kernel source.

``KernelGP(source, feature_chain)`` lowers the source once (a bad source is a
``KernelError`` now, not inside a fit) and builds botorch ``SingleTaskGP`` models
whose input transform is the feature chain (optionally preceded by a rounding
transform, so that acquisition optimisation over the continuous relaxation sees
valid values), whose covariance is the compiled kernel, and whose outcome transform
is ``Standardize`` with the data's batch shape. Called as ``factory(train_X,
train_Y)`` it is a model factory for cross-validation; ``OutputModel`` adds fitting
with warm starts for the optimisation loop.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import gpytorch
import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.acquisition.objective import PosteriorTransform
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.posteriors.posterior import Posterior
from botorch.models.transforms.input import ChainedInputTransform, InputTransform
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import MIN_INFERRED_NOISE_LEVEL
from botorch.optim.closures import ForwardBackwardClosure
from botorch.optim.utils import get_parameters
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.mlls import ExactMarginalLogLikelihood
from gpytorch.priors import Prior
from linear_operator import to_linear_operator
from linear_operator.operators import BlockDiagLinearOperator, DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from .api import build
from .compiler.backends.common import HyperparameterMixin
from .compiler.errors import KernelError
from .compiler.lower import compile_ir
from .compiler.shapes import broadcast_shapes

__all__ = ["DEFAULT_KERNEL", "FIT_NATS", "default_feature_chain", "KernelGP", "OutputModel", "LeanConstantMean", "BlockPosterior", "PointPosterior", "CachedPosterior",
           "dense_mll_closure", "fit_map"]

DEFAULT_KERNEL = "matern52(all)"
"""Default kernel source: one Matern 5/2 with a lengthscale per feature over every feature
of the chain (the group ``all`` is passed from Python as ``groups={"all": chain.feature_names}``)."""


def default_feature_chain(space):
    """Pass every numeric search coordinate through (log coordinates stay logs) and one-hot every choice."""
    from .space.parameters import Choice
    from .space.transforms import Chain, OneHot, PassThrough

    numeric = [p.coordinate_name for p in space.parameters if not isinstance(p, Choice)]
    choices = [p.name for p in space.parameters if isinstance(p, Choice)]
    steps = ([PassThrough(*numeric)] if numeric else []) + ([OneHot(*choices)] if choices else [])
    return Chain(space, steps)


class LeanConstantMean(ConstantMean):
    """gpytorch's ``ConstantMean`` (same parameter, prior, constraint and state dict) with a forward that
    broadcasts shapes in Python: the model fits and acquisition loops call it thousands of times, and
    ``torch.broadcast_shapes`` was a fifth of a proposal's time (profile of issue 23)."""

    def forward(self, input: Tensor) -> Tensor:
        constant = self.constant.unsqueeze(-1)
        return constant.expand(broadcast_shapes(constant.shape, input.shape[:-1]))


class KernelGP:
    """Builds ``SingleTaskGP`` models with a compiled kernel-language kernel.

    ``source`` is kernel-language source over the features of ``feature_chain``
    (``features`` overrides ``feature_chain.feature_names``). ``options`` go to ``kerneldsl.build``
    (backend, priors, constraints). ``rounding``, when given, is applied to search
    points before the chain. ``noise_prior`` replaces the prior of botorch's default
    likelihood (LogNormal(-4, 1) on the noise variance of the standardised outcome).
    """

    def __init__(self, source: str, feature_chain: InputTransform, groups: Mapping[str, Sequence[str]] | None = None,
                 backend: str = "auto", features: Sequence[str] | None = None,
                 rounding: InputTransform | None = None, noise_prior: Prior | None = None, **options: Any):
        names = list(features if features is not None else getattr(feature_chain, "feature_names", ()))
        if not names:
            raise KernelError("a kernel-language GP needs feature names: pass features=... or a Chain with feature_names")
        self.source, self.feature_chain, self.rounding = source, feature_chain, rounding
        self.noise_prior = noise_prior
        self.features = tuple(names)
        self.ir = compile_ir(source, names, groups)
        self.options = {"backend": backend, **options}
        self.kernel()  # a bad backend or option fails now, before any data is seen

    def kernel(self, batch_shape: torch.Size = torch.Size([])):
        """A fresh kernel (prior hyperparameters) with ``batch_shape``."""
        return build(self.ir, batch_shape=batch_shape, **self.options)

    def input_transform(self) -> InputTransform:
        if self.rounding is None:
            return self.feature_chain
        return ChainedInputTransform(round=self.rounding, features=self.feature_chain)

    def __call__(self, train_X: Tensor, train_Y: Tensor) -> SingleTaskGP:
        """An unfitted model of ``train_Y [*b, n, 1]`` on search points ``train_X [*b, n, d]``."""
        batch_shape = train_X.shape[:-2]
        likelihood = None
        if self.noise_prior is not None:
            likelihood = GaussianLikelihood(noise_prior=self.noise_prior, batch_shape=batch_shape,
                                            noise_constraint=GreaterThan(MIN_INFERRED_NOISE_LEVEL))
        return SingleTaskGP(train_X, train_Y, likelihood=likelihood, covar_module=self.kernel(batch_shape).to(train_X),
                            mean_module=LeanConstantMean(batch_shape=batch_shape),
                            input_transform=self.input_transform(),
                            outcome_transform=Standardize(m=1, batch_shape=batch_shape)).to(train_X)


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

    def fit(self, X: Tensor, y: Tensor) -> SingleTaskGP:
        """Fit a GP to ``X`` [n, d] (search space) and ``y`` [n] (modelled output), warm-started from the last fit."""
        model = self.factory(X, y.unsqueeze(-1))
        if self._state is not None:
            for part, state in self._state.items():
                getattr(model, part).load_state_dict(state)
        mll = ExactMarginalLogLikelihood(model.likelihood, model)
        self.last_fit_error = None
        options = {"ftol": FIT_NATS / len(y), **self.fit_options}
        try:
            fit_gpytorch_mll(mll, closure=dense_mll_closure(mll), optimizer_kwargs={"options": options})
        except ModelFittingError as exc:
            # Keep the loop alive: use the warm-started (or prior) hyperparameters and say so.
            self.last_fit_error = f"{self.name} model fit failed, using previous hyperparameters: {exc}"
            warnings.warn(self.last_fit_error, RuntimeWarning, stacklevel=2)
        model.eval()
        self._state = {part: {k: v.detach().clone() for k, v in getattr(model, part).state_dict().items()}
                       for part in ("covar_module", "mean_module", "likelihood")}
        return model


class BlockPosterior(GPyTorchPosterior):
    """botorch's ``GPyTorchPosterior`` of independent outputs (a block-diagonal, non-interleaved
    ``MultitaskMultivariateNormal``) that draws samples from base samples with the Cholesky factor of each
    output's block in plain torch: the same factors (``psd_safe_cholesky``, as linear_operator's root
    decomposition of the block-diagonal covariance) and the same samples, without linear_operator's
    autograd functions, which were a quarter of the backward pass of a tick evaluation in the profile.

    ``blocks [..., m, q, q]``: the covariance of each of the ``m`` outputs.
    """

    def __init__(self, distribution: MultitaskMultivariateNormal, blocks: Tensor):
        super().__init__(distribution=distribution)
        self.blocks = blocks

    def rsample_from_base_samples(self, sample_shape: torch.Size, base_samples: Tensor) -> Tensor:
        """Samples ``sample_shape x batch x q x m`` from base samples of that shape (botorch's convention)."""
        if base_samples.shape[: len(sample_shape)] != sample_shape:
            raise RuntimeError(f"`sample_shape` disagrees with shape of `base_samples`. "
                               f"Got {sample_shape=} and {base_samples.shape=}.")
        root = psd_safe_cholesky(self.blocks)  # [..., m, q, q]
        noise = (root @ base_samples.transpose(-1, -2).unsqueeze(-1)).squeeze(-1)  # [S..., ..., m, q]
        return self.distribution.mean + noise.transpose(-1, -2)


class PointPosterior(Posterior):
    """The posterior of independent outputs at one point per batch (``q = 1``), as ``ModelListGP`` returns it,
    with its mean and variance held as plain tensors.

    botorch's analytic acquisitions read only ``mean`` and ``variance``; building gpytorch's multitask
    distribution and reading them back through its linear operators cost 10-17% of the posterior with its
    backward (n = 100, eight features and the MNIST kernel, quiet machine; issue 23). Everything else (sampling, ``distribution``,
    quantiles) goes to the ``GPyTorchPosterior`` of the same moments, built when first asked for, so samples
    from base samples are those of ``ModelListGP``.

    ``means``, ``variances``: ``[..., 1, m]``.
    """

    def __init__(self, means: Tensor, variances: Tensor):
        self.means, self.variances = means, variances

    @property
    def mean(self) -> Tensor:
        return self.means

    @property
    def variance(self) -> Tensor:
        return self.variances

    @property
    def device(self) -> torch.device:
        return self.means.device

    @property
    def dtype(self) -> torch.dtype:
        return self.means.dtype

    @functools.cached_property
    def full(self) -> GPyTorchPosterior:
        """The ``GPyTorchPosterior`` of these moments (multitask, outputs not interleaved, for several outputs)."""
        if self.means.shape[-1] == 1:
            mean, variance = self.means[..., 0], self.variances[..., 0]
            return GPyTorchPosterior(MultivariateNormal(mean, to_linear_operator(variance.unsqueeze(-1))))
        return GPyTorchPosterior(MultitaskMultivariateNormal(self.means, DiagLinearOperator(self.variances.squeeze(-2)),
                                                             interleaved=False))

    @property
    def distribution(self) -> MultivariateNormal:
        return self.full.distribution

    @property
    def base_sample_shape(self) -> torch.Size:
        return self.full.base_sample_shape

    @property
    def batch_range(self) -> tuple[int, int]:
        return self.full.batch_range

    def _extended_shape(self, sample_shape: torch.Size = torch.Size()) -> torch.Size:  # noqa: B008 (botorch's signature)
        return sample_shape + self.means.shape

    def rsample(self, sample_shape: torch.Size | None = None) -> Tensor:
        return self.full.rsample(sample_shape)

    def rsample_from_base_samples(self, sample_shape: torch.Size, base_samples: Tensor) -> Tensor:
        return self.full.rsample_from_base_samples(sample_shape, base_samples)

    def quantile(self, value: Tensor) -> Tensor:
        return self.full.quantile(value)

    def density(self, value: Tensor) -> Tensor:
        return self.full.density(value)


@dataclass(frozen=True)
class _FittedOutput:
    """What one fitted output's posterior needs, computed once per fit: the transformed training inputs, the
    inverse of the Cholesky factor of ``K + noise``, the weights ``(K + noise)^-1 (y - m)`` and the outcome
    transform's shift and scale."""

    model: SingleTaskGP
    kernel: Callable[..., Tensor]
    """The model's kernel at its fitted hyperparameters (``frozen()`` of a kernel-language kernel, else its
    ``forward``)."""
    train_X: Tensor
    L_inverse: Tensor
    alpha: Tensor
    shift: Tensor
    scale: Tensor

    @classmethod
    def of(cls, model: SingleTaskGP) -> "_FittedOutput":
        model.eval()
        model.requires_grad_(False)  # fitted: gradients of its posterior are for the inputs only
        (train_X,) = model.train_inputs  # transformed inputs in eval mode
        covariance = model.covar_module
        kernel = covariance.frozen() if isinstance(covariance, HyperparameterMixin) else covariance.forward
        K = kernel(train_X, train_X)
        noise = model.likelihood.noise.reshape(-1).expand(train_X.shape[-2])
        L = psd_safe_cholesky(K + torch.diag_embed(noise))
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
        residual = (model.train_targets - model.mean_module(train_X)).unsqueeze(-1)
        transform = getattr(model, "outcome_transform", None)  # Standardize: y = shift + scale * standardised y
        shift, scale = torch.zeros((), dtype=L.dtype, device=L.device), torch.ones((), dtype=L.dtype, device=L.device)
        if transform is not None:
            shift, scale = transform.means.reshape(()), transform.stdvs.reshape(())
        return cls(model, kernel, train_X, torch.linalg.solve_triangular(L, eye, upper=False),
                   torch.cholesky_solve(residual, L).squeeze(-1), shift, scale)

    def moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Mean ``[..., q]`` and covariance ``[..., q, q]`` at transformed inputs ``X [..., q, d']`` (the model's
        ``transform_inputs`` of search points; for ``q = 1`` the covariance is ``[..., 1, 1]``, the variance)."""
        model = self.model
        q = X.shape[-2]
        train = self.train_X.expand(*X.shape[:-2], *self.train_X.shape)
        prior, cross = self.kernel(X, torch.cat([X, train], dim=-2)).split([q, train.shape[-2]], -1)
        mean = model.mean_module(X) + cross @ self.alpha
        V = cross @ self.L_inverse.transpose(-1, -2)  # [..., q, n]: L^-1 K_Xx, transposed
        covariance = prior - (V.square().sum(-1, keepdim=True) if q == 1 else V @ V.transpose(-1, -2))
        return self.shift + self.scale * mean, self.scale ** 2 * covariance


class CachedPosterior(Model):
    """Fitted ``SingleTaskGP`` models (one per output, as in ``ModelListGP``) whose joint posterior is computed
    with dense torch algebra from a Cholesky factor cached once.

    The posterior is the one gpytorch computes in eval mode for models of up to ``max_cholesky_size`` points
    (mean ``m(x) + K_xX (K_XX + noise)^-1 (y - m)``, covariance ``K_xx - K_xX (K_XX + noise)^-1 K_Xx``, then the
    outcome transform's scaling), returned as botorch's ``ModelListGP`` returns it (a block-diagonal
    ``MultitaskMultivariateNormal``, outputs not interleaved), so Monte-Carlo acquisitions draw the same samples
    from the same base samples. It skips gpytorch's lazy tensors, prediction strategy and kernel call wrapper
    (the kernels' ``forward`` is called), which cost several milliseconds per call whatever the size (profile
    of issue 23: most of an acquisition evaluation at n = 40). Calls it does not cover (``output_indices``,
    observation noise) go to a ``ModelListGP`` of the same models. Input transforms apply as in botorch
    (``Model.transform_inputs`` of each model; once for outputs whose transforms are equal). At one point per batch (``q = 1``, the analytic acquisitions)
    the covariance is the diagonal of the outputs' variances.

    The fitted models are held outside the module tree and their parameters stop requiring gradients (they
    are not fitted further here: an acquisition's gradient is for its inputs only), so botorch's
    acquisition functions, which move themselves and their model to each input's device and dtype at every
    evaluation, walk one module instead of every kernel, transform and likelihood (a fifth of an analytic
    acquisition evaluation otherwise).
    """

    def __init__(self, models: Sequence[SingleTaskGP]):
        super().__init__()
        with torch.no_grad():
            self._outputs = tuple(_FittedOutput.of(model) for model in models)
        self._fallback = (ModelListGP(*models),)  # a tuple: not a submodule either
        self._same_inputs = tuple(_first_equal_transform(models, i) for i in range(len(models)))
        """For each output, the first output with an equal input transform (whose transformed inputs it reuses)."""

    def _transformed(self, X: Tensor) -> list[Tensor]:
        """Each output's transformed inputs, each distinct input transform applied once."""
        inputs: list[Tensor] = []
        for output, same in zip(self._outputs, self._same_inputs):
            inputs.append(inputs[same] if same < len(inputs) else output.model.transform_inputs(X))
        return inputs

    @property
    def models(self) -> tuple[SingleTaskGP, ...]:
        return tuple(output.model for output in self._outputs)

    @property
    def num_outputs(self) -> int:
        return len(self._outputs)

    @property
    def batch_shape(self) -> torch.Size:
        return torch.Size([])

    def posterior(self, X: Tensor, output_indices: list[int] | None = None, observation_noise: bool | Tensor = False,
                  posterior_transform: PosteriorTransform | None = None, **kwargs: Any) -> Posterior:
        """The joint posterior of every output at ``X [..., q, d]`` (botorch's ``Model.posterior``; a
        `PointPosterior` at one point per batch)."""
        if output_indices is not None or observation_noise is not False or kwargs:
            return self._fallback[0].posterior(X, output_indices=output_indices, observation_noise=observation_noise,
                                           posterior_transform=posterior_transform, **kwargs)
        parts = [output.moments(inputs) for output, inputs in zip(self._outputs, self._transformed(X))]
        if X.shape[-2] == 1:  # one point per batch: the outputs' variances are the whole covariance
            posterior = PointPosterior(torch.stack([mean for mean, _ in parts], dim=-1),
                                       torch.stack([covariance[..., 0] for _, covariance in parts], dim=-1))
            return posterior_transform(posterior.full) if posterior_transform is not None else posterior
        if len(parts) == 1:
            distribution = MultivariateNormal(parts[0][0], to_linear_operator(parts[0][1]))
        else:  # as ModelListGP builds it (MultitaskMultivariateNormal.from_independent_mvns): lazy, block diagonal
            means = torch.stack([mean for mean, _ in parts], dim=-1)  # [..., q, m]
            blocks = torch.stack([covariance for _, covariance in parts], dim=-3)  # [..., m, q, q]
            distribution = MultitaskMultivariateNormal(
                means, BlockDiagLinearOperator(to_linear_operator(blocks), block_dim=-3), interleaved=False)
            posterior = BlockPosterior(distribution, blocks)
            return posterior_transform(posterior) if posterior_transform is not None else posterior
        posterior = GPyTorchPosterior(distribution=distribution)
        return posterior_transform(posterior) if posterior_transform is not None else posterior


def _first_equal_transform(models: Sequence[SingleTaskGP], index: int) -> int:
    """The first of ``models`` whose input transform equals that of ``models[index]`` (botorch's
    ``InputTransform.equals``; both None counts as equal)."""
    mine = getattr(models[index], "input_transform", None)
    for j in range(index):
        other = getattr(models[j], "input_transform", None)
        if (mine is None and other is None) or (mine is not None and other is not None and mine.equals(other)):
            return j
    return index


def dense_mll_closure(mll: ExactMarginalLogLikelihood) -> ForwardBackwardClosure | None:
    """botorch's loss closure for ``fit_gpytorch_mll`` (the negative marginal log likelihood plus log priors, per
    training point, and its gradients) computed in dense torch, or None where it does not apply (batched models,
    input transforms with trainable parameters, likelihoods other than gpytorch's ``GaussianLikelihood``,
    more than ``max_cholesky_size`` points, where gpytorch would not use a Cholesky factor either).

    The value is gpytorch's ``ExactMarginalLogLikelihood`` on the same Cholesky factor; the training inputs are
    transformed once instead of twice per evaluation, the priors are collected once, and gpytorch's lazy
    tensors and kernel call wrapper are skipped (the kernel's ``forward`` is called): in the profile of issue
    23 they made each of the ~40 evaluations of a warm-started fit cost ~10 ms at n = 40.
    """
    model = mll.model
    model.train()  # train_inputs: the untransformed inputs
    (train_X,) = model.train_inputs
    transform = getattr(model, "input_transform", None)
    if (train_X.dim() != 2 or type(model.likelihood) is not GaussianLikelihood
            or any(True for _ in model.added_loss_terms())
            or train_X.shape[0] > gpytorch.settings.max_cholesky_size.value()
            or (transform is not None and any(p.requires_grad for p in transform.parameters()))):
        return None
    with torch.no_grad():
        X = model.transform_inputs(train_X)
    y, n = model.train_targets, train_X.shape[0]
    constant = 0.5 * n * math.log(2 * math.pi)

    priors = [(module, prior, closure) for _, module, prior, closure, _ in model.named_priors()]

    def loss() -> Tensor:
        K = model.covar_module.forward(X, X)
        L = psd_safe_cholesky(K + torch.diag_embed(model.likelihood.noise.reshape(-1).expand(n)))
        a = torch.linalg.solve_triangular(L, (y - model.mean_module(X)).unsqueeze(-1), upper=False)
        value = -0.5 * a.square().sum() - L.diagonal().log().sum() - constant
        for module, prior, closure in priors:
            value = value + prior.log_prob(closure(module)).sum()
        return -value / n

    return ForwardBackwardClosure(loss, get_parameters(mll, requires_grad=True))


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
    best_value = _map_objective(mll)
    if not restarts:
        return best_value
    best = {name: p.detach().clone() for name, p in model.named_parameters()}
    for _ in range(restarts):
        _sample_from_priors(model, generator)
        try:
            fit_gpytorch_mll(mll, **dict(fit_kwargs or {}))
        except ModelFittingError:
            continue
        value = _map_objective(mll)
        better = value > best_value  # a NaN objective never wins
        best_value = torch.where(better, value, best_value)
        for name, p in model.named_parameters():
            mask = better.reshape(better.shape + (1,) * (p.dim() - better.dim()))
            best[name] = torch.where(mask, p.detach(), best[name])
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(best[name])
    return best_value


def _map_objective(mll: ExactMarginalLogLikelihood) -> Tensor:
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
