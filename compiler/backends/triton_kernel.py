"""The ``triton`` backend: fused generated kernels behind a gpytorch Kernel.

``build(ir, batch_shape, options)`` returns a ``TritonKernel``. Its forward
runs ``fused.fused_forward`` (batching, autograd: shared with the ``cpu`` backend)
with this module's ``CompiledKernels``, which launch one program per tile and batch
element; backward recomputes each tile from dL/dK.

Generated modules are written to a per-process temporary directory and imported
from there (``triton.jit`` reads a function's source from its file), cached by
the IR's fingerprint and by whether Triton runs in interpreter mode
(``TRITON_INTERPRET=1``, read by ``triton.jit`` when the module is imported).
"""

from __future__ import annotations

import importlib.util
import threading
from dataclasses import dataclass
from types import ModuleType

import torch

from ..errors import KernelError
from ..ir import KernelIR
from ..options import KernelOptions
from .flat_params import FlatParameterKernel
from .fused import FusedKernel, FusedKernels, process_directory
from .codegen import GeneratedSource
from .triton_codegen import CODEGEN_VERSION, generate

_FIX_HINT = ("use backend='torch', move the model and inputs to a CUDA device, or set the environment "
             "variable TRITON_INTERPRET=1 to run the kernels in Triton's (slow) CPU interpreter")


