"""The ``kerneldsl`` command line: ``explain`` a kernel source, list the ``features`` of a space module,
``cv`` kernels on sweep or journal data, ``fit`` one and draw what it learned, ``bench`` the backends."""

from __future__ import annotations

import argparse
import os
import sys
import warnings
from pathlib import Path

from . import __version__
from .compiler.errors import KernelError
from .compiler.explain import explain, infer_features


class InputError(Exception):
    """A file named on the command line cannot be read (exit status 2)."""


class OptionError(ValueError):
    """An option's value cannot be used (exit status 1, like every other bad input)."""


def _user_errors() -> tuple[type[Exception], ...]:
    """The errors that are the user's input, reported in one line (exit status 1) instead of a traceback."""
    from .bench import BenchError
    from .evaluation.cv import CrossValidationError
    from .space.parameters import SpaceError

    return KernelError, SpaceError, CrossValidationError, BenchError, OptionError


def _read_source(path: str, what: str) -> str:
    """The text of ``path``; an ``InputError`` saying why it cannot be read."""
    try:
        return Path(path).read_text()
    except OSError as err:
        raise InputError(f"cannot read {what}{path}: {err.strerror}") from None


def _names(text: str) -> list[str]:
    """Comma-separated names (``--features a,b,c``), blanks dropped."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _int_list(text: str, option: str, positive: bool = False) -> list[int]:
    """Comma-separated integers (``--n 40,80``); an ``OptionError`` naming ``option`` otherwise."""
    try:
        values = [int(part) for part in text.split(",")]
    except ValueError:
        values = []
    if not values or (positive and min(values) < 1):
        kind = "positive integers" if positive else "integers"
        raise OptionError(f"{option} takes comma-separated {kind}, got {text!r}")
    return values


def _groups(specs: list[str] | None) -> dict[str, list[str]]:
    """``--group NAME=a,b,c`` options as ``groups=``."""
    groups = {}
    for spec in specs or []:
        name, _, members = spec.partition("=")
        groups[name.strip()] = _names(members)
    return groups


def _features(args: argparse.Namespace) -> list[str] | None:
    """The columns named by ``--features`` or by the ``feature_chain`` of ``--space-module`` (None: neither given)."""
    from .space_module import load_space_module

    if getattr(args, "features", None) is not None:
        return _names(args.features)
    if getattr(args, "space_module", None) is not None:
        return list(load_space_module(args.space_module).feature_chain.feature_names)
    return None


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """A warning as one line on stderr, ``KernelWarning: ...`` (not the file and line of the code that warned)."""
    print(f"{category.__name__}: {message}", file=sys.stderr if file is None else file)


def _threads(threads: int) -> None:
    if threads:
        import torch

        torch.set_num_threads(threads)


def _explain(args: argparse.Namespace) -> int:
    source = _read_source(args.source, "")
    groups = _groups(args.group)
    features = _features(args)
    if features is None:
        features = infer_features(source, groups)
        print(f"# features inferred from the names the source uses (set them with --features or "
              f"--space-module): {', '.join(features) or 'none'}\n")
    print(explain(source, features, groups or None))
    return 0


def _features_command(args: argparse.Namespace) -> int:
    from .model import default_feature_chain
    from .space_module import load_space_module

    user = load_space_module(args.space_module, require_chain=False)
    if args.default or user.feature_chain is None:
        chain = default_feature_chain(user.space)
        what = ("the default feature chain of `space` (kerneldsl.Study's when given none"
                + ("" if args.default else "; the module has no feature_chain") + ")")
    else:
        chain, what = user.feature_chain, "feature_chain"
    origins = chain.origins()
    print(f"# {len(origins)} features of {args.space_module}: {what}; the names a kernel source refers to, in "
          f"column order (the built-in group `all` is every one)")
    width = max(len(o.feature) for o in origins)
    for o in origins:
        names = ", ".join(o.parameters) or "none"
        print(f"{o.feature:<{width}}  {o.formula}  ({o.transform}; parameter{'s' * (len(o.parameters) != 1)} {names})")
    return 0


def _target_data(args: argparse.Namespace):
    """``(space module, sweep, X, Y, keep, target name)`` of ``--data`` for ``--target``/``--output`` (log with ``--log``)."""
    from .evaluation.sweep import load_trials
    from .space_module import load_space_module

    user = load_space_module(args.space_module)
    sweep = load_trials(args.data, user.space)
    output = args.output or args.target
    X, Y, keep = sweep.target(output, log=args.log)
    return user, sweep, X, Y, keep, output


def _candidates(specs: list[str], sources: dict[str, str], feature_chain, space, backend: str, restarts: int):
    """One ``Candidate`` per ``--kernel``: a kernel file (its text in ``sources``), or the name of a baseline."""
    from .evaluation.compare import BASELINES, Candidate, baseline
    from .model import KernelGP

    out, names = [], set()
    for spec in specs:
        if spec in sources:
            name, factory = Path(spec).stem, KernelGP(sources[spec], feature_chain, backend=backend)
        else:
            name, factory = spec, baseline(spec, space, feature_chain, backend=backend)
        base, i = name, 2
        while name in names:
            name, i = f"{base}#{i}", i + 1
        names.add(name)
        out.append(Candidate(name, factory, 0 if spec in BASELINES else restarts))
    return out


def _cv(args: argparse.Namespace) -> int:
    from .evaluation import compare as cmp
    from .evaluation.cv import CrossValidationError, cross_validate

    _threads(args.threads)
    sizes = _int_list(args.n, "--n") if args.n else None
    if args.seeds < 1:
        raise CrossValidationError(f"--seeds must be at least 1, got {args.seeds}")
    sources = {spec: _read_source(spec, "kernel file ") for spec in args.kernel
               if spec not in cmp.BASELINES or Path(spec).exists()}
    user, sweep, X, Y, keep, output = _target_data(args)
    candidates = _candidates(args.kernel, sources, user.feature_chain, user.space, args.backend, args.restarts)
    sizes = cmp.check_sizes(sizes or [len(X)], len(X))
    if args.backend == "reference":
        from .bench import warn_reference_memory

        for c in candidates:
            if getattr(c.factory, "ir", None) is not None:  # a kernel-language model: one batch of folds
                n = max(sizes)
                folds = min(args.held_out or n, args.chunk_size or n)
                warn_reference_memory(c.factory.ir, n - 1, folds, what=f"{c.name}'s batched fit of {folds} folds")
    seeds = range(args.seed, args.seed + args.seeds)
    target = f"log({output})" if args.log else output
    print(f"{args.data}: {len(sweep)} trials, {int(keep.sum())} with {output!r}; target {target}; "
          f"leave-one-out on n = {', '.join(map(str, sizes))}, seeds {seeds.start}..{seeds.stop - 1}"
          + (f", {args.held_out} random folds per cell" if args.held_out else ", every fold"))
    if args.per_fold:
        if len(sizes) != 1 or args.seeds != 1:
            raise CrossValidationError("--per-fold needs one --n and one seed")
        rows = keep.nonzero().squeeze(-1).tolist()
        for c in candidates:
            n = sizes[0]
            result = cross_validate(c.factory, X, Y, n=n, seed=args.seed, chunk_size=args.chunk_size,
                                    held_out=range(min(args.held_out, n)) if args.held_out else None,
                                    restarts=c.restarts)
            print(f"{c.name}:\n{'trial':>7} {'observed':>10} {'mean':>10} {'std':>10} {'log dens':>10} {'in 95%':>7}")
            for f in result.folds():
                print(f"{sweep.trials[rows[f.index]]!s:>7} {f.observed:>10.4f} {f.mean:>10.4f} {f.std:>10.4f} "
                      f"{f.log_density:>10.4f} {'yes' if f.covered95 else 'no':>7}")
    records = cmp.compare(candidates, X, Y, sizes, seeds, held_out=args.held_out, chunk_size=args.chunk_size,
                          raw=args.raw or None, resume=args.resume)
    names = [c.name for c in candidates]
    print(cmp.report(records, names, sizes, args.plot or None, f"Leave-one-out cross-validation, target {target}"))
    if args.plot:
        print(f"plot: {args.plot}")
    return 0


def _fit(args: argparse.Namespace) -> int:
    import torch

    from .evaluation.cv import CrossValidationError
    from .evaluation.structure import plot_structure
    from .fitting import fit_map
    from .model import KernelGP

    _threads(args.threads)
    source = _read_source(args.kernel, "kernel file ")
    user, sweep, X, Y, keep, output = _target_data(args)
    if len(X) < 2:
        raise CrossValidationError(f"{args.data}: {len(X)} trials with {output!r}; a fit needs at least 2")
    model = KernelGP(source, user.feature_chain, backend=args.backend)(X, Y)
    torch.manual_seed(args.seed)
    fit_map(model, restarts=args.restarts)
    target = f"log({output})" if args.log else output
    print(f"{args.data}: fitted on {len(X)} trials with {output!r}; target {target} (standardised)")
    print(model.covar_module.describe())
    print(f"noise variance (standardised target): {model.likelihood.noise.item():.4g}")
    if args.plot:
        plot_structure(model.covar_module, args.plot)
        print(f"plot: {args.plot}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    import json

    from .bench import bench
    from .compiler.lower import compile_ir

    source = _read_source(args.source, "kernel file ")
    _threads(args.threads)
    features = _features(args)
    batches = _int_list(args.batch, "--batch", positive=True)
    result = bench(compile_ir(source, features), kernel=args.source, backends=_names(args.backends),
                   batches=batches, n=args.n, repeats=args.repeats, dtype=args.dtype, device=args.device,
                   memory=not args.no_memory, progress=True)
    print(json.dumps(result.to_json(), indent=2) if args.json else result.table())
    return 0


DESCRIPTION = """A kernel language for hands-on Bayesian optimisation, on the command line:
explain a kernel source, list the features of a search space, compare kernels by
cross-validation on past trials, fit one and draw what it learned, and time it on
every backend."""

TOP_EPILOG = """Run 'kerneldsl COMMAND --help' for a command's options and examples.
Examples (in a checkout of the repository):
  kerneldsl features --space-module examples/mnist_space.py
  kerneldsl explain examples/mnist_hands_on.kernel --space-module examples/mnist_space.py
