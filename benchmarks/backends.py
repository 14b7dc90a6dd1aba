"""Benchmark the kernel backends against ``reference`` (plain gpytorch) on one wide kernel.

Times forward and forward+backward (medians over repeats, backends interleaved in
one run so that machine load hits all of them alike) and the peak memory of one
forward+backward, for three workloads:

- ``train``: K(X, X) over the training points (the symmetric case of fitting),
  backward w.r.t. the hyperparameters;
- ``mll``: the whole exact marginal log likelihood of a SingleTaskGP (Cholesky
  included), backward w.r.t. all hyperparameters;
- ``acqf``: K(candidates, X) for a batch of q=2 candidates per restart, backward
  w.r.t. the candidates (what botorch's acquisition optimisation does).

Peak memory is the growth of the process's peak resident set during one forward+backward
after a warm-up step, in a fresh process per (backend, workload) (on CUDA:
``torch.cuda.max_memory_allocated`` growth). The measuring code is ``kerneldsl.bench``,
which ``kerneldsl bench`` also uses for any kernel source; this script keeps the fixed
benchmark kernels and its table.

Usage: ``python benchmarks/backends.py [--kernel hands-on|mnist-like] [--n 381] [--repeats 15]``
"""

from __future__ import annotations

import argparse
import gc
import multiprocessing
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

from kerneldsl.bench import WORKLOADS, read_status_kb, make_kernel, make_step, peak_memory_mib, time_cells  # noqa: E402,F401
from kerneldsl.compiler.ir import KernelIR, Product, Span, Sum, Term  # noqa: E402
from kerneldsl.compiler.backends.tiling import AUTO, plan_tiles, resolve_tiles  # noqa: E402
from kerneldsl.compiler.backends.auto import FUSED_CPU_THRESHOLD  # noqa: E402
from kerneldsl.compiler.backends.c_kernel import compiler_unavailable_reason  # noqa: E402


def mnist_like_ir() -> KernelIR:
    """A wide IR shaped like the hands-on MNIST kernel: 54 terms (53 matern52) over 26 features, 3 levels.

    ``regime = (core + singles) * categorical(optim) * wide(lr) * wide(momentum) * wide(wd)``,
    ``architecture = matern52(mean_width) * wide(widths)``, ``kernel = regime + architecture``,
    where ``wide(g)`` sums one matern52 per feature, one per pair and one joint over ``g``.
    """
    groups = {
        "core": ["log_epochs", "log_batch_size", "log_mean_weight_decay"],
        "optim": ["optimizer_adam", "optimizer_sgd", "nesterov_true", "nesterov_false"],
        "lr": ["log_max_lr", "log_initial_lr", "log_final_lr", "log_warmup_pct"],
        "momentum": ["log_momentum_max_damping", "log_momentum_min_damping", "log_beta1_max_damping",
                     "log_beta1_min_damping", "log_beta2_damping"],
        "wd": [f"rel_{layer}_weight_decay" for layer in ("conv1", "conv2", "conv3", "dense1", "dense2")],
        "mean_width": ["log_mean_width"],
        "widths": ["rel_conv1_channels", "rel_conv2_channels", "rel_conv3_channels", "rel_dense1_units"],
    }
    features = [f for cols in groups.values() for f in cols]
    col = {f: i for i, f in enumerate(features)}
    span = Span(1, 1, 1, 2)
    terms: list[Term] = []
    ls_names: list[str] = []

    def term(kind: str, names: list[str]) -> int:
        slots = tuple(range(len(ls_names), len(ls_names) + len(names)))
        label = f"{kind}({', '.join(names)})"
        ls_names.extend(f"{label}.lengthscale[{n}]" for n in names)
        terms.append(Term(kind, tuple(col[n] for n in names), slots, label, span))
        return len(terms) - 1

    def wide(names: list[str], pairs: bool) -> list[int]:
        ids = [term("matern52", [n]) for n in names]
        if pairs:
            ids += [term("matern52", [a, b]) for i, a in enumerate(names) for b in names[i + 1:]]
        return ids + [term("matern52", names)]

    sums_children = {
        "core": [term("matern52", groups["core"])] + [term("matern52", [n]) for n in groups["core"]],
        "lr": wide(groups["lr"], pairs=True),
        "momentum": wide(groups["momentum"], pairs=True),
        "wd": wide(groups["wd"], pairs=True),
        "widths": wide(groups["widths"], pairs=False),
    }
    optim = term("categorical", groups["optim"])
    mean_width = term("matern52", groups["mean_width"])

    nodes: list[Sum | Product] = []
    weight_names: list[str] = []
    sum_id = {}
    for name, children in sums_children.items():
        slots = tuple(range(len(weight_names), len(weight_names) + len(children)))
        weight_names.extend(f"{name}.weight[{terms[c].label}]" for c in children)
        nodes.append(Sum(tuple(children), slots, None, name, span))
        sum_id[name] = len(terms) + len(nodes) - 1
    level1 = tuple(sum_id.values())
    nodes.append(Product((sum_id["core"], optim, sum_id["lr"], sum_id["momentum"], sum_id["wd"]), "regime", span))
    nodes.append(Product((mean_width, sum_id["widths"]), "architecture", span))
    level2 = (len(terms) + len(nodes) - 2, len(terms) + len(nodes) - 1)
    weight_names.extend(["kernel.weight[regime]", "kernel.weight[architecture]"])
    nodes.append(Sum(level2, (len(weight_names) - 2, len(weight_names) - 1), None, "kernel", span))
    root = len(terms) + len(nodes) - 1
    return KernelIR(features=tuple(features), terms=tuple(terms), nodes=tuple(nodes),
                    levels=(level1, level2, (root,)), root=root, lengthscale_names=tuple(ls_names),
                    weight_names=tuple(weight_names), definitions=(("regime", level2[0]),
                                                                   ("architecture", level2[1])))


