"""The ``kerneldsl`` command line: ``explain`` a kernel source, ``cv`` a kernel on sweep data."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import __version__
from .compiler.errors import KernelError
from .compiler.explain import explain, infer_features


def _read_source(path: str, what: str) -> str | None:
    """The text of ``path``, or None after printing why it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as err:
        print(f"error: cannot read {what}{path}: {err.strerror}", file=sys.stderr)
        return None


def _explain(args: argparse.Namespace) -> int:
    from .space.parameters import SpaceError
    from .space_module import load_space_module

    source = _read_source(args.source, "")
    if source is None:
        return 2
    groups = {}
    for spec in args.group or []:
        name, _, members = spec.partition("=")
        groups[name.strip()] = [m.strip() for m in members.split(",") if m.strip()]
    try:
        if args.features is not None:
            features = [f.strip() for f in args.features.split(",") if f.strip()]
        elif args.space_module is not None:
            features = list(load_space_module(args.space_module).feature_chain.feature_names)
        else:
            features = infer_features(source, groups)
            print(f"# features inferred from the names the source uses (set them with --features or "
                  f"--space-module): {', '.join(features) or 'none'}\n")
        print(explain(source, features, groups or None))
    except (KernelError, SpaceError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    return 0


def _cv(args: argparse.Namespace) -> int:
    from .evaluation.cv import CrossValidationError, cross_validate, kernel_model
    from .space.parameters import SpaceError
    from .space_module import load_space_module
    from .evaluation.sweep import load_sweep

    source = _read_source(args.kernel, "kernel file ")
    if source is None:
        return 2
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        user = load_space_module(args.space_module)
        sweep = load_sweep(args.data, user.space, outputs=(args.output,))
        X, Y, keep = sweep.target(args.output, log=args.log)
        n = min(args.n, len(X)) if args.n else len(X)
        held_out = range(min(args.held_out, n)) if args.held_out else None
        factory = kernel_model(source, user.feature_chain, backend=args.backend)
        result = cross_validate(factory, X, Y, n=n, seed=args.seed, chunk_size=args.chunk_size, held_out=held_out)
    except (KernelError, SpaceError, CrossValidationError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    target = f"log({args.output})" if args.log else args.output
    m = result.metrics()
    print(f"{args.data}: {len(sweep)} trials, {int(keep.sum())} with {args.output!r}; "
          f"leave-one-out on {n} (seed {args.seed}), {m.folds} folds; target {target}")
    if args.per_fold:
        rows = keep.nonzero().squeeze(-1).tolist()
        print(f"{'trial':>7} {'observed':>10} {'mean':>10} {'std':>10} {'log dens':>10} {'in 95%':>7}")
        for f in result.folds():
            print(f"{sweep.trials[rows[f.index]]!s:>7} {f.observed:>10.4f} {f.mean:>10.4f} {f.std:>10.4f} {f.log_density:>10.4f} "
                  f"{'yes' if f.covered95 else 'no':>7}")
    print("| metric | value |\n|---|---|")
    rows = [("mean log predictive density", m.mlpd), ("mean predictive density", m.mean_density),
            ("RMSE of predictive mean", m.rmse), ("MAE of predictive mean", m.mae),
            ("95% interval coverage", m.coverage95), ("fit seconds", m.fit_seconds)]
    for name, value in rows:
        print(f"| {name} | {value:.4f} |")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from .bench import BenchError, bench
    from .compiler.lower import compile_ir
    from .space.parameters import SpaceError
    from .space_module import load_space_module

    source = _read_source(args.source, "kernel file ")
    if source is None:
        return 2
    try:
        import torch

        if args.threads:
            torch.set_num_threads(args.threads)
        if args.features is not None:
            features = [f.strip() for f in args.features.split(",") if f.strip()]
        else:
            features = list(load_space_module(args.space_module).feature_chain.feature_names)
        batches = _positive_ints(args.batch, "--batch")
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        result = bench(compile_ir(source, features), kernel=args.source, backends=backends, batches=batches,
                       n=args.n, repeats=args.repeats, dtype=args.dtype, device=args.device,
                       memory=not args.no_memory)
    except (KernelError, SpaceError, BenchError) as err:
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1
    print(json.dumps(result.to_json(), indent=2) if args.json else result.table())
    return 0


def _positive_ints(text: str, option: str) -> list[int]:
    from .bench import BenchError

    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise BenchError(f"{option} takes comma-separated positive integers, got {text!r}")
    return values


BENCH_EPILOG = """Times, on random inputs (features uniform in [0, 1]) and random hyperparameters:
  forward   K(X, X) over N points, no gradient
  fwd+bwd   K(X, X) and its backward to the hyperparameters
  MLL       the exact marginal log likelihood of a botorch SingleTaskGP and its
            backward (one step of fitting, Cholesky included)
for each backend and kernel batch size B (batch_shape [B], inputs [B, N, d]), as medians
of interleaved repeats (CUDA events on a GPU), with peak memory per cell measured in a
fresh process, and speed-ups against the first backend (reference by default).
Backends that cannot run here (triton without a CUDA device) are listed as skipped.
Example:
  kerneldsl bench examples/mnist_hands_on.kernel --space-module examples/mnist_space.py --threads 1
"""


CV_EPILOG = """The space module is a Python file (or importable module name) defining
  space          a kerneldsl.Space the sweep's configs are validated against, and
  feature_chain  a kerneldsl.Chain turning search points into the named features
                 that the kernel source refers to.
It is required: it describes your sweep (a checkout of the repository has the
MNIST sweep's as examples/mnist_space.py).
The sweep file is JSON lines {"trial", "config", "result"}; trials without the
output are left out. Metrics are in the target's space (log(output) with --log):
the predictive of each held-out trial is Gaussian and includes observation noise.
Example:
  kerneldsl cv --data ../shared/data/mnist1_sweep.jsonl --kernel examples/mnist_hands_on.kernel \\
      --space-module examples/mnist_space.py --log --n 40
"""

EXPLAIN_EPILOG = """The features (input columns, in order) come from --features, or from the
feature_chain of --space-module; with neither, they are inferred from the names
the source uses (every name that is not a definition or a group, in order of
first use), and the output says so.
Examples:
  kerneldsl explain examples/mnist_hands_on.kernel --space-module examples/mnist_space.py
  kerneldsl explain my.kernel --features log_lr,log_wd,momentum --group lr=log_lr,log_wd
"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kerneldsl", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("explain", help="print the parsed kernel, its intermediate form, or its error",
                       epilog=EXPLAIN_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="kernel-language source file")
    columns = p.add_mutually_exclusive_group()
    columns.add_argument("--features", help="comma-separated feature names (input columns, in order)")
    columns.add_argument("--space-module", metavar="FILE_OR_MODULE",
                         help="module defining `feature_chain`, whose feature names are the columns")
    p.add_argument("--group", action="append", metavar="NAME=a,b,c",
                   help="a group of features or other groups (repeatable)")
    p.set_defaults(run=_explain)

    p = sub.add_parser("cv", help="leave-one-out cross-validation of a kernel on sweep data",
                       description="Leave-one-out cross-validation of a SingleTaskGP with a kernel-language kernel "
                                   "(one batched model over the folds, refitted per fold).",
                       epilog=CV_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="sweep file (JSON lines)")
    p.add_argument("--kernel", required=True, help="kernel-language source file")
    p.add_argument("--space-module", required=True, metavar="FILE_OR_MODULE",
                   help="module defining `space` and `feature_chain` of the sweep (e.g. examples/mnist_space.py "
                        "in a checkout of the repository)")
    p.add_argument("--output", default="loss", help="result key to predict (default: %(default)s)")
    p.add_argument("--log", action="store_true", help="predict the natural log of the output (e.g. log loss)")
    p.add_argument("--n", type=int, default=0, help="use the first N trials after a seeded shuffle (default: all)")
    p.add_argument("--seed", type=int, default=0, help="shuffle seed (default: %(default)s)")
    p.add_argument("--held-out", type=int, default=0, metavar="K",
                   help="evaluate only K folds (random, as the data are shuffled) instead of all N")
    p.add_argument("--chunk-size", type=int, default=None, metavar="K",
                   help="folds per batched model (default: all at once; smaller bounds memory)")
    p.add_argument("--backend", default="torch", help="kernel backend (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--per-fold", action="store_true", help="also print every fold's prediction")
    p.set_defaults(run=_cv)

    p = sub.add_parser("bench", help="time a kernel's forward, backward and exact MLL on every available backend",
                       description="Benchmark a kernel-language kernel on the backends available on this machine.",
                       epilog=BENCH_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("source", help="kernel-language source file")
    names = p.add_mutually_exclusive_group(required=True)
    names.add_argument("--features", help="comma-separated feature names (input columns, in order)")
    names.add_argument("--space-module", metavar="FILE_OR_MODULE",
                       help="module defining `space` and `feature_chain`; its feature names are the columns")
    p.add_argument("--n", type=int, default=381, help="points in X (default: %(default)s)")
    p.add_argument("--batch", default="1,20", metavar="B,B,...",
                   help="kernel batch sizes, 1 = unbatched (default: %(default)s)")
    p.add_argument("--backends", default="reference,torch,triton",
                   help="comma-separated; the first is the speed-up baseline (default: %(default)s)")
    p.add_argument("--dtype", default="float64", help="float64 or float32 (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto: cuda when present (default: auto)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per measurement (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (one process per cell)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (with every timed sample)")
    p.set_defaults(run=_bench)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
