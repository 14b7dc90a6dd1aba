"""Priors gpytorch lacks: a Dirichlet prior on the weights of a learned sum."""

from __future__ import annotations

import torch
from gpytorch.priors import Prior
from torch.distributions import Dirichlet
from torch.nn import Module as TModule


class DirichletPrior(Prior, Dirichlet):
    """Dirichlet prior over a point on the simplex (the softmaxed weights of one sum)."""

    def __init__(self, concentration, validate_args=False, transform=None):
        TModule.__init__(self)
        Dirichlet.__init__(self, concentration=torch.as_tensor(concentration, dtype=torch.get_default_dtype()),
                           validate_args=validate_args)
        concentration = self.concentration  # a buffer, so that .to() and state_dict carry it (as gpytorch's priors)
        del self.concentration
        self.register_buffer("concentration", concentration.clone())
        self._transform = transform

    def expand(self, batch_shape):
        batch_shape = torch.Size(batch_shape)
        return DirichletPrior(self.concentration.expand(batch_shape + self.concentration.shape[-1:]))

    def __call__(self, *args, **kwargs):
        return super(Dirichlet, self).__call__(*args, **kwargs)


class DimensionScaledLogNormal:
    """A lengthscale prior rule: LogNormal(``loc + log(d) / 2``, ``scale``) with ``d`` per base term.

    botorch's default (Hvarfner et al. 2024, "Vanilla Bayesian optimization performs great in
    high dimensions") puts LogNormal(sqrt(2) + log(D) / 2, sqrt(3)) on every lengthscale of one
    kernel over all ``D`` inputs: typical distances grow like sqrt(D), so lengthscales must too
    for the kernel to stay informative. A compiled kernel has many terms over few features each,
    so ``d`` is counted per term:

    - ``scale_by="term"``: ``d`` = the term's own features;
    - ``scale_by="product"``: ``d`` = the features of the term and of every factor it is
      multiplied with on its way to the root (the largest over the paths of a shared node),
      since a product of stationary kernels decays with the summed squared distances of all
      its factors, like one kernel over their union.
    """

    def __init__(self, scale_by: str = "term", loc: float = 2 ** 0.5, scale: float = 3 ** 0.5):
        if scale_by not in ("term", "product"):
            raise ValueError(f"scale_by must be 'term' or 'product', got {scale_by!r}")
        self.scale_by, self.loc, self.scale = scale_by, float(loc), float(scale)

    def __repr__(self) -> str:
        return f"DimensionScaledLogNormal(scale_by={self.scale_by!r}, loc={self.loc:.4g}, scale={self.scale:.4g})"

    def term_dims(self, ir) -> list[int]:
        """``d`` of every base term of ``ir`` (see the class docstring)."""
        if self.scale_by == "term":
            return [len(t.features) for t in ir.terms]
        return product_dims(ir)

    def prior(self, ir, term: int | None = None):
        """The ``LogNormalPrior`` of one term's lengthscales ``[d_term]``, or of all slots ``[P]`` (``term=None``)."""
        import math

        from gpytorch.priors import LogNormalPrior

        dims = self.term_dims(ir)
        if term is not None:
            loc = [self.loc + 0.5 * math.log(dims[term])] * len(ir.terms[term].features)
        else:
            loc = [0.0] * ir.num_lengthscales
            for t, d in zip(ir.terms, dims):
                for slot in t.lengthscales:
                    loc[slot] = self.loc + 0.5 * math.log(d)
        return LogNormalPrior(torch.tensor(loc, dtype=torch.get_default_dtype()),
                              torch.tensor(self.scale, dtype=torch.get_default_dtype()))


def product_dims(ir) -> list[int]:
    """Per term: the features of the term and of all factors multiplied with it (max over paths)."""
    from .ir import Product

    cover: dict[int, frozenset] = {}

    def features(node: int) -> frozenset:
        if node not in cover:
            n = ir.node(node)
            cover[node] = (frozenset(n.features) if node < ir.num_terms
                           else frozenset().union(*(features(c) for c in n.children)))
        return cover[node]

    best = [0] * ir.num_terms
    seen: set = set()

    def visit(node: int, context: frozenset) -> None:
        if (node, context) in seen:
            return
        seen.add((node, context))
        if node < ir.num_terms:
            best[node] = max(best[node], len(features(node) | context))
            return
        n = ir.node(node)
        for i, child in enumerate(n.children):
            if isinstance(n, Product):
                others = frozenset().union(*(features(c) for j, c in enumerate(n.children) if j != i))
                visit(child, context | others)
            else:
                visit(child, context)

    visit(ir.root, frozenset())
    return best
