"""`SurrogateTask`: a real search space as an instant, deterministic objective, fitted once from a sweep.

Optimisers are benchmarked on real spaces through surrogates (HPOBench, YAHPO Gym, LCBench): a
regression model fitted to a sweep of real trials stands in for the training, so that many seeds
of many trials take minutes instead of GPU-weeks. ``SurrogateTask(sweep, space, feature_chain)``
fits three models on the sweep's trials, on the features of ``feature_chain`` (by default the
space's numeric coordinates and one-hot choices):

* **log loss** on the trials that have a loss (losses the sweep clipped, e.g. diverged runs at
  20.0, are kept as they are: they are real outcomes of the configs);
* **log cost** (e.g. training seconds) on every trial, failed ones included (they took time too);
* **failure**, a classifier of "this trial produced no loss" on every trial: failed sweep trials
  are real outcomes of their configs (e.g. runs that crashed or produced NaN), so the surrogate
  fails where the sweep did, and a failed surrogate trial returns ``loss = NaN`` with its cost
  (what a real objective returns for a run that diverged; `kerneldsl` records it as a failed
  trial that keeps its cost, Optuna as a failed trial).

All three are scikit-learn gradient boosting (`SurrogateOptions`). On the MNIST sweep
(``examples/mnist_surrogate.py --compare``: 3 repeats of 5-fold cross-validation) it was the most
accurate tree ensemble for every target (random forests and extra trees had higher RMSE). GPs were
more accurate (log loss slightly: RMSE 1.062 with the example's hands-on kernel against 1.084; log
cost clearly: 0.058 with the example's hands-on cost kernel and 0.157 with one Matern 5/2, against
0.179) and are deliberately not used: a GP surrogate's landscape is drawn from the model class of
the GP-based optimisers being benchmarked (kerneldsl's hands-on kernels above all), which would
decide such a comparison in advance. ``held_out_error()`` gives the chosen models' own held-out
error. Fitting takes seconds; fitted models are kept in ``$KERNELDSL_CACHE_DIR/surrogates`` (default
``~/.cache/kerneldsl``), keyed by the sweep's bytes, the space, the features and the options.

``task(config)`` answers ``{"loss": ..., "cost": ...}`` deterministically. With ``noise=1.0`` it
adds seeded noise at the sweep's measured noise level (`NoiseLevel`: the noise standard deviation
of a GP fitted to log loss and to log cost, the part of the sweep's variation that no smooth
function of the config explains; the sweep has no repeated configs) and draws failures from the
classifier's probability; the draws depend on ``seed`` and the config only, so a run is
reproducible. The task's budget ``max_cost`` is the sweep's median cost. The surrogate's optimum
is known only approximately (`approximate_optimum`: the best of many predicted configs).

scikit-learn is an optional dependency (``pip install -e '.[benchmarks]' in a clone of kerneldsl``).
"""

from __future__ import annotations

import copy
import hashlib
import math
import os
import pickle
import random
import statistics
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..evaluation.sweep import Sweep, load_sweep
from ..space.parameters import ConfigError
from ..space.space import Space

__all__ = ["SurrogateTask", "SurrogateOptions", "SurrogateOutcome", "HeldOutError", "NoiseLevel", "SurrogateError",
           "cache_directory"]

_CACHE_FORMAT = 1


class SurrogateError(ValueError):
    """A surrogate cannot be fitted from this sweep (missing outputs, too few trials, bad options)."""


def _sklearn():
    """The scikit-learn pieces the surrogate uses; a clear error when it is not installed."""
    try:
        from sklearn.ensemble import GradientBoostingClassifier, GradientBoostingRegressor
        from sklearn.model_selection import KFold, StratifiedKFold
    except ImportError:
        raise ImportError("kerneldsl.SurrogateTask needs scikit-learn, which is not installed: "
                          "pip install -e '.[benchmarks]' in a clone of kerneldsl (or scikit-learn)") from None
    return GradientBoostingRegressor, GradientBoostingClassifier, KFold, StratifiedKFold


