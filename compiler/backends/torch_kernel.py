"""The ``torch`` backend: every term at once with vectorised PyTorch ops, the DAG level by level.

Values live in tables ``[*, rows, pairs]`` (pairs last, so every per-row op runs
over contiguous memory):

1. per-feature differences ``delta [*, features, pairs]`` (all ``n*m`` pairs; only
   the ``n(n+1)/2`` upper-triangular ones when ``x1`` is ``x2``; ``n`` for ``diag``);
2. scaled distances of all terms of one distance type (``kinds.Distance``) in one
   matmul: ``d2 = W @ delta**2`` with ``W[t, f] = 1 / l_slot**2`` (``1 / l`` and
   ``|delta|`` for absolute distances), so nothing of size (term, feature) slots x
   pairs is built;
3. base kernels per kind block: each kind's torch function of the distance (``kinds.KINDS``);
4. per level: all weighted sums as matmuls with [sums x children] weight matrices
   built from the softmaxed logits, all products as one gather + ``prod``;
5. ``outputscale * root``, mirrored into the symmetric matrix by a gather.

Above ``KernelOptions.tile_threshold`` kernel entries the same evaluation runs tile
by tile (``tiling.py``), so that memory stays ``O(n*m + terms * tile_size)``.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import KernelError
from ..ir import KernelIR, Product, Sum
from ..kinds import KINDS, Distance, kind_of
from ..options import KernelOptions
from ..shapes import broadcast_shapes
from .common import check_inputs
from .flat_params import FlatParameterKernel
from .tiling import evaluate_tiled, plan_tiles, resolve_tiles


CHECKPOINT_ENTRIES = 2**20
"""Feature chunks of the distance tables are recomputed in backward (``torch.utils.checkpoint``) only when a
chunk's ``[*, features, pairs]`` differences have at least this many entries: below, checkpointing saves little
memory and its bookkeeping cost more than the kernel (an acquisition evaluation of the MNIST kernel at n = 100:
a quarter of its time)."""


@dataclass(frozen=True)
class _Stage:
    """One distance stage: its input columns and where each lengthscale slot lands in ``W [terms, features]``."""

    distance: Distance
    features: tuple[int, ...]
    """Input columns the stage's terms read (columns of W)."""
    num_terms: int
    """Terms of the stage (rows of W and of its distance table)."""
    positions: tuple[int, ...]
    """Flat position ``term_row * len(features) + feature_column`` in W of each entry."""
    slots: tuple[int, ...]
    """Lengthscale slot of each entry."""
    kind_blocks: tuple[tuple[str, int, int], ...]
    """(kind, first row, end row) of the stage's distance table per kind, in block order."""


@dataclass(frozen=True)
class _SumSource:
    """The part of one level's sums that reads one block: ``weights [sums, block rows] @ block``."""

    block: int
    positions: tuple[int, ...]
    """Flat position ``sum * block_rows + row`` of each (sum, child) weight."""
    weights: tuple[int, ...]
    """Index into ``cat(softmaxed learned weights, fixed weights)`` of each entry."""


@dataclass(frozen=True)
class _Level:
    """The composite nodes of one level: sums as matmuls, products as one gather + ``prod``."""

    num_sums: int
    sum_sources: tuple[_SumSource, ...]
    product_rows: tuple[tuple[int, tuple[int, ...]], ...]
    """(block, rows) gathered into the products' table, in order; a row of ones follows when padding is needed."""
    product_children: tuple[tuple[int, ...], ...]
    """Rows of that table holding each product's children, padded with the ones row."""
    pad_with_ones: bool


@dataclass(frozen=True)
class _Plan:
    """Everything forward needs, computed once from the IR.

    Values live in blocks ``[*, rows, pairs]``: one per base-kernel kind (in ``KINDS`` order
    within each stage, squared stage first), then per
    level one for its sums and one for its products. A node is a (block, row).
    """

    squared: _Stage
    absolute: _Stage
    levels: tuple[_Level, ...]
    block_rows: tuple[int, ...]
    root: tuple[int, int]
    weight_groups: tuple[int, ...]
    """Softmax group of each learned weight slot."""
    fixed_weights: tuple[float, ...]


