"""`Study`: cost-aware Bayesian optimisation as ask/tell, with a crash-safe journal.

A study owns its trials. ``ask`` proposes configs (the initial design first, then
model-based ticks and tocks), ``tell`` records what a trial produced, ``optimize``
runs an objective in a loop of asks and tells. Any number of trials may be running:
model-based proposals treat them as pending points (botorch's ``X_pending``), and
``ask(n)`` builds a q-batch sequentially and greedily, each point pending for the
next.

Schedule: trial positions count every trial that is not lost. Positions below
``len(initial_configs) + n_init`` get the initial design (the user's configs, then
scrambled Sobol points seeded by ``seed``, balanced over the space's branches by
`kerneldsl.space.sampling.balanced_sample` so that every choice value is seen early);
position ``p`` after that is model-based iteration ``k = p - n_initial + 1``, a tick
when ``floor(k * tick_ratio)`` steps up
(`phase_of`). The phase belongs to the position, not to the time it is asked, so with
several trials in flight ticks and tocks still alternate in the order asked: ``ask(4)``
after the initial design gives tock, tick, tock, tick, each with the earlier ones
pending.
"""

from __future__ import annotations

import math
import os
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from ..model import DEFAULT_KERNEL, KernelGP, OutputModel, default_feature_chain
from ..space.sampling import balanced_sample
from ..space.space import Space
from .budget import Budget, BudgetLike
from .journal import Journal, JournalError, read_journal
from .proposals import ModelData, Proposer, TrainingData
from .results import TickTockResult, best_feasible
from .executors import TrialCall, trial_pool
from .reporting import POLL, DaskChannel, LocalChannel, ReportChannel
from .runner import Outcome, as_number, outcome_of
from .stopping import CostEstimate, CostStopping
from .trial import Phase, Report, Trial, TrialState, phase_of

__all__ = ["Study", "StudyError", "FAILED_LOSS_MARGIN", "MIN_FAILED_GAP"]

FAILED_LOSS_MARGIN = 0.5  # imputed log loss = worst + margin * (worst - best), at least MIN_FAILED_GAP above the worst
MIN_FAILED_GAP = 0.1
LOST_REASON = "lost: the study stopped while it ran"
_CHECKED_KEYS = ("parameters", "seed", "n_init", "initial_configs")
"""Header keys that decide what a journal's trials mean: a study resumes a journal only when they match (the
budget may move: each trial records the one it ran under)."""


class StudyError(ValueError):
    """A study was used in a way that cannot work (tell twice, a foreign trial, ask past the end, ...)."""


def _count(owner: str, name: str, value: Any, positive: bool = False) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < (1 if positive else 0):
        raise ValueError(f"{owner}: {name} must be a {'positive' if positive else 'non-negative'} integer, got {value!r}")
    return value