"""

SPACE_MODULE_HELP = """The space module is a Python file (or importable module name) defining
  space          a kerneldsl.Space the sweep's configs are validated against, and
  feature_chain  a kerneldsl.Chain turning search points into the named features
                 that the kernel source refers to (kerneldsl features lists them).
It is required: it describes your sweep (a checkout of the repository has the
MNIST sweep's as examples/mnist_space.py).
The data are a sweep file, JSON lines {"trial", "config", "result"} (--target cost reads
its "cost", else "training_time"), or a journal of kd.tick_tock (loss of the trials that
finished "ok", cost of every trial). Trials without the output are left out."""

CV_EPILOG = SPACE_MODULE_HELP + """ Metrics are
in the target's space (log(output) with --log): the predictive of each held-out trial is
Gaussian and includes observation noise.
Progress: a bar on a terminal; in a log file (stderr not a terminal) one line per
finished cell.
Example:
  kerneldsl cv --data ../shared/data/mnist1_sweep.jsonl --log --n 40,80 --seeds 5 \\
      --kernel examples/mnist_hands_on.kernel --kernel botorch_default --plot cv.png \\
      --space-module examples/mnist_space.py
"""

FIT_EPILOG = SPACE_MODULE_HELP + """
The fit is the MAP of the kernel's hyperparameters (with --restarts R, the best of R + 1
fits from draws of the priors) on the standardised target.
Example:
  kerneldsl fit --data ../shared/data/mnist1_sweep.jsonl --kernel examples/mnist_hands_on.kernel \\
      --space-module examples/mnist_space.py --log --plot structure.png
