"""Time every available backend on the hands-on MNIST kernel, with the physical floor of each case.

Times forward and forward+backward (backward w.r.t. all hyperparameters, and the
candidates in the acquisition case) of ``reference``, ``torch`` and ``triton``
(``triton`` only on CUDA; on the CPU it is skipped with a note), as medians over
repeats timed with CUDA events on a GPU and ``perf_counter`` on the CPU. Cases:

- ``n381 b1``: K(X, X) with X [381, d] (fitting one model);
- ``n381 b20``: kernel batch [20], X [20, 381, d] (a batch of LOO-like models);
- ``n2000 b1``: K(X, X) with X [2000, d];
- ``n8000 b1``: K(X, X) with X [8000, d] (a large pooled sweep);
- ``acqf``: K(x1, x2) with x1 [60, 2, d] and x2 = X [381, d] expanded to [60, 381, d].

The floor of a case is the larger of (bytes that must move) / (measured copy
bandwidth) and (flops) / (measured throughput): the inputs and the n x m output
(plus dL/dK for the backward), and the flops of the fused tile code counted per
pair from the kernel's terms (``exp``/``sqrt``/division count one flop each, so the
flop floor is a lower bound). Throughput is measured with a dependent-FMA Triton
kernel on the GPU (the units the fused kernel uses; not tensor cores) and with a
matmul on the CPU. Each time is printed as a multiple of its floor.

Usage: ``python benchmarks/backends_gpu.py [--kernel hands-on|mnist-like] [--device cuda]
[--dtypes float64,float32] [--cases n381b1,n381b20,n2000b1,n8000b1,acqf] [--repeats 20]
[--backends reference,torch,triton] [--torch-tiles none,1048576] [--threads N]``
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from gpytorch import settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import IRS, make_kernel  # noqa: E402  (shared with the CPU backend benchmark)

from kerneldsl.compiler.ir import KernelIR, Product, Sum  # noqa: E402
from kerneldsl.compiler.kinds import KINDS  # noqa: E402

BACKENDS = ("reference", "torch", "triton")


@dataclass(frozen=True)
class Case:
    """One workload: kernel batch, x1 [*batch, n, d] against x2 [*batch, m, d]."""

    name: str
    kernel_batch: tuple[int, ...]
    batch: int
    n: int
    m: int
    symmetric: bool
    candidates_grad: bool = False


CASES = {
    "n381b1": Case("n381 b1", (), 1, 381, 381, True),
    "n381b20": Case("n381 b20", (20,), 20, 381, 381, True),
    "n2000b1": Case("n2000 b1", (), 1, 2000, 2000, True),
    "n8000b1": Case("n8000 b1", (), 1, 8000, 8000, True),
    "acqf": Case("acqf 60x2 vs 381", (), 60, 2, 381, False, candidates_grad=True),
}


# --- the floor ------------------------------------------------------------------------

def flops_per_pair(ir: KernelIR, backward: bool) -> int:
    """Arithmetic of the fused tile code for one (i, j) pair (forward, or the recomputing backward)."""
    features = {f for t in ir.terms for f in t.features}
    total = 2 * len(features)  # difference, square or abs
    for t in ir.terms:
        value, slope = KINDS[t.kind].math.triton_flops
        total += 2 * len(t.features) - 1 + value
        if backward:
            # slope, h = a * g, per (term, feature): reduction (2) and x-gradient accumulation (2)
            total += slope + 1 + 4 * len(t.features)
    for node in ir.nodes:
        k = len(node.children)
        if isinstance(node, Product):
            total += k - 1 + (k * (k - 1) if backward else 0)
        else:
            assert isinstance(node, Sum)
            total += 2 * k - 1 + (4 * k if backward else 0)
    total += 1  # outputscale
    if backward:
        total += 2 + 3 * len(features)  # dL/doutputscale; x-gradient row and column sums
    return total


def case_bytes(case: Case, d: int, itemsize: int, backward: bool) -> int:
    """Bytes that must move: x1, x2 and K (forward); again x1, x2, plus dL/dK and dL/dx (backward)."""
    x2_batch = 1 if case.candidates_grad else case.batch  # the acquisition's x2 is one expanded tensor
    inputs = (case.batch * case.n + x2_batch * case.m) * d * itemsize
    matrix = case.batch * case.n * case.m * itemsize
    return inputs + matrix + ((inputs + matrix + case.batch * case.n * d * itemsize) if backward else 0)


def measure_bandwidth(device: str, dtype: torch.dtype) -> float:
    """Bytes per second of a large device-to-device copy (read + write)."""
    nbytes = 2**30 if device.startswith("cuda") else 2**27
    src = torch.ones(nbytes * 8 // torch.finfo(dtype).bits, dtype=dtype, device=device)
    dst = torch.empty_like(src)
    seconds = median_seconds(lambda: dst.copy_(src), device, repeats=10)
    return 2 * src.numel() * src.element_size() / seconds


def measure_throughput(device: str, dtype: torch.dtype) -> float:
    """Flops per second: dependent FMA chains in a Triton kernel on CUDA, a matmul on the CPU."""
    if device.startswith("cuda"):
        return _triton_fma_throughput(device, dtype)
    size = 1024
    a = torch.rand(size, size, dtype=dtype, device=device)
    seconds = median_seconds(lambda: a @ a, device, repeats=5)
    return 2 * size**3 / seconds


def _triton_fma_throughput(device: str, dtype: torch.dtype) -> float:
    import triton
    import triton.language as tl

    @triton.jit
    def fma_chains(out_ptr, a, b, ITERS: tl.constexpr, BLOCK: tl.constexpr):
        offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
        x = offs.to(out_ptr.dtype.element_ty) * 1e-9
        y, z, w = x + 0.25, x + 0.5, x + 0.75
        for _ in range(ITERS):  # four independent chains keep the FMA pipes busy
            x = x * a + b
            y = y * a + b
            z = z * a + b
            w = w * a + b
        tl.store(out_ptr + offs, x + y + z + w)

    block, iters = 1024, 4096
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    out = torch.empty(block * sms * 64, dtype=dtype, device=device)
    launch = lambda: fma_chains[(out.numel() // block,)](out, 0.999, 1e-3, ITERS=iters, BLOCK=block)  # noqa: E731
    seconds = median_seconds(launch, device, repeats=10)
    return 2 * 4 * iters * out.numel() / seconds


# --- timing ---------------------------------------------------------------------------

def median_seconds(fn, device: str, repeats: int) -> float:
    """Median wall time of ``fn`` after one warm-up call (CUDA events on a GPU)."""
    fn()
    times = []
    for _ in range(repeats):
        if device.startswith("cuda"):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def tile_variant(tiles: str) -> tuple[str, dict]:
    """A ``torch`` variant with tile options: ``"none"`` is one piece, a number the entries per tile (always tiled)."""
    if tiles == "none":
        return "torch 1 piece", {"tile_size": None}
    return f"torch t={int(tiles)}", {"tile_size": int(tiles), "tile_threshold": 0}


def make_steps(ir: KernelIR, backend: str, case: Case, dtype: torch.dtype, device: str, options: dict | None = None):
    """``(forward, forward_backward)`` closures: K and a weighted sum of K backpropagated."""
    kernel = make_kernel(ir, backend, dtype, device, batch_shape=case.kernel_batch)
    if options:
        kernel.options = replace(kernel.options, **options)
    g = torch.Generator().manual_seed(1)
    d = len(ir.features)
    if case.candidates_grad:
        train = torch.rand(case.m, d, generator=g, dtype=dtype).to(device)
        x1 = torch.rand(case.batch, case.n, d, generator=g, dtype=dtype).to(device).requires_grad_(True)
        x2 = train.expand(case.batch, case.m, d)
    else:
        shape = (case.batch, case.n, d) if case.kernel_batch else (case.n, d)
        x1 = x2 = torch.rand(*shape, generator=g, dtype=dtype).to(device)
    out_shape = (*([case.batch] if case.kernel_batch or case.candidates_grad else []), case.n, case.m)
    weights = torch.randn(*out_shape, generator=g, dtype=dtype).to(device)

    def matrix():
        with settings.lazily_evaluate_kernels(False):
            return kernel(x1, x2).to_dense()

    def forward():
        with torch.no_grad():
            matrix()

    def forward_backward():
        (matrix() * weights).sum().backward()

    return forward, forward_backward


def run(ir: KernelIR, cases: list[Case], dtypes: list[torch.dtype], device: str, repeats: int,
        backends: list[str] = BACKENDS, torch_tiles: list[str] = ()) -> None:
    """Print the result table: one line per (case, dtype, backend)."""
    available = {b: (b, {}) for b in backends if b != "triton" or device.startswith("cuda")}
    for tiles in torch_tiles:
        label, options = tile_variant(tiles)
        available[label] = ("torch", options)
    header = (f"{'case':<17} {'dtype':<7} {'backend':<17} {'fwd ms':>9} {'fwd+bwd ms':>11} {'x ref fwd':>9} "
              f"{'x ref f+b':>9} {'floor f+b ms':>12} {'x floor':>8}")
    flops_f, flops_b = flops_per_pair(ir, False), flops_per_pair(ir, True)
    print(f"flops per pair: forward {flops_f}, backward {flops_b}")
    for dtype in dtypes:
        name = str(dtype).removeprefix("torch.")
        bandwidth = measure_bandwidth(device, dtype)
        throughput = measure_throughput(device, dtype)
        print(f"\n{name}: copy bandwidth {bandwidth / 1e9:.1f} GB/s, throughput {throughput / 1e9:.1f} GFLOP/s")
        print(header, flush=True)
        for case in cases:
            pairs = case.batch * case.n * ((case.n + 1) // 2 if case.symmetric else case.m)
            floor = max(case_bytes(case, len(ir.features), torch.finfo(dtype).bits // 8, True) / bandwidth,
                        pairs * (flops_f + flops_b) / throughput)
            times = {}
            for label, (backend, options) in available.items():
                forward, forward_backward = make_steps(ir, backend, case, dtype, device, options)
                times[label] = (median_seconds(forward, device, repeats),
                                median_seconds(forward_backward, device, repeats))
                if device.startswith("cuda"):
                    torch.cuda.empty_cache()
            ref_fwd, ref_fb = times.get("reference", next(iter(times.values())))
            for backend, (fwd, fb) in times.items():
                print(f"{case.name:<17} {name:<7} {backend:<17} {1e3 * fwd:>9.3f} {1e3 * fb:>11.3f} "
                      f"{ref_fwd / fwd:>8.1f}x {ref_fb / fb:>8.1f}x {1e3 * floor:>12.4f} {fb / floor:>7.1f}x",
                      flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", choices=sorted(IRS), default="hands-on")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtypes", default="float64,float32")
    parser.add_argument("--cases", default=",".join(CASES), help=f"comma-separated of {', '.join(CASES)}")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--backends", default=",".join(BACKENDS), help="comma-separated of " + ", ".join(BACKENDS))
    parser.add_argument("--torch-tiles", default="",
                        help="extra torch variants, comma-separated tile sizes in entries or 'none' (one piece)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        ir = IRS[args.kernel]()
    except ImportError as err:  # the hands-on kernel is compiled from source, which needs lark
        print(f"kernel {args.kernel} unavailable ({err}); using mnist-like")
        args.kernel, ir = "mnist-like", IRS["mnist-like"]()
    device_name = torch.cuda.get_device_name(args.device) if args.device.startswith("cuda") else "CPU"
    print(f"# backends on {device_name}, {datetime.date.today()}, torch {torch.__version__}")
    print(f"kernel {args.kernel}: {len(ir.features)} features, {ir.num_terms} terms, {len(ir.nodes)} sums/products; "
          f"medians of {args.repeats}; ratios are reference time / backend time "
          "(or the first backend's, without reference)")
    if not args.device.startswith("cuda"):
        print("triton: skipped (it runs on CUDA devices only; TRITON_INTERPRET=1 is for tests, not timing)")
    print("floor: max(bytes that must move / copy bandwidth, flops / throughput) of forward+backward")
    cases = [CASES[c] for c in args.cases.split(",")]
    dtypes = [getattr(torch, d) for d in args.dtypes.split(",")]
    run(ir, cases, dtypes, args.device, args.repeats, args.backends.split(","),
        [t for t in args.torch_tiles.split(",") if t])


if __name__ == "__main__":
    main()