def _plan(ir: KernelIR) -> _Plan:
    for term in ir.terms:
        kind_of(term.kind, term.label)  # an unknown kind is an error
    location: dict[int, tuple[int, int]] = {}  # node id -> (block, row)
    block_rows: list[int] = []

    def add_block(members: list[int]) -> None:
        location.update({n: (len(block_rows), row) for row, n in enumerate(members)})
        block_rows.append(len(members))

    stages = {}
    for distance in Distance:
        kind_blocks, order = [], []
        for name in (name for name, kind in KINDS.items() if kind.distance is distance):
            members = [t for t, term in enumerate(ir.terms) if term.kind == name]
            if members:
                kind_blocks.append((name, len(order), len(order) + len(members)))
                add_block(members)
                order += members
        stages[distance] = _stage(ir, distance, order, tuple(kind_blocks))

    fixed: list[float] = []
    levels = []
    for level in ir.levels:
        sums = [n for n in level if isinstance(ir.node(n), Sum)]
        products = [n for n in level if isinstance(ir.node(n), Product)]
        levels.append(_Level(len(sums), _sum_sources(ir, sums, location, block_rows, fixed),
                             *_product_gather(ir, products, location)))
        for members in (sums, products):
            if members:
                add_block(members)

    group_of_slot = [0] * ir.num_weights
    for g, group in enumerate(ir.weight_groups()):
        for s in group:
            group_of_slot[s] = g
    return _Plan(stages[Distance.SQUARED], stages[Distance.ABSOLUTE], tuple(levels),
                 tuple(block_rows), location[ir.root], tuple(group_of_slot), tuple(fixed))


def _stage(ir: KernelIR, distance: Distance, order: list[int],
           kind_blocks: tuple[tuple[str, int, int], ...]) -> _Stage:
    """The distance stage of the terms ``order`` (rows of its table, in that order)."""
    features = sorted({f for t in order for f in ir.terms[t].features})
    column = {f: i for i, f in enumerate(features)}
    positions, slots = [], []
    for row, t in enumerate(order):
        for f, s in zip(ir.terms[t].features, ir.terms[t].lengthscales):
            positions.append(row * len(features) + column[f])
            slots.append(s)
    return _Stage(distance, tuple(features), len(order), tuple(positions), tuple(slots), kind_blocks)


def _sum_sources(ir: KernelIR, sums: list[int], location: dict[int, tuple[int, int]],
                 block_rows: list[int], fixed: list[float]) -> tuple[_SumSource, ...]:
    """Weight-matrix entries of one level's sums, per block read; fixed weights are appended to ``fixed``."""
    by_block: dict[int, tuple[list[int], list[int]]] = {}
    for j, node_id in enumerate(sums):
        node = ir.node(node_id)
        for i, child in enumerate(node.children):
            if node.fixed is not None:
                fixed.append(float(node.fixed[i]))
                weight = ir.num_weights + len(fixed) - 1
            else:
                weight = node.weights[i]
            block, row = location[child]
            positions, weights = by_block.setdefault(block, ([], []))
            positions.append(j * block_rows[block] + row)
            weights.append(weight)
    return tuple(_SumSource(b, tuple(p), tuple(w)) for b, (p, w) in sorted(by_block.items()))


def _product_gather(ir: KernelIR, products: list[int], location: dict[int, tuple[int, int]]):
    """(rows to gather, children per product padded with the ones row, whether padding occurs)."""
    gathered: dict[tuple[int, int], int] = {}
    for node_id in products:
        for child in ir.node(node_id).children:
            gathered.setdefault(location[child], len(gathered))
    width = max((len(ir.node(n).children) for n in products), default=0)
    ones_row = len(gathered)
    children = tuple(tuple(gathered[location[c]] for c in ir.node(n).children)
                     + (ones_row,) * (width - len(ir.node(n).children)) for n in products)
    pad = any(len(ir.node(n).children) < width for n in products)
    return _runs(list(gathered)), children, pad  # insertion order == row order of the gathered table