"""

BENCH_EPILOG = """Times, on random inputs (features uniform in [0, 1]) and random hyperparameters:
  forward   K(X, X) over N points, no gradient
  fwd+bwd   K(X, X) and its backward to the hyperparameters
  MLL       the exact marginal log likelihood of a botorch SingleTaskGP and its
            backward (one step of fitting, Cholesky included)
for each backend and kernel batch size B (batch_shape [B], inputs [B, N, d]), as medians
of interleaved repeats (CUDA events on a GPU), with peak memory per cell measured in a
fresh process, and speed-ups against the first backend (reference by default).
Backends that cannot run here (triton without a CUDA device) are listed as skipped.
Progress: a bar on a terminal; in a log file (stderr not a terminal) one line per
finished step.
Example:
  kerneldsl bench examples/mnist_hands_on.kernel --space-module examples/mnist_space.py --threads 1
"""

EXPLAIN_EPILOG = """The features (input columns, in order) come from --features, or from the
feature_chain of --space-module; with neither, they are inferred from the names
the source uses (every name that is not a definition or a group, in order of
first use), and the output says so. The built-in group `all` (every feature)
needs them named.
Examples:
  kerneldsl explain examples/mnist_hands_on.kernel --space-module examples/mnist_space.py
  kerneldsl explain my.kernel --features log_lr,log_wd,momentum --group lr=log_lr,log_wd