HANDS_ON_SOURCE = REPO_ROOT / "examples" / "variants" / "mnist_regime_optimizer.kernel"
"""The kernel of every hands-on MNIST table of ``benchmarks/RESULTS.md`` (26 features,
25 base terms): the example kernel until 2026-11-30, kept so that the tables can be rerun."""


def hands_on_ir() -> KernelIR:
    """The real hands-on MNIST kernel (``HANDS_ON_SOURCE``) on the features of ``examples/mnist_space.py``."""
    sys.path.insert(0, str(REPO_ROOT / "examples"))
    import mnist_space

    from kerneldsl.compiler.lower import compile_ir
    return compile_ir(HANDS_ON_SOURCE.read_text(), mnist_space.feature_chain.feature_names)


IRS = {"mnist-like": mnist_like_ir, "hands-on": hands_on_ir}


def time_backends(ir: KernelIR, backends: list[str], workload: str, n: int, repeats: int,
                  dtype: torch.dtype, device: str) -> dict[str, dict[str, float]]:
    """Median seconds of forward and forward+backward per backend, repeats interleaved."""
    cells = {b: dict(zip(("forward", "forward+backward"), make_step(ir, b, workload, n, dtype, device)))
             for b in backends}
    samples = time_cells(cells, repeats, device)
    return {b: {label: statistics.median(v) for label, v in t.items()} for b, t in samples.items()}


# --- Scaling mode (--scaling): the torch backend tiled and in one piece against reference as n grows ---------
#
# Every cell runs in fresh processes (spawned one after another, variants interleaved round by
# round) that build the kernel, take a warm-up step when n <= 2000, then time ``calls``
# forward+backward steps; peak memory is the growth of the process's peak resident set
# (VmHWM) over the whole run above the resident set once kernel and inputs are built, with
# glibc's default allocation behaviour (what a user's process sees; unlike the table above,
# no fixed mmap threshold, which would slow the tiled path's small tables down).

SCALING_VARIANTS = {
    "reference": ("reference", {}),
    "torch-one-piece": ("torch", {"tile_size": None}),
    "torch-tiled": ("torch", {"tile_threshold": 0}),
    "cpu": ("cpu", {}),
}
"""Column (``--scaling-variants``) -> (backend, KernelOptions fields)."""
SCALING_CALLS = {381: (3, 5), 1000: (2, 3), 2000: (2, 2), 4000: (1, 1), 8000: (1, 1)}
"""n -> (rounds, timed calls per round and variant); larger n: one round of one call."""


@dataclass(frozen=True)
class ScalingCell:
    """One measurement: a variant of the kernel on one workload, n points, ``folds`` batched models (0: one)."""

    kernel: str
    variant: str
    workload: str
    n: int
    folds: int
    threads: int
    calls: int

    @property
    def warmup(self) -> bool:
        return self.n <= 2000


