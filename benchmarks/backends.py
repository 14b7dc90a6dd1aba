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
import os
import statistics
import sys
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent

from kerneldsl.bench import WORKLOADS, make_kernel, make_step, peak_memory_mib, time_cells  # noqa: E402,F401
from kerneldsl.compiler.ir import KernelIR, Product, Span, Sum, Term  # noqa: E402


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


def hands_on_ir() -> KernelIR:
    """The real hands-on MNIST kernel of ``examples/mnist_space.py``."""
    sys.path.insert(0, str(REPO_ROOT / "examples"))
    import mnist_space

    from kerneldsl.compiler.lower import compile_ir
    return compile_ir(mnist_space.HANDS_ON_KERNEL, mnist_space.feature_chain.feature_names)


IRS = {"mnist-like": mnist_like_ir, "hands-on": hands_on_ir}


def time_backends(ir: KernelIR, backends: list[str], workload: str, n: int, repeats: int,
                  dtype: torch.dtype, device: str) -> dict[str, dict[str, float]]:
    """Median seconds of forward and forward+backward per backend, repeats interleaved."""
    cells = {b: dict(zip(("forward", "forward+backward"), make_step(ir, b, workload, n, dtype, device)))
             for b in backends}
    samples = time_cells(cells, repeats, device)
    return {b: {label: statistics.median(v) for label, v in t.items()} for b, t in samples.items()}


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
    args = parser.parse_args()
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


if __name__ == "__main__":
    main()
