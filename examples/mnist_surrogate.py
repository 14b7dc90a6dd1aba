"""The MNIST sweep as a surrogate benchmark: `kd.SurrogateTask` over the space of `mnist_space.py`.

``make_task(path)`` fits (or loads from the cache) a surrogate of the 22-parameter MNIST space
from the sweep file (default ``../shared/data/mnist1_sweep.jsonl`` next to the repository):
loss and training seconds for any config, instantly and deterministically, failures where the
sweep failed, and a budget ``max_cost`` = the sweep's median training time. ``LOSS_KERNEL``
(the example's hands-on kernel) and ``COST_KERNEL`` are the hands-on kernels of kerneldsl's
study on this task (``benchmarks/peers.py``).

Run it to print the surrogate, its held-out error, its measured noise level and an
approximate optimum; ``--compare`` reruns the cross-validation that chose the surrogate's
model (gradient boosting against random forests, extra trees and GPs: minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import kerneldsl as kd  # noqa: E402
from kerneldsl.tasks import SurrogateOptions  # noqa: E402
from mnist_space import DEFAULT_SWEEP, HANDS_ON_KERNEL, feature_chain, space  # noqa: E402

__all__ = ["make_task", "LOSS_KERNEL", "COST_KERNEL", "DEFAULT_SWEEP"]

LOSS_KERNEL = HANDS_ON_KERNEL

COST_KERNEL = """
# training seconds: the number of steps (epochs, batch size) times the work per step (the widths);
# the optimizer and the regularisation hardly matter
widths = {rel_conv1_channels, rel_conv2_channels, rel_conv3_channels, rel_dense1_units}
steps = matern52({log_epochs, log_batch_size})
size = matern52({log_mean_width}) * fj(widths)
kernel = steps + size + steps * size
"""


def make_task(path: str | os.PathLike = DEFAULT_SWEEP, noise: float = 0.0, seed: int = 0,
              cache: bool | str | os.PathLike = True) -> kd.SurrogateTask:
    """The MNIST surrogate (fitted in seconds, then cached); ``noise`` and ``seed`` as in `kd.SurrogateTask`."""
    return kd.SurrogateTask(path, space, feature_chain, noise=noise, seed=seed, cache=cache)


# ---------------------------------------------------------------------- --compare: how the model was chosen


def _candidates():
    """Regressors per target: name -> (fit_predict(X_train, y_train, X_test) on search points)."""
    import torch
    from sklearn.ensemble import ExtraTreesRegressor, GradientBoostingRegressor, RandomForestRegressor

    def trees(make):
        def fit_predict(X_train, y_train, X_test):
            with torch.no_grad():
                F_train, F_test = feature_chain.transform(X_train).numpy(), feature_chain.transform(X_test).numpy()
            return make().fit(F_train, y_train.numpy()).predict(F_test)
        return fit_predict

    def gp(source):
        def fit_predict(X_train, y_train, X_test):
            from botorch.fit import fit_gpytorch_mll
            from gpytorch.mlls import ExactMarginalLogLikelihood

            groups = {"all": list(feature_chain.feature_names)} if source == "matern52(all)" else None
            model = kd.KernelGP(source, feature_chain, groups=groups)(X_train, y_train.unsqueeze(-1))
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
            with torch.no_grad():
                return model.posterior(X_test).mean.squeeze(-1).numpy()
        return fit_predict

    boosting = SurrogateOptions().boosting()
    common = {
        "gradient boosting (chosen)": trees(lambda: GradientBoostingRegressor(**boosting)),
        "random forest": trees(lambda: RandomForestRegressor(300, max_features=0.5, random_state=0)),
        "extra trees": trees(lambda: ExtraTreesRegressor(300, max_features=0.5, random_state=0)),
        "GP, one matern52 over every feature": gp("matern52(all)"),
    }
    return {"log loss": {**common, "GP, hands-on loss kernel": gp(LOSS_KERNEL)},
            "log training seconds": {**common, "GP, hands-on cost kernel": gp(COST_KERNEL)}}


def compare(path: str | os.PathLike, repeats: int) -> str:
    """Repeated 5-fold cross-validation of every candidate on log loss and log training seconds (markdown)."""
    import numpy as np
    import torch
    from scipy.stats import spearmanr
    from sklearn.model_selection import KFold

    torch.set_num_threads(1)
    sweep = kd.load_sweep(path, space, outputs=("loss", "training_time"))
    targets = {"log loss": sweep.target("loss", log=True)[:2],
               "log training seconds": sweep.target("training_time", log=True)[:2]}
    lines = ["| target | model | RMSE | Spearman | Δ RMSE vs chosen (paired over repeats) | fit s per fold |",
             "|---|---|---:|---:|---:|---:|"]
    for target, models in _candidates().items():
        X, y = targets[target]
        y = y.squeeze(-1)
        rmse: dict[str, list[float]] = {}
        for name, fit_predict in models.items():
            rho, seconds = [], 0.0
            for repeat in range(repeats):
                predicted = np.empty(len(y))
                for train, test in KFold(5, shuffle=True, random_state=repeat).split(X.numpy()):
                    start = time.perf_counter()
                    predicted[test] = fit_predict(X[train], y[train], X[test])
                    seconds += time.perf_counter() - start
                rmse.setdefault(name, []).append(float(np.sqrt(np.mean((predicted - y.numpy()) ** 2))))
                rho.append(float(spearmanr(predicted, y.numpy()).statistic))
            chosen = rmse["gradient boosting (chosen)"]
            diffs = [a - b for a, b in zip(rmse[name], chosen)]
            se = statistics.stdev(diffs) / math.sqrt(len(diffs)) if len(diffs) > 1 else math.nan
            delta = "-" if name.endswith("(chosen)") else f"{statistics.fmean(diffs):+.3f} ± {se:.3f}"
            lines.append(f"| {target} ({len(y)} trials) | {name} | {statistics.fmean(rmse[name]):.3f} | "
                         f"{statistics.fmean(rho):.3f} | {delta} | {seconds / (5 * repeats):.2f} |")
            print(lines[-1], flush=True)
    return "\n".join(lines + ["", _compare_failure(sweep, repeats)])


def _compare_failure(sweep: kd.Sweep, repeats: int) -> str:
    """Repeated stratified 5-fold CV of failure classifiers (accuracy at 0.5 and Brier score; markdown)."""
    import numpy as np
    import torch
    from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    with torch.no_grad():
        F = feature_chain.transform(sweep.X).numpy()
    failed = torch.isnan(sweep.output("loss")).numpy().astype(int)
    lines = [f"| failure classifier ({failed.sum()} of {len(failed)} trials failed) | accuracy | Brier |",
             "|---|---:|---:|"]
    for name, model in [("gradient boosting (chosen)", GradientBoostingClassifier(**SurrogateOptions().boosting())),
                        ("random forest", RandomForestClassifier(300, random_state=0)),
                        ("logistic regression", LogisticRegression(max_iter=1000))]:
        accuracy, brier = [], []
        for repeat in range(repeats):
            p = cross_val_predict(model, F, failed, cv=StratifiedKFold(5, shuffle=True, random_state=repeat),
                                  method="predict_proba")[:, 1]
            accuracy.append(float(((p >= 0.5) == failed).mean()))
            brier.append(float(((p - failed) ** 2).mean()))
        lines.append(f"| {name} | {statistics.fmean(accuracy):.3f} | {statistics.fmean(brier):.3f} |")
    lines.append(f"| always 'succeeds' | {1 - failed.mean():.3f} | - |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default=str(DEFAULT_SWEEP), help="sweep file (default: %(default)s)")
    parser.add_argument("--compare", action="store_true",
                        help="rerun the cross-validation of the candidate models (minutes)")
    parser.add_argument("--repeats", type=int, default=3, help="repeats of 5-fold CV for --compare (default: 3)")
    args = parser.parse_args(argv)
    if not Path(args.path).exists():
        parser.error(f"no sweep file at {args.path}: pass its path (see ../shared/data/README.md)")
    start = time.perf_counter()
    task = make_task(args.path)
    print(f"{task} (fitted or loaded in {time.perf_counter() - start:.1f} s)")
    print(task.held_out_error().table())
    level = task.noise_level()
    print(f"measured noise level (sd, natural log): log loss {level.log_loss:.3f}, log cost {level.log_cost:.3f}")
    config, outcome = task.approximate_optimum(n=2 ** 16)
    print(f"approximate optimum within max_cost = {task.max_cost:.2f} s (best of 2^16 Sobol configs and the sweep's): "
          f"loss {outcome.loss:.4f} at {outcome.cost:.1f} s\n  {config}")
    if args.compare:
        print(compare(args.path, args.repeats))


if __name__ == "__main__":
    main()