def _scaling_step(ir: KernelIR, cell: ScalingCell):
    """A forward+backward closure: ``train`` (K(X, X) weighted sum, backward to hyperparameters) or
    ``mll`` (exact MLL of a SingleTaskGP, Cholesky included); ``folds`` > 0: that many leave-one-out
    folds of n points (n - 1 each) as one batched model with ``batch_shape=[folds]``."""
    backend, options = SCALING_VARIANTS[cell.variant]
    kernel = make_kernel(ir, backend, torch.float64, "cpu", batch_shape=(cell.folds,) if cell.folds else ())
    kernel.options = replace(kernel.options, **options)
    if backend == "cpu":
        kernel.kernels.library(torch.float64)  # compiled (or loaded from the cache) before any timing
    g = torch.Generator().manual_seed(1)
    X = torch.rand(cell.n, len(ir.features), generator=g, dtype=torch.float64)
    if cell.folds:
        keep = ~torch.eye(cell.n, dtype=torch.bool)[:cell.folds]  # fold i leaves point i out
        X = torch.stack([X[k] for k in keep])
    if cell.workload == "train":
        weights = torch.randn(X.shape[:-1] + X.shape[-2:-1], generator=g, dtype=torch.float64)
        return lambda: (kernel(X).to_dense() * weights).sum().backward()
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    Y = torch.sin(5 * X[..., :3].sum(-1, keepdim=True))
    model = SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=None).to(torch.float64)
    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    return lambda: (-mll(model(*model.train_inputs), model.train_targets).sum()).backward()


def _scaling_child(cell: ScalingCell, queue) -> None:
    torch.set_num_threads(cell.threads)
    step = _scaling_step(IRS[cell.kernel](), cell)
    gc.collect()
    base = read_status_kb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak resident set (VmHWM) to the current one
    if cell.warmup:
        step()
    times = []
    for _ in range(cell.calls):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    queue.put((times, (read_status_kb("VmHWM") - base) / 1024))


def _run_scaling_cell(cell: ScalingCell) -> tuple[list[float], float]:
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_scaling_child, args=(cell, queue))
    proc.start()
    result = queue.get(timeout=3600)
    proc.join()
    return result


def scaling(kernel: str, ns: list[int], threads: list[int], max_n: dict[str, int], mll_ns: list[int],
            folds: int, folds_n: int, names: list[str]) -> None:
    """Print the scaling table (markdown): median fwd+bwd ms and peak MiB per variant."""
    ir = IRS[kernel]()
    rows = [("train", n, 0) for n in ns] + [("mll", n, 0) for n in mll_ns]
    if folds:  # compare with `folds` times the unbatched rows at folds_n
        rows += [("train", folds_n, folds), ("mll", folds_n, folds)]
    tile_size, threshold = resolve_tiles(AUTO, AUTO, torch.device("cpu"))  # the default ("auto") on the CPU
    print(f"kernel {kernel}: {len(ir.features)} features, {ir.num_terms} terms; float64, CPU; forward+backward "
          f"ms (median of rounds x calls, variants interleaved by round) / peak MiB; load average "
          f"{os.getloadavg()[0]:.1f}; default (auto) tile_size={tile_size}, "
          f"tile_threshold={threshold}; OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    print("| workload | n | folds | threads | " + " | ".join(f"{v} ms / MiB" for v in names)
          + " | default path |")
    print("|---|---:|---:|---:|" + "---:|" * len(names) + "---|")
    for t in threads:
        for workload, n, f in rows:
            variants = [v for v in names if n <= max_n.get(v, n)]
            rounds, calls = SCALING_CALLS.get(n, (1, 1))
            samples: dict[str, list[float]] = {v: [] for v in variants}
            peaks: dict[str, list[float]] = {v: [] for v in variants}
            for _ in range(rounds):
                for v in variants:
                    times, peak = _run_scaling_cell(ScalingCell(kernel, v, workload, n, f, t, calls))
                    samples[v] += times
                    peaks[v].append(peak)
            cells = [f"{1e3 * statistics.median(samples[v]):.0f} / {max(peaks[v]):.0f}" if v in samples
                     else "not run" for v in names]
            path = _default_path(ir, n, f, tile_size, threshold)
            print(f"| {workload} | {n} | {f or '-'} | {t} | " + " | ".join(cells) + f" | {path} |", flush=True)
    print(f"(load average {os.getloadavg()[0]:.1f} at the end)")

