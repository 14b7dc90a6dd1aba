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

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any

from ..model import DEFAULT_KERNEL
from ..space.space import Space
from .budget import BudgetLike
from .options import StudyOptions, check_count
from .results import TickTockResult
from .study import Study
from .trial import phase_of

__all__ = ["tick_tock", "phase_of", "DEFAULT_KERNEL"]

_STUDY_OWN = ("proposer", "stopping")
"""Keywords `tick_tock` hands to `Study` as they are (the others are options of its dataclasses)."""


def tick_tock(
    objective: Callable[[dict], Mapping[str, Any]],
    space: Space,
    max_cost: BudgetLike,
    n_init: int | None = None,
    n_iter: int = 30,
    journal: str | None = None,
    *,
    timeout: float | None = None,
    isolation: str | None = None,
    plot: str | None = None,
    progress: bool = True,
    **options: Any,
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
    feature, over the group ``all`` of every feature. Every kernel, yours too, gets botorch's
    dimension-scaled LogNormal lengthscale prior, d counted per term, unless ``kernel_options``
    sets one (see `kerneldsl.loop.proposals.output_models`). Outputs are standardised;
    each refit with ``fit_gpytorch_mll`` starts from the previous fit's values.

    Tock maximises ``qLogNoisyExpectedImprovement`` of -log loss with the
    constraint log cost <= log max_cost; tick maximises `qLogCostImprovement`
    (expected log-cost reduction below the best feasible trial, with loss no
    worse than that trial's, both judged on the same joint posterior sample, and
    cost <= max_cost). When no trial is pending and some trial is within budget, both run in
    closed form (``analytic=True``, the default: the value of botorch's ``LogConstrainedExpectedImprovement``
    with the incumbent at its posterior mean; see `kerneldsl.loop.acquisition.analytic_tock`).
    Both are optimised by ``optimize_acqf`` over the search
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

    Options: ``options`` are those of `Study`: ``seed``, ``initial_configs``, ``tick_ratio`` (or
    ``schedule=Schedule(...)``; ``n_init`` defaults to its 10), the model options ``loss_kernel``,
    ``cost_kernel``, ``feature_chain``, ``kernel_groups``, ``kernel_options``, ``fit_options``,
    ``log_loss``, ``device``, ``dtype`` (or ``models=ModelOptions(...)``), the acquisition options
    ``num_restarts``, ``raw_samples``, ``mc_samples``, ``acq_options``, ``eta``, ``min_tick_gain``, ``analytic``
    (or ``acquisition=AcquisitionOptions(...)``), ``proposer`` and ``stopping``.
    """
    check_count("tick_tock", "n_iter", n_iter)
    if "n_trials" in options or getattr(options.get("schedule"), "n_trials", None) is not None:
        raise TypeError("tick_tock: n_trials is len(initial_configs) + n_init + n_iter; set n_iter instead")
    own = {key: options.pop(key) for key in _STUDY_OWN if key in options}
    chosen = StudyOptions.of("tick_tock", **options, **({} if n_init is None else {"n_init": n_init}))
    schedule = replace(chosen.schedule, n_trials=chosen.schedule.n_initial + n_iter)
    study = Study(space, max_cost, journal, schedule=schedule, models=chosen.models, acquisition=chosen.acquisition,
                  **own)
    with study:
        result = study.optimize(objective, timeout=timeout, isolation=isolation, progress=progress)
    if plot is not None:
        result.plot(plot, title=f"tick-tock, max_cost = {result.max_cost:g}")
    if progress:
        print(result.summary())
    return result
