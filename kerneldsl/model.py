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

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import ChainedInputTransform, InputTransform
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

from .api import build
from .compiler.errors import KernelError
from .compiler.lower import compile_ir

__all__ = ["DEFAULT_KERNEL", "default_feature_chain", "KernelGP", "OutputModel"]

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


class KernelGP:
    """Builds ``SingleTaskGP`` models with a compiled kernel-language kernel.

    ``source`` is kernel-language source over the features of ``feature_chain``
    (``features`` overrides ``feature_chain.feature_names``). ``options`` go to ``kerneldsl.build``
    (backend, priors, constraints). ``rounding``, when given, is applied to search
    points before the chain.
    """

    def __init__(self, source: str, feature_chain: InputTransform, groups: Mapping[str, Sequence[str]] | None = None,
                 backend: str = "auto", features: Sequence[str] | None = None,
                 rounding: InputTransform | None = None, **options: Any):
        names = list(features if features is not None else getattr(feature_chain, "feature_names", ()))
        if not names:
            raise KernelError("a kernel-language GP needs feature names: pass features=... or a Chain with feature_names")
        self.source, self.feature_chain, self.rounding = source, feature_chain, rounding
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
        return SingleTaskGP(train_X, train_Y, covar_module=self.kernel(batch_shape).to(train_X),
                            input_transform=self.input_transform(),
                            outcome_transform=Standardize(m=1, batch_shape=batch_shape)).to(train_X)


@dataclass
class OutputModel:
    """The GP of one output of the optimisation loop; ``fit`` fits it warm-started from the previous fit."""

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
        try:
            fit_gpytorch_mll(mll, optimizer_kwargs={"options": dict(self.fit_options)} if self.fit_options else None)
        except ModelFittingError as exc:
            # Keep the loop alive: use the warm-started (or prior) hyperparameters and say so.
            self.last_fit_error = f"{self.name} model fit failed, using previous hyperparameters: {exc}"
            warnings.warn(self.last_fit_error, RuntimeWarning, stacklevel=2)
        model.eval()
        self._state = {part: {k: v.detach().clone() for k, v in getattr(model, part).state_dict().items()}
                       for part in ("covar_module", "mean_module", "likelihood")}
        return model