def _default_path(ir: KernelIR, n: int, folds: int, tile_size: int, threshold: int) -> str:
    """What ``auto`` runs for this row on the CPU (the fused C kernels when a compiler works here)."""
    points = n - (1 if folds else 0)
    if (folds or 1) * points * points >= FUSED_CPU_THRESHOLD and compiler_unavailable_reason() is None:
        return "cpu"
    x = torch.empty(*((folds,) if folds else ()), points, len(ir.features), device="meta")
    return "torch-one-piece" if plan_tiles("upper", x, x, torch.Size(), tile_size, threshold) is None \
        else "torch-tiled"


# --- end of the scaling mode ---------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kernel", choices=sorted(IRS), default="hands-on")
    parser.add_argument("--backends", default="reference,torch", help="comma-separated; the first is the baseline")
    parser.add_argument("--workloads", default=",".join(WORKLOADS))
    parser.add_argument("--n", type=int, default=381, help="training points")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--dtype", choices=["float64", "float32"], default="float64")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement")
    parser.add_argument("--scaling", action="store_true", help="the scaling table instead (see scaling())")
    parser.add_argument("--scaling-n", default="381,1000,2000,4000,8000")
    parser.add_argument("--scaling-threads", default="1,2")
    parser.add_argument("--scaling-mll-n", default="381,2000", help="n of the exact-MLL rows")
    parser.add_argument("--scaling-folds", type=int, default=20, help="batched leave-one-out folds (0: none)")
    parser.add_argument("--scaling-variants", default=",".join(SCALING_VARIANTS),
                        help=f"comma-separated columns of the scaling table (of: {', '.join(SCALING_VARIANTS)})")
    parser.add_argument("--max-n-reference", type=int, default=2000, help="larger n does not fit in memory")
    parser.add_argument("--max-n-untiled", type=int, default=4000, help="larger n does not fit in memory")
    args = parser.parse_args()
    if args.scaling:
        scaling(args.kernel, _ints(args.scaling_n), _ints(args.scaling_threads),
                {"reference": args.max_n_reference, "torch-one-piece": args.max_n_untiled},
                _ints(args.scaling_mll_n), args.scaling_folds, 381, _variants(args.scaling_variants))
        return
    if args.threads:
        torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    backends = args.backends.split(",")
    ir = IRS[args.kernel]()
    print(f"kernel {args.kernel}: {len(ir.features)} features, {ir.num_terms} terms, {len(ir.nodes)} sums/products "
          f"in {len(ir.levels)} levels; n={args.n}, {args.dtype}, {args.device}, "
          f"{torch.get_num_threads()} threads, medians of {args.repeats} (load average "
          f"{os.getloadavg()[0]:.1f})")
    print("peak memory: growth of the peak resident set during one forward+backward, fresh process each")
    base = backends[0]
    header = f"{'workload':<8} {'backend':<10} {'forward ms':>11} {'fwd+bwd ms':>11} {'peak MiB':>9} " \
             f"{'speed-up fwd+bwd':>17} {'memory ratio':>13}"
    print(header)
    for workload in args.workloads.split(","):
        times = time_backends(ir, backends, workload, args.n, args.repeats, dtype, args.device)
        memory = {b: (float("nan") if args.no_memory else
                      peak_memory_mib(ir, b, [workload], args.n, dtype, args.device)[workload]) for b in backends}
        for b in backends:
            t = times[b]
            speedup = times[base]["forward+backward"] / t["forward+backward"]
            ratio = memory[b] / memory[base] if memory[base] else float("nan")
            print(f"{workload:<8} {b:<10} {1e3 * t['forward']:>11.2f} {1e3 * t['forward+backward']:>11.2f} "
                  f"{memory[b]:>9.1f} {speedup:>16.2f}x {ratio:>12.2f}x")


def _variants(text: str) -> list[str]:
    names = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in names if v not in SCALING_VARIANTS]
    if unknown:
        raise SystemExit(f"unknown --scaling-variants {unknown}; known: {', '.join(SCALING_VARIANTS)}")
    return names


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


if __name__ == "__main__":
    main()