"""

FEATURES_EPILOG = """Each line: the feature, the transform that makes it, how, and the search
parameters it depends on. Without a feature_chain in the module (or with --default),
the default chain of its space: every numeric search coordinate as it is (log_<name>
for parameters searched in log space) and every choice one-hot (<choice>_<value>).
Example:
  kerneldsl features --space-module examples/mnist_space.py
"""


def _data_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, help="sweep file (JSON lines) or kd.tick_tock / study journal")
    p.add_argument("--space-module", required=True, metavar="FILE_OR_MODULE",
                   help="module defining `space` and `feature_chain` of the data (e.g. examples/mnist_space.py "
                        "in a checkout of the repository)")
    p.add_argument("--target", choices=("loss", "cost"), default="loss", help="output to predict (default: %(default)s)")
    p.add_argument("--output", default="", help="a sweep file's result key to predict instead of --target")
    p.add_argument("--log", action="store_true", help="predict the natural log of the output (e.g. log loss)")
    p.add_argument("--restarts", type=int, default=0,
                   help="refit each kernel GP from this many draws from its priors, keep the best MAP (default: 0)")
    p.add_argument("--backend", default="auto",
                   help="kernel backend (default: %(default)s, which takes the fused `cpu` kernels from 2**16 kernel "
                        "entries when a C compiler works; `cpu` fits faster at every n, after its first compile)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")


def _command(sub, name: str, summary: str, description: str, epilog: str) -> argparse.ArgumentParser:
    """A sub-command with its one-line summary (in ``kerneldsl --help``), description and epilog."""
    return sub.add_parser(name, help=summary, description=description, epilog=epilog,
                          formatter_class=argparse.RawDescriptionHelpFormatter)


def build_parser() -> argparse.ArgumentParser:
    """The ``kerneldsl`` argument parser, every sub-command included."""
    parser = argparse.ArgumentParser(prog="kerneldsl", description=DESCRIPTION, epilog=TOP_EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    p = _command(sub, "explain", "print the parsed kernel, its intermediate form, or its error",
                 "Parse and compile a kernel-language source; print the program as parsed and its intermediate "
                 "form (base terms, levels of sums and products, parameter count), or the error with its place.",
                 EXPLAIN_EPILOG)
    p.add_argument("source", help="kernel-language source file")
    columns = p.add_mutually_exclusive_group()
    columns.add_argument("--features", help="comma-separated feature names (input columns, in order)")
    columns.add_argument("--space-module", metavar="FILE_OR_MODULE",
                         help="module defining `feature_chain`, whose feature names are the columns")
    p.add_argument("--group", action="append", metavar="NAME=a,b,c",
                   help="a group of features or other groups (repeatable)")
    p.set_defaults(run=_explain)

    p = _command(sub, "features", "list the features of a space module, with the parameters each comes from",
                 "List the features of a space module's feature chain: the names a kernel source refers to, "
                 "one per line, with the transform and the search parameters each comes from.", FEATURES_EPILOG)
    p.add_argument("--space-module", required=True, metavar="FILE_OR_MODULE",
                   help="module defining `space` (and usually `feature_chain`)")
    p.add_argument("--default", action="store_true",
                   help="list the default feature chain of `space` even when the module has a feature_chain")
    p.set_defaults(run=_features_command)

    p = _command(sub, "cv", "compare kernels by leave-one-out cross-validation on sweep or journal data",
                 "Leave-one-out cross-validation of SingleTaskGPs with kernel-language kernels and named "
                 "baselines, on the same folds of the same subsets, paired by seed (one batched model over the "
                 "folds, refitted per fold).", CV_EPILOG)
    _data_arguments(p)
    p.add_argument("--kernel", required=True, action="append", metavar="FILE_OR_BASELINE",
                   help="kernel-language source file, or a baseline: botorch_default, botorch_mixed, plain_matern "
                        "(repeatable; the first is the reference of the paired table)")
    p.add_argument("--n", default="", help="comma-separated subset sizes (default: all trials with the target)")
    p.add_argument("--seeds", type=int, default=1, help="number of shuffle seeds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="first shuffle seed (default: %(default)s)")
    p.add_argument("--held-out", type=int, default=0, metavar="K",
                   help="score only K folds per cell (random, as the data are shuffled) instead of all n")
    p.add_argument("--chunk-size", type=int, default=None, metavar="K",
                   help="folds per batched model (default: all at once; smaller bounds memory)")
    p.add_argument("--plot", default="", help="PNG of every metric against n")
    p.add_argument("--raw", default="", help="append every (kernel, n, seed) result to this JSON-lines file")
    p.add_argument("--resume", action="store_true", help="reuse the cells already in --raw")
    p.add_argument("--per-fold", action="store_true", help="also print every fold's prediction (one n, one seed)")
    p.set_defaults(run=_cv)

    p = _command(sub, "fit", "fit one GP on all the data, print the kernel and draw its learned structure",
                 "Fit one SingleTaskGP with a kernel-language kernel on every trial of the data that has the "
                 "target; print the kernel with its learned sum weights and lengthscales, and with --plot draw "
                 "its tree and lengthscales.", FIT_EPILOG)
    _data_arguments(p)
    p.add_argument("--kernel", required=True, help="kernel-language source file")
    p.add_argument("--seed", type=int, default=0, help="seed of the restarts (default: %(default)s)")
    p.add_argument("--plot", default="", help="PNG of the kernel's tree, sum weights and lengthscales")
    p.set_defaults(run=_fit)

    p = _command(sub, "bench", "time a kernel's forward, backward and exact MLL on every available backend",
                 "Benchmark a kernel-language kernel on the backends available on this machine.", BENCH_EPILOG)
    p.add_argument("source", help="kernel-language source file")
    names = p.add_mutually_exclusive_group(required=True)
    names.add_argument("--features", help="comma-separated feature names (input columns, in order)")
    names.add_argument("--space-module", metavar="FILE_OR_MODULE",
                       help="module defining `space` and `feature_chain`; its feature names are the columns")
    p.add_argument("--n", type=int, default=381, help="points in X (default: %(default)s)")
    p.add_argument("--batch", default="1,20", metavar="B,B,...",
                   help="kernel batch sizes, 1 = unbatched (default: %(default)s)")
    p.add_argument("--backends", default="reference,torch,cpu,triton",
                   help="comma-separated; the first is the speed-up baseline (default: %(default)s)")
    p.add_argument("--dtype", default="float64", help="float64 or float32 (default: %(default)s)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto: cuda when present (default: auto)")
    p.add_argument("--repeats", type=int, default=10, help="timed repeats per measurement (default: %(default)s)")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory measurement (one process per cell)")
    p.add_argument("--json", action="store_true", help="print the results as JSON (with every timed sample)")
    p.set_defaults(run=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``kerneldsl`` with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        with warnings.catch_warnings():
            warnings.showwarning = _show_warning
            return args.run(args)
    except BrokenPipeError:  # e.g. `kerneldsl features ... | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except InputError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:
        if not isinstance(err, _user_errors()):
            raise
        print(f"{type(err).__name__}: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
