"""The kernel-language GP: one factory for every place that builds a model from kernel source.

``KernelGP(source, feature_chain)`` lowers the source once (a bad source is a
``KernelError`` now, not inside a fit) and builds botorch ``SingleTaskGP`` models
whose input transform is the feature chain (optionally preceded by a rounding
transform, so that acquisition optimisation over the continuous relaxation sees
valid values), whose covariance is the compiled kernel, and whose outcome transform
is ``Standardize`` with the data's batch shape. Called as ``factory(train_X,
train_Y)`` it is a model factory for cross-validation; `kerneldsl.fitting.OutputModel` adds
fitting with warm starts for the optimisation loop. `CachedPosterior` is the posterior of fitted
models that the acquisition functions evaluate thousands of times.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from botorch.acquisition.objective import PosteriorTransform
from botorch.models import ModelListGP, SingleTaskGP
from botorch.models.model import Model
from botorch.posteriors.gpytorch import GPyTorchPosterior
from botorch.posteriors.posterior import Posterior
from botorch.models.transforms.input import ChainedInputTransform, InputTransform
from botorch.models.transforms.outcome import Standardize
from botorch.models.utils.gpytorch_modules import MIN_INFERRED_NOISE_LEVEL
from gpytorch.constraints import GreaterThan
from gpytorch.distributions import MultitaskMultivariateNormal, MultivariateNormal
from gpytorch.likelihoods import GaussianLikelihood
from gpytorch.means import ConstantMean
from gpytorch.priors import Prior
from linear_operator import to_linear_operator
from linear_operator.operators import BlockDiagLinearOperator, DiagLinearOperator
from linear_operator.utils.cholesky import psd_safe_cholesky
from torch import Tensor

from .api import build
from .compiler.backends.common import HyperparameterMixin
from .compiler.backends.torch_kernel import stack_frozen
from .compiler.errors import KernelError
from .compiler.lower import compile_ir
from .compiler.shapes import broadcast_shapes

__all__ = ["DEFAULT_KERNEL", "default_feature_chain", "KernelGP", "LeanConstantMean", "BlockPosterior", "PointPosterior",
           "CachedPosterior"]

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
        # SingleTaskGP moves itself, kernel included, to train_X's dtype and device
        return SingleTaskGP(train_X, train_Y, likelihood=likelihood, covar_module=self.kernel(batch_shape),
                            mean_module=LeanConstantMean(batch_shape=batch_shape),
                            input_transform=self.input_transform(),
                            outcome_transform=Standardize(m=1, batch_shape=batch_shape))


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
    inverse of the Cholesky factor of ``K + noise``, the weights ``(K + noise)^-1 (y - m)``, the outcome
    transform's shift and scale, and the prior variance of a stationary kernel."""

    model: SingleTaskGP
    kernel: Callable[..., Tensor]
    """The model's kernel at its fitted hyperparameters (``frozen()`` of a kernel-language kernel, else its
    ``forward``)."""
    train_X: Tensor
    L_inverse: Tensor
    alpha: Tensor
    shift: Tensor
    scale: Tensor
    prior_variance: Tensor | None
    """``k(x, x)``, the same at every ``x`` for a kernel-language kernel (``stationary``); None for others."""

    @classmethod
    def of(cls, model: SingleTaskGP) -> "_FittedOutput":
        model.eval()
        model.requires_grad_(False)  # fitted: gradients of its posterior are for the inputs only
        (train_X,) = model.train_inputs  # transformed inputs in eval mode
        covariance = model.covar_module
        language = isinstance(covariance, HyperparameterMixin)
        kernel = covariance.frozen() if language else covariance.forward
        K = kernel(train_X, train_X)
        noise = model.likelihood.noise.reshape(-1).expand(train_X.shape[-2])
        L = psd_safe_cholesky(K + torch.diag_embed(noise))
        eye = torch.eye(L.shape[-1], dtype=L.dtype, device=L.device)
        residual = (model.train_targets - model.mean_module(train_X)).unsqueeze(-1)
        transform = getattr(model, "outcome_transform", None)  # Standardize: y = shift + scale * standardised y
        shift, scale = torch.zeros((), dtype=L.dtype, device=L.device), torch.ones((), dtype=L.dtype, device=L.device)
        if transform is not None:
            shift, scale = transform.means.reshape(()), transform.stdvs.reshape(())
        prior_variance = None
        if language and covariance.stationary and train_X.dim() == 2:
            prior_variance = K.diagonal()[0]
        return cls(model, kernel, train_X, torch.linalg.solve_triangular(L, eye, upper=False),
                   torch.cholesky_solve(residual, L).squeeze(-1), shift, scale, prior_variance)

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

    def point_moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Mean and variance ``[...]`` at transformed inputs ``X [..., 1, d']``. With a stationary kernel every
        point meets the training points in one kernel call (all points as the rows of one matrix, instead of
        a batch of one-row matrices that each repeat the training points) and the prior variance is the
        constant computed once: 0.99 ms instead of 1.22 for both outputs' posterior with its gradient at 8
        points (eight features, n = 40; issue 23)."""
        if self.prior_variance is None:
            mean, covariance = self.moments(X)
            return mean[..., 0], covariance[..., 0, 0]
        rows = X.reshape(-1, X.shape[-1])
        cross = self.kernel(rows, self.train_X)  # [b, n]
        mean = self.model.mean_module(rows) + cross @ self.alpha
        variance = self.prior_variance - (cross @ self.L_inverse.mT).square().sum(-1)
        batch = X.shape[:-2]
        return (self.shift + self.scale * mean).reshape(batch), (self.scale ** 2 * variance).reshape(batch)


@dataclass(frozen=True)
class _SharedKernelOutputs:
    """Fitted outputs with one kernel IR, equal transformed training inputs and constant means (the loss and
    cost models of a study that gives neither its own kernel): their means and variances at one point per
    batch from one stacked kernel call (`compiler.backends.torch_kernel.FrozenStack`) and batched algebra, the
    same numbers as each output's `_FittedOutput.point_moments`. Outputs are the leading dimension ``k``."""

    kernel: Callable[[Tensor, Tensor], Tensor]
    train_X: Tensor  # [n, d']
    L_inverse_T: Tensor  # [k, n, n]
    alpha: Tensor  # [k, n, 1]
    constant: Tensor  # [k, 1]
    prior_variance: Tensor  # [k, 1]
    shift: Tensor  # [k, 1]
    scale: Tensor  # [k, 1]

    @classmethod
    def of(cls, outputs: Sequence[_FittedOutput]) -> "_SharedKernelOutputs | None":
        """The outputs together, or None where they do not share a kernel IR and training inputs."""
        first = outputs[0]
        if len(outputs) < 2 or any(o.prior_variance is None or not isinstance(o.model.mean_module, ConstantMean)
                                   or not torch.equal(o.train_X, first.train_X) for o in outputs):
            return None
        kernel = stack_frozen([o.kernel for o in outputs])
        if kernel is None:
            return None

        def column(values: Sequence[Tensor]) -> Tensor:
            return torch.stack([v.reshape(()) for v in values]).unsqueeze(-1)

        return cls(kernel, first.train_X, torch.stack([o.L_inverse.mT for o in outputs]),
                   torch.stack([o.alpha for o in outputs]).unsqueeze(-1),
                   column([o.model.mean_module.constant.detach() for o in outputs]),
                   column([o.prior_variance for o in outputs]), column([o.shift for o in outputs]),
                   column([o.scale for o in outputs]))

    def point_moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Means and variances ``[..., k]`` at transformed inputs ``X [..., 1, d']``."""
        rows = X.reshape(-1, X.shape[-1])
        cross = self.kernel(rows, self.train_X)  # [k, b, n]
        mean = self.constant + (cross @ self.alpha).squeeze(-1)
        variance = self.prior_variance - (cross @ self.L_inverse_T).square().sum(-1)
        batch = (*X.shape[:-2], -1)
        return ((self.shift + self.scale * mean).mT.reshape(batch),
                (self.scale.square() * variance).mT.reshape(batch))


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
    (``Model.transform_inputs`` of each model; once for outputs whose transforms are equal). At one point per
    batch (``q = 1``, the analytic acquisitions) the covariance is the diagonal of the outputs' variances
    (`point_moments`), and outputs of one kernel IR on the same training points (`_SharedKernelOutputs`) share
    one kernel call.

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
        self._shared = None
        if not any(self._same_inputs):  # one input transform for all
            with torch.no_grad():
                self._shared = _SharedKernelOutputs.of(self._outputs)

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

    def point_moments(self, X: Tensor) -> tuple[Tensor, Tensor]:
        """Every output's posterior mean and variance ``[..., m]`` at one point per batch, ``X [..., 1, d]``: what
        the analytic acquisitions read, without building a posterior object."""
        if self._shared is not None:
            return self._shared.point_moments(self._outputs[0].model.transform_inputs(X))
        parts = [output.point_moments(inputs) for output, inputs in zip(self._outputs, self._transformed(X))]
        return torch.stack([mean for mean, _ in parts], dim=-1), torch.stack([variance for _, variance in parts], dim=-1)

    def posterior(self, X: Tensor, output_indices: list[int] | None = None, observation_noise: bool | Tensor = False,
                  posterior_transform: PosteriorTransform | None = None, **kwargs: Any) -> Posterior:
        """The joint posterior of every output at ``X [..., q, d]`` (botorch's ``Model.posterior``; a
        `PointPosterior` at one point per batch)."""
        if output_indices is not None or observation_noise is not False or kwargs:
            return self._fallback[0].posterior(X, output_indices=output_indices, observation_noise=observation_noise,
                                           posterior_transform=posterior_transform, **kwargs)
        if X.shape[-2] == 1:  # one point per batch: the outputs' variances are the whole covariance
            means, variances = self.point_moments(X)
            posterior = PointPosterior(means.unsqueeze(-2), variances.unsqueeze(-2))
            return posterior_transform(posterior.full) if posterior_transform is not None else posterior
        parts = [output.moments(inputs) for output, inputs in zip(self._outputs, self._transformed(X))]
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
