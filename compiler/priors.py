"""Priors gpytorch lacks: a Dirichlet prior on the weights of a learned sum."""

from __future__ import annotations

import torch
from gpytorch.priors import Prior
from gpytorch.priors.utils import _bufferize_attributes
from torch.distributions import Dirichlet
from torch.nn import Module as TModule


class DirichletPrior(Prior, Dirichlet):
    """Dirichlet prior over a point on the simplex (the softmaxed weights of one sum)."""

    def __init__(self, concentration, validate_args=False, transform=None):
        TModule.__init__(self)
        Dirichlet.__init__(self, concentration=torch.as_tensor(concentration, dtype=torch.get_default_dtype()),
                           validate_args=validate_args)
        _bufferize_attributes(self, ("concentration",))
        self._transform = transform

    def expand(self, batch_shape):
        batch_shape = torch.Size(batch_shape)
        return DirichletPrior(self.concentration.expand(batch_shape + self.concentration.shape[-1:]))

    def __call__(self, *args, **kwargs):
        return super(Dirichlet, self).__call__(*args, **kwargs)
