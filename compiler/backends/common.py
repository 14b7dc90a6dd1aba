"""What every backend's kernel shares: readable hyperparameters and ``describe()``.

A backend kernel stores its parameters however it likes; it only exposes them as
flat constrained vectors in the IR's slot order (``_flat_values``/``_set_flat``).
Names, validation and text rendering then come from the IR, identically on
every backend.
"""

from __future__ import annotations

from collections import OrderedDict
from copy import deepcopy
from typing import Callable, Mapping

import torch
from gpytorch.kernels import Kernel

from ..errors import KernelError, KernelNameError, did_you_mean
from ..ir import KernelIR, Product, Term
from ..shapes import broadcast_shapes


class HyperparameterMixin:
    """Mixed into each backend's ``gpytorch.kernels.Kernel`` subclass."""

    ir: KernelIR

    stationary = True
    """Every kernel of the language is stationary: its terms are functions of scaled distances between the
    inputs, combined by sums and products whose weights do not depend on the inputs, so ``k(x, x)`` is one
    value at every ``x`` (a posterior computes it once)."""

    # --- what a backend implements -------------------------------------------------
    def _flat_values(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(outputscale [*b], lengthscale [*b, P], weight_logits [*b, W]), constrained."""
        raise NotImplementedError

    def _set_flat(self, outputscale: torch.Tensor | None = None, lengthscale: torch.Tensor | None = None,
                  weight_logits: torch.Tensor | None = None) -> None:
        """Set any of the flat vectors (broadcastable to the kernel's batch shape)."""
        raise NotImplementedError

    # --- shared API ------------------------------------------------------------------
    def frozen(self) -> Callable[..., torch.Tensor]:
        """``K(x1, x2, diag=False)`` at the current hyperparameters, for many evaluations at new inputs while
        they stay fixed (an acquisition function of a fitted model). This default is ``forward``; the torch
        backends compute what depends on the hyperparameters alone once (``FrozenTorchKernel``)."""
        return self.forward

    def sum_weights(self) -> torch.Tensor:
        """Softmaxed weights [*b, W]: each learned sum's group sums to one."""
        _, _, logits = self._flat_values()
        weights = torch.empty_like(logits)
        for group in self.ir.weight_groups():
            idx = list(group)
            weights[..., idx] = torch.softmax(logits[..., idx], dim=-1)
        return weights

    def get_hyperparameters(self) -> "OrderedDict[str, torch.Tensor]":
        """Readable name -> constrained value (shape ``batch_shape``), detached.

        ``hyperparameters()`` keeps gpytorch's meaning: a generator of the raw
        ``Parameter``s, for optimisers (``torch.optim.Adam(k.hyperparameters())``).
        """
        with torch.no_grad():
            outputscale, lengthscale, _ = self._flat_values()
            weights = self.sum_weights()
        out: OrderedDict[str, torch.Tensor] = OrderedDict()
        out["outputscale"] = outputscale.detach().clone()
        for i, name in enumerate(self.ir.lengthscale_names):
            out[name] = lengthscale[..., i].detach().clone()
        for i, name in enumerate(self.ir.weight_names):
            out[name] = weights[..., i].detach().clone()
        return out

    def set_hyperparameters(self, values: Mapping[str, object]) -> None:
        """Set hyperparameters by the names of ``get_hyperparameters()`` (any subset).

        The weights of one sum must be given together (they lie on a simplex);
        values are broadcast to the batch shape.
        """
        ir = self.ir
        ls_index = {n: i for i, n in enumerate(ir.lengthscale_names)}
        w_index = {n: i for i, n in enumerate(ir.weight_names)}
        known = ["outputscale", *ls_index, *w_index]
        for name in values:
            if name not in ls_index and name not in w_index and name != "outputscale":
                raise KernelNameError(f"unknown hyperparameter '{name}'", hint=did_you_mean(name, known))
        with torch.no_grad():
            outputscale, lengthscale, logits = (v.detach().clone() for v in self._flat_values())

            def as_tensor(name: str, like: torch.Tensor) -> torch.Tensor:
                try:
                    t = torch.as_tensor(values[name], dtype=like.dtype, device=like.device)
                    t = t.expand(like.shape)
                except (TypeError, ValueError, RuntimeError) as err:
                    raise KernelError(f"hyperparameter '{name}' must be a number or a tensor "
                                      f"broadcastable to {tuple(like.shape)}: {err}") from None
                if not torch.isfinite(t).all():
                    raise KernelError(f"hyperparameter '{name}' must be finite, got {values[name]!r}")
                return t

            if "outputscale" in values:
                t = as_tensor("outputscale", outputscale)
                _check_positive("outputscale", t, values)
                outputscale = t.clone()
            for name, i in ls_index.items():
                if name in values:
                    t = as_tensor(name, lengthscale[..., i])
                    _check_positive(name, t, values)
                    lengthscale[..., i] = t
            for group in ir.weight_groups():
                names = [ir.weight_names[i] for i in group]
                given = [n for n in names if n in values]
                if not given:
                    continue
                if len(given) != len(names):
                    missing = [n for n in names if n not in values]
                    raise KernelError(f"the weights of one sum must be set together; missing: {', '.join(missing)}")
                w = torch.stack([as_tensor(n, logits[..., i]) for n, i in zip(names, group)], dim=-1)
                if (w < 0).any():
                    raise KernelError(f"sum weights must be non-negative: {', '.join(names)}")
                total = w.sum(-1, keepdim=True)
                if not (total > 0).all():
                    raise KernelError(f"sum weights must not all be zero: {', '.join(names)}")
                w = (w / total).clamp_min(torch.finfo(w.dtype).tiny)
                logits[..., list(group)] = w.log() - w.log().mean(-1, keepdim=True)
            self._set_flat(outputscale=outputscale, lengthscale=lengthscale, weight_logits=logits)

    # --- gpytorch batch semantics -------------------------------------------------------
    def __getitem__(self, index) -> Kernel:
        """The kernel of the batch elements ``index`` (gpytorch's ``Kernel.__getitem__``).

        Only the batch dimensions of the parameters are indexed: the index buffers
        and literal weights of a backend are not batched, and neither are ``active_dims``.
        """
        batch = self.batch_shape
        if not batch:
            return self
        index = _batch_index(index, len(batch))
        new_batch = _indexed_shape(batch, index)
        return self._rebatched(lambda p: p[index], new_batch)

    def expand_batch(self, *sizes) -> Kernel:
        """A copy with batch shape ``sizes`` (gpytorch's ``Kernel.expand_batch``).

        Each batch element gets its own copy of the parameters, so the copy can be trained.
        """
        new_batch = torch.Size(sizes[0] if len(sizes) == 1 and not isinstance(sizes[0], int) else sizes)
        batch = self.batch_shape
        if new_batch == batch:
            return self
        try:
            expandable = broadcast_shapes(new_batch, batch) == new_batch
        except RuntimeError:
            expandable = False
        if not expandable:
            raise KernelError(f"cannot expand a kernel with batch shape {tuple(batch)} to batch shape "
                              f"{tuple(new_batch)}")
        return self._rebatched(lambda p: p.expand(*new_batch, *p.shape[len(batch):]).clone(), new_batch)

    def _rebatched(self, change, new_batch: torch.Size) -> Kernel:
        """A deep copy whose batched kernels (this one and, on ``reference``, its module tree) have
        ``change`` applied to their own parameters and ``new_batch`` as their batch shape."""
        batch = self.batch_shape
        new = deepcopy(self)
        # Chosen before any changes: gpytorch's Kernel.batch_shape broadcasts a kernel's own with its sub-kernels'.
        kernels = [module for module in new.modules() if isinstance(module, Kernel) and module.batch_shape == batch]
        for module in kernels:
            for param in module.parameters(recurse=False):
                param.data = change(param.data)
                param.grad = None
            module.batch_shape = new_batch
        return new

    def describe(self, batch_index: int | tuple[int, ...] | None = None) -> str:
        """The kernel as text, with its learned weights and lengthscales.

        For a batched kernel, ``batch_index`` picks the batch element (default: the first).
        """
        with torch.no_grad():
            outputscale, lengthscale, _ = self._flat_values()
            weights = self.sum_weights()
        batch_ndim = outputscale.dim()
        if batch_ndim:
            index = (0,) * batch_ndim if batch_index is None else (
                batch_index if isinstance(batch_index, tuple) else (batch_index,))
            outputscale, lengthscale, weights = outputscale[index], lengthscale[index], weights[index]
        return render(self.ir, float(outputscale), lengthscale.tolist(), weights.tolist(),
                      batch_note=f"(batch element {index})" if batch_ndim else "")


def _check_positive(name: str, t: torch.Tensor, values: Mapping[str, object]) -> None:
    if not (t > 0).all():
        raise KernelError(f"hyperparameter '{name}' must be positive, got {values[name]!r}")


def _batch_index(index, batch_ndim: int) -> tuple:
    """``index`` as a tuple over the batch dimensions only (an ``Ellipsis`` spans the rest of the batch).

    Too many entries raise ``IndexError``, as tensors do: gpytorch's lazy kernel tensor then
    expands the kernel's batch to the inputs' and indexes again.
    """
    index = index if isinstance(index, tuple) else (index,)
    used = sum(i.dim() if torch.is_tensor(i) and i.dtype == torch.bool else 0 if i is None or i is Ellipsis else 1
               for i in index)
    ellipses = [k for k, i in enumerate(index) if i is Ellipsis]  # not ``in``: it would compare tensors
    if used > batch_ndim or len(ellipses) > 1:
        raise IndexError(f"index {index!r} does not fit a kernel with {batch_ndim} batch dimension(s)")
    if ellipses:
        pos = ellipses[0]
        index = index[:pos] + (slice(None),) * (batch_ndim - used) + index[pos + 1:]
    return index


def _indexed_shape(batch: torch.Size, index: tuple) -> torch.Size:
    """The shape of a tensor of shape ``batch`` indexed by ``index``."""
    device = next((i.device for i in index if torch.is_tensor(i)), "cpu")
    return torch.zeros((), dtype=torch.uint8, device=device).expand(batch)[index].shape


def render(ir: KernelIR, outputscale: float, lengthscale: list[float], weights: list[float],
           batch_note: str = "") -> str:
    """Text of the kernel with values: one line per named definition, then the result."""
    named = {node: name for name, node in ir.definitions}

    def expr(node_id: int, top: bool = False) -> str:
        if not top and node_id in named:
            return named[node_id]
        node = ir.node(node_id)
        if isinstance(node, Term):
            scales = ", ".join(f"{ir.features[f]}={lengthscale[s]:.3g}"
                               for f, s in zip(node.features, node.lengthscales))
            return f"{node.kind}({scales})"
        if isinstance(node, Product):
            return " * ".join(_paren(expr(c), " + ") for c in node.children)
        ws = node.fixed if node.fixed is not None else [weights[s] for s in node.weights]
        return " + ".join(f"{w:.3g} {_paren(expr(c), ' + ')}" for w, c in zip(ws, node.children))

    lines = [f"# kernel over {len(ir.features)} features, {ir.num_terms} terms, "
             f"{ir.num_lengthscales} lengthscales, {ir.num_weights} sum weights {batch_note}".rstrip()]
    for name, node in ir.definitions:
        if node != ir.root:
            lines.append(f"{name} = {expr(node, top=True)}")
    lines.append(f"kernel = {outputscale:.4g} * ({expr(ir.root, top=True)})")
    return "\n".join(lines)


def _paren(text: str, op: str) -> str:
    return f"({text})" if op in text else text


def check_inputs(ir: KernelIR, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False,
                 last_dim_is_batch: bool = False) -> None:
    """Inputs must have one column per feature of the kernel (and, for ``diag``, equal sizes)."""
    if last_dim_is_batch:
        raise KernelError("last_dim_is_batch=True is not supported by kerneldsl kernels")
    for name, x in (("x1", x1), ("x2", x2)):
        if x.dim() < 2 or x.shape[-1] != len(ir.features):
            raise KernelError(f"{name} must have shape (..., n, {len(ir.features)}), one column per feature "
                              f"({', '.join(ir.features)}); got shape {tuple(x.shape)}")
    if diag and x1.shape[-2] != x2.shape[-2]:
        raise KernelError(f"diag=True needs x1 and x2 with the same number of points; "
                          f"got {x1.shape[-2]} and {x2.shape[-2]}")
