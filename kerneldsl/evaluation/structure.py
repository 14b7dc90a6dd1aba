"""A picture of what a fitted kernel learned: its sum/product tree, sum weights and lengthscales.

``plot_structure(kernel, path)`` draws the tree of a compiled kernel on the left (root at
the left, base terms at the right; each edge out of a learned sum is as thick as its weight
and labelled with it, so a glance shows which branches carry the weight) and, aligned with
each base term, its lengthscales per feature on the right (a heat map over features: darker
is shorter, i.e. the output varies faster along that feature, i.e. more relevant). A named
definition used in several places is drawn once; its other uses point to it.

Only public kernel APIs are used: the kernel's ``ir`` (names and structure) and its named
hyperparameters, so the picture is the same on every backend.
"""

from __future__ import annotations

import math
import os
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..compiler.ir import KernelIR, Sum

__all__ = ["plot_structure", "named_hyperparameters"]


def named_hyperparameters(kernel) -> "OrderedDict[str, torch.Tensor]":
    """The kernel's readable hyperparameters (``get_hyperparameters()``, formerly ``hyperparameters()``)."""
    getter = getattr(kernel, "get_hyperparameters", None)
    values = getter() if callable(getter) else kernel.hyperparameters()
    if not isinstance(values, Mapping):
        raise TypeError(f"{type(kernel).__name__} has no named hyperparameters: is it a kerneldsl kernel?")
    return OrderedDict(values)


@dataclass
class _Row:
    """One drawn box: a node (or a reference to a drawn definition) at a tree depth and row."""

    node: int
    depth: int
    y: float
    parent: int | None  # index of the parent row
    weight: float | None  # the parent sum's learned (or fixed) weight of this child
    reference: bool = False


def _layout(ir: KernelIR, weights: list[float]) -> list[_Row]:
    """Rows in drawing order: leaves get consecutive y; a composite sits at its children's mean y."""
    names = {node: name for name, node in ir.definitions}
    rows: list[_Row] = []
    drawn: set[int] = set()
    next_leaf = [0.0]

    def visit(node: int, depth: int, parent: int | None, weight: float | None) -> float:
        index = len(rows)
        shared_again = node in drawn and node in names and node >= ir.num_terms
        rows.append(_Row(node, depth, 0.0, parent, weight, reference=shared_again))
        drawn.add(node)
        if node < ir.num_terms or shared_again:
            rows[index].y = next_leaf[0]
            next_leaf[0] += 1
            return rows[index].y
        n = ir.node(node)
        if isinstance(n, Sum):
            child_weights = [weights[s] for s in n.weights] if n.weights else list(n.fixed or [])
        else:
            child_weights = [None] * len(n.children)
        ys = [visit(c, depth + 1, index, w) for c, w in zip(n.children, child_weights)]
        rows[index].y = sum(ys) / len(ys)
        return rows[index].y

    visit(ir.root, 0, None, None)
    return rows


def _box_text(ir: KernelIR, row: _Row) -> str:
    names = {node: name for name, node in ir.definitions}
    if row.reference:
        return f"→ {names[row.node]} (above)"
    n = ir.node(row.node)
    if row.node < ir.num_terms:
        features = ", ".join(ir.features[f] for f in n.features)
        if len(features) > 46:
            features = features[:43] + "..."
        return f"{n.kind}({features})"
    op = "+" if isinstance(n, Sum) else "×"
    name = names.get(row.node)
    return f"{op}  {name}" if name else op


