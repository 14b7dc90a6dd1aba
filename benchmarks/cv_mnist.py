"""Does hands-on pay? Leave-one-out cross-validation of GP models on the real MNIST sweep.

Models (target: log of the test loss; trials without a loss are left out):

* ``optimizer_shared`` SingleTaskGP with ``HANDS_ON_KERNEL`` of ``examples/mnist_space.py`` (the example
                      kernel) on its features;
* ``hands_on``        the same with the example kernel until 2026-11-30
                      (``examples/variants/mnist_regime_optimizer.kernel``);
* ``botorch_default`` SingleTaskGP with botorch's default kernel and priors on the search
                      coordinates, normalised to the unit cube by the space's bounds;
* ``botorch_mixed``   MixedSingleTaskGP with the choices (optimizer, nesterov) as ``cat_dims``,
                      the other coordinates normalised the same way;
* ``plain_matern``    SingleTaskGP with one ``matern52`` over all hands-on features (no structure);
* the variants of the model iteration (``--models hands_on_ln_term,...``, see ``_variants``: lengthscale,
  output-scale and noise priors, restarts, ``examples/variants/*.kernel``), or any ``.kernel`` file.

The comparison itself (cells, paired tables with win / tie / loss, the plot) is
``kerneldsl.evaluation.compare``, the same code as ``kerneldsl cv``; this script adds the
MNIST variants and ``--report-only``.

For every ``n`` and seed the same shuffled subset of ``n`` trials is cross-validated by
every model (``kerneldsl.evaluation.cross_validate``): each fold refits the model on ``n - 1``
trials and predicts the held-out one. ``--held-out K`` evaluates only ``K`` of the ``n``
folds (a random subset, an unbiased estimate of the leave-one-out mean) to save time.
Prints a markdown table (mean and standard error over seeds), writes a plot of every
metric against ``n``, and with ``--json`` prints a JSON list of the means as its last line.

    python benchmarks/cv_mnist.py --data ../shared/data/mnist1_sweep.jsonl --n 20,40,80,120,160 --seeds 5

Runs single-threaded by default (``--threads``): on a small shared machine, torch's and
OpenBLAS's thread pools oversubscribe the cores and make fitting many times slower.
``--raw FILE`` appends each (model, n, seed) result as a JSON line as soon as it is done,
and ``--resume`` skips cells already in that file, so a long grid can run in pieces
(e.g. a slow model with fewer seeds, or fewer ``--held-out`` folds at large ``n``);
``--report-only`` then builds the table, plot and JSON from the grid's (model, n, seed)
cells found in that file, whatever their number of folds (the most folds if several),
computing nothing; the table's ``folds`` and ``seeds`` columns say what each row holds.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_DATA = REPO_ROOT.parent / "shared" / "data" / "mnist1_sweep.jsonl"
DEFAULT_PLOT = REPO_ROOT / "benchmarks" / "cv_mnist.png"
DEFAULT_MODELS = ("optimizer_shared", "hands_on", "botorch_default", "botorch_mixed", "plain_matern")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for the models and options.")
    parser.add_argument("--data", default=str(DEFAULT_DATA), help="sweep file (default: %(default)s)")
    parser.add_argument("--n", default="20,40,80,120,160", help="comma-separated subset sizes (default: %(default)s)")
    parser.add_argument("--seeds", type=int, default=5, help="number of shuffle seeds, 0..S-1 (default: %(default)s)")
    parser.add_argument("--models", default=",".join(DEFAULT_MODELS),
                        help="comma-separated models, the first is the paired tables' reference (default: %(default)s; "
                             "also the variants of the model iteration, listed by an unknown name, or .kernel files)")
    parser.add_argument("--held-out", type=int, default=0, metavar="K",
                        help="evaluate K random folds per cell instead of all n (default: all)")
    parser.add_argument("--chunk-size", type=int, default=None, metavar="K",
                        help="folds per batched model (default: all folds in one model)")
    parser.add_argument("--backend", default="auto",
                        help="kernel backend of the kernel-language models (default: %(default)s; the fused `cpu` "
                             "kernels are faster at every n when a C compiler works, `auto` uses them from 2**16 "
                             "kernel entries)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads for torch and BLAS (default: %(default)s)")
    parser.add_argument("--plot", default=str(DEFAULT_PLOT), help="PNG to write (default: %(default)s); '' for none")
    parser.add_argument("--raw", default="", help="append per-(model, n, seed) results to this JSON-lines file")
    parser.add_argument("--resume", action="store_true", help="reuse the cells already in --raw")
    parser.add_argument("--report-only", action="store_true",
                        help="report the grid's cells found in --raw without computing any")
    parser.add_argument("--json", action="store_true", help="print the means as a JSON list on the last line")
    args = parser.parse_args(argv)
    try:
        args.n = [int(v) for v in args.n.split(",") if v.strip()]
    except ValueError:
        parser.error(f"--n must be comma-separated integers, got {args.n!r}")
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if not args.models:
        parser.error("--models: give at least one model")
    if args.seeds < 1:
        parser.error("need --seeds >= 1")
    if (args.resume or args.report_only) and not args.raw:
        parser.error("--resume and --report-only need --raw FILE")
    return args


def limit_threads(threads: int) -> None:
    """Cap torch's and the BLAS libraries' thread pools; must run before numpy or torch are imported."""
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)


def _variant_source(name: str) -> str:
    return (REPO_ROOT / "examples" / "variants" / f"{name}.kernel").read_text()


def _variants(mnist) -> dict:
    """Hands-on variants (priors, restarts, kernels) by name: ``name -> (source, options, restarts, what)``.

    ``options`` go to ``KernelGP``; ``feature_chain`` among them replaces the example's feature chain.
    """
    from gpytorch.priors import GammaPrior, LogNormalPrior

    from kerneldsl.compiler.priors import DimensionScaledLogNormal
    from kerneldsl.model import default_feature_chain

    ln_term = {"lengthscale_prior": DimensionScaledLogNormal("term")}
    raw = {"feature_chain": default_feature_chain(mnist.space)}
    previous = _variant_source("mnist_regime_optimizer")  # the example until 2026-11-30
    raw_source = _variant_source("mnist_raw_hands_on")
    plain = "kernel = matern52(all)"
    every_feature = {"groups": {"all": mnist.feature_chain.feature_names}}
    every_coordinate = {**raw, "groups": {"all": raw["feature_chain"].feature_names}}
    return {
        "hands_on": (previous, {}, 0, "the previous example kernel (optimizer in the regime), default priors"),
        "hands_on_gamma36": (previous, {"lengthscale_prior": GammaPrior(3.0, 6.0)}, 0,
                             "Gamma(3, 6) on every lengthscale (the default, given explicitly)"),
        "hands_on_ln_term": (previous, ln_term, 0, "dimension-scaled LogNormal, d = the term's features"),
        "hands_on_ln_product": (previous, {"lengthscale_prior": DimensionScaledLogNormal("product")}, 0,
                                "dimension-scaled LogNormal, d = features of the term and its product"),
        "hands_on_os1": (previous, {"outputscale_prior": LogNormalPrior(0.0, 1.0)}, 0,
                         "Gamma(3, 6) lengthscales + LogNormal(0, 1) output scale (standardised outcome)"),
        "hands_on_noise": (previous, {"noise_prior": GammaPrior(1.1, 0.05)}, 0,
                           "default priors + Gamma(1.1, 0.05) noise (botorch's old default)"),
        "hands_on_ln_term_os1": (previous, {**ln_term, "outputscale_prior": LogNormalPrior(0.0, 1.0)}, 0,
                                 "ln_term + LogNormal(0, 1) output scale (standardised outcome)"),
        "hands_on_ln_term_noise": (previous, {**ln_term, "noise_prior": GammaPrior(1.1, 0.05)}, 0,
                                   "ln_term + Gamma(1.1, 0.05) noise (botorch's old default)"),
        "catchall_ln_term": (_variant_source("mnist_catchall"), ln_term, 0,
                             "the example plus a catch-all matern52 over all features (own weight), ln_term"),
        "mixed_like_ln_term": (_variant_source("mnist_mixed_like"), ln_term,
                               0, "MixedSingleTaskGP's structure on the features (examples/variants), ln_term"),
        "raw_hands_on": (raw_source, raw, 0, "the example's structure on the 22 raw search coordinates"),
        "raw_hands_on_ln_term": (raw_source, {**raw, **ln_term}, 0, "raw_hands_on with ln_term"),
        "plain_matern_ln_term": (plain, {**every_feature, **ln_term}, 0,
                                 "plain_matern (one matern52 over the 26 features) with ln_term (d = 26)"),
        "raw_plain_matern_ln_term": (plain, {**every_coordinate, **ln_term}, 0,
                                     "one matern52 over the raw coordinates (choices one-hot), ln_term (d = 24)"),
        "raw_mixed_ln_term": (_variant_source("mnist_raw_mixed"), {**raw, **ln_term}, 0,
                              "MixedSingleTaskGP in the language (examples/variants), raw coordinates, ln_term"),
        "mixed_two_scales_ln_term": (_variant_source("mnist_mixed_two_scales"), ln_term, 0,
                                     "the mixed GP's structure with two independent Materns on the features, ln_term"),
        "optimizer_shared": (mnist.HANDS_ON_KERNEL, {}, 0,
                             "the example kernel since 2026-11-30 (the optimizer modulates the whole model)"),
        "optimizer_shared_ln_term": (mnist.HANDS_ON_KERNEL, ln_term, 0, "optimizer_shared, ln_term"),
        "optimizer_offset": (_variant_source("mnist_optimizer_offset"), {}, 0,
                             "optimizer_shared plus an offset per optimizer (examples/variants)"),
        "optimizer_shared_joint": (_variant_source("mnist_optimizer_shared_joint"), {}, 0,
                                   "optimizer_shared with joint groups, no additive parts (examples/variants)"),
        "optimizer_shared_joint_ln_term": (_variant_source("mnist_optimizer_shared_joint"), ln_term, 0,
                                           "optimizer_shared_joint, ln_term"),
        "optimizer_two_models": (_variant_source("mnist_optimizer_two_models"), {}, 0,
                                 "optimizer_shared with an independent copy for the optimizer's deviation"),
        "hands_on_ln_term_r3": (previous, ln_term, 3, "ln_term, 3 restarts from prior draws"),
        "hands_on_gamma36_r3": (previous, {"lengthscale_prior": GammaPrior(3.0, 6.0)}, 3,
                                "Gamma(3, 6), 3 restarts from prior draws"),
    }


def candidates(mnist, names: list[str], backend: str = "auto") -> list:
    """The ``kerneldsl.evaluation.compare.Candidate`` of every requested model; all take search coordinates."""
    from kerneldsl.evaluation.compare import BASELINES, Candidate, baseline
    from kerneldsl.evaluation.cv import CrossValidationError
    from kerneldsl.model import KernelGP

    variants = _variants(mnist)
    unknown = [m for m in names if m not in BASELINES and m not in variants and not m.endswith(".kernel")]
    if unknown:
        choices = ", ".join([*BASELINES, *variants])
        raise CrossValidationError(f"--models: unknown {unknown}; choose from {choices} or give .kernel files")
    out = []
    for name in names:
        if name in BASELINES:
            out.append(Candidate(name, baseline(name, mnist.space, mnist.feature_chain, backend=backend)))
            continue
        if name.endswith(".kernel"):
            source, options, restarts = Path(name).read_text(), {}, 0
        else:
            source, options, restarts, _ = variants[name]
        options = {"feature_chain": mnist.feature_chain, "backend": backend, **options}
        out.append(Candidate(Path(name).stem, KernelGP(source, **options), restarts))
    return out


def load_target(mnist, path: str):
    """Search points and log(loss) of the trials that have a loss."""
    sweep = mnist.load(path)
    X, Y, _ = sweep.target("loss", log=True)
    return X, Y, len(sweep)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    limit_threads(args.threads)
    sys.path.insert(0, str(REPO_ROOT))
    from examples import mnist_space as mnist
    from kerneldsl.evaluation import compare as cmp
    from kerneldsl.evaluation.sweep import SweepError

    try:
        X, Y, total = load_target(mnist, args.data)
    except SweepError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    names = [Path(m).stem for m in args.models]
    began = time.perf_counter()
    if args.report_only:
        found = {}
        for (model, n, seed, folds), record in sorted(cmp.read_records(args.raw).items(), key=lambda item: item[0][3]):
            found[(model, n, seed)] = record  # the most folds wins
        records = [found[(m, n, seed)] for n in args.n for seed in range(args.seeds) for m in names
                   if (m, n, seed) in found]
        if not records:
            print(f"error: no cell of the requested grid in {args.raw}", file=sys.stderr)
            return 2
    else:
        from kerneldsl.evaluation.cv import CrossValidationError

        try:
            records = cmp.compare(candidates(mnist, args.models, args.backend), X, Y, args.n, range(args.seeds),
                                  held_out=args.held_out, chunk_size=args.chunk_size, raw=args.raw or None,
                                  resume=args.resume)
        except CrossValidationError as err:
            print(f"error: {err}", file=sys.stderr)
            return 2
    print(f"{args.data}: {total} trials, {len(X)} with a loss; target log(loss); seeds 0..{args.seeds - 1}; "
          f"{time.perf_counter() - began:.0f} s")
    print(cmp.report(records, names, args.n, args.plot or None,
                     "Leave-one-out cross-validation on the MNIST sweep, target log(loss)"))
    if args.plot:
        print(f"plot: {args.plot}")
    if args.json:
        rows = cmp.summarise(records, names, args.n)
        print(json.dumps([{"model": r["model"], "n": r["n"], **{m: r[m] for m in cmp.METRICS}} for r in rows]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