def cache_directory() -> Path:
    """Where fitted surrogates are kept: ``$KERNELDSL_CACHE_DIR/surrogates``, else under ``$XDG_CACHE_HOME`` or
    ``~/.cache``."""
    if os.environ.get("KERNELDSL_CACHE_DIR"):
        return Path(os.environ["KERNELDSL_CACHE_DIR"]) / "surrogates"
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "kerneldsl" / "surrogates"


@dataclass(frozen=True)
class SurrogateOptions:
    """What the surrogate is fitted on and how (scikit-learn gradient boosting for all three models).

    Args:
        loss: the sweep's output to minimise (modelled as its log; must be positive).
        cost: the sweep's cost output (modelled as its log; must be positive), e.g. training seconds.
        n_estimators, learning_rate, max_depth, subsample: the boosting settings of every model.
        random_state: seeds the boosting's row subsampling and the cross-validation folds.
        folds: folds of `SurrogateTask.held_out_error`.
    """

    loss: str = "loss"
    cost: str = "training_time"
    n_estimators: int = 300
    learning_rate: float = 0.05
    max_depth: int = 3
    subsample: float = 0.8
    random_state: int = 0
    folds: int = 5

    def __post_init__(self) -> None:
        for name in ("n_estimators", "max_depth", "folds"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < (2 if name == "folds" else 1):
                raise SurrogateError(f"SurrogateOptions: {name} must be an integer >= {2 if name == 'folds' else 1}, "
                                     f"got {value!r}")
        for name in ("learning_rate", "subsample"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 < value <= 1.0:
                raise SurrogateError(f"SurrogateOptions: {name} must lie in (0, 1], got {value!r}")
        if self.loss == self.cost:
            raise SurrogateError(f"SurrogateOptions: loss and cost name the same output {self.loss!r}")

    def boosting(self) -> dict[str, Any]:
        """Keyword arguments of the scikit-learn estimators."""
        return {"n_estimators": self.n_estimators, "learning_rate": self.learning_rate, "max_depth": self.max_depth,
                "subsample": self.subsample, "random_state": self.random_state}


@dataclass(frozen=True)
class SurrogateOutcome:
    """What the surrogate says about one config.

    ``loss`` is None for a failed trial; ``p_fail`` is the failure classifier's probability (the noise-free
    surrogate fails where it is at least 0.5).
    """

    loss: float | None
    cost: float
    failed: bool
    p_fail: float


@dataclass(frozen=True)
class NoiseLevel:
    """Noise standard deviations of log loss and log cost (natural-log units: 0.1 is about 10%)."""

    log_loss: float
    log_cost: float


@dataclass(frozen=True)
class HeldOutError:
    """Cross-validated error of the surrogate's own models (``folds``-fold, on the sweep).

    RMSE in natural-log units next to the spread (standard deviation) of the target, Spearman rank
    correlation of prediction and truth; for failures the accuracy at probability 0.5 against the
    accuracy of always guessing the majority class, and the Brier score.
    """

    folds: int
    n_loss: int
    n_all: int
    rmse_log_loss: float
    spearman_log_loss: float
    sd_log_loss: float
    rmse_log_cost: float
    spearman_log_cost: float
    sd_log_cost: float
    failure_accuracy: float
    failure_majority_accuracy: float
    failure_brier: float

    def table(self) -> str:
        """A markdown table of the error."""
        return "\n".join([
            f"| target ({self.folds}-fold CV) | trials | RMSE | spread (sd) | Spearman |",
            "|---|---:|---:|---:|---:|",
            f"| log loss | {self.n_loss} | {self.rmse_log_loss:.3f} | {self.sd_log_loss:.3f} | "
            f"{self.spearman_log_loss:.3f} |",
            f"| log cost | {self.n_all} | {self.rmse_log_cost:.3f} | {self.sd_log_cost:.3f} | "
            f"{self.spearman_log_cost:.3f} |",
            "",
            f"failure classifier: accuracy {self.failure_accuracy:.3f} (always the majority class: "
            f"{self.failure_majority_accuracy:.3f}), Brier score {self.failure_brier:.3f}",
        ])


@dataclass
class _Fitted:
    """The fitted models and what was measured about the sweep (the pickled cache entry)."""

    loss_model: Any
    cost_model: Any
    fail_model: Any | None  # None: no trial of the sweep failed
    log_loss_range: tuple[float, float]
    max_cost: float
    n_trials: int
    n_loss: int
    noise: NoiseLevel | None = None
    held_out: HeldOutError | None = None
    format: int = _CACHE_FORMAT


@dataclass
class _Settings:
    noise: float = 0.0
    seed: int = 0


class SurrogateTask:
    """An objective ``config -> {"loss", "cost"}`` over ``space``, fitted once from the sweep file ``sweep``.

    Args:
        sweep: path of a sweep file (JSON lines ``{"trial", "config", "result"}``, see `kerneldsl.load_sweep`);
            every config must fit ``space``.
        space: the sweep's search space (`kerneldsl.Space`).
        feature_chain: a `kerneldsl.Chain` whose features the models see (default: numeric coordinates passed
            through, choices one-hot).
        options: `SurrogateOptions` (which outputs, boosting settings).
        noise: 0 for the deterministic surrogate; ``s > 0`` adds noise at ``s`` times the sweep's measured level
            (`noise_level`) and draws failures from the classifier's probability.
        seed: seeds the noise (draws depend on ``seed`` and the config only).
        cache: True for the default cache folder (`cache_directory`), a folder path, or False for none.

    Attributes:
        max_cost: the budget of the benchmark, the sweep's median cost.
        sweep_path: where the sweep was read from.
    """

    def __init__(self, sweep: str | os.PathLike, space: Space, feature_chain=None, *,
                 options: SurrogateOptions = SurrogateOptions(), noise: float = 0.0, seed: int = 0,
                 cache: bool | str | os.PathLike = True):
        if not isinstance(space, Space):
            raise TypeError(f"SurrogateTask: space must be a kerneldsl.Space, got {type(space).__name__}")
        if not isinstance(options, SurrogateOptions):
            raise TypeError(f"SurrogateTask: options must be a SurrogateOptions, got {type(options).__name__}")
        self._space, self.options = space, options
        self.sweep_path = Path(sweep)
        if feature_chain is None:
            from ..model import default_feature_chain

            feature_chain = default_feature_chain(space)
        self.feature_chain = feature_chain
        self._settings = _Settings(noise=_noise(noise), seed=_seed(seed))
        self._cache_path = self._cache_file(cache)
        self._fitted = self._load_or_fit()

    # ------------------------------------------------------------------ views
    def space(self) -> Space:
        """The task's search space (the one it was fitted on)."""
        return self._space

    @property
    def max_cost(self) -> float:
        """The benchmark's budget: the sweep's median cost (all trials, failed ones included)."""
        return self._fitted.max_cost

    @property
    def noise(self) -> float:
        """Noise as a multiple of the sweep's measured level (0: deterministic)."""
        return self._settings.noise

    @property
    def seed(self) -> int:
        """Seed of the noise draws."""
        return self._settings.seed

    def with_noise(self, noise: float, seed: int = 0) -> "SurrogateTask":
        """The same fitted surrogate with other noise settings (no refit)."""
        task = copy.copy(self)
        task._settings = _Settings(noise=_noise(noise), seed=_seed(seed))
        return task

    def __repr__(self) -> str:
        return (f"SurrogateTask({self.sweep_path.name!r}, {self._fitted.n_trials} trials "
                f"({self._fitted.n_loss} with a loss), max_cost={self.max_cost:.4g}, noise={self.noise:g}, "
                f"seed={self.seed})")

    # ------------------------------------------------------------------ answers
    def __call__(self, config: Mapping[str, Any]) -> dict[str, float]:
        """``{"loss": ..., "cost": ...}`` for ``config``; ``loss`` is NaN where the surrogate trial fails."""
        outcome = self.evaluate(config)
        return {"loss": math.nan if outcome.loss is None else outcome.loss, "cost": outcome.cost}

    def predict(self, config: Mapping[str, Any]) -> SurrogateOutcome:
        """The noise-free answer for ``config`` (fails where the failure probability is at least 0.5)."""
        log_loss, log_cost, p_fail = self._predict(self._search_point(config))
        failed = bool(p_fail[0] >= 0.5)
        return SurrogateOutcome(None if failed else math.exp(log_loss[0]), math.exp(log_cost[0]), failed,
                                float(p_fail[0]))

    def evaluate(self, config: Mapping[str, Any]) -> SurrogateOutcome:
        """The answer for ``config`` under the task's noise settings (`predict` when ``noise`` is 0)."""
        x = self._search_point(config)
        if self.noise == 0.0:
            return self.predict(config)
        log_loss, log_cost, p_fail = self._predict(x)
        level = self.noise_level()
        rng = random.Random(f"{self.seed}:" + ",".join(f"{v:.12g}" for v in x[0].tolist()))
        failed = rng.random() < p_fail[0]
        log_loss = float(log_loss[0]) + self.noise * level.log_loss * rng.gauss(0.0, 1.0)
        log_cost = float(log_cost[0]) + self.noise * level.log_cost * rng.gauss(0.0, 1.0)
        return SurrogateOutcome(None if failed else math.exp(log_loss), math.exp(log_cost), failed, float(p_fail[0]))

    def predict_search(self, X: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Noise-free predictions for search points ``X [n, d]``: (log loss, log cost, failure probability)."""
        X = self._space.round(self._space.check_width(X.to(torch.float64)))
        if X.dim() != 2:
            raise ConfigError(f"SurrogateTask.predict_search takes [n, {self._space.dim}] search points, "
                              f"got shape {tuple(X.shape)}")
        return self._predict(X)

    def approximate_optimum(self, n: int = 4096, seed: int = 0) -> tuple[dict[str, Any], SurrogateOutcome]:
        """The best noise-free loss within ``max_cost`` among ``n`` scrambled Sobol configs and the sweep's own.

        The surrogate's true optimum is known only approximately: this is an upper bound on it (an optimiser
        may find a lower surrogate loss).
        """
        sweep = self._sweep()
        X = torch.cat([self._space.sample(n, seed=seed), sweep.X]).to(torch.float64)
        X = self._space.round(X)
        log_loss, log_cost, p_fail = self._predict(X)
        ok = (p_fail < 0.5) & (np.exp(log_cost) <= self.max_cost)
        if not ok.any():
            raise SurrogateError(f"SurrogateTask.approximate_optimum: none of {len(X)} configs is predicted to "
                                 f"succeed within max_cost={self.max_cost:g}")
        best = int(np.flatnonzero(ok)[np.argmin(log_loss[ok])])
        config = self._space.to_configs(X[best:best + 1])[0]
        return config, SurrogateOutcome(math.exp(log_loss[best]), math.exp(log_cost[best]), False, float(p_fail[best]))

    # ------------------------------------------------------------------ measurements
    def noise_level(self) -> NoiseLevel:
        """The sweep's measured noise: the noise sd of a GP (kerneldsl's default Matern 5/2 over the features)
        fitted to log loss and to log cost; measured at first use (tens of seconds) and cached."""
        if self._fitted.noise is None:
            sweep = self._sweep()
            self._fitted.noise = NoiseLevel(*(_gp_noise_sd(*sweep.target(name, log=True)[:2], self.feature_chain)
                                              for name in (self.options.loss, self.options.cost)))
            self._store()
        return self._fitted.noise

    def held_out_error(self) -> HeldOutError:
        """Cross-validated error of the surrogate's models on the sweep (``options.folds`` folds; cached)."""
        if self._fitted.held_out is None:
            self._fitted.held_out = self._cross_validate()
            self._store()
        return self._fitted.held_out

    # ------------------------------------------------------------------ internals
    def _search_point(self, config: Mapping[str, Any]) -> Tensor:
        row = self._space.encode(config, where="SurrogateTask config")
        return torch.tensor([row], dtype=torch.float64)

    def _features(self, X: Tensor) -> np.ndarray:
        with torch.no_grad():
            return self.feature_chain.transform(X.to(torch.float64)).numpy()

    def _predict(self, X: Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        F = self._features(X)
        fitted = self._fitted
        log_loss = np.clip(fitted.loss_model.predict(F), *fitted.log_loss_range)
        log_cost = fitted.cost_model.predict(F)
        p_fail = (np.zeros(len(F)) if fitted.fail_model is None else fitted.fail_model.predict_proba(F)[:, 1])
        return log_loss, log_cost, p_fail

    def _sweep(self) -> Sweep:
        sweep = load_sweep(self.sweep_path, self._space, outputs=(self.options.loss, self.options.cost))
        cost = sweep.output(self.options.cost)
        if torch.isnan(cost).any():
            bad = sweep.trials[int(torch.isnan(cost).nonzero()[0])]
            raise SurrogateError(f"{self.sweep_path}: trial {bad} has no {self.options.cost!r}; every trial needs "
                                 "its cost (failed trials too)")
        for name in (self.options.loss, self.options.cost):
            values = sweep.output(name)
            if (values[~torch.isnan(values)] <= 0).any():
                raise SurrogateError(f"{self.sweep_path}: output {name!r} has values <= 0, which have no log")
        n_loss = int((~torch.isnan(sweep.output(self.options.loss))).sum())
        if n_loss < self.options.folds:
            raise SurrogateError(f"{self.sweep_path}: {n_loss} trials have a {self.options.loss!r}; the surrogate "
                                 f"needs at least {self.options.folds}")
        return sweep

    def _data(self, sweep: Sweep) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Features of every trial, log loss (NaN where failed), log cost, failed (0/1)."""
        F = self._features(sweep.X)
        log_loss = np.log(sweep.output(self.options.loss).numpy())
        log_cost = np.log(sweep.output(self.options.cost).numpy())
        return F, log_loss, log_cost, np.isnan(log_loss).astype(int)

    def _fit(self) -> _Fitted:
        regressor, classifier, _, _ = _sklearn()
        sweep = self._sweep()
        F, log_loss, log_cost, failed = self._data(sweep)
        ok = failed == 0
        loss_model = regressor(**self.options.boosting()).fit(F[ok], log_loss[ok])
        cost_model = regressor(**self.options.boosting()).fit(F, log_cost)
        fail_model = classifier(**self.options.boosting()).fit(F, failed) if failed.any() else None
        return _Fitted(loss_model, cost_model, fail_model, (float(log_loss[ok].min()), float(log_loss[ok].max())),
                       float(statistics.median(np.exp(log_cost).tolist())), len(F), int(ok.sum()))

    def _cross_validate(self) -> HeldOutError:
        from scipy.stats import spearmanr

        regressor, classifier, k_fold, stratified = _sklearn()
        F, log_loss, log_cost, failed = self._data(self._sweep())
        ok = failed == 0
        folds, state = self.options.folds, self.options.random_state

        def out_of_fold(X: np.ndarray, y: np.ndarray) -> np.ndarray:
            predicted = np.empty_like(y)
            for train, test in k_fold(folds, shuffle=True, random_state=state).split(X):
                predicted[test] = regressor(**self.options.boosting()).fit(X[train], y[train]).predict(X[test])
            return predicted

        loss_hat, cost_hat = out_of_fold(F[ok], log_loss[ok]), out_of_fold(F, log_cost)
        majority = max(failed.mean(), 1.0 - failed.mean())
        if failed.any() and min(failed.sum(), (1 - failed).sum()) >= folds:
            p_fail = np.empty(len(F))
            for train, test in stratified(folds, shuffle=True, random_state=state).split(F, failed):
                model = classifier(**self.options.boosting()).fit(F[train], failed[train])
                p_fail[test] = model.predict_proba(F[test])[:, 1]
            accuracy, brier = float(((p_fail >= 0.5) == failed).mean()), float(((p_fail - failed) ** 2).mean())
        else:  # too few failures to hold any out: the classifier's error is not measured
            accuracy = brier = math.nan
        rmse = lambda a, b: float(np.sqrt(np.mean((a - b) ** 2)))  # noqa: E731
        return HeldOutError(folds, int(ok.sum()), len(F), rmse(loss_hat, log_loss[ok]),
                            float(spearmanr(loss_hat, log_loss[ok]).statistic), float(log_loss[ok].std()),
                            rmse(cost_hat, log_cost), float(spearmanr(cost_hat, log_cost).statistic),
                            float(log_cost.std()), accuracy, float(majority), brier)

    # ------------------------------------------------------------------ cache
    def _cache_file(self, cache: bool | str | os.PathLike) -> Path | None:
        if cache is False or cache is None:
            return None
        folder = cache_directory() if cache is True else Path(cache)
        try:
            data = self.sweep_path.read_bytes()
        except OSError as exc:
            raise SurrogateError(f"SurrogateTask: cannot read the sweep {str(self.sweep_path)!r}: "
                                 f"{exc.strerror or exc}") from None
        import sklearn

        key = hashlib.sha256()
        parameters = [(p.name, p.kind, p.coordinate_name, getattr(p, "choices", None), p.condition is not None)
                      for p in self._space.parameters]  # conditions are code: their presence is part of the key
        for part in (data, repr(asdict(self.options)).encode(), repr(parameters).encode(),
                     repr(self._space.bounds.tolist()).encode(), repr(list(self._space.constraints)).encode(),
                     repr(tuple(getattr(self.feature_chain, "feature_names", ()))).encode(),
                     repr(getattr(self.feature_chain, "describe", lambda: "")()).encode(),
                     sklearn.__version__.encode(), str(_CACHE_FORMAT).encode()):
            key.update(part)
            key.update(b"\0")
        return folder / f"{self.sweep_path.stem}-{key.hexdigest()[:24]}.pkl"

    def _load_or_fit(self) -> _Fitted:
        _sklearn()  # a clear error before anything else when scikit-learn is missing
        path = self._cache_path
        if path is not None and path.exists():
            try:
                with path.open("rb") as f:
                    fitted = pickle.load(f)
                if isinstance(fitted, _Fitted) and fitted.format == _CACHE_FORMAT:
                    return fitted
            except Exception:  # noqa: BLE001 - a damaged or foreign cache entry is refitted, not fatal
                pass
        self._fitted = self._fit()
        self._store()
        return self._fitted

    def _store(self) -> None:
        """Write the fitted models to the cache (atomically; a cache that cannot be written is skipped)."""
        path = self._cache_path
        if path is None:
            return
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            partial = path.with_suffix(f".{os.getpid()}.tmp")
            with partial.open("wb") as f:
                pickle.dump(self._fitted, f)
            os.replace(partial, path)
        except OSError:
            pass


def _noise(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"SurrogateTask: noise must be a finite number >= 0 (a multiple of the sweep's measured "
                         f"noise level; 0 for none), got {value!r}")
    return float(value)


def _seed(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"SurrogateTask: seed must be an integer, got {value!r}")
    return value


def _gp_noise_sd(X: Tensor, y: Tensor, feature_chain) -> float:
    """Noise standard deviation (units of ``y``) of a GP with kerneldsl's default kernel fitted to ``y [n, 1]``."""
    import warnings

    from botorch.fit import fit_gpytorch_mll
    from gpytorch.mlls import ExactMarginalLogLikelihood

    from ..model import DEFAULT_KERNEL, KernelGP

    model = KernelGP(DEFAULT_KERNEL, feature_chain, groups={"all": list(feature_chain.feature_names)})(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # jitter notes of the fit: the noise estimate is what is wanted
        fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
    # The model standardises y: its noise variance is in units of var(y).
    return float(model.likelihood.noise.detach().squeeze()) ** 0.5 * float(y.std())