def plot_structure(kernel, path: str | os.PathLike | None = None, title: str | None = None,
                   batch_index: int | tuple[int, ...] | None = None):
    """Draw a fitted kerneldsl kernel's tree, sum weights and per-feature lengthscales; save a PNG at ``path``.

    ``kernel``: a compiled kernel (``kd.compile``, or a model's ``covar_module``). For a batched
    kernel, ``batch_index`` picks the element (default: the first). Returns the
    ``matplotlib.figure.Figure``, built without pyplot: the caller's backend is left alone
    (in a notebook the returned figure displays itself; ``fig.savefig`` writes it anywhere).
    """
    from matplotlib import colors
    from matplotlib.figure import Figure

    ir: KernelIR | None = getattr(kernel, "ir", None)
    if not isinstance(ir, KernelIR):
        raise TypeError(f"plot_structure needs a kerneldsl kernel (with an .ir), got {type(kernel).__name__}")
    values = named_hyperparameters(kernel)
    index = batch_index if isinstance(batch_index, tuple) else (() if batch_index is None else (batch_index,))

    def scalar(name: str) -> float:
        t = values[name]
        return float(t[index] if index else t.reshape(-1)[0])

    weights = [scalar(name) for name in ir.weight_names]
    lengthscales = [scalar(name) for name in ir.lengthscale_names]
    rows = _layout(ir, weights)
    leaves = [r for r in rows if r.node < ir.num_terms and not r.reference]
    used = sorted({f for r in leaves for f in ir.terms[r.node].features})
    n_rows = max(r.y for r in rows) + 1
    depth = max(r.depth for r in rows) + 1

    fig = Figure(figsize=(6 + 2.2 * depth + 0.32 * len(used), 1.5 + 0.36 * n_rows))
    grid = fig.add_gridspec(1, 2, width_ratios=[2.2 * depth + 3, 0.32 * len(used) + 1.2], wspace=0.02)
    tree, heat = fig.add_subplot(grid[0]), fig.add_subplot(grid[1])

    # --- the tree ------------------------------------------------------------------
    for r in rows:
        if r.parent is None:
            continue
        p = rows[r.parent]
        width = 0.8 if r.weight is None else 0.6 + 7.0 * r.weight
        alpha = 0.7 if r.weight is None else 0.25 + 0.75 * r.weight
        tree.plot([p.depth + 0.15, p.depth + 0.5, p.depth + 0.5, r.depth], [p.y, p.y, r.y, r.y],
                  color="tab:blue" if r.weight is not None else "grey", linewidth=width, alpha=alpha,
                  solid_capstyle="butt", zorder=1)
        if r.weight is not None:
            tree.text(p.depth + 0.55, r.y - 0.12, f"w={r.weight:.2f}", fontsize=7, color="tab:blue", va="bottom")
    for r in rows:
        is_term = r.node < ir.num_terms and not r.reference
        named = any(node == r.node for _, node in ir.definitions) and not r.reference
        x = r.depth if not is_term else depth - 1 + 0.9
        tree.text(x if is_term else r.depth, r.y, _box_text(ir, r), fontsize=8, ha="right" if is_term else "left",
                  va="center", fontweight="bold" if named else "normal", zorder=2,
                  bbox=dict(boxstyle="round,pad=0.25", fc="white" if not r.reference else "#eeeeee",
                            ec="black" if named else "grey", lw=0.8))
        if is_term and r.depth < depth - 1:  # a leaf above the deepest level: extend its edge to the heat map
            tree.plot([r.depth, depth - 1 + 0.9], [r.y, r.y], color="lightgrey", linewidth=0.6, linestyle=":",
                      zorder=0)
    tree.set_xlim(-0.1, depth + 0.05)
    tree.set_ylim(n_rows - 0.5, -0.7)
    tree.axis("off")

    # --- lengthscales per feature, one heat-map row per drawn base term ------------------
    matrix = torch.full((int(n_rows), len(used)), math.nan)
    for r in leaves:
        term = ir.terms[r.node]
        for feature, slot in zip(term.features, term.lengthscales):
            matrix[int(r.y), used.index(feature)] = lengthscales[slot]
    finite = matrix[~matrix.isnan()]
    if finite.numel():
        norm = colors.LogNorm(vmin=float(finite.min()), vmax=max(float(finite.max()), float(finite.min()) * 1.01))
        image = heat.imshow(matrix.numpy(), aspect="auto", cmap="viridis", norm=norm,
                            extent=(-0.5, len(used) - 0.5, n_rows - 0.5, -0.5))
        for (i, j), value in ((ij, matrix[ij].item()) for ij in
                              ((i, j) for i in range(int(n_rows)) for j in range(len(used)))):
            if not math.isnan(value):
                heat.text(j, i, f"{value:.2g}", ha="center", va="center", fontsize=6,
                          color="white" if norm(value) < 0.5 else "black")
        fig.colorbar(image, ax=heat, fraction=0.04, pad=0.02, label="lengthscale (shorter = more relevant)")
    heat.set_xticks(range(len(used)))
    heat.set_xticklabels([ir.features[f] for f in used], rotation=60, ha="right", fontsize=7)
    heat.set_yticks([])
    heat.set_ylim(n_rows - 0.5, -0.7)
    heat.set_title("lengthscales per feature", fontsize=9)

    outputscale = scalar("outputscale") if "outputscale" in values else math.nan
    definitions = ", ".join(name for name, _ in ir.definitions) or "kernel"
    fig.suptitle(title or f"{definitions}  (output scale {outputscale:.3g}; edge width = learned sum weight)",
                 fontsize=11)
    if path is not None:
        fig.savefig(path, dpi=110, bbox_inches="tight")
    return fig
