"""The MNIST sweep's 22-parameter search space, its feature chain and the hands-on kernel.

Exposes ``space``, ``feature_chain`` (with ``.feature_names``), ``HANDS_ON_KERNEL`` (the
source of ``mnist_hands_on.kernel``) and ``load(path)`` for the sweep file (default
``../shared/data/mnist1_sweep.jsonl`` next to the repository). Run it to print the
features, one transformed trial, and a GP fit.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import kerneldsl as kd

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SWEEP = REPO_ROOT.parent / "shared" / "data" / "mnist1_sweep.jsonl"

LAYERS = ("conv1", "conv2", "conv3", "dense1", "dense2")
WIDTHS = ("conv1_channels", "conv2_channels", "conv3_channels", "dense1_units")


def _sgd(c):
    return c["optimizer"] == "sgd"


def _adam(c):
    return c["optimizer"] == "adam"


# Bounds from ../shared/data/README.md: they hold every recorded trial (the sweep's
# declared int lower bounds were one higher but truncation reached one below them).
space = kd.Space([
    kd.Choice("optimizer", ["adam", "sgd"]),
    kd.Choice("nesterov", [True, False], condition=_sgd),
    kd.Int("epochs", 1, 60, log=True),
    kd.Int("batch_size", 15, 4096, log=True),
    *(kd.Scalar(f"{layer}_weight_decay", 1e-7, 0.3, log=True) for layer in LAYERS),
    kd.Scalar("1cycle_initial_lr_pct", 1 / 80, 1 / 2, log=True),
    kd.Scalar("1cycle_final_lr_pct", 1 / 30000, 1 / 100, log=True),
    kd.Scalar("1cycle_pct_warmup", 0.01, 0.5, log=True),
    kd.Scalar("1cycle_max_lr", 0.01, 20, log=True),
    kd.Scalar("1cycle_momentum_max_damping_factor", 1e-4, 1, log=True, condition=_sgd),
    kd.Scalar("1cycle_momentum_min_damping_factor_pct", 0.1, 1, log=True, condition=_sgd),
    kd.Scalar("1cycle_beta1_max_damping_factor", 1e-4, 0.5, log=True, condition=_adam),
    kd.Scalar("1cycle_beta1_min_damping_factor_pct", 0.1, 1, log=True, condition=_adam),
    kd.Scalar("beta2_damping_factor", 1e-4, 0.5, log=True, condition=_adam),
    kd.Int("conv1_channels", 3, 64, log=True),
    kd.Int("conv2_channels", 7, 128, log=True),
    kd.Int("conv3_channels", 15, 256, log=True),
    kd.Int("dense1_units", 7, 256, log=True),
])

# Search coordinates of log-scale parameters already hold natural logs (``log_<name>``):
# products of quantities are sums here, e.g. initial_lr = initial_lr_pct * max_lr.
feature_chain = kd.Chain(space, [
    kd.Log("epochs", "batch_size"),
    kd.RelativeToMean([f"log_{layer}_weight_decay" for layer in LAYERS], mean="log_mean_weight_decay"),
    kd.OneHot("optimizer", "nesterov"),
    kd.Log("1cycle_max_lr", "1cycle_pct_warmup", out=["log_max_lr", "log_warmup_pct"]),
    kd.Add("log_initial_lr", "log_1cycle_initial_lr_pct", "log_1cycle_max_lr"),
    kd.Add("log_final_lr", "log_1cycle_final_lr_pct", "log_1cycle_max_lr"),
    kd.Log("1cycle_momentum_max_damping_factor", out="log_momentum_max_damping"),
    kd.Add("log_momentum_min_damping", "log_1cycle_momentum_min_damping_factor_pct",
           "log_1cycle_momentum_max_damping_factor"),
    kd.Log("1cycle_beta1_max_damping_factor", out="log_beta1_max_damping"),
    kd.Add("log_beta1_min_damping", "log_1cycle_beta1_min_damping_factor_pct", "log_1cycle_beta1_max_damping_factor"),
    kd.Log("beta2_damping_factor", out="log_beta2_damping"),
    kd.RelativeToMean([f"log_{w}" for w in WIDTHS], mean="log_mean_width"),
])

# The kernel-language source lives in its own file so that `kerneldsl cv --kernel` can take it too.
HANDS_ON_KERNEL = (Path(__file__).parent / "mnist_hands_on.kernel").read_text()


def load(path: str | os.PathLike = DEFAULT_SWEEP) -> kd.Sweep:
    """The sweep's trials: ``X`` (search points), ``Y`` = (loss, training_time) with NaN where missing."""
    return kd.load_sweep(path, space, outputs=("loss", "training_time"))


def fit_hands_on_gp(sweep: kd.Sweep, backend: str = "auto"):
    """Fit a SingleTaskGP with the hands-on kernel to log(loss) of the trials that have a loss."""
    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    X, y, _ = sweep.target("loss", log=True)
    model = kd.KernelGP(HANDS_ON_KERNEL, feature_chain, backend=backend)(X, y)
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    fit_gpytorch_mll(mll)
    return model, mll


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_SWEEP), help="sweep file (JSON lines)")
    parser.add_argument("--fit", action="store_true", help="also fit the hands-on GP to log(loss)")
    args = parser.parse_args()
    sweep = load(args.path)
    print(f"{len(sweep)} trials, {int((~sweep.output('loss').isnan()).sum())} with a loss")
    print(f"{len(feature_chain.feature_names)} features:")
    print(feature_chain.describe())
    row = feature_chain(sweep.X[:1])[0]
    print(f"trial {sweep.trials[0]}: {sweep.configs[0]}")
    for name, value in zip(feature_chain.feature_names, row.tolist()):
        print(f"  {name:<28} {value:.4f}")
    if args.fit:
        model, mll = fit_hands_on_gp(sweep)
        model.train()
        value = mll(model(*model.train_inputs), model.train_targets).item()
        print(f"fitted: marginal log likelihood per trial {value:.3f}")


if __name__ == "__main__":
    main()
