"""The ``cpu`` backend: fused generated C kernels behind a gpytorch Kernel.

``build(ir, batch_shape, options)`` returns a ``CpuKernel``. Its forward runs
``fused.fused_forward`` (gpytorch batching and the autograd function, shared with
the ``triton`` backend) with this module's ``CpuKernels``: the C source of
``c_codegen`` compiled by the system's C compiler into a shared library, loaded with
``ctypes`` (which releases the GIL) and run with OpenMP over rows, ``torch.get_num_threads()``
threads. Memory is K and its gradient plus a few per-thread rows: no table of
terms x pairs ever exists, so there are no tiles to choose.

The compiler is ``$CC`` (default ``cc``). A library is built once per IR, dtype,
compiler and flags (1-8 seconds, with the size of the kernel) and kept in an on-disk
cache shared by processes (``cache_directory()``: ``$KERNELDSL_CACHE_DIR``, else
``$XDG_CACHE_HOME/kerneldsl`` or ``~/.cache/kerneldsl``; keyed by source, flags, compiler
and CPU; written atomically, so that pool workers may race; a per-process temporary
directory when it cannot be written). Flags are tried from the fastest down (``COMPILE_ATTEMPTS``:
native SIMD with glibc's vector math, then portable, then without OpenMP) so that any
C compiler works.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

import torch

from ..errors import KernelError
from ..ir import KernelIR
from ..options import KernelOptions
from .c_codegen import CODEGEN_VERSION, DIAG_CHUNK, generate
from .codegen import GeneratedSource
from .fused import FusedKernel, FusedKernels, process_directory

COMPILE_ATTEMPTS: tuple[tuple[str, ...], ...] = (
    ("-O2", "-march=native", "-fno-math-errno", "-fopenmp", "-DKD_VECTOR_MATH", "-lmvec"),
    ("-O2", "-fno-math-errno", "-fopenmp"),
    ("-O2", "-fno-math-errno"),
)
"""Compiler flags, fastest first; the first set that compiles is used (-O3 measured no faster, and
compiles 30% slower)."""

_PTR, _I64, _I32 = ctypes.c_void_p, ctypes.c_int64, ctypes.c_int32
_SIGNATURES = {
    "kd_forward": [_PTR] * 5 + [_I64] * 3 + [_I32, _PTR, _I32],
    "kd_forward_diag": [_PTR] * 5 + [_I64] * 2 + [_PTR, _I32],
    "kd_backward": [_PTR] * 5 + [_I64] * 3 + [_I32] + [_PTR] * 4 + [_I32],
    "kd_backward_x": [_PTR] * 5 + [_I64] * 3 + [_I32] + [_PTR] * 4 + [_I32],
    "kd_backward_diag": [_PTR] * 5 + [_I64] * 2 + [_PTR] * 3 + [_I32],
    "kd_backward_diag_x": [_PTR] * 5 + [_I64] * 2 + [_PTR] * 3 + [_I32],
}


def compiler() -> str:
    return os.environ.get("CC", "cc")


def compiler_unavailable_reason() -> str | None:
    """Why no C compiler can be run here (None when one can)."""
    if shutil.which(compiler()) is None:
        return f"no C compiler '{compiler()}' on the PATH (set CC to one)"
    return None


_lock = threading.Lock()
_kernels: dict[str, "CpuKernels"] = {}


def cache_directory() -> Path:
    """Where compiled libraries are kept between processes and runs."""
    if os.environ.get("KERNELDSL_CACHE_DIR"):
        return Path(os.environ["KERNELDSL_CACHE_DIR"]) / "cpu"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kerneldsl" / "cpu"


@functools.lru_cache(maxsize=None)
def _compiler_identity(cc: str) -> str:
    """The compiler's ``--version`` banner (part of the cache key: another compiler, another library)."""
    try:
        return subprocess.run([cc, "--version"], capture_output=True, text=True, timeout=60).stdout
    except (OSError, subprocess.SubprocessError):
        return cc


@functools.lru_cache(maxsize=None)
def _machine_identity() -> str:
    """The CPU's model and instruction-set flags (part of the cache key: ``-march=native`` code from one
    machine must not run on another that shares the cache directory, e.g. a cluster's home directory)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return f"{platform.machine()} {platform.processor()}"
    return "\n".join(next((line for line in lines if line.startswith(key)), "")
                     for key in ("model name", "flags", "Features", "CPU part"))


def compiled_kernels(ir: KernelIR) -> "CpuKernels":
    """The generated kernels of ``ir``, generated once per process (compiled at first use per dtype)."""
    key = f"{ir.fingerprint()}-v{CODEGEN_VERSION}"
    with _lock:
        if key not in _kernels:
            _kernels[key] = CpuKernels(ir, generate(ir), key)
        return _kernels[key]


def _ptr(t: torch.Tensor | None) -> int | None:
    """The address of a tensor's data; the caller keeps the tensor alive (a named local) during the C call."""
    return None if t is None else t.data_ptr()


