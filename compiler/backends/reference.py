"""The ``reference`` backend: the kernel as a plain tree of gpytorch modules.

It is the correctness oracle and the speed baseline of the compiled backends, so
it stays plainly gpytorch: each term's module from ``kinds.KINDS`` (``MaternKernel``,
``RBFKernel``, ...), ``ProductKernel`` for products, a small ``WeightedSumKernel`` for
sums, ``ScaleKernel`` on top.
A node shared in the DAG is one module instance used in several places.
"""

from __future__ import annotations

import torch
from gpytorch import settings
from gpytorch.kernels import Kernel, ProductKernel, ScaleKernel
from linear_operator import to_dense

from ..errors import KernelError
from ..ir import KernelIR, Product, Sum, Term
from ..kinds import kind_of
from ..options import KernelOptions
from ..priors import DirichletPrior
from .common import HyperparameterMixin, check_inputs


class WeightedSumKernel(Kernel):
    """``sum_i w_i k_i``: learned weights ``softmax(weight_logits)`` or fixed ones.

    Learned weights carry ``weights_prior`` (a Dirichlet) when one is given.
    """

    def __init__(self, *kernels: Kernel, fixed_weights: tuple[float, ...] | None = None,
                 weights_prior: DirichletPrior | None = None, batch_shape: torch.Size = torch.Size([])):
        super().__init__(batch_shape=batch_shape)
        self.kernels = torch.nn.ModuleList(kernels)
        if fixed_weights is not None:
            self.register_buffer("fixed_weights", torch.tensor(fixed_weights, dtype=torch.float64))  # exact literals
            self.weight_logits = None
        else:
            self.fixed_weights = None
            self.register_parameter("weight_logits", torch.nn.Parameter(torch.zeros(*self.batch_shape, len(kernels))))
            if weights_prior is not None:
                self.register_prior("weights_prior", weights_prior, _weights_of)

    @property
    def weights(self) -> torch.Tensor:
        if self.fixed_weights is not None:
            return self.fixed_weights
        return torch.softmax(self.weight_logits, dim=-1)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params) -> torch.Tensor:
        weights = self.weights
        res = None
        for i, kernel in enumerate(self.kernels):
            value = to_dense(kernel(x1, x2, diag=diag, **params))
            w = weights[..., i] if self.fixed_weights is None else weights[..., i].to(value.dtype)
            term = (w[..., None] if diag else w[..., None, None]) * value
            res = term if res is None else res + term
        return res


def _weights_of(module: WeightedSumKernel) -> torch.Tensor:
    return module.weights


class SharedKernel(Kernel):
    """A second (third, ...) use of a module already owned by another parent.

    The target is deliberately not registered as a child: gpytorch collects priors
    by walking children without de-duplication, so a shared node registered under
    two parents would count its priors twice in the marginal log likelihood.
    """

    def __init__(self, target: Kernel):
        super().__init__()
        object.__setattr__(self, "target", target)

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, **params):
        return self.target(x1, x2, diag=diag, **params)


