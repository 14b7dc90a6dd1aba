"""Per-kernel times of the generated Triton kernels against their floor, over launch configurations.

For the five cases of ``benchmarks/backends_gpu.py`` (hands-on MNIST kernel, 26 features, 25
terms) this times, with ``triton.testing.do_bench`` (medians), each generated kernel on its own
(``kd_forward``, ``kd_backward``) and the whole gpytorch module (forward, forward+backward),
for several launch configurations (``BlockConfig``: tile sizes and warps), and reads the
registers and spills of every compiled kernel. Then the peers: the ``reference`` backend
(gpytorch's composition), the ``torch`` backend in one piece, and the same under
``torch.compile``.

Usage: ``python benchmarks/gpu_tune.py [--cases n381b20,...] [--configs 32x32w4,16x16w4,...]
[--dtypes float64,float32] [--peers reference,torch,compile] [--budget-s 480]``. Results are
printed as markdown rows; ``--out FILE`` also writes them as JSON lines.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from gpytorch import settings

sys.path.insert(0, str(Path(__file__).resolve().parent))
from backends import IRS, make_kernel  # noqa: E402
from backends_gpu import CASES, Case, case_bytes, flops_per_pair, measure_bandwidth, measure_throughput  # noqa: E402

from kerneldsl.compiler.backends.triton_kernel import BlockConfig  # noqa: E402


def parse_config(text: str) -> BlockConfig:
    """``32x32w4`` -> BlockConfig(block_m=32, block_n=32, num_warps=4)."""
    tiles, warps = text.split("w")
    block_m, block_n = (int(v) for v in tiles.split("x"))
    return BlockConfig(block_m=block_m, block_n=block_n, block_diag=128, num_warps=int(warps))


def inputs(ir, case: Case, dtype: torch.dtype, device: str):
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
    return x1, x2, weights


def module_steps(kernel, x1, x2, weights):
    def matrix():
        with settings.lazily_evaluate_kernels(False):
            return kernel(x1, x2).to_dense()

    def forward():
        with torch.no_grad():
            matrix()

    def forward_backward():
        kernel.zero_grad(set_to_none=True)
        (matrix() * weights).sum().backward()

    return forward, forward_backward


def flat_arguments(kernel, case: Case, x1, x2, dtype):
    """What ``fused_forward`` hands the compiled kernels: flattened [B, ...] tensors."""
    B = case.batch
    P, W = kernel.ir.num_lengthscales, kernel.ir.num_weights
    batch = (B,) if (case.kernel_batch or case.candidates_grad) else (1,)
    ls = kernel.lengthscale.detach().to(dtype).expand(*batch, P).reshape(-1, P).contiguous()
    w = kernel.sum_weights().detach().to(dtype).expand(*batch, W).reshape(-1, W).contiguous()
    scale = kernel.outputscale.detach().to(dtype).expand(batch).reshape(-1).contiguous()
    f1 = x1.detach().reshape(-1, case.n, x1.size(-1)).contiguous()
    f2 = f1 if case.symmetric else x2.detach().reshape(-1, case.m, x2.size(-1)).contiguous()
    return f1, f2, ls, w, scale


def registers(fn) -> list[tuple[int, int, int]]:
    """(registers, spills, warps) of every compiled variant of a Triton JIT function (best effort)."""
    found = []
    try:
        for cache in fn.device_caches.values():
            for compiled in cache[0].values():
                found.append((int(compiled.n_regs), int(compiled.n_spills), int(compiled.metadata.num_warps)))
    except Exception:  # noqa: BLE001 - internals of triton's cache differ across versions
        pass
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="n381b20,n8000b1,n2000b1,n381b1,acqf")
    parser.add_argument("--configs", default="32x32w4,16x16w4,16x16w2,32x32w8,32x32w16,64x64w16,16x64w4,64x16w4")
    parser.add_argument("--dtypes", default="float64")
    parser.add_argument("--peers", default="reference,torch,compile")
    parser.add_argument("--budget-s", type=float, default=480.0, help="stop starting new cells after this")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    import triton
    from triton.testing import do_bench as triton_bench

    def do_bench(fn):
        return triton_bench(fn, return_mode="median")

    started = time.time()
    device = "cuda"
    ir = IRS["hands-on"]()
    out = open(args.out, "a") if args.out else None

    def emit(row: dict) -> None:
        print(json.dumps(row), flush=True)
        if out:
            out.write(json.dumps(row) + "\n")
            out.flush()

    print(f"# {torch.cuda.get_device_name()} torch {torch.__version__} triton {triton.__version__}; "
          f"{len(ir.features)} features, {ir.num_terms} terms", flush=True)
    flops_f, flops_b = flops_per_pair(ir, False), flops_per_pair(ir, True)
    for dtype_name in args.dtypes.split(","):
        dtype = getattr(torch, dtype_name)
        bandwidth, throughput = measure_bandwidth(device, dtype), measure_throughput(device, dtype)
        emit({"dtype": dtype_name, "bandwidth_GBs": bandwidth / 1e9, "throughput_GFLOPs": throughput / 1e9,
              "flops_per_pair": [flops_f, flops_b]})
        for case_key in args.cases.split(","):
            case = CASES[case_key]
            pairs = case.batch * case.n * ((case.n + 1) // 2 if case.symmetric else case.m)
            d = len(ir.features)
            floor_f = max(case_bytes(case, d, torch.finfo(dtype).bits // 8, False) / bandwidth,
                          pairs * flops_f / throughput)
            floor_fb = max(case_bytes(case, d, torch.finfo(dtype).bits // 8, True) / bandwidth,
                           pairs * (flops_f + flops_b) / throughput)
            x1, x2, weights = inputs(ir, case, dtype, device)
            kernel = make_kernel(ir, "triton", dtype, device, batch_shape=case.kernel_batch)
            kernels = kernel.kernels
            f1, f2, ls, w, scale = flat_arguments(kernel, case, x1, x2, dtype)
            grad = torch.randn(f1.size(0), case.n, case.m, dtype=dtype, device=device)
            with_x = case.candidates_grad
            forward, forward_backward = module_steps(kernel, x1, x2, weights)
            for text in args.configs.split(","):
                if time.time() - started > args.budget_s:
                    emit({"case": case.name, "skipped": "time budget"})
                    break
                config = parse_config(text)
                if case.symmetric and config.block_m != config.block_n:
                    continue
                kernel.blocks = config
                try:
                    t0 = time.time()
                    fwd_kernel = do_bench(lambda: kernels.forward(f1, f2, ls, w, scale, case.symmetric,
                                                                  config))
                    bwd_kernel = do_bench(lambda: kernels.backward(grad, f1, f2, ls, w, scale, case.symmetric,
                                                                   with_x, config))
                    fwd = do_bench(forward)
                    fb = do_bench(forward_backward)
                    emit({"case": case.name, "dtype": dtype_name, "config": text, "fwd_kernel_ms": fwd_kernel,
                          "bwd_kernel_ms": bwd_kernel, "module_fwd_ms": fwd, "module_fb_ms": fb,
                          "floor_f_ms": 1e3 * floor_f, "floor_fb_ms": 1e3 * floor_fb,
                          "x_floor_fb": fb / (1e3 * floor_fb), "compile_and_time_s": time.time() - t0,
                          "regs": {"forward": registers(kernels.module.kd_forward),
                                   "backward": registers(kernels.module.kd_backward)}})
                except Exception as err:  # noqa: BLE001 - a configuration that does not compile is a result
                    emit({"case": case.name, "config": text, "error": f"{type(err).__name__}: {err}"[:300]})
                torch.cuda.empty_cache()
            for peer in [p for p in args.peers.split(",") if p]:
                if time.time() - started > args.budget_s:
                    break
                try:
                    backend = "torch" if peer == "compile" else peer
                    other = make_kernel(ir, backend, dtype, device, batch_shape=case.kernel_batch)
                    if backend == "torch":
                        from dataclasses import replace
                        other.options = replace(other.options, tile_size=None)
                    pf, pfb = module_steps(other, x1, x2, weights)
                    t0 = time.time()
                    if peer == "compile":
                        pf, pfb = torch.compile(pf), torch.compile(pfb)
                    emit({"case": case.name, "dtype": dtype_name, "peer": peer, "module_fwd_ms": do_bench(pf),
                          "module_fb_ms": do_bench(pfb), "floor_fb_ms": 1e3 * floor_fb,
                          "seconds": time.time() - t0})
                except Exception as err:  # noqa: BLE001
                    emit({"case": case.name, "peer": peer, "error": f"{type(err).__name__}: {err}"[:300]})
                torch.cuda.empty_cache()
    print(f"# total {time.time() - started:.0f} s", flush=True)


if __name__ == "__main__":
    main()
