"""The parameter store of the compiled backends: flat vectors in the IR's slot order.

The ``torch`` and ``triton`` backends subclass ``FlatParameterKernel`` and only
implement ``forward``; priors, constraints and the readable-name API are here.
"""

from __future__ import annotations

import torch
from gpytorch.kernels import Kernel

from ..ir import KernelIR
from ..options import KernelOptions
from ..priors import DirichletPrior
from .common import HyperparameterMixin


class FlatParameterKernel(HyperparameterMixin, Kernel):
    """A gpytorch Kernel whose hyperparameters are three flat tensors.

    ``raw_outputscale [*b]``, ``raw_lengthscale [*b, P]`` (through the options'
    constraints) and ``weight_logits [*b, W]`` (softmax per learned sum).
    """

    has_lengthscale = False

    def __init__(self, ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
                 options: KernelOptions | None = None):
        super().__init__(batch_shape=batch_shape)
        options = options or KernelOptions()
        self.ir = ir
        self.options = options
        b = self.batch_shape
        self.register_parameter("raw_outputscale", torch.nn.Parameter(torch.zeros(b)))
        self.register_parameter("raw_lengthscale", torch.nn.Parameter(torch.zeros(*b, ir.num_lengthscales)))
        self.register_parameter("weight_logits", torch.nn.Parameter(torch.zeros(*b, ir.num_weights)))
        self.register_constraint("raw_outputscale", options.outputscale_constraint)
        self.register_constraint("raw_lengthscale", options.lengthscale_constraint)
        if options.outputscale_prior is not None:
            self.register_prior("outputscale_prior", options.outputscale_prior,
                                _get_outputscale, _set_outputscale)
        if options.lengthscale_prior is not None and ir.num_lengthscales:
            self.register_prior("lengthscale_prior", options.lengthscale_prior_for(ir),
                                _get_lengthscale, _set_lengthscale)
        if options.weight_concentration is not None:
            for i, group in enumerate(ir.weight_groups()):
                alpha = torch.full((len(group),), float(options.weight_concentration))
                self.register_prior(f"weights_prior_{i}", DirichletPrior(alpha), _WeightGroup(group))

    @property
    def outputscale(self) -> torch.Tensor:
        return self.raw_outputscale_constraint.transform(self.raw_outputscale)

    @property
    def lengthscale(self) -> torch.Tensor:
        return self.raw_lengthscale_constraint.transform(self.raw_lengthscale)

    def fused_parameters(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """What the fused kernels read of the hyperparameters, differentiable: the lengthscales ``[*b, P]``, the
        softmaxed weights ``[*b, W]`` and the outputscale ``[*b]``."""
        return self.lengthscale, self.sum_weights(), self.outputscale

    def _flat_values(self):
        return self.outputscale, self.lengthscale, self.weight_logits

    def _set_flat(self, outputscale=None, lengthscale=None, weight_logits=None):
        with torch.no_grad():
            if outputscale is not None:
                _set_outputscale(self, outputscale)
            if lengthscale is not None:
                _set_lengthscale(self, lengthscale)
            if weight_logits is not None:
                self.weight_logits.copy_(torch.as_tensor(weight_logits).to(self.weight_logits)
                                         .expand_as(self.weight_logits))


def _get_outputscale(m: FlatParameterKernel) -> torch.Tensor:
    return m.outputscale


def _set_outputscale(m: FlatParameterKernel, value) -> None:
    value = torch.as_tensor(value).to(m.raw_outputscale)
    m.initialize(raw_outputscale=m.raw_outputscale_constraint.inverse_transform(value).expand_as(m.raw_outputscale))


def _get_lengthscale(m: FlatParameterKernel) -> torch.Tensor:
    return m.lengthscale


def _set_lengthscale(m: FlatParameterKernel, value) -> None:
    value = torch.as_tensor(value).to(m.raw_lengthscale)
    m.initialize(raw_lengthscale=m.raw_lengthscale_constraint.inverse_transform(value).expand_as(m.raw_lengthscale))


class _WeightGroup:
    """Prior closure: the softmaxed weights of one learned sum (a picklable callable)."""

    def __init__(self, group: tuple[int, ...]):
        self.group = list(group)

    def __call__(self, m: FlatParameterKernel) -> torch.Tensor:
        return torch.softmax(m.weight_logits[..., self.group], dim=-1)