class ReferenceKernel(HyperparameterMixin, Kernel):
    """The gpytorch module tree of a ``KernelIR``, with the IR's readable hyperparameters."""

    has_lengthscale = False

    def __init__(self, ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
                 options: KernelOptions | None = None):
        super().__init__(batch_shape=batch_shape)
        self.ir = ir
        self.options = options or KernelOptions()
        _check_slots(ir)
        modules = _build_nodes(ir, self.batch_shape, self.options)
        self.kernel = ScaleKernel(modules[ir.root], outputscale_prior=self.options.outputscale_prior,
                                  outputscale_constraint=self.options.outputscale_constraint,
                                  batch_shape=self.batch_shape)
        # Plain lists (not registered): the modules are owned by the tree above.
        self._term_modules = [modules[t] for t in range(ir.num_terms)]
        self._sum_modules = [(node.weights, modules[ir.num_terms + i]) for i, node in enumerate(ir.nodes)
                             if isinstance(node, Sum) and node.weights]

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False,
                last_dim_is_batch: bool = False, **params):
        check_inputs(self.ir, x1, x2, diag, last_dim_is_batch)
        with settings.lazily_evaluate_kernels(False):
            return self.kernel(x1, x2, diag=diag, **params)

    def _flat_values(self):
        b = self._batch_shape  # the batch_shape property walks the whole module tree
        outputscale = self.kernel.outputscale
        lengthscale = outputscale.new_empty(*b, self.ir.num_lengthscales)
        for term, module in zip(self.ir.terms, self._term_modules):
            lengthscale[..., list(term.lengthscales)] = module.lengthscale[..., 0, :]
        logits = outputscale.new_zeros(*b, self.ir.num_weights)
        for slots, module in self._sum_modules:
            logits[..., list(slots)] = module.weight_logits
        return outputscale, lengthscale, logits

    def _set_flat(self, outputscale=None, lengthscale=None, weight_logits=None):
        b = self._batch_shape
        with torch.no_grad():
            if outputscale is not None:
                self.kernel.outputscale = torch.as_tensor(outputscale).to(self.kernel.raw_outputscale).expand(b)
            if lengthscale is not None:
                lengthscale = torch.as_tensor(lengthscale).to(self.kernel.raw_outputscale)
                lengthscale = lengthscale.expand(*b, self.ir.num_lengthscales)
                for term, module in zip(self.ir.terms, self._term_modules):
                    module.lengthscale = lengthscale[..., list(term.lengthscales)].unsqueeze(-2)
            if weight_logits is not None:
                weight_logits = torch.as_tensor(weight_logits).to(self.kernel.raw_outputscale)
                weight_logits = weight_logits.expand(*b, self.ir.num_weights)
                for slots, module in self._sum_modules:
                    module.weight_logits.copy_(weight_logits[..., list(slots)])


def build(ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
          options: KernelOptions | None = None) -> ReferenceKernel:
    """The ``reference`` backend's kernel for ``ir``."""
    return ReferenceKernel(ir, torch.Size(batch_shape), options)


def _build_nodes(ir: KernelIR, batch_shape: torch.Size, options: KernelOptions) -> list[Kernel]:
    """One module per node id; a child already owned by a parent is wrapped in ``SharedKernel``."""
    modules: list[Kernel] = [_term_module(t, batch_shape, options, options.lengthscale_prior_for(ir, i))
                             for i, t in enumerate(ir.terms)]
    owned: set[int] = set()

    def use(child: int) -> Kernel:
        if child in owned:
            return SharedKernel(modules[child])
        owned.add(child)
        return modules[child]

    for node in ir.nodes:
        children = [use(c) for c in node.children]
        if isinstance(node, Product):
            modules.append(ProductKernel(*children))
        elif node.fixed is not None:
            modules.append(WeightedSumKernel(*children, fixed_weights=node.fixed, batch_shape=batch_shape))
        else:
            prior = None
            if options.weight_concentration is not None:
                prior = DirichletPrior(torch.full((len(children),), float(options.weight_concentration)))
            modules.append(WeightedSumKernel(*children, weights_prior=prior, batch_shape=batch_shape))
    return modules


def _term_module(term: Term, batch_shape: torch.Size, options: KernelOptions, lengthscale_prior) -> Kernel:
    kwargs = dict(ard_num_dims=len(term.features), active_dims=torch.tensor(term.features, dtype=torch.long),
                  batch_shape=batch_shape, lengthscale_prior=lengthscale_prior,
                  lengthscale_constraint=options.lengthscale_constraint)
    return kind_of(term.kind, term.label).math.reference(**kwargs)


def _check_slots(ir: KernelIR) -> None:
    """Each lengthscale slot must belong to exactly one (term, feature): one module parameter each."""
    used = [s for t in ir.terms for s in t.lengthscales]
    if sorted(used) != list(range(ir.num_lengthscales)):
        raise KernelError("the reference backend needs every lengthscale slot used by exactly one "
                          f"(term, feature); got slots {sorted(used)} for {ir.num_lengthscales} names")

