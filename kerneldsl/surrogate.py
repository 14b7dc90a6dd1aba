"""GP models of one output (log loss or log cost) with a compiled kernel, fitted with warm starts.

A model is a botorch ``SingleTaskGP`` on search-space points whose input
transform rounds discrete coordinates (so acquisition optimisation over the
continuous relaxation sees valid values) and then applies the feature chain;
its covariance is ``kd.compile(source, features=chain.feature_names)``; its
outcome transform is ``Standardize``. Each refit starts from the previous fit's
kernel, mean and noise hyperparameters (the warm start) and runs
``botorch.fit.fit_gpytorch_mll``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
from botorch.exceptions.errors import ModelFittingError
from botorch.fit import fit_gpytorch_mll
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import ChainedInputTransform, InputTransform
from botorch.models.transforms.outcome import Standardize
from gpytorch.mlls import ExactMarginalLogLikelihood
from torch import Tensor

__all__ = ["DEFAULT_KERNEL", "default_feature_chain", "OutputModel"]

DEFAULT_KERNEL = "matern52(all)"
"""Default kernel source: one Matern 5/2 with a lengthscale per feature over every feature
of the chain (the group ``all`` is passed from Python as ``groups={"all": chain.feature_names}``)."""


def default_feature_chain(space):
    """Pass every numeric search coordinate through (log coordinates stay logs) and one-hot every choice."""
    from .parameters import Choice
    from .transforms import Chain, OneHot, PassThrough

    numeric = [p.coordinate_name for p in space.parameters if not isinstance(p, Choice)]
    choices = [p.name for p in space.parameters if isinstance(p, Choice)]
    steps = ([PassThrough(*numeric)] if numeric else []) + ([OneHot(*choices)] if choices else [])
    return Chain(space, steps)


@dataclass
class OutputModel:
    """Builds, fits and warm-starts the GP of one output; `fit` returns the fitted SingleTaskGP."""

    name: str
    source: str
    chain: InputTransform
    rounding: InputTransform | None
    groups: Mapping[str, Sequence[str]] | None = None
    kernel_options: Mapping = field(default_factory=dict)
    fit_options: Mapping = field(default_factory=dict)
    _state: dict | None = None  # previous fit's hyperparameters
    last_fit_error: str | None = None

    def __post_init__(self) -> None:
        from .compiler.lower import compile_ir

        # Lowered once; building a kernel now makes a bad source or option a KernelError before any trial runs.
        self._ir = compile_ir(self.source, list(self.chain.feature_names), self.groups)
        self.kernel()

    def kernel(self):
        from .api import build

        return build(self._ir, **dict(self.kernel_options))

    def fit(self, X: Tensor, y: Tensor) -> SingleTaskGP:
        """Fit a GP to ``X`` [n, d] (search space) and ``y`` [n] (log output), warm-started from the last fit."""
        transforms = {"features": self.chain} if self.rounding is None else {"round": self.rounding, "features": self.chain}
        model = SingleTaskGP(
            X, y.unsqueeze(-1), covar_module=self.kernel().to(X), outcome_transform=Standardize(m=1),
            input_transform=ChainedInputTransform(**transforms),
        ).to(X)
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
