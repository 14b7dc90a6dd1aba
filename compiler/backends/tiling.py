"""Tiled evaluation for the ``torch`` backend: large kernel matrices with bounded memory.

The vectorised evaluation (``TorchKernel._evaluate``) keeps tables ``[*, terms, pairs]``
of all pairs at once and autograd saves several of them for backward, so its memory
grows as ``terms * n * m`` and, once the tables leave the caches, so does its time per
pair. Above ``KernelOptions.tile_threshold`` kernel entries (``auto``: a default per
device, ``CPU_TILES`` and ``ACCELERATOR_TILES``) the backend instead runs
``_TiledPairs``, a custom autograd function around the same evaluation:

- forward: under ``no_grad``, ``evaluate`` runs tile by tile (square tiles of the
  upper triangle with their mirror when ``x1`` is ``x2``, rectangles otherwise, runs
  of the diagonal for ``diag``) and writes each tile into the preallocated output;
  nothing but the inputs and hyperparameters is saved;
- backward: per tile, grad is re-enabled, the tile is recomputed from its rows of
  ``x1``/``x2`` and the hyperparameters, and ``torch.autograd.grad`` with the tile's
  part of ``grad_output`` (plus the mirrored part's transpose) accumulates the
  gradients of ``x1``, ``x2`` and every hyperparameter.

Gradients are exact (the same autograd graph per tile as in one piece). Peak memory
is ``K`` and its gradient plus one tile's tables: ``O(n*m + terms * tile_size)``
plus the inputs. The cost is one extra forward per tile in backward. Parallelism
is torch's intra-op threads inside each tile's ops. The backward is
``once_differentiable``: no double backward (neither has the untiled path, whose
matern functions are ``once_differentiable``). Batch elements are never split: a
tile holds at least one pair of every batch element.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
from torch.autograd.function import once_differentiable

from ..shapes import broadcast_shapes

AUTO = "auto"
"""The value of ``KernelOptions.tile_size`` / ``tile_threshold`` that picks the device's defaults below."""


@dataclass(frozen=True)
class TileDefaults:
    """Where a device's ``auto`` tiling starts and how big its tiles are (kernel entries: pairs x batch elements)."""

    size: int
    threshold: int


CPU_TILES = TileDefaults(size=32768, threshold=360_000)
"""On the CPU the tables should stay in cache. Tile size measured on the hands-on MNIST kernel (25 terms,
2-core CPU, float64, n = 2000): 16384 to 65536 within 3% of each other, 32768 (181 x 181) fastest; smaller
tiles pay the per-tile Python and autograd overhead (about 2-6 ms), larger ones leave the caches. The
tiled backward recomputes the forward, so it only wins once the one-piece tables outgrow the caches:
same machine, one piece was 1.2x faster at n = 500 and the tiled path 1.2x faster at n = 700, hence
the threshold (about 600 x 600). benchmarks/RESULTS.md, "The torch backend at scale"."""

ACCELERATOR_TILES = TileDefaults(size=2**24, threshold=2**24)
"""On a GPU each op of a tile is a kernel launch and the one-piece tables run at full bandwidth, so
tiles exist for memory alone: one piece up to 2**24 entries (n = 4096; its tables are about 25 terms x
128 MiB in float64), tiles of 2**24 entries above. Measured on an H200 (hands-on kernel, float64,
fwd+bwd): n = 2000 one piece 8.5 ms against 14.1 ms in 2**20-entry tiles and 36x slower in the CPU's
32768-entry tiles; n = 8000 one piece 110 ms, 2**24-entry tiles 155 ms (benchmarks/RESULTS.md, "On a
GPU")."""


def tile_defaults(device: torch.device) -> TileDefaults:
    """The ``auto`` tiling of a device: the CPU's, or the accelerators' for CUDA (and any other device)."""
    return CPU_TILES if device.type == "cpu" else ACCELERATOR_TILES


def resolve_tiles(tile_size: int | str | None, threshold: int | str,
                  device: torch.device) -> tuple[int | None, int]:
    """``(tile_size, threshold)`` with ``"auto"`` replaced by the device's defaults."""
    defaults = tile_defaults(device)
    return (defaults.size if tile_size == AUTO else tile_size,
            defaults.threshold if threshold == AUTO else threshold)


Evaluate = Callable[..., torch.Tensor]
"""``evaluate(x1, x2, mode, *hyperparameters)``: K ``[*, n, m]`` (``[*, n]`` for diag) in one piece."""


@dataclass(frozen=True)
class Tile:
    """One tile: the rows of ``x1`` and columns (points of ``x2``) it covers, and how it is evaluated."""

    rows: slice
    cols: slice
    mode: str
    """Pairs mode of the tile's evaluation: ``"full"``, ``"upper"`` (a diagonal tile of K(x, x)) or ``"diag"``."""
    mirrored: bool = False
    """An off-diagonal tile of K(x, x): also written transposed at ``[cols, rows]``."""


@dataclass(frozen=True)
class TilePlan:
    """The tiles covering one evaluation, and its output's shape."""

    mode: str
    """Pairs mode of the whole evaluation (``"upper"``: ``x2`` is ``x1``)."""
    shape: torch.Size
    tiles: tuple[Tile, ...]