def triton_unavailable_reason() -> str | None:
    """Why triton cannot be imported here (None when it can)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception as err:  # ImportError, or a broken install raising anything else
        return f"triton cannot be imported ({type(err).__name__}: {err})"
    return None


def interpreter_enabled() -> bool:
    """Whether ``triton.jit`` currently builds interpreted kernels (``TRITON_INTERPRET=1``)."""
    import triton
    return bool(triton.knobs.runtime.interpret)


@dataclass(frozen=True)
class BlockConfig:
    """Tile sizes and warps of the launches (``block`` must be a power of two).

    The CUDA default, 16 x 16 tiles on 8 warps, gives each thread one pair: the kernels of a
    kernel with many terms keep every term's value (and in backward its slope) live per pair, and
    with more pairs per thread they spill registers. Measured on an H200 for the 25-term MNIST
    kernel (``benchmarks/gpu_tune.py``, RESULTS.md "The GPU kernel toward its floor"): 32 x 32 on
    4 warps spilled 1774 (forward) and 2904 (backward) registers; 16 x 16 on 8 warps none
    (forward) and 216 (backward), 1.8-2.6x faster forward+backward.
    """

    block_m: int = 16
    block_n: int = 16
    block_diag: int = 128
    num_warps: int = 8

    @staticmethod
    def default(interpret: bool) -> "BlockConfig":
        # The interpreter runs programs one after another on numpy: few, larger tiles are fastest.
        return BlockConfig(32, 32, 64, 1) if interpret else BlockConfig()


# --- compiled modules -------------------------------------------------------------

_lock = threading.Lock()
_modules: dict[tuple[str, bool], "CompiledKernels"] = {}


def compiled_kernels(ir: KernelIR) -> "CompiledKernels":
    """The generated kernels of ``ir``, generated and imported once per process and mode."""
    reason = triton_unavailable_reason()
    if reason is not None:
        raise KernelError(f"backend 'triton' cannot run: {reason}", hint="use backend='torch' or install triton")
    key = (f"{ir.fingerprint()}-v{CODEGEN_VERSION}", interpreter_enabled())
    with _lock:
        if key not in _modules:
            generated = generate(ir)
            _modules[key] = CompiledKernels(ir, generated, _import_source(generated.source, key), key[1])
        return _modules[key]


def _import_source(source: str, key: tuple[str, bool]) -> ModuleType:
    fingerprint, interpret = key
    path = process_directory("kerneldsl-triton-") / f"kd_{fingerprint.replace('-', '_')}.py"
    if not path.exists():
        path.write_text(source)
    name = f"kerneldsl_generated_{path.stem}_{'interpreted' if interpret else 'compiled'}"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CompiledKernels(FusedKernels):
    """Launches the four generated kernels of one IR on flattened ``[B, ...]`` tensors."""

    backend = "triton"
    lookup = staticmethod(compiled_kernels)

    def __init__(self, ir: KernelIR, generated: GeneratedSource, module: ModuleType, interpret: bool):
        super().__init__(ir, generated)
        self.module = module
        self.interpret = interpret
        self.blocks = BlockConfig.default(interpret)
        self._tiles: dict[tuple, torch.Tensor] = {}

    def _tile_table(self, row_blocks: int, col_blocks: int, symmetric: bool, device) -> torch.Tensor:
        """(row block, column block) of every program; only j >= i when symmetric."""
        key = (row_blocks, col_blocks, symmetric, str(device))
        if key not in self._tiles:
            i, j = torch.meshgrid(torch.arange(row_blocks), torch.arange(col_blocks), indexing="ij")
            table = torch.stack([i.reshape(-1), j.reshape(-1)], dim=-1)
            if symmetric:
                table = table[table[:, 1] >= table[:, 0]]
            self._tiles[key] = table.contiguous().to(device)
        return self._tiles[key]

    def _common_args(self, x1, x2, ls, w, scale):
        return (*x1.stride(), *x2.stride(), ls.stride(0), ls.stride(1) if ls.dim() > 1 else 1,
                w.stride(0), w.stride(1) if w.size(1) else 1, scale.stride(0))

    def forward(self, x1, x2, ls, w, scale, symmetric: bool, blocks: BlockConfig) -> torch.Tensor:
        """K [B, n, m] for x1 [B, n, d], x2 [B, m, d]."""
        B, n, m = x1.size(0), x1.size(1), x2.size(1)
        out = torch.empty(B, n, m, dtype=x1.dtype, device=x1.device)
        bm, bn = (blocks.block_m, blocks.block_m) if symmetric else (blocks.block_m, blocks.block_n)
        tiles = self._tile_table(_cdiv(n, bm), _cdiv(m, bn), symmetric, x1.device)
        grid = (tiles.size(0), B)
        self.module.kd_forward[grid](
            x1, x2, ls, w, scale, tiles, n, m, *self._common_args(x1, x2, ls, w, scale),
            out, *out.stride(), BLOCK_M=bm, BLOCK_N=bn, SYMMETRIC=symmetric, num_warps=blocks.num_warps)
        return out

    def forward_diag(self, x1, x2, ls, w, scale, blocks: BlockConfig) -> torch.Tensor:
        """diag K [B, n] for x1, x2 [B, n, d]."""
        B, n = x1.size(0), x1.size(1)
        out = torch.empty(B, n, dtype=x1.dtype, device=x1.device)
        grid = (_cdiv(n, blocks.block_diag), B)
        self.module.kd_forward_diag[grid](
            x1, x2, ls, w, scale, n, *self._common_args(x1, x2, ls, w, scale),
            out, *out.stride(), BLOCK_M=blocks.block_diag, num_warps=blocks.num_warps)
        return out

    def backward(self, grad, x1, x2, ls, w, scale, symmetric: bool, with_x_grad: bool, blocks: BlockConfig):
        """(dL/dls [B,P], dL/dw [B,W], dL/dscale [B], dL/dx1 [B,n,F], dL/dx2 [B,m,F] or None).

        x gradients cover the used features only (``generated.used_features``);
        when symmetric, dL/dx1 holds the whole gradient of x and dL/dx2 is None.
        """
        B, n, m = x1.size(0), x1.size(1), x2.size(1)
        F = len(self.generated.used_features)
        bm, bn = (blocks.block_m, blocks.block_m) if symmetric else (blocks.block_m, blocks.block_n)
        rb, cb = _cdiv(n, bm), _cdiv(m, bn)
        tiles = self._tile_table(rb, cb, symmetric, x1.device)
        gparam = torch.empty(B, tiles.size(0), self.generated.num_grad_slots, dtype=x1.dtype, device=x1.device)
        if not with_x_grad:
            gx1 = gx2 = torch.empty(0, dtype=x1.dtype, device=x1.device)
            gx1_strides = gx2_strides = (0, 0, 0)
        elif symmetric:
            # one buffer: every (slot, row) of x is written by exactly one program (rb + 1 slots)
            gx1 = gx2 = torch.empty(B, rb + 1, n, F, dtype=x1.dtype, device=x1.device)
            gx1_strides = gx2_strides = gx1.stride()[:3]
        else:
            gx1 = torch.empty(B, cb, n, F, dtype=x1.dtype, device=x1.device)
            gx2 = torch.empty(B, rb, m, F, dtype=x1.dtype, device=x1.device)
            gx1_strides, gx2_strides = gx1.stride()[:3], gx2.stride()[:3]
        self.module.kd_backward[(tiles.size(0), B)](
            x1, x2, ls, w, scale, tiles, n, m, *self._common_args(x1, x2, ls, w, scale),
            grad, *grad.stride(), gparam, gx1, *gx1_strides, gx2, *gx2_strides,
            BLOCK_M=bm, BLOCK_N=bn, SYMMETRIC=symmetric, WITH_X_GRAD=with_x_grad, num_warps=blocks.num_warps)
        g_ls, g_w, g_scale = self.split_gradients(gparam.sum(1))
        if not with_x_grad:
            return g_ls, g_w, g_scale, None, None
        if symmetric:
            return g_ls, g_w, g_scale, gx1.sum(1), None
        return g_ls, g_w, g_scale, gx1.sum(1), gx2.sum(1)

    def backward_diag(self, grad, x1, x2, ls, w, scale, with_x_grad: bool, blocks: BlockConfig):
        """Like ``backward`` for the diag path (x1, x2 [B, n, d], grad [B, n])."""
        B, n = x1.size(0), x1.size(1)
        F = len(self.generated.used_features)
        grid = (_cdiv(n, blocks.block_diag), B)
        gparam = torch.empty(B, grid[0], self.generated.num_grad_slots, dtype=x1.dtype, device=x1.device)
        shape = (B, n, F) if with_x_grad else (0,)
        gx1 = torch.empty(shape, dtype=x1.dtype, device=x1.device)
        gx2 = torch.empty(shape, dtype=x1.dtype, device=x1.device)
        self.module.kd_backward_diag[grid](
            x1, x2, ls, w, scale, n, *self._common_args(x1, x2, ls, w, scale),
            grad, *grad.stride(), gparam, gx1, gx2,
            BLOCK_M=blocks.block_diag, WITH_X_GRAD=with_x_grad, num_warps=blocks.num_warps)
        g_ls, g_w, g_scale = self.split_gradients(gparam.sum(1))
        return (g_ls, g_w, g_scale) + ((gx1, gx2) if with_x_grad else (None, None))


def _cdiv(a: int, b: int) -> int:
    return max(1, -(-a // b))


class TritonKernel(FusedKernel):
    """The kernel of one KernelIR evaluated by fused generated Triton kernels."""

    def __init__(self, ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
                 options: KernelOptions | None = None):
        super().__init__(ir, compiled_kernels(ir), batch_shape=batch_shape, options=options)
        self.blocks: BlockConfig = self.kernels.blocks

    def launch(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[CompiledKernels, BlockConfig]:
        """The kernels (fetched again when the interpreter mode changed) and this module's tiles ``blocks``."""
        kernels = current_kernels(self)
        if x1.device.type != "cuda" and not kernels.interpret:
            raise KernelError(f"backend 'triton' cannot run on {x1.device.type} tensors: its kernels are "
                              "compiled for CUDA devices", hint=_FIX_HINT)
        return kernels, self.blocks


def current_kernels(module: FlatParameterKernel) -> CompiledKernels:
    """``module.kernels`` (None before the first call), fetched again only when the interpreter mode changed."""
    kernels = module.kernels
    if kernels is None or kernels.interpret != interpreter_enabled():
        kernels = module.kernels = compiled_kernels(module.ir)
    return kernels


def build(ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
          options: KernelOptions | None = None) -> TritonKernel:
    """The ``triton`` backend's kernel for ``ir`` (raises KernelError when triton is unavailable)."""
    return TritonKernel(ir, batch_shape=torch.Size(batch_shape), options=options)
