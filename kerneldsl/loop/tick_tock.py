"""`tick_tock`: cost-aware Bayesian optimisation in one call, a thin convenience over `Study`.

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

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch

from ..model import DEFAULT_KERNEL
from ..space.space import Space
from .results import TickTockResult
from .stopping import CostStopping
from .study import Study, _count
from .trial import phase_of

__all__ = ["tick_tock", "phase_of", "DEFAULT_KERNEL"]


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
    stopping: CostStopping | None = CostStopping(),
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
    returns NaN/inf or a non-positive value) are recorded with state
    ``TrialState.FAILED`` and the reason in ``error``. The loop steers away from them: each
    failed point enters the loss model with an imputed log loss, the worst
    observed log loss plus half the observed range (at least 0.1), recomputed at
    every fit and reported as ``imputed_loss``; a failed trial's reported cost, if
    finite, still trains the cost model. ``isolation`` picks how timeouts work
    (see `kerneldsl.loop.runner`).

    ``journal``: path of a JSON-lines file; every ask and tell is appended at
    once (flushed and fsynced). An existing journal is resumed: its finished
    trials are kept, never re-run, a trial that was running when the process
    stopped is marked lost and its config runs again, and the run continues to
    ``len(initial_configs) + n_init + n_iter`` trials. ``plot``: path of a PNG to write at the end (see
    `TickTockResult.plot`). ``progress``: show a progress bar with the best
    feasible loss and its cost, and print the summary table at the end.
    ``device`` / ``dtype`` place the models. Returns a `TickTockResult`.

    Partial results: an objective of two arguments, ``objective(config, report)``,
    may call ``stop = report(cost=..., progress=..., loss=None)`` while it trains
    (e.g. once per epoch); when ``stop`` is True it should return what it has
    (``{"loss": None or the partial loss, "cost": cost so far}``) and the trial is
    recorded as stopped. ``stopping`` is the rule (`CostStopping`; None never
    stops). ``max_cost`` may be a schedule: a callable of the number of finished
    trials, or a list of ``(trial, budget)`` steps (see `kerneldsl.loop.budget`).
    The same loop as ask/tell: `kerneldsl.Study`.
    """
    total = len(initial_configs or []) + _count("tick_tock", "n_init", n_init) + _count("tick_tock", "n_iter", n_iter)
    study = Study(space, max_cost, journal, n_init=n_init, n_trials=total, seed=seed, initial_configs=initial_configs,
                  loss_kernel=loss_kernel, cost_kernel=cost_kernel, feature_chain=feature_chain,
                  kernel_groups=kernel_groups, kernel_options=kernel_options, tick_ratio=tick_ratio, log_loss=log_loss,
                  device=device, dtype=dtype, num_restarts=num_restarts, raw_samples=raw_samples,
                  mc_samples=mc_samples, acq_options=acq_options, fit_options=fit_options, eta=eta,
                  min_tick_gain=min_tick_gain, stopping=stopping)
    with study:
        result = study.optimize(objective, timeout=timeout, isolation=isolation, progress=progress)
    if plot is not None:
        result.plot(plot, title=f"tick-tock, max_cost = {result.max_cost:g}")
    if progress:
        print(result.summary())
    return result