class Study:
    """An optimisation study of ``space`` under the budget ``max_cost``: ask for configs, tell their outcomes.

    ``journal`` is the path of a JSON-lines file that records every ask and tell
    (flushed and fsynced); an existing journal is resumed (its settings must match).
    ``n_init`` Sobol points follow the ``initial_configs``; ``n_trials`` (optional)
    fixes how many trials the study has, which ``optimize`` runs to and ``ask`` stops at.
    The models, acquisitions and options are those of `kerneldsl.tick_tock`.
    """

    def __init__(
        self,
        space: Space,
        max_cost: BudgetLike,
        journal: str | os.PathLike | None = None,
        *,
        n_init: int = 10,
        n_trials: int | None = None,
        seed: int = 0,
        initial_configs: Sequence[Mapping[str, Any]] | None = None,
        loss_kernel: str | None = None,
        cost_kernel: str | None = None,
        feature_chain=None,
        kernel_groups: Mapping[str, Sequence[str]] | None = None,
        kernel_options: Mapping[str, Any] | None = None,
        tick_ratio: float = 0.5,
        log_loss: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float64,
        num_restarts: int = 8,
        raw_samples: int = 256,
        mc_samples: int = 128,
        acq_options: Mapping[str, Any] | None = None,
        fit_options: Mapping[str, Any] | None = None,
        eta: float = 1e-3,
        min_tick_gain: float = 1e-3,
        stopping: CostStopping | None = CostStopping(),
    ):
        if not isinstance(space, Space):
            raise TypeError(f"Study: space must be a kerneldsl.Space, got {type(space).__name__}")
        self.budget = Budget.of(max_cost)
        self._max_cost = self.budget.first
        if stopping is not None and not isinstance(stopping, CostStopping):
            raise TypeError(f"Study: stopping must be a kerneldsl.CostStopping or None, got {type(stopping).__name__}")
        self.stopping = stopping
        if isinstance(tick_ratio, bool) or not isinstance(tick_ratio, (int, float)) or not 0.0 <= tick_ratio <= 1.0:
            raise ValueError(f"Study: tick_ratio must lie in [0, 1], got {tick_ratio!r}")
        if isinstance(min_tick_gain, bool) or not isinstance(min_tick_gain, (int, float)) or not min_tick_gain >= 0:
            raise ValueError(f"Study: min_tick_gain must be a non-negative number (0: ticks never give way), "
                             f"got {min_tick_gain!r}")
        for name, value in (("num_restarts", num_restarts), ("raw_samples", raw_samples), ("mc_samples", mc_samples)):
            _count("Study", name, value, positive=True)
        self.space = space
        self.seed, self.n_init = _count("Study", "seed", seed), _count("Study", "n_init", n_init)
        self.n_trials = None if n_trials is None else _count("Study", "n_trials", n_trials)
        self.tick_ratio, self.log_loss = float(tick_ratio), bool(log_loss)
        self.device, self.dtype = torch.device(device) if device is not None else torch.device("cpu"), dtype
        self.initial_configs = [dict(c) for c in (initial_configs or [])]
        if self.initial_configs:
            space.to_search(self.initial_configs)  # validates them now, not when their turn comes
        self.n_initial = len(self.initial_configs) + self.n_init
        self._X_init: Tensor | None = None  # the Sobol part of the initial design, drawn when first needed

        self.feature_chain = feature_chain if feature_chain is not None else default_feature_chain(space)
        rounding = space.rounding_transform(method="approximate")
        kernel_options = dict(kernel_options or {})
        self.kernels = {"loss": loss_kernel or DEFAULT_KERNEL, "cost": cost_kernel or DEFAULT_KERNEL}
        every_feature = {"all": list(self.feature_chain.feature_names)}
        self.models = {
            name: OutputModel(name, KernelGP(source or DEFAULT_KERNEL, self.feature_chain, rounding=rounding,
                                             groups={**every_feature, **dict(kernel_groups or {})} if source is None
                                             else kernel_groups, **kernel_options), fit_options=fit_options or {})
            for name, source in (("loss", loss_kernel), ("cost", cost_kernel))
        }
        self.proposer = Proposer(space, self._max_cost, self.models, self.seed, self.log_loss, self.device, self.dtype,
                                 num_restarts, raw_samples, mc_samples, acq_options or {}, eta, min_tick_gain)

        self._budget_warnings: list[str] = []
        self.trials: list[Trial] = []
        self._X: list[Tensor] = []  # search point of each trial
        self.journal: Journal | None = None
        self._resumed = 0  # trials read from the journal, announced by the first optimize
        if journal is not None:
            header = {"parameters": list(space.names), "n_trials": self.n_trials,
                      "max_cost": self._max_cost if math.isfinite(self._max_cost) else "inf", "seed": self.seed,
                      "n_init": self.n_init, "initial_configs": self.initial_configs,
                      "loss_kernel": self.kernels["loss"], "cost_kernel": self.kernels["cost"],
                      "tick_ratio": self.tick_ratio, "log_loss": self.log_loss}
            self.journal = Journal(journal, header, check_keys=_CHECKED_KEYS)
            try:
                for trial in self.journal.trials:
                    self._add(trial)
                self._resumed = len(self.trials)
            except JournalError:
                self.journal.close()
                raise

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike, space: Space | None = None, **options: Any) -> "Study":
        """Open a finished or running study from its journal.

        Without ``space`` the study is for reading and telling: its trials, ``best``,
        ``result()`` (summary, plot) and ``trials_dataframe()``; with the study's
        ``space`` (and its ``feature_chain``, if it had one) ``ask`` continues it. The
        study's settings (budget, seed, initial design, kernels) come from the journal;
        ``options`` set the others (as for ``Study``).
        """
        header, trials = read_journal(path)
        if header is None:
            raise JournalError(f"{path}: no journal there (missing or empty file)")
        settings = _settings(header)
        if space is None:
            return _ReadOnlyStudy(path, header, trials, settings)
        return cls(space, journal=path, **{**settings, **options})

    def _add(self, trial: Trial) -> None:
        try:
            x = self.space.to_search([trial.config], dtype=self.dtype, device=self.device)[0]
        except (ValueError, KeyError, TypeError) as exc:
            where = f"{self.journal.path}: trial {trial.id}" if self.journal is not None else f"trial {trial.id}"
            raise JournalError(f"{where}: its config does not fit this space: {exc}") from None
        self.trials.append(trial)
        self._X.append(x)

    # ------------------------------------------------------------------ views
    @property
    def max_cost(self) -> float:
        """The budget in force: fixed, or the schedule's value for the number of finished trials now."""
        if self.budget.moving:
            finished = sum(t.state.finished and t.state is not TrialState.LOST for t in self.trials)
            try:
                self._max_cost = self.budget.at(finished)
            except Exception as exc:  # noqa: BLE001 - a user's schedule must not end the study
                message = f"max_cost schedule failed ({type(exc).__name__}: {exc}); keeping max_cost={self._max_cost:g}"
                if message not in self._budget_warnings:
                    self._budget_warnings.append(message)
                    warnings.warn(message, RuntimeWarning, stacklevel=2)
        return self._max_cost

    @property
    def best(self) -> Trial | None:
        """The finished trial with the lowest loss among those with cost <= max_cost (None if there is none)."""
        return best_feasible(self.trials, self.max_cost)

    @property
    def running(self) -> list[Trial]:
        """Trials asked and not told yet."""
        return [t for t in self.trials if t.state is TrialState.RUNNING]

    @property
    def n_counted(self) -> int:
        """Trials that count towards ``n_trials``: every trial except lost ones."""
        return sum(t.state is not TrialState.LOST for t in self.trials)

    @property
    def finished(self) -> bool:
        """Whether a study with a fixed ``n_trials`` has asked all of them."""
        return self.n_trials is not None and self.n_counted >= self.n_trials

    def result(self) -> TickTockResult:
        """Every trial so far, the budget and the models' sources: summary, best, plot."""
        self._impute_failed()
        info = {"loss_kernel": self.kernels["loss"], "cost_kernel": self.kernels["cost"],
                "features": list(self.feature_chain.feature_names), "tick_ratio": self.tick_ratio,
                "budget_warnings": list(self._budget_warnings)}
        return TickTockResult(list(self.trials), self.max_cost, str(self.journal.path) if self.journal else None, info)

    def trials_dataframe(self):
        """One row per trial (pandas): id, state, phase, loss, cost, feasibility, timings, ``params_*`` and
        ``outputs_*`` columns, as Optuna's ``Study.trials_dataframe``."""
        from .results import trials_dataframe

        self._impute_failed()
        return trials_dataframe(self.trials, self.max_cost)

    # ------------------------------------------------------------------ ask
    def ask(self, n: int | None = None) -> Trial | list[Trial]:
        """Propose one trial (``n`` None) or a list of ``n`` distinct trials; each is running until told."""
        count = 1 if n is None else _count("Study.ask", "n", n, positive=True)
        if self.n_trials is not None and self.n_counted + count > self.n_trials:
            left = self.n_trials - self.n_counted
            raise StudyError(f"Study.ask({'' if n is None else n}): the study has n_trials={self.n_trials} and "
                             f"{self.n_counted} of them are asked ({left} left); make a Study with a larger n_trials "
                             "to go on")
        trials = self._ask(count)
        return trials[0] if n is None else trials

    def _ask(self, count: int, retry: Sequence[Trial] = ()) -> list[Trial]:
        started = time.time()
        self.proposer.max_cost = budget = self.max_cost
        asked: list[Trial] = []
        for lost in retry[:count]:
            asked.append(Trial(id=len(self.trials) + len(asked), config=dict(lost.config), phase=lost.phase,
                               iteration=lost.iteration, proposal=f"retry of trial {lost.id} ({LOST_REASON})",
                               prediction=lost.prediction, started=started, retry_of=lost.id))
        model_based: list[tuple[int, int, Phase]] = []  # (trial id, iteration, phase)
        for _ in range(count - len(asked)):
            trial_id = len(self.trials) + len(asked) + len(model_based)
            position = self.n_counted + len(asked) + len(model_based)
            if position < self.n_initial:
                config, how = self._initial_point(position)
                asked.append(Trial(id=trial_id, config=config, phase=Phase.INIT, proposal=how, started=started))
            else:
                iteration = position - self.n_initial + 1
                model_based.append((trial_id, iteration, phase_of(iteration, self.tick_ratio)))
        if model_based:
            data = self._training_data([self._search_point(t.config) for t in asked])
            proposals = self.proposer.propose([p for _, _, p in model_based], [i for i, _, _ in model_based], data)
            for (trial_id, iteration, _), proposal in zip(model_based, proposals):
                config = self.space.to_configs(proposal.x[None])[0]
                asked.append(Trial(id=trial_id, config=config, phase=proposal.phase, iteration=iteration,
                                   proposal=proposal.how, prediction=proposal.prediction, timings=proposal.timings,
                                   started=started))
        asked.sort(key=lambda t: t.id)
        for trial in asked:
            trial.budget = budget
            self._add(trial)
            if self.journal is not None:
                self.journal.write(trial.ask_record())
        return asked

    def _search_point(self, config: dict) -> Tensor:
        return self.space.to_search([config], dtype=self.dtype, device=self.device)[0]

    def _initial_point(self, position: int) -> tuple[dict, str]:
        if position < len(self.initial_configs):
            return dict(self.initial_configs[position]), "given"
        if self._X_init is None:
            self._X_init = balanced_sample(self.space, self.n_init, seed=self.seed, dtype=self.dtype, device=self.device)
        return self.space.to_configs(self._X_init[position - len(self.initial_configs)][None])[0], "sobol"

    def _impute_failed(self) -> float | None:
        """The loss model's target for failed trials (model scale); each failed trial records it as ``imputed_loss``."""
        y_ok = [self._loss_to_model(t.loss) for t in self.trials if t.state is TrialState.OK]
        if not y_ok:
            return None
        worst, best = max(y_ok), min(y_ok)
        imputed = worst + max(FAILED_LOSS_MARGIN * (worst - best), MIN_FAILED_GAP)
        for t in self.trials:
            if t.state is TrialState.FAILED:
                t.imputed_loss = self._loss_from_model(imputed)
        return imputed

    def _loss_to_model(self, loss: float) -> float:
        return math.log(loss) if self.log_loss else loss

    def _loss_from_model(self, y: float) -> float:
        return math.exp(y) if self.log_loss else y

    def _training_data(self, asking: list[Tensor]) -> TrainingData:
        """What the proposals learn from; ``asking`` are points of trials being asked now (pending too).

        Its models are None while fewer than two trials have a loss or a cost (proposals are then random)."""
        X = torch.stack(self._X + asking) if self._X or asking else None
        running = [i for i, t in enumerate(self.trials) if t.state is TrialState.RUNNING]
        running += list(range(len(self.trials), len(self.trials) + len(asking)))
        data = TrainingData(X_seen=X, X_pending=X[running] if running else None)
        ok = [i for i, t in enumerate(self.trials) if t.state is TrialState.OK]
        cost_of = {i: t.cost for i, t in enumerate(self.trials) if t.state in (TrialState.OK, TrialState.FAILED)
                   and t.cost is not None}
        cost_of.update({i: t.estimated_cost for i, t in enumerate(self.trials)
                        if t.state is TrialState.STOPPED and t.estimated_cost is not None})
        cost_rows = sorted(cost_of)
        if len(ok) < 2 or len(cost_rows) < 2:
            return data
        imputed = self._impute_failed()
        failed = [i for i, t in enumerate(self.trials) if t.state is TrialState.FAILED]
        y_loss = [self._loss_to_model(self.trials[i].loss) for i in ok] + [imputed] * len(failed)
        within = [i for i in ok if self.trials[i].cost <= self.max_cost]
        tensor = lambda values: torch.tensor(values, dtype=self.dtype, device=self.device)  # noqa: E731
        data.models = ModelData(
            X_loss=X[ok + failed], y_loss=tensor(y_loss),
            X_cost=X[cost_rows], y_cost=tensor([math.log(cost_of[i]) for i in cost_rows]),
            X_ok=X[ok], X_within=X[within] if within else X[ok],
        )
        return data

    # ------------------------------------------------------------------ tell
    def tell(self, trial: Trial | int, outputs: Mapping[str, Any] | None = None, error: str | None = None) -> Trial:
        """Record what ``trial`` (a `Trial` this study asked, or its id) produced: ``outputs`` with at least
        ``loss`` and ``cost`` (extra keys are kept), or ``error`` (a reason) for a trial that failed.

        A loss that is NaN or infinite, or a cost that is not finite and positive, makes the trial failed with
        that reason, as in ``optimize``. Telling a trial twice, a trial of another study, or outputs without
        ``loss`` and ``cost`` raises `StudyError` and writes nothing.
        """
        target = self._owned(trial)
        if (outputs is None) == (error is None):
            raise StudyError(f"Study.tell(trial {target.id}): pass either outputs={{'loss': ..., 'cost': ...}} "
                             "or error='reason', not " + ("both" if outputs is not None else "neither"))
        if error is not None:
            if not isinstance(error, str) or not error.strip():
                raise StudyError(f"Study.tell(trial {target.id}): error must be a non-empty string, got {error!r}")
            outcome = Outcome(TrialState.FAILED, error=error.strip())
        else:
            if not isinstance(outputs, Mapping):
                raise StudyError(f"Study.tell(trial {target.id}): outputs must be a mapping with 'loss' and 'cost', "
                                 f"got {type(outputs).__name__}")
            missing = [key for key in ("loss", "cost") if key not in outputs]
            if missing:
                raise StudyError(f"Study.tell(trial {target.id}): outputs have no {' or '.join(map(repr, missing))} "
                                 f"(keys: {sorted(map(str, outputs))}); tell a failed trial with error='reason'")
            for key in ("loss", "cost"):
                if key == "loss" and outputs[key] is None and target.stop_requested:
                    continue  # a stopped trial may have no loss
                if as_number(outputs[key]) is None:
                    raise StudyError(f"Study.tell(trial {target.id}): {key}={outputs[key]!r} is not a number "
                                     "(an int or a float; e.g. tensor.item())")
            outcome = outcome_of(outputs, positive_loss=self.log_loss)
        return self._finish(target, outcome)

    # ------------------------------------------------------------------ partial results
    def report(self, trial: Trial | int, cost: float, progress: float, loss: float | None = None) -> bool:
        """Record a partial result of a running trial; return True when the study wants it stopped.

        ``cost`` is the cost so far (e.g. training seconds), ``progress`` in (0, 1] how far the
        trial is (e.g. epoch / epochs), ``loss`` an optional partial loss. With ``stopping`` set
        (the default `CostStopping`), the study estimates the final cost from the reports and the
        cost model and asks the trial to stop when it will overrun the budget; the objective then
        returns what it has and the trial is recorded as stopped. A report that cannot be right
        (negative or decreasing cost, progress outside (0, 1], NaN, a trial that has ended) is
        ignored and recorded in the trial's ``warnings``; it never ends the trial or the study.
        """
        target = self._trial_of(trial, "Study.report")
        problem = self._check_report(target, cost, progress, loss)
        if problem is not None:
            message = f"trial {target.id}: report ignored: {problem}"
            target.warnings.append(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return target.stop_requested
        report = Report(float(as_number(cost)), float(as_number(progress)),
                        None if loss is None else float(as_number(loss)), time.time())
        target.reports.append(report)
        if self.journal is not None:
            self.journal.write(report.record(target.id))
        if self.stopping is not None and not target.stop_requested and report.progress < 1.0:  # done: nothing to save
            estimate = self.stopping.estimate(report.cost, report.progress, _prior(target))
            if self.stopping.should_stop(estimate, self.max_cost):
                target.stop_requested, target.estimated_cost = True, estimate.cost
        return target.stop_requested

    @staticmethod
    def _check_report(trial: Trial, cost, progress, loss) -> str | None:
        if trial.state.finished:
            return f"the trial has ended (state {trial.state.value})"
        given = {"cost": cost, "progress": progress}
        values = {name: as_number(value) for name, value in given.items()}
        for name, value in values.items():
            if value is None or not math.isfinite(value):
                return f"{name}={given[name]!r} is not a finite number"
        if loss is not None and (as_number(loss) is None or math.isnan(as_number(loss))):
            return f"loss={loss!r} is not a number"
        if values["cost"] < 0:
            return f"cost={values['cost']:g} is negative"
        if not 0 < values["progress"] <= 1:
            return f"progress={values['progress']:g} is outside (0, 1]"
        if trial.reports and values["cost"] < trial.reports[-1].cost:
            return f"cost={values['cost']:g} is below the previous report's {trial.reports[-1].cost:g}"
        if trial.reports and values["progress"] < trial.reports[-1].progress:
            return f"progress={values['progress']:g} is below the previous report's {trial.reports[-1].progress:g}"
        return None

    def _trial_of(self, trial: Trial | int, caller: str) -> Trial:
        if isinstance(trial, Trial):
            if not 0 <= trial.id < len(self.trials) or self.trials[trial.id] is not trial:
                raise StudyError(f"{caller}: trial {trial.id} was not asked by this study (a trial of another "
                                 "Study object, or a copy); use the study that asked it, or pass its id")
            return trial
        if isinstance(trial, int) and not isinstance(trial, bool):
            if not 0 <= trial < len(self.trials):
                raise StudyError(f"{caller}: no trial {trial} in this study (ids 0..{len(self.trials) - 1})"
                                 if self.trials else f"{caller}: no trial {trial}: this study has no trials yet")
            return self.trials[trial]
        raise StudyError(f"{caller}: expected a Trial or a trial id, got {type(trial).__name__}")

    def _owned(self, trial: Trial | int) -> Trial:
        target = self._trial_of(trial, "Study.tell")
        if target.state.finished:
            raise StudyError(f"Study.tell: trial {target.id} was already told (state {target.state.value}); "
                             "a trial is told once")
        return target

    def _finish(self, trial: Trial, outcome: Outcome) -> Trial:
        if trial.stop_requested and outcome.state is not TrialState.LOST and not _completed(trial, outcome):
            spent = outcome.cost if outcome.cost is not None else trial.reports[-1].cost
            outcome = Outcome(TrialState.STOPPED, outcome.loss, spent, outcome.outputs, outcome.error, outcome.seconds)
        trial.state, trial.loss, trial.cost = outcome.state, outcome.loss, outcome.cost
        trial.error, trial.outputs = outcome.error, dict(outcome.outputs)
        if outcome.seconds:
            trial.timings["objective"] = outcome.seconds
        trial.finished = time.time()
        if self.journal is not None:
            self.journal.write(trial.tell_record())
        return trial

    def _mark_lost(self) -> list[Trial]:
        """Running trials of an earlier process become lost (journaled); returned for retrying."""
        lost = []
        for trial in self.running:
            self._finish(trial, Outcome(TrialState.LOST, error=LOST_REASON))
            lost.append(trial)
        return lost

    # ------------------------------------------------------------------ optimize
    def optimize(self, objective: Callable[[dict], Mapping[str, Any]], n_trials: int | None = None,
                 executor: Any = None, n_workers: int | None = None, timeout: float | None = None, *,
                 isolation: str | None = None, progress: bool = True) -> TickTockResult:
        """Run ``objective(config) -> {"loss": ..., "cost": ...}`` on asked configs and tell each outcome.

        Runs ``n_trials`` more trials, or (``n_trials`` None) until the study's own ``n_trials``.

        Where trials run: without ``executor``, in this process one at a time (``n_workers=1``;
        ``isolation`` and ``timeout`` as in `kerneldsl.loop.runner`), or with ``n_workers > 1``
        in a process pool of that size that the study starts and stops (threads with
        ``isolation="thread"``). ``executor`` may be any `concurrent.futures.Executor`
        (``ProcessPoolExecutor``, ``ThreadPoolExecutor``) or a Dask ``distributed.Client``
        (or its ``get_executor()``); ``n_workers`` then defaults to its number of workers.
        The study keeps ``n_workers`` trials in flight: whenever one finishes it is told and
        the next is asked at once (running trials are pending points of every proposal).
        This process alone asks, tells and writes the journal.

        Failures (the objective raises, runs past ``timeout`` seconds, returns bad results,
        or its worker dies) become failed trials with a one-line reason; see
        `kerneldsl.loop.executors` for how timeouts and dead workers are handled on each
        kind of executor. Bad arguments (a closed executor, ``n_workers < 1``, something that
        is not an executor, an objective that cannot be pickled for worker processes, a
        script without ``if __name__ == "__main__":``) raise before the first trial and
        leave the journal as it was. Trials left running by an earlier process that stopped
        (found in the journal) are marked lost and their configs run again first, as new
        trials. Returns ``result()``.
        """
        if n_trials is None and self.n_trials is None:
            raise StudyError("Study.optimize: pass n_trials (this study has no fixed n_trials)")
        more = None if n_trials is None else _count("Study.optimize", "n_trials", n_trials)
        if more is not None and self.n_trials is not None and self.n_counted - len(self.running) + more > self.n_trials:
            raise StudyError(f"Study.optimize(n_trials={n_trials}): the study has n_trials={self.n_trials} and "
                             f"{self.n_counted - len(self.running)} are finished; at most "
                             f"{self.n_trials - self.n_counted + len(self.running)} more can run")
        pool, width = trial_pool(objective, executor, n_workers, timeout=timeout, isolation=isolation,
                                 positive_loss=self.log_loss)
        channel = _report_channel(pool, objective)
        reports_here = channel is None and _reports_in_this_process(pool, objective)
        if self._resumed and progress:
            print(f"resuming {self._resumed} trials from {self.journal.path}")
        self._resumed = 0
        retry = self._mark_lost()
        if retry and progress:
            print(f"{len(retry)} trial(s) were running when the study stopped: run again as new trials")
        target = self.n_trials if more is None else self.n_counted + more
        from tqdm.auto import tqdm

        model_warnings: Counter[str] = Counter()  # raised while proposing: summarised once, not printed mid-bar
        bar = tqdm(total=target, initial=self.n_counted, desc="study", unit="trial", disable=not progress,
                   dynamic_ncols=True)
        in_flight: dict[Any, tuple[Trial, TrialCall, float]] = {}  # future -> trial, its call, when it was sent

        def submit(trial: Trial, call: TrialCall) -> None:
            in_flight[pool.submit(call)] = (trial, call, time.time())

        interrupted = True
        try:
            self._postfix(bar)
            while True:
                free = min(width - len(in_flight), target - self.n_counted)
                if free > 0:
                    position = self.n_counted
                    phase = (Phase.INIT if position < self.n_initial
                             else phase_of(position - self.n_initial + 1, self.tick_ratio))
                    bar.set_description(f"study ({phase.value})")
                    with warnings.catch_warnings(record=True) as caught:
                        warnings.simplefilter("always")
                        asked = self._ask(free, retry=retry)
                    model_warnings.update(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught)
                    retry = retry[min(len(retry), free):]
                    for trial in asked:
                        reporter = (channel.reporter(trial.id) if channel is not None
                                    else self._reporter(trial) if reports_here else None)
                        submit(trial, TrialCall(trial.id, objective, trial.config, self.log_loss, timeout,
                                                reporter=reporter))
                if not in_flight:
                    break
                deadlines = [d for _, call, sent in in_flight.values() if (d := pool.deadline(call, sent, timeout))]
                wait = None if not deadlines else max(0.0, min(deadlines) - time.time())
                if channel is not None:
                    wait = POLL if wait is None else min(wait, POLL)
                done = pool.wait(list(in_flight), wait)
                self._take_reports(channel)  # before the tells: a trial's reports are journaled before its outcome
                for future in done:
                    trial, call, _ = in_flight.pop(future)
                    outcome = pool.collect(future, call)
                    if outcome is None:  # taken down with another trial's worker: run it again
                        submit(trial, call)
                        continue
                    self._finish(trial, outcome)
                    bar.update(1)
                now = time.time()
                for future, (trial, call, sent) in list(in_flight.items()):
                    deadline = pool.deadline(call, sent, timeout)
                    if deadline is not None and now >= deadline and not future.done():
                        del in_flight[future]
                        how = pool.cancel(future, call)
                        self._finish(trial, Outcome(TrialState.FAILED, error=f"timed out after {timeout:g} s ({how})",
                                                    seconds=now - sent))
                        bar.update(1)
                self._postfix(bar)
            interrupted = False
        finally:
            bar.close()
            for future in in_flight:
                future.cancel()
            pool.close(interrupted=interrupted)
            if channel is not None:
                channel.close()
            _summarise(model_warnings, progress)
        return self.result()

    def _take_reports(self, channel: ReportChannel | None) -> None:
        """Record the reports that arrived through ``channel`` and raise the stop flags the study decides on."""
        if channel is None:
            return
        for trial_id, cost, progress, loss in channel.drain():
            if self.report(trial_id, cost, progress, loss):
                channel.stop(trial_id)

    def _reporter(self, trial: Trial):
        """The second argument of a reporting objective: ``report(cost=..., progress=..., loss=None) -> stop``."""
        lock = threading.Lock()  # a thread-isolated trial reports from its own thread

        def report(cost: float, progress: float, loss: float | None = None) -> bool:
            with lock:
                return self.report(trial, cost, progress, loss)

        return report

    def _postfix(self, bar) -> None:
        best = self.best
        failed = sum(t.state is TrialState.FAILED for t in self.trials)
        text = f"best loss {best.loss:.4g} at cost {best.cost:.3g}" if best else "no feasible trial yet"
        bar.set_postfix_str(text + (f", {failed} failed" if failed else ""))

    def close(self) -> None:
        """Close the journal (the study's trials stay readable)."""
        if self.journal is not None and not self.journal.closed:
            self.journal.close()

    def __enter__(self) -> "Study":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        states = {s.value: n for s in TrialState if (n := sum(t.state is s for t in self.trials))}
        return f"Study({len(self.trials)} trials {states}, max_cost={self.max_cost:g}, journal={self.journal and str(self.journal.path)!r})"


def _reports_in_this_process(pool, objective) -> bool:
    """Whether a reporting objective runs in this process (inline or on a thread), calling `Study.report` itself."""
    from .executors import _InProcess
    from .runner import takes_reporter

    return takes_reporter(objective) and isinstance(pool, _InProcess) and pool.runner.isolation != "process"


def _report_channel(pool, objective) -> ReportChannel | None:
    """The channel that carries a reporting objective's reports from where its trials run (None: in this process,
    where the reporter calls `Study.report` itself, or an objective that does not report)."""
    from .executors import _Dask, _InProcess
    from .runner import takes_reporter

    if not takes_reporter(objective):
        return None
    if isinstance(pool, _InProcess) and pool.runner.isolation != "process":
        return None
    if isinstance(pool, _Dask):
        return DaskChannel(pool.client)
    return LocalChannel()


def _completed(trial: Trial, outcome: Outcome) -> bool:
    """A trial asked to stop that ran to its end anyway (an ok result after a report of progress 1)."""
    return outcome.state is TrialState.OK and bool(trial.reports) and trial.reports[-1].progress >= 1.0


def _prior(trial: Trial) -> CostEstimate | None:
    """The cost model's belief about the trial's final log cost when it was asked (None for the initial design)."""
    prediction = trial.prediction or {}
    if prediction.get("log_cost") is None or prediction.get("log_cost_sd") is None:
        return None
    return CostEstimate(prediction["log_cost"], prediction["log_cost_sd"])


def _summarise(model_warnings: Counter[str], progress: bool) -> None:
    """Warnings of model fitting and acquisition, once each with their count (printed, or warned without a bar)."""
    for text, count in model_warnings.most_common():
        line = f"while proposing, {count} x {text}"
        if progress:
            print(line)
        else:
            warnings.warn(line, RuntimeWarning, stacklevel=3)


def _settings(header: dict) -> dict[str, Any]:
    """Study options stored in a journal header (format 1 headers have fewer)."""
    max_cost = header.get("max_cost")
    settings: dict[str, Any] = {"max_cost": math.inf if max_cost == "inf" else max_cost}
    for key in ("seed", "n_init", "initial_configs", "n_trials", "loss_kernel", "cost_kernel", "tick_ratio", "log_loss"):
        if header.get(key) is not None:
            settings[key] = header[key]
    for key in ("loss_kernel", "cost_kernel"):
        if settings.get(key) == DEFAULT_KERNEL:
            del settings[key]
    return settings


class _ReadOnlyStudy(Study):
    """A study loaded without its space: trials, best, result, DataFrame and tell; ask needs the space."""

    def __init__(self, path, header: dict, trials: list[Trial], settings: dict):  # noqa: D107 - no Study.__init__
        self.space = None
        self.budget = Budget.of(float(settings["max_cost"]))
        self._max_cost, self._budget_warnings, self.stopping = self.budget.first, [], None
        self.seed, self.n_init = settings.get("seed", 0), settings.get("n_init", 0)
        self.n_trials = settings.get("n_trials")
        self.tick_ratio, self.log_loss = settings.get("tick_ratio", 0.5), settings.get("log_loss", True)
        self.initial_configs = settings.get("initial_configs", [])
        self.n_initial = len(self.initial_configs) + self.n_init
        self.kernels = {"loss": settings.get("loss_kernel", DEFAULT_KERNEL),
                        "cost": settings.get("cost_kernel", DEFAULT_KERNEL)}
        self.feature_chain = None
        self.trials, self._X = list(trials), []
        self.journal, self._path, self._header = None, path, header

    def _finish(self, trial: Trial, outcome: Outcome) -> Trial:
        if self.journal is None:  # opened for writing at the first tell only
            self.journal = Journal(self._path, self._header)
        return super()._finish(trial, outcome)

    def result(self) -> TickTockResult:
        self._impute_failed()
        info = {"loss_kernel": self.kernels["loss"], "cost_kernel": self.kernels["cost"], "tick_ratio": self.tick_ratio}
        return TickTockResult(list(self.trials), self.max_cost, str(self._path), info)

    def ask(self, n: int | None = None):
        raise StudyError(f"{self._path}: this study was loaded without its space; "
                         "pass it to ask for new trials: Study.load(path, space=space)")

    def optimize(self, *args, **kwargs):
        self.ask()

    def _add(self, trial: Trial) -> None:
        self.trials.append(trial)
