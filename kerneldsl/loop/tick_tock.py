"""`tick_tock`: cost-aware Bayesian optimisation that alternates cheaper-at-equal-loss and better-within-budget steps.

Users want the best model that fits a training budget and pay for every trial.
After an initial design (the user's own configs, then scrambled Sobol points),
every iteration fits one GP per output, log loss and log cost, with compiled
kernel-language kernels and proposes one config:

* tock: lower loss within ``max_cost`` (log noisy EI of the loss, constrained by
  the cost model);
* tick: lower cost without losing loss (expected cost reduction, constrained per
  posterior sample by the best feasible loss of the same sample and by
  ``max_cost``).

If a fraction r of the iterations are ticks, the search pays for itself once it
cuts the cost of the final configuration by r.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from botorch.models import ModelListGP
from botorch.optim import optimize_acqf
from botorch.optim.initializers import initialize_q_batch
from botorch.sampling import SobolQMCNormalSampler
from torch import Tensor

from .acquisition import tock_acquisition, qLogCostImprovement
from .journal import Journal, JournalError
from .results import TickTockResult, best_feasible
from ..space.space import Space
from ..model import DEFAULT_KERNEL, KernelGP, OutputModel, default_feature_chain
from .runner import TrialRunner

__all__ = ["tick_tock", "phase_of", "DEFAULT_KERNEL"]

FAILED_LOSS_MARGIN = 0.5  # imputed log loss = worst + margin * (worst - best), at least MIN_FAILED_GAP above the worst
MIN_FAILED_GAP = 0.1
_DUPLICATE_TOL = 1e-9


def phase_of(iteration: int, tick_ratio: float) -> str:
    """Phase of model-based iteration ``iteration`` (1, 2, ...): a tick whenever ``floor(k * tick_ratio)`` steps up.

    ``tick_ratio=0.5`` alternates tock, tick, tock, tick, ...; ``1/3`` gives tock, tock, tick, ...;
    ``0`` only tocks (cost-constrained noisy EI); ``1`` only ticks.
    """
    return "tick" if math.floor(iteration * tick_ratio) > math.floor((iteration - 1) * tick_ratio) else "tock"


def _check_count(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"tick_tock: {name} must be a non-negative integer, got {value!r}")
    return value


def _seed_for(seed: int, trial: int) -> int:
    return (seed * 1_000_003 + 7919 * (trial + 1)) % (2**31 - 1)


class _Loop:
    """One tick-tock run: its state (trials and their search points), proposals and bookkeeping."""

    def __init__(self, objective, space: Space, max_cost: float, n_init: int, n_iter: int, journal, seed: int,
                 initial_configs, loss_kernel, cost_kernel, feature_chain, kernel_groups, kernel_options,
                 tick_ratio, log_loss, timeout, isolation, device, dtype, num_restarts, raw_samples,
                 mc_samples, acq_options, fit_options, eta, min_tick_gain, progress):
        if not isinstance(space, Space):
            raise TypeError(f"tick_tock: space must be a kerneldsl.Space, got {type(space).__name__}")
        if isinstance(max_cost, bool) or not isinstance(max_cost, (int, float)) or not max_cost > 0:
            raise ValueError(f"tick_tock: max_cost must be a positive number (math.inf for no budget), got {max_cost!r}")
        if not 0.0 <= tick_ratio <= 1.0:
            raise ValueError(f"tick_tock: tick_ratio must lie in [0, 1], got {tick_ratio!r}")
        if isinstance(min_tick_gain, bool) or not isinstance(min_tick_gain, (int, float)) or not min_tick_gain >= 0:
            raise ValueError(f"tick_tock: min_tick_gain must be a non-negative number (0: ticks never give way), "
                             f"got {min_tick_gain!r}")
        for name, value in (("num_restarts", num_restarts), ("raw_samples", raw_samples), ("mc_samples", mc_samples)):
            if _check_count(name, value) == 0:
                raise ValueError(f"tick_tock: {name} must be positive, got {value!r}")
        self.space, self.max_cost, self.seed = space, float(max_cost), _check_count("seed", seed)
        self.tick_ratio, self.log_loss, self.progress = tick_ratio, log_loss, progress
        self.device, self.dtype = torch.device(device) if device is not None else torch.device("cpu"), dtype
        self.num_restarts, self.raw_samples, self.mc_samples = num_restarts, raw_samples, mc_samples
        self.acq_options, self.eta, self.min_tick_gain = dict(acq_options or {}), eta, min_tick_gain
        self.initial_configs = [dict(c) for c in (initial_configs or [])]
        if self.initial_configs:
            space.to_search(self.initial_configs)  # validates them now, not when their turn comes
        self.n_initial = len(self.initial_configs) + _check_count("n_init", n_init)
        self.total = self.n_initial + _check_count("n_iter", n_iter)
        self.X_init = None  # initial design, drawn lazily (it is not needed when resuming past it)

        self.chain = feature_chain if feature_chain is not None else default_feature_chain(space)
        rounding = space.rounding_transform(method="approximate")
        groups = {"all": list(self.chain.feature_names)}
        kernel_options = dict(kernel_options or {})
        self.models = {
            name: OutputModel(name, KernelGP(source or DEFAULT_KERNEL, self.chain, rounding=rounding,
                                             groups={**groups, **dict(kernel_groups or {})} if source is None else kernel_groups,
                                             **kernel_options), fit_options=fit_options or {})
            for name, source in (("loss", loss_kernel), ("cost", cost_kernel))
        }
        self.runner = TrialRunner(objective, timeout=timeout, isolation=isolation, positive_loss=log_loss)

        self.trials: list[dict] = []
        self.X: list[Tensor] = []
        self.journal = None
        if journal is not None:
            header = {"parameters": list(space.names), "max_cost": self.max_cost if math.isfinite(self.max_cost) else "inf",
                      "seed": seed, "n_init": n_init, "initial_configs": self.initial_configs}
            self.journal = Journal(journal, header, check_keys=("parameters", "max_cost", "seed", "n_init", "initial_configs"))
            try:
                self._restore(self.journal.trials)
            except JournalError:
                self.journal.close()
                raise

    # ------------------------------------------------------------------ state
    def _restore(self, records: list[dict]) -> None:
        for position, record in enumerate(records):
            where = f"{self.journal.path}: trial {record.get('trial')!r}"
            if record.get("trial") != position:
                raise JournalError(f"{where}: expected trial number {position}; the journal is out of order")
            trial = {k: v for k, v in record.items() if k != "kind"}
            try:
                x = self.space.to_search([trial["config"]], dtype=self.dtype, device=self.device)[0]
            except (ValueError, KeyError, TypeError) as exc:
                raise JournalError(f"{where}: its config does not fit this space: {exc}") from None
            self.trials.append(trial)
            self.X.append(x)

    def _is_duplicate(self, x: Tensor) -> bool:
        return bool(self.X) and bool(((torch.stack(self.X) - x).abs().amax(-1) <= _DUPLICATE_TOL).any())

    def _loss_to_model(self, loss: float) -> float:
        return math.log(loss) if self.log_loss else loss

    def _loss_from_model(self, y: float) -> float:
        return math.exp(y) if self.log_loss else y

    def _impute_failed(self) -> float:
        """The loss model's target for failed trials; each failed trial records it (as a loss) in ``imputed_loss``."""
        y_ok = [self._loss_to_model(t["loss"]) for t in self.trials if t["status"] == "ok"]
        worst, best = max(y_ok), min(y_ok)
        imputed = worst + max(FAILED_LOSS_MARGIN * (worst - best), MIN_FAILED_GAP)
        for t in self.trials:
            if t["status"] == "failed":
                t["imputed_loss"] = self._loss_from_model(imputed)
        return imputed

    def _targets(self) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Training data (X_loss, y_loss, X_cost, y_cost); failed trials enter the loss model imputed."""
        imputed = self._impute_failed()
        ok = [i for i, t in enumerate(self.trials) if t["status"] == "ok"]
        failed = [i for i, t in enumerate(self.trials) if t["status"] == "failed"]
        y_ok = [self._loss_to_model(self.trials[i]["loss"]) for i in ok]
        y_loss = torch.tensor(y_ok + [imputed] * len(failed), dtype=self.dtype, device=self.device)
        cost_rows = [i for i, t in enumerate(self.trials) if t["cost"] is not None]
        y_cost = torch.tensor([math.log(self.trials[i]["cost"]) for i in cost_rows], dtype=self.dtype, device=self.device)
        X = torch.stack(self.X)
        return X[ok + failed], y_loss, X[cost_rows], y_cost

    # ------------------------------------------------------------------ proposals
    def _initial_point(self, index: int) -> tuple[dict, str]:
        if index < len(self.initial_configs):
            return dict(self.initial_configs[index]), "given"
        if self.X_init is None:
            from ..space.sampling import sample

            n_sobol = self.n_initial - len(self.initial_configs)
            self.X_init = sample(self.space, n_sobol, seed=self.seed, dtype=self.dtype, device=self.device)
        return self.space.to_configs(self.X_init[index - len(self.initial_configs)][None])[0], "sobol"

    def _random_point(self, index: int) -> Tensor:
        from ..space.sampling import sample

        candidates = sample(self.space, 32, seed=_seed_for(self.seed, index), dtype=self.dtype, device=self.device)
        for x in candidates:
            if not self._is_duplicate(x):
                return x
        return candidates[0]

    def _propose(self, phase: str, index: int) -> tuple[Tensor, str, str, dict | None, dict]:
        """Next point of a model-based iteration: (x, phase run, how it was found, predicted outputs, timings)."""
        timings: dict[str, float] = {}
        n_ok = sum(t["status"] == "ok" for t in self.trials)
        n_cost = sum(t["cost"] is not None for t in self.trials)
        if n_ok < 2 or n_cost < 2:
            return self._random_point(index), phase, "random: fewer than 2 finished trials to fit the models", None, timings
        X_loss, y_loss, X_cost, y_cost = self._targets()
        with torch.random.fork_rng(devices=[self.device] if self.device.type == "cuda" else []):
            torch.manual_seed(_seed_for(self.seed, index))
            start = time.perf_counter()
            model = ModelListGP(self.models["loss"].fit(X_loss, y_loss), self.models["cost"].fit(X_cost, y_cost))
            timings["fit"] = time.perf_counter() - start
            start = time.perf_counter()
            try:
                x, how, value = self._optimise(model, phase, index)
                gives_way = self.min_tick_gain > 0 and value is not None and value < math.log(self.min_tick_gain)
                if phase == "tick" and gives_way:
                    phase = "tock"
                    x, how, value = self._optimise(model, phase, index)
                    how += f" (the tick expected a relative cost reduction below min_tick_gain={self.min_tick_gain:g})"
            except (RuntimeError, ValueError, ArithmeticError) as exc:  # numerical trouble must not end a long run
                warnings.warn(f"tick_tock: {phase} acquisition failed at trial {index} ({exc}); using a random point",
                              RuntimeWarning, stacklevel=3)
                x, how, value = self._random_point(index), f"random: acquisition failed ({type(exc).__name__}: {exc})", None
            timings["acquisition"] = time.perf_counter() - start
            with torch.no_grad():
                mean = model.posterior(x[None]).mean[0]
        prediction = {"loss": self._loss_from_model(float(mean[0])), "cost": math.exp(float(mean[1])), "log_acquisition": value}
        return x, phase, how, prediction, timings

    def _optimise(self, model: ModelListGP, phase: str, index: int) -> tuple[Tensor, str, float | None]:
        ok = [i for i, t in enumerate(self.trials) if t["status"] == "ok"]
        X_ok = torch.stack([self.X[i] for i in ok])
        sampler = SobolQMCNormalSampler(sample_shape=torch.Size([self.mc_samples]), seed=_seed_for(self.seed, index))
        if phase == "tock":
            acquisition = tock_acquisition(model, X_ok, self.max_cost, sampler=sampler, eta=self.eta)
        else:
            within = [i for i in ok if self.trials[i]["cost"] <= self.max_cost]
            reference = torch.stack([self.X[i] for i in within]) if within else X_ok
            acquisition = qLogCostImprovement(model, reference, self.max_cost, sampler=sampler, eta=self.eta)
        starts = self._starting_points(acquisition, X_ok, index)
        bounds = self.space.bounds.to(dtype=self.dtype, device=self.device)
        constraints = self.space.inequality_constraints(dtype=self.dtype, device=self.device) or None
        candidates, values = optimize_acqf(
            acquisition, bounds=bounds, q=1, num_restarts=len(starts), batch_initial_conditions=starts,
            inequality_constraints=constraints, options={"maxiter": 200, **self.acq_options}, return_best_only=False,
        )
        # Best first: the exactly rounded candidate must satisfy the constraints and be new.
        for k in torch.argsort(values.reshape(-1), descending=True).tolist():
            x = self.space.round(candidates[k].reshape(1, -1))[0]
            if bool(self.space.feasible(x[None])[0]) and not self._is_duplicate(x):
                how = "acquisition" if k == int(values.argmax()) else "acquisition (a later restart: the best was taken)"
                return x, how, float(values.reshape(-1)[k])
        return self._random_point(index), "random: every optimised candidate was already evaluated or infeasible after rounding", None

    def _starting_points(self, acquisition, X_ok: Tensor, index: int) -> Tensor:
        """Restarts for the gradient ascent: Sobol points of the space (valid, constraints honoured) and the
        observed points, ``num_restarts`` of them drawn by acquisition value with botorch's Boltzmann heuristic."""
        from ..space.sampling import sample

        raw = sample(self.space, self.raw_samples, seed=_seed_for(self.seed, index) + 1, dtype=self.dtype,
                     device=self.device)
        raw = torch.cat([raw, X_ok]).unsqueeze(-2)  # b x 1 x d
        with torch.no_grad():
            values = torch.cat([acquisition(chunk) for chunk in raw.split(512)])
        starts, _ = initialize_q_batch(raw, values, n=min(self.num_restarts, len(raw)))
        return starts

    # ------------------------------------------------------------------ running
    def _record(self, index: int, phase: str, config: dict, how: str, prediction, timings, started: float) -> dict:
        outcome = self.runner(config)
        trial = {
            "trial": index, "iteration": max(index - self.n_initial + 1, 0), "phase": phase, "config": config,
            "status": outcome.status, "loss": outcome.loss, "cost": outcome.cost, "error": outcome.error,
            "outputs": outcome.outputs, "timings": {**timings, "objective": outcome.seconds}, "proposal": how,
            "prediction": prediction, "started": started,
        }
        if self.journal is not None:
            self.journal.append(trial)
        return trial

    def _postfix(self, bar) -> None:
        best = best_feasible(self.trials, self.max_cost)
        failed = sum(t["status"] == "failed" for t in self.trials)
        text = f"best loss {best['loss']:.4g} at cost {best['cost']:.3g}" if best else "no feasible trial yet"
        bar.set_postfix_str(text + (f", {failed} failed" if failed else ""))

    def run(self) -> TickTockResult:
        from tqdm.auto import tqdm

        bar = tqdm(total=self.total, initial=len(self.trials), desc="tick-tock", unit="trial", disable=not self.progress,
                   dynamic_ncols=True)
        try:
            self._postfix(bar)
            while len(self.trials) < self.total:
                index, started = len(self.trials), time.time()
                if index < self.n_initial:
                    phase, prediction, timings = "init", None, {}
                    config, how = self._initial_point(index)
                else:
                    phase = phase_of(index - self.n_initial + 1, self.tick_ratio)
                    bar.set_description(f"tick-tock ({phase})")
                    x, phase, how, prediction, timings = self._propose(phase, index)
                    config = self.space.to_configs(x[None])[0]
                trial = self._record(index, phase, config, how, prediction, timings, started)
                self.trials.append(trial)
                self.X.append(self.space.to_search([config], dtype=self.dtype, device=self.device)[0])
                bar.update(1)
                self._postfix(bar)
        finally:
            bar.close()
            self.runner.close()
            if self.journal is not None:
                self.journal.close()
        if any(t["status"] == "ok" for t in self.trials):
            self._impute_failed()
        info = {"loss_kernel": self.models["loss"].factory.source, "cost_kernel": self.models["cost"].factory.source,
                "features": list(self.chain.feature_names), "tick_ratio": self.tick_ratio}
        return TickTockResult(self.trials, self.max_cost, str(self.journal.path) if self.journal else None, info)