def _runs(locations: list[tuple[int, int]]) -> tuple[tuple[int, tuple[int, ...]], ...]:
    """Consecutive (block, row) pairs grouped into (block, rows) runs, order kept."""
    runs: list[tuple[int, list[int]]] = []
    for block, row in locations:
        if runs and runs[-1][0] == block:
            runs[-1][1].append(row)
        else:
            runs.append((block, [row]))
    return tuple((b, tuple(r)) for b, r in runs)


class TorchKernel(FlatParameterKernel):
    """A compiled kernel evaluated with vectorised PyTorch ops (CPU or CUDA, any float dtype)."""

    def __init__(self, ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
                 options: KernelOptions | None = None):
        super().__init__(ir, batch_shape, options)
        _check_levels(ir)
        self.plan = _plan(ir)
        self._index_names: dict[tuple, str] = {}
        for name, stage in (("squared", self.plan.squared), ("absolute", self.plan.absolute)):
            self._index((name, "features"), stage.features)
            self._index((name, "positions"), stage.positions)
            self._index((name, "slots"), stage.slots)
        self._index(("weight_groups",), self.plan.weight_groups)
        self.register_buffer("_fixed_weights", torch.tensor(self.plan.fixed_weights, dtype=torch.float64),
                             persistent=False)  # float64: literal weights stay exact whatever the default dtype
        for i, level in enumerate(self.plan.levels):
            for j, source in enumerate(level.sum_sources):
                self._index((i, "sum", j, "positions"), source.positions)
                self._index((i, "sum", j, "weights"), source.weights)
            for j, (_, rows) in enumerate(level.product_rows):
                self._index((i, "product", j, "rows"), rows)
            self._index((i, "product", "children"), tuple(c for p in level.product_children for c in p))

    def _index(self, key: tuple, values: tuple[int, ...]) -> None:
        """Register an index vector as a (non-persistent) buffer, so that it follows ``.to(device)``."""
        name = "_index_" + "_".join(str(k) for k in key)
        self.register_buffer(name, torch.tensor(values, dtype=torch.long), persistent=False)
        self._index_names[key] = name

    def _get(self, *key) -> torch.Tensor:
        return getattr(self, self._index_names[key])

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False,
                last_dim_is_batch: bool = False, **params) -> torch.Tensor:
        check_inputs(self.ir, x1, x2, diag, last_dim_is_batch)
        dtype = self._dtype(x1, x2)
        return self._evaluate_prepared(x1.to(dtype), x2.to(dtype), diag, self._hyperparameters(dtype))

    def frozen(self) -> "FrozenTorchKernel":
        """``K(x1, x2)`` at the current hyperparameters, with what depends on them alone computed once
        (`FrozenTorchKernel`): for many evaluations at new inputs of a fitted kernel."""
        return FrozenTorchKernel(self)

    def uses_fused_path(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool) -> bool:
        """Whether ``forward`` hands these inputs to generated fused kernels (never, here; ``auto`` overrides)."""
        return False

    def fused(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool,
              hyperparameters: tuple[torch.Tensor, ...] | None = None) -> torch.Tensor | None:
        """K from generated fused kernels, or None where there are none (here; ``auto`` overrides)."""
        return None

    def fused_hyperparameters(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """What `fused` reads of the hyperparameters, computed beforehand (nothing, here; ``auto`` overrides)."""
        return ()

    def _dtype(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.dtype:
        return torch.promote_types(torch.promote_types(x1.dtype, x2.dtype), self.raw_lengthscale.dtype)

    def _hyperparameters(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """``_prepare``'s tensors from the current hyperparameters, in ``dtype``."""
        batch = self.raw_outputscale.shape  # the kernel's batch shape, without walking submodules
        inverse = self.lengthscale.to(dtype).reciprocal()
        weights = torch.cat([_grouped_softmax(self.weight_logits.to(dtype), self._get("weight_groups")),
                             self._fixed_weights.to(dtype).expand(*batch, -1)], dim=-1)
        return self._prepare(inverse, weights, self.outputscale.to(dtype))

    def _evaluate_prepared(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool,
                           hyperparameters: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """K of inputs already in the hyperparameters' dtype, in one piece or tile by tile."""
        mode = _pairs_kind(x1, x2, diag)
        tiles = plan_tiles(mode, x1, x2, self.raw_outputscale.shape,
                           *resolve_tiles(self.options.tile_size, self.options.tile_threshold, x1.device))
        if tiles is not None:
            return evaluate_tiled(self._evaluate, tiles, x1, x2, *hyperparameters)
        return self._evaluate(x1, x2, mode, *hyperparameters)

    def _prepare(self, inverse: torch.Tensor, weights: torch.Tensor,
                 outputscale: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What ``_evaluate`` reads of the hyperparameters, built once per forward (not per tile).

        From the inverse lengthscales and the softmaxed learned weights followed by the fixed
        ones: ``(outputscale, W of the squared stage, W of the absolute stage, the
        [*, sums, block rows] weight matrix of each level's sum sources in order)``.
        """
        batch = weights.shape[:-1]
        matrices = [self._stage_matrix("squared", inverse.square()), self._stage_matrix("absolute", inverse)]
        for i, level in enumerate(self.plan.levels):
            for j, source in enumerate(level.sum_sources):
                rows = self.plan.block_rows[source.block]
                matrix = weights.new_zeros(*batch, level.num_sums * rows).index_add(
                    -1, self._get(i, "sum", j, "positions"), weights[..., self._get(i, "sum", j, "weights")])
                matrices.append(matrix.view(*batch, level.num_sums, rows))
        return (outputscale, *matrices)

    def _stage_matrix(self, name: str, entries: torch.Tensor) -> torch.Tensor:
        """``W [*, terms, features]`` of one distance stage from per-slot values (1/l^2 or 1/l)."""
        stage: _Stage = getattr(self.plan, name)
        entries = entries[..., self._get(name, "slots")]
        width = len(stage.features)
        return entries.new_zeros(*entries.shape[:-1], stage.num_terms * width).index_add(
            -1, self._get(name, "positions"), entries).view(*entries.shape[:-1], stage.num_terms, width)

    def _evaluate(self, x1: torch.Tensor, x2: torch.Tensor, mode: str, outputscale: torch.Tensor,
                  squared: torch.Tensor, absolute: torch.Tensor, *sums: torch.Tensor) -> torch.Tensor:
        """K ``[*, n, m]`` (diagonal ``[*, n]``) in one piece, from the hyperparameters ``_prepare`` built.

        ``mode`` is the pairs mode (``_pairs_kind``). The tiled path calls this per tile.
        """
        plan = self.plan
        pairs = _Pairs(mode, x1.shape[-2], x2.shape[-2], x1.device)
        sums = iter(sums)

        blocks: list[torch.Tensor] = []
        for stage, matrix in ((plan.squared, squared), (plan.absolute, absolute)):
            if stage.num_terms:
                square = stage.distance is Distance.SQUARED
                tables = self._distances(x1, x2, pairs, stage.distance.value, matrix, square,
                                         [(start, stop) for _, start, stop in stage.kind_blocks])
                blocks += [KINDS[kind].math.torch(d) for (kind, _, _), d in zip(stage.kind_blocks, tables)]

        for i, level in enumerate(plan.levels):
            if level.num_sums:
                total = None
                for source in level.sum_sources:
                    part = _batched_matmul(next(sums), blocks[source.block])
                    total = part if total is None else total + part
                blocks.append(total)
            if level.product_children:
                parts = [blocks[block].index_select(-2, self._get(i, "product", j, "rows"))
                         for j, (block, _) in enumerate(level.product_rows)]
                width = len(level.product_children[0])
                if level.pad_with_ones:
                    parts.append(parts[0].new_ones(()).expand(*parts[0].shape[:-2], 1, parts[0].shape[-1]))
                table = torch.cat(parts, dim=-2) if len(parts) > 1 else parts[0]
                factors = table.index_select(-2, self._get(i, "product", "children"))
                blocks.append(factors.unflatten(-2, (len(level.product_children), width)).prod(-2))
        block, row = plan.root
        value = blocks[block][..., row, :] * outputscale.unsqueeze(-1)
        return pairs.unflatten(value)

    def _distances(self, x1, x2, pairs, name: str, matrix: torch.Tensor, square: bool,
                   row_blocks: list[tuple[int, int]]) -> list[torch.Tensor]:
        """Scaled distances ``[*, terms, pairs]`` of one stage, one table per block of its terms.

        ``W @ |delta|^p`` with one matmul per row block sharing ``|delta|^p``, chunked over features.
        """
        stage: _Stage = getattr(self.plan, name)
        features = self._get(name, "features")
        x1s = x1.index_select(-1, features).mT.contiguous()
        x2s = x1s if x2 is x1 else x2.index_select(-1, features).mT.contiguous()
        width = len(stage.features)
        matrices = [matrix[..., start:stop, :] for start, stop in row_blocks]
        chunk = max(2 * stage.num_terms, 8)
        if width <= chunk:
            return list(_stage_chunk(pairs, square, x1s, x2s, *matrices))
        totals = None
        recompute = (torch.is_grad_enabled() and (x1s.requires_grad or x2s.requires_grad or matrix.requires_grad)
                     and _difference_entries(pairs, x1s, x2s, chunk) >= CHECKPOINT_ENTRIES)
        for lo in range(0, width, chunk):
            args = (pairs, square, x1s[..., lo:lo + chunk, :], x2s[..., lo:lo + chunk, :],
                    *(m[..., lo:lo + chunk] for m in matrices))
            # Large chunks are recomputed in backward so that only [*, terms, pairs] tensors are kept, never
            # [*, features, pairs].
            parts = checkpoint(_stage_chunk, *args, use_reentrant=False) if recompute else _stage_chunk(*args)
            totals = list(parts) if totals is None else [t + p for t, p in zip(totals, parts)]
        return totals


class FrozenTorchKernel:
    """A ``TorchKernel``'s ``K(x1, x2)`` (``diag=`` as ``forward``) at the hyperparameters it had when frozen.

    The softmaxed weights, inverse lengthscales and the weight matrices of every level (``_prepare``) are
    computed once per dtype, without gradients, so a call is the evaluation alone: what an acquisition
    optimiser needs, which evaluates a fitted kernel hundreds of times at new inputs with gradients for the
    inputs only (a fifth of a kernel call with its backward on eight features, a tenth on the 25-term MNIST
    kernel, n = 100, quiet machine; issue 23). Inputs the kernel hands to fused kernels
    (``uses_fused_path``) go to them with the hyperparameters they read prepared once as well
    (``fused_hyperparameters``). Freeze again after changing the hyperparameters.
    """

    def __init__(self, kernel: TorchKernel):
        self.kernel = kernel
        self._prepared: dict[tuple[bool, torch.dtype], tuple[torch.Tensor, ...]] = {}

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False) -> torch.Tensor:
        kernel = self.kernel
        check_inputs(kernel.ir, x1, x2, diag)
        dtype = kernel._dtype(x1, x2)
        if kernel.uses_fused_path(x1, x2, diag):
            out = kernel.fused(x1, x2, diag, self._hyperparameters(True, dtype))
            if out is not None:
                return out
        return kernel._evaluate_prepared(x1.to(dtype), x2.to(dtype), diag, self._hyperparameters(False, dtype))

    def _hyperparameters(self, fused: bool, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The fused kernels' or the torch path's prepared hyperparameters in ``dtype``, computed at first use."""
        prepared = self._prepared.get((fused, dtype))
        if prepared is None:
            with torch.no_grad():
                kernel = self.kernel
                prepared = kernel.fused_hyperparameters(dtype) if fused else kernel._hyperparameters(dtype)
            self._prepared[fused, dtype] = prepared
        return prepared


class FrozenStack:
    """Frozen kernels of one kernel IR (fitted to different outputs) evaluated together at shared inputs:
    ``K [k, *batch, n, m]``, entry ``i`` that of ``frozen[i]``.

    Where the kernels run the fused kernels, one call computes all ``k`` with the hyperparameter sets as its
    batch instead of ``k`` calls: a call's fixed cost is most of it on small inputs (a posterior of two outputs
    at 8 points against 40, eight features: 0.29 ms a fused call with its backward; issue 23). Elsewhere it
    stacks the separate evaluations. Build it with `stack_frozen`.
    """

    def __init__(self, frozen: list[FrozenTorchKernel]):
        self.frozen = frozen
        self._prepared: dict[torch.dtype, tuple[torch.Tensor, ...]] = {}

    def __call__(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        first = self.frozen[0].kernel
        check_inputs(first.ir, x1, x2)
        k = len(self.frozen)
        x1_, x2_ = x1.expand(k, *x1.shape), x2.expand(k, *x2.shape)
        if first.uses_fused_path(x1_, x2_, False):
            out = first.fused(x1_, x2_, False, self._hyperparameters(first._dtype(x1, x2)))
            if out is not None:
                return out
        return torch.stack([frozen(x1, x2) for frozen in self.frozen])

    def _hyperparameters(self, dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
        """The fused kernels' hyperparameters of every kernel, stacked ``[k, ...]`` (computed at first use)."""
        prepared = self._prepared.get(dtype)
        if prepared is None:
            parts = [frozen._hyperparameters(True, dtype) for frozen in self.frozen]
            prepared = self._prepared[dtype] = tuple(torch.stack(group) for group in zip(*parts))
        return prepared


def stack_frozen(kernels: list) -> FrozenStack | None:
    """`FrozenStack` of frozen kernels (``frozen()`` of non-batched kernels of one IR and backend), or None
    where they are not that. The first kernel's options choose the path (fused or torch) for all."""
    if not kernels or not all(isinstance(k, FrozenTorchKernel) for k in kernels):
        return None
    first = kernels[0].kernel
    if any(k.kernel.ir != first.ir or type(k.kernel) is not type(first) or k.kernel.raw_outputscale.dim() != 0
           for k in kernels):
        return None
    return FrozenStack(list(kernels))


def build(ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
          options: KernelOptions | None = None) -> TorchKernel:
    """The ``torch`` backend's kernel for ``ir``."""
    return TorchKernel(ir, torch.Size(batch_shape), options)


class _Pairs:
    """Which (i, j) pairs are the columns of the tables, and how the result is laid out again."""

    def __init__(self, mode: str, n: int, m: int, device: torch.device):
        self.mode, self.n, self.m = mode, n, m
        if mode == "upper":
            self.rows, self.cols, self.mirror = _upper_pairs(n, device)

    def differences(self, x1: torch.Tensor, x2: torch.Tensor) -> torch.Tensor:
        """``[*, features, pairs]`` differences ``x1[i] - x2[j]`` from inputs laid out ``[*, features, points]``."""
        if self.mode == "diag":
            return x1 - x2
        if self.mode == "upper":
            return x1.index_select(-1, self.rows) - x1.index_select(-1, self.cols)
        return (x1.unsqueeze(-1) - x2.unsqueeze(-2)).flatten(-2)

    def unflatten(self, value: torch.Tensor) -> torch.Tensor:
        if self.mode == "diag":
            return value
        if self.mode == "upper":
            return value.index_select(-1, self.mirror).unflatten(-1, (self.n, self.n))
        return value.unflatten(-1, (self.n, self.m))


def _pairs_kind(x1: torch.Tensor, x2: torch.Tensor, diag: bool) -> str:
    """The pairs mode of ``_Pairs``: ``"diag"``, ``"upper"`` (K(x, x): one triangle) or ``"full"``."""
    if diag:
        return "diag"
    # Equal values alone are not enough when gradients must flow to x1 and x2 separately.
    tracked = torch.is_grad_enabled() and (x1.requires_grad or x2.requires_grad)
    if x1 is x2 or (x1.shape == x2.shape and not tracked and torch.equal(x1, x2)):
        return "upper"
    return "full"


@functools.lru_cache(maxsize=4)
def _upper_pairs(n: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows/cols of the ``i <= j`` pairs and, for each (i, j) of the n x n matrix, its pair index."""
    rows, cols = torch.triu_indices(n, n, device=device)
    index = torch.empty(n, n, dtype=torch.long, device=device)
    pair = torch.arange(rows.numel(), device=device)
    index[rows, cols] = pair
    index[cols, rows] = pair
    return rows, cols, index.reshape(-1)


def _stage_chunk(pairs: _Pairs, square: bool, x1: torch.Tensor, x2: torch.Tensor,
                 *matrices: torch.Tensor) -> tuple[torch.Tensor, ...]:
    delta = pairs.differences(x1, x2)
    powered = delta.square() if square else delta.abs()
    return tuple(_batched_matmul(m, powered) for m in matrices)


def _difference_entries(pairs: _Pairs, x1: torch.Tensor, x2: torch.Tensor, features: int) -> int:
    """Entries of the ``[*, features, pairs]`` differences of inputs laid out ``[*, features, points]``."""
    count = x1.shape[-1] if pairs.mode == "diag" else x1.shape[-1] * x2.shape[-1]
    return math.prod(broadcast_shapes(x1.shape[:-2], x2.shape[:-2])) * features * count


def _batched_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` with batch dimensions expanded explicitly.

    A small unbatched ``a`` times a batched ``[*, k, pairs]`` ``b`` would otherwise be
    folded by ``torch.matmul`` into one matmul over a transposed copy of ``b``.
    """
    if a.shape[:-2] == b.shape[:-2]:
        return a @ b
    batch = broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return a.expand(*batch, *a.shape[-2:]) @ b.expand(*batch, *b.shape[-2:])


def _grouped_softmax(logits: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    """Softmax within each group of the last dimension (one group per learned sum)."""
    if not logits.shape[-1]:
        return logits
    count = int(groups.max()) + 1
    # Softmax is shift invariant, so the (detached) per-group max only guards against overflow.
    top = logits.new_full((*logits.shape[:-1], count), -math.inf)
    top = top.scatter_reduce(-1, groups.expand_as(logits), logits.detach(), reduce="amax")
    e = torch.exp(logits - top[..., groups])
    total = e.new_zeros(*e.shape[:-1], count).index_add(-1, groups, e)
    return e / total[..., groups]


def _check_levels(ir: KernelIR) -> None:
    """Every composite node sits in one level, after all of its children."""
    level_of = {t: -1 for t in range(ir.num_terms)}
    for i, level in enumerate(ir.levels):
        for node_id in level:
            level_of[node_id] = i
    for node_id in range(ir.num_terms, ir.num_nodes):
        node = ir.node(node_id)
        if node_id not in level_of or any(level_of.get(c, len(ir.levels)) >= level_of[node_id]
                                          for c in node.children):
            raise KernelError(f"internal error: node {node_id} ('{node.label}') is not levelled after its children")