def plan_tiles(mode: str, x1: torch.Tensor, x2: torch.Tensor, kernel_batch: torch.Size,
               tile_size: int | None, threshold: int) -> TilePlan | None:
    """The tiles of K(x1, x2) (or its diagonal) in pairs mode ``mode``; ``None`` to evaluate in one piece.

    One piece when tiling is off (``tile_size`` None), when the output has at most
    ``threshold`` entries, or when it would be a single tile anyway.
    """
    if tile_size is None:
        return None
    batch = broadcast_shapes(x1.shape[:-2], x2.shape[:-2], kernel_batch)
    n, m = x1.shape[-2], x2.shape[-2]
    shape = batch + ((n,) if mode == "diag" else (n, m))
    if shape.numel() <= max(threshold, tile_size):
        return None
    per_element = max(1, tile_size // max(1, batch.numel()))  # pairs per tile of each batch element
    if mode == "diag":
        tiles = tuple(Tile(rows, rows, "diag") for rows in _runs(n, per_element))
    elif mode == "upper":
        runs = _runs(n, max(1, math.isqrt(per_element)))
        tiles = tuple(Tile(rows, cols, "upper" if i == j else "full", mirrored=i != j)
                      for i, rows in enumerate(runs) for j, cols in enumerate(runs) if i <= j)
    else:
        height = min(n, max(1, math.isqrt(per_element)))
        width = min(m, max(1, per_element // height))
        height = min(n, max(1, per_element // width))  # when x2 is narrower than a square tile
        tiles = tuple(Tile(rows, cols, "full") for rows in _runs(n, height) for cols in _runs(m, width))
    return TilePlan(mode, shape, tiles)


def _runs(length: int, step: int) -> list[slice]:
    return [slice(start, min(start + step, length)) for start in range(0, length, step)]


def evaluate_tiled(evaluate: Evaluate, plan: TilePlan, x1: torch.Tensor, x2: torch.Tensor,
                   *hyperparameters: torch.Tensor) -> torch.Tensor:
    """K(x1, x2) tile by tile (see the module docstring); differentiable w.r.t. inputs and hyperparameters."""
    return _TiledPairs.apply(evaluate, plan, x1, None if plan.mode == "upper" else x2, *hyperparameters)


class _TiledPairs(torch.autograd.Function):
    """K written tile by tile; backward recomputes each tile (see the module docstring).

    ``x2`` is None when it is ``x1`` (the symmetric case): one input, whose gradient
    collects both sides of every pair.
    """

    @staticmethod
    def forward(ctx, evaluate: Evaluate, plan: TilePlan, x1: torch.Tensor, x2: torch.Tensor | None,
                *hyperparameters: torch.Tensor) -> torch.Tensor:
        ctx.evaluate, ctx.plan = evaluate, plan
        ctx.save_for_backward(x1, x2, *hyperparameters)
        out = x1.new_empty(plan.shape)
        for tile in plan.tiles:
            a, b = _tile_inputs(tile, x1, x2)
            value = evaluate(a, b, tile.mode, *hyperparameters)
            if tile.mode == "diag":
                out[..., tile.rows] = value
                continue
            out[..., tile.rows, tile.cols] = value
            if tile.mirrored:
                out[..., tile.cols, tile.rows] = value.mT
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad: torch.Tensor):
        x1, x2, *hyperparameters = ctx.saved_tensors
        plan: TilePlan = ctx.plan
        need_x1, need_x2, *need_hyper = ctx.needs_input_grad[2:]
        leaves = [h.detach().requires_grad_(need) for h, need in zip(hyperparameters, need_hyper)]
        grad_x1 = torch.zeros_like(x1) if need_x1 else None
        grad_x2 = torch.zeros_like(x2) if need_x2 else None
        grad_hyper = [torch.zeros_like(h) if need else None for h, need in zip(hyperparameters, need_hyper)]
        for tile in plan.tiles:
            if tile.mode == "diag":
                grad_tile = grad[..., tile.rows]
            else:
                grad_tile = grad[..., tile.rows, tile.cols]
                if tile.mirrored:
                    grad_tile = grad_tile + grad[..., tile.cols, tile.rows].mT
            a, b = (t.detach() for t in _tile_inputs(tile, x1, x2))
            same = x2 is None and tile.rows == tile.cols  # one tensor on both sides, as in the untiled path
            if same:
                b = a
            # (tensor, where its gradient goes): rows of x1 / x2 (x1 again when x2 is x1), hyperparameters.
            targets: list[tuple[torch.Tensor, torch.Tensor, tuple]] = []
            if need_x1:
                targets.append((a.requires_grad_(), grad_x1, (..., tile.rows, slice(None))))
            if not same and (need_x1 if x2 is None else need_x2):
                targets.append((b.requires_grad_(), grad_x1 if x2 is None else grad_x2, (..., tile.cols, slice(None))))
            targets += [(leaf, g, (...,)) for leaf, g in zip(leaves, grad_hyper) if g is not None]
            if not targets:
                continue
            with torch.enable_grad():
                value = ctx.evaluate(a, b, tile.mode, *leaves)
                grads = torch.autograd.grad(value, [t for t, _, _ in targets], grad_tile, allow_unused=True)
            for (_, into, index), g in zip(targets, grads):
                if g is not None:
                    into[index] += g
        return (None, None, grad_x1, grad_x2, *grad_hyper)


def _tile_inputs(tile: Tile, x1: torch.Tensor, x2: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """The tile's rows of ``x1`` and points of ``x2`` (the same tensor for a diagonal tile of K(x, x))."""
    a = x1[..., tile.rows, :]
    if x2 is None and tile.rows == tile.cols:
        return a, a
    return a, (x1 if x2 is None else x2)[..., tile.cols, :]