def tick_tock(
    objective: Callable[[dict], Mapping[str, Any]],
    space: Space,
    max_cost: float,
    n_init: int = 10,
    n_iter: int = 30,
    journal: str | None = None,
    seed: int = 0,
    initial_configs: Sequence[Mapping[str, Any]] | None = None,
    loss_kernel: str | None = None,
    cost_kernel: str | None = None,
    feature_chain=None,
    kernel_groups: Mapping[str, Sequence[str]] | None = None,
    kernel_options: Mapping[str, Any] | None = None,
    tick_ratio: float = 0.5,
    log_loss: bool = True,
    timeout: float | None = None,
    isolation: str | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float64,
    num_restarts: int = 8,
    raw_samples: int = 256,
    mc_samples: int = 128,
    acq_options: Mapping[str, Any] | None = None,
    fit_options: Mapping[str, Any] | None = None,
    eta: float = 1e-3,
    min_tick_gain: float = 1e-3,
    plot: str | None = None,
    progress: bool = True,
) -> TickTockResult:
    """Minimise ``loss`` within ``max_cost`` with cost-aware Bayesian optimisation; return every trial.

    ``objective(config) -> {"loss": ..., "cost": ..., ...}`` is called on user
    configs (dicts, inactive parameters absent) of ``space``. Both outputs are
    modelled in log space (set ``log_loss=False`` for losses that may be <= 0);
    extra returned values are kept in each trial's ``outputs``.

    Schedule: first the ``initial_configs`` (exactly as given), then ``n_init``
    scrambled Sobol points (seeded by ``seed``), then ``n_iter`` model-based
    iterations; iteration k is a tick when ``floor(k * tick_ratio)`` steps up, so
    the default 0.5 alternates tock, tick, tock, ... (`phase_of`). A tick whose
    best expected relative cost reduction is below ``min_tick_gain`` runs as a
    tock instead (``min_tick_gain=0``: never).

    Models: one ``SingleTaskGP`` per output on the search space, with the input
    transform "round ints and choices (straight-through), then ``feature_chain``"
    (default: numeric coordinates passed through, log coordinates as logs,
    choices one-hot, all scaled to [0, 1]) and the covariance
    ``kd.compile(loss_kernel / cost_kernel, features=chain.feature_names,
    groups=kernel_groups, **kernel_options)``. The default kernel
    `DEFAULT_KERNEL` is ``matern52(all)``: one Matern 5/2 with a lengthscale per
    feature, over the group ``all`` of every feature. Outputs are standardised;
    each refit with ``fit_gpytorch_mll`` starts from the previous fit's values.

    Tock maximises ``qLogNoisyExpectedImprovement`` of -log loss with the
    constraint log cost <= log max_cost; tick maximises `qLogCostImprovement`
    (expected log-cost reduction below the best feasible trial, with loss no
    worse than that trial's, both judged on the same joint posterior sample, and
    cost <= max_cost). Both are optimised by ``optimize_acqf`` over the search
    bounds with the space's linear constraints (``num_restarts``,
    ``raw_samples``, ``acq_options``; ``mc_samples`` QMC samples); the best
    candidate that after exact rounding (inactive parameters to their
    defaults) satisfies the constraints and is not a repeat is evaluated. If
    none qualifies, or fewer than two trials have finished, a Sobol point is.

    Failures (the objective raises, times out after ``timeout`` seconds, or
    returns NaN/inf or a non-positive value) are recorded with ``status
    "failed"`` and the reason in ``error``. The loop steers away from them: each
    failed point enters the loss model with an imputed log loss, the worst
    observed log loss plus half the observed range (at least 0.1), recomputed at
    every fit and reported as ``imputed_loss``; a failed trial's reported cost, if
    finite, still trains the cost model. ``isolation`` picks how timeouts work
    (see `kerneldsl.loop.runner`).

    ``journal``: path of a JSON-lines file; every finished trial is appended at
    once (flushed and fsynced). An existing journal is resumed: its trials are
    kept, never re-run, and the run continues to ``len(initial_configs) + n_init
    + n_iter`` trials. ``plot``: path of a PNG to write at the end (see
    `TickTockResult.plot`). ``progress``: show a progress bar with the best
    feasible loss and its cost, and print the summary table at the end.
    ``device`` / ``dtype`` place the models. Returns a `TickTockResult`.
    """
    loop = _Loop(objective, space, max_cost, n_init, n_iter, journal, seed, initial_configs, loss_kernel, cost_kernel,
                 feature_chain, kernel_groups, kernel_options, tick_ratio, log_loss, timeout, isolation, device, dtype,
                 num_restarts, raw_samples, mc_samples, acq_options, fit_options, eta, min_tick_gain, progress)
    result = loop.run()
    if plot is not None:
        result.plot(plot, title=f"tick-tock, max_cost = {max_cost:g}")
    if progress:
        print(result.summary())
    return result