class CpuKernels(FusedKernels):
    """Runs the generated C functions of one IR on flattened ``[B, ...]`` CPU tensors."""

    backend = "cpu"
    lookup = staticmethod(compiled_kernels)

    def __init__(self, ir: KernelIR, generated: GeneratedSource, key: str):
        super().__init__(ir, generated)
        self.key = key
        self._libraries: dict[torch.dtype, ctypes.CDLL] = {}
        self.flags: tuple[str, ...] | None = None
        """The compiler flags that built the libraries (None before the first build)."""

    # --- building --------------------------------------------------------------------
    def library(self, dtype: torch.dtype) -> ctypes.CDLL:
        """The compiled library for ``dtype`` (float64 or float32), built on first use."""
        with _lock:
            if dtype not in self._libraries:
                self._libraries[dtype] = self._build(dtype)
            return self._libraries[dtype]

    def _build(self, dtype: torch.dtype) -> ctypes.CDLL:
        reason = compiler_unavailable_reason()
        if reason is not None:
            raise KernelError(f"backend 'cpu' cannot run: {reason}", hint="use backend='torch' or install a C compiler")
        defines = ("-DKD_FLOAT",) if dtype == torch.float32 else ()
        errors = []
        for flags in COMPILE_ATTEMPTS if self.flags is None else (self.flags,):
            command = [compiler(), "-std=c11", "-shared", "-fPIC", *defines, *flags]
            key = hashlib.sha256("\0".join([self.source, *command, _compiler_identity(compiler()),
                                             _machine_identity()]).encode())
            name = f"kd_{key.hexdigest()[:40]}.so"
            library = cache_directory() / name
            if not library.exists():
                try:
                    error = _compile(self.source, command, library)
                except OSError:  # the cache cannot be written: this process's own directory instead
                    library = process_directory("kerneldsl-cpu-") / name
                    error = _compile(self.source, command, library)
                if error is not None:
                    errors.append(error)
                    continue
            try:
                loaded = _load(library)
            except OSError as err:  # e.g. a symbol the linker left unresolved
                errors.append(f"{library}: {err}")
                continue
            self.flags = flags
            return loaded
        raise KernelError("backend 'cpu' could not compile its generated C source:\n" + "\n\n".join(errors),
                          hint="use backend='torch', or set CC to a working C compiler")

    # --- the FusedKernels protocol -----------------------------------------------------
    def _rows(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, n, d]`` -> its used features ``[B, n, F]``."""
        return x.index_select(-1, self.used_features(x.device)).contiguous()

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, n, d]`` -> its used features, feature-major ``[B, F, n]``."""
        return self._rows(x).transpose(-1, -2).contiguous()

    def _operands(self, x1: torch.Tensor, x2: torch.Tensor, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """The rows ``[B, n, F]`` and feature-major columns ``[B, F, m]`` that ``kd_forward``/``kd_backward`` read."""
        rows = self._rows(x1)
        return rows, rows.transpose(-1, -2).contiguous() if symmetric else self._columns(x2)

    def forward(self, x1, x2, ls, w, scale, symmetric: bool, config=None) -> torch.Tensor:
        """K [B, n, m] for x1 [B, n, d], x2 [B, m, d]."""
        lib = self.library(x1.dtype)
        B, n, m = x1.size(0), x1.size(1), x2.size(1)
        rows, columns = self._operands(x1, x2, symmetric)
        out = x1.new_empty(B, n, m)
        lib.kd_forward(_ptr(rows), _ptr(columns), *_parameters(ls, w, scale), B, n, m, int(symmetric),
                       _ptr(out), torch.get_num_threads())
        return out

    def forward_diag(self, x1, x2, ls, w, scale, config=None) -> torch.Tensor:
        """diag K [B, n] for x1, x2 [B, n, d]."""
        lib = self.library(x1.dtype)
        B, n = x1.size(0), x1.size(1)
        out = x1.new_empty(B, n)
        first, second = self._columns(x1), self._columns(x2)  # named: alive during the call
        lib.kd_forward_diag(_ptr(first), _ptr(second), *_parameters(ls, w, scale), B, n, _ptr(out),
                            torch.get_num_threads())
        return out

    def backward(self, grad, x1, x2, ls, w, scale, symmetric: bool, with_x_grad: bool, config=None):
        lib = self.library(x1.dtype)
        B, n, m = x1.size(0), x1.size(1), x2.size(1)
        F, S, threads = len(self.generated.used_features), self.generated.num_grad_slots, torch.get_num_threads()
        rows, columns = self._operands(x1, x2, symmetric)
        grad = grad.to(x1.dtype)
        if symmetric:  # each upper pair (i < j) stands for both entries; the diagonal for itself
            grad = grad + grad.mT
            grad.diagonal(dim1=-2, dim2=-1).mul_(0.5)
        else:
            grad = grad.contiguous()
        gparam = x1.new_empty(B * n, S)
        gxrow = x1.new_empty(B, n, F) if with_x_grad else None
        gxcol = x1.new_zeros(threads, B, F, m) if with_x_grad else None
        function = lib.kd_backward_x if with_x_grad else lib.kd_backward
        function(_ptr(rows), _ptr(columns), *_parameters(ls, w, scale), B, n, m, int(symmetric),
                 _ptr(grad), _ptr(gparam), _ptr(gxrow), _ptr(gxcol), threads)
        g_ls, g_w, g_scale = self.split_gradients(gparam.view(B, n, S).sum(1))
        if not with_x_grad:
            return g_ls, g_w, g_scale, None, None
        gx2 = gxcol.sum(0).transpose(-1, -2)
        if symmetric:
            return g_ls, g_w, g_scale, gxrow + gx2, None
        return g_ls, g_w, g_scale, gxrow, gx2

    def backward_diag(self, grad, x1, x2, ls, w, scale, with_x_grad: bool, config=None):
        lib = self.library(x1.dtype)
        B, n = x1.size(0), x1.size(1)
        F, S = len(self.generated.used_features), self.generated.num_grad_slots
        chunks = -(-n // DIAG_CHUNK)
        gparam = x1.new_empty(B * chunks, S)
        gx = x1.new_empty(B, F, n) if with_x_grad else None
        function = lib.kd_backward_diag_x if with_x_grad else lib.kd_backward_diag
        first, second, grad = self._columns(x1), self._columns(x2), grad.to(x1.dtype).contiguous()
        function(_ptr(first), _ptr(second), *_parameters(ls, w, scale), B, n, _ptr(grad), _ptr(gparam), _ptr(gx),
                 torch.get_num_threads())
        g_ls, g_w, g_scale = self.split_gradients(gparam.view(B, chunks, S).sum(1))
        if not with_x_grad:
            return g_ls, g_w, g_scale, None, None
        gx1 = gx.transpose(-1, -2)
        return g_ls, g_w, g_scale, gx1, -gx1


def _parameters(ls: torch.Tensor, w: torch.Tensor, scale: torch.Tensor) -> tuple[int, int, int]:
    """Pointers to the hyperparameters, which ``fused_forward`` passes contiguous (they may be expanded views)."""
    for t in (ls, w, scale):
        if not t.is_contiguous():
            raise KernelError("internal error: the cpu backend got non-contiguous hyperparameters")
    return _ptr(ls), _ptr(w), _ptr(scale)


def _compile(source: str, command: list[str], library: Path) -> str | None:
    """Compile ``source`` into ``library`` (atomically); the compiler's complaint when it fails."""
    library.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=library.parent, prefix=".build-") as build:
        path = Path(build) / "kernel.c"
        path.write_text(source)
        libraries = [arg for arg in command if arg.startswith("-l")]  # after the source: --as-needed links
        full = [*(arg for arg in command if arg not in libraries), "-o", str(Path(build) / library.name), str(path),
                *libraries, "-lm"]
        result = subprocess.run(full, capture_output=True, text=True)
        if result.returncode != 0:
            return f"{' '.join(full)}\n{result.stderr.strip()[-2000:]}"
        os.replace(Path(build) / library.name, library)
    return None


def _load(path: Path) -> ctypes.CDLL:
    library = ctypes.CDLL(str(path))
    for name, argtypes in _SIGNATURES.items():
        function = getattr(library, name)
        function.argtypes = argtypes
        function.restype = None
    return library


class CpuKernel(FusedKernel):
    """The kernel of one KernelIR evaluated by fused generated C kernels on the CPU."""

    def __init__(self, ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
                 options: KernelOptions | None = None):
        super().__init__(ir, compiled_kernels(ir), batch_shape=batch_shape, options=options)

    def launch(self, x1: torch.Tensor, x2: torch.Tensor) -> tuple[CpuKernels, None]:
        if x1.device.type != "cpu" or x2.device.type != "cpu":
            raise KernelError(f"backend 'cpu' runs on CPU tensors, got {x1.device.type}",
                              hint="use backend='auto' (triton on CUDA) or backend='torch'")
        return self.kernels, None


def build(ir: KernelIR, batch_shape: torch.Size = torch.Size([]),
          options: KernelOptions | None = None) -> CpuKernel:
    """The ``cpu`` backend's kernel for ``ir``."""
    return CpuKernel(ir, batch_shape=torch.Size(batch_shape), options=options)
