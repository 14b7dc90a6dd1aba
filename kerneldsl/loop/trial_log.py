"""`TrialLog`: the trials of a study and what can be done with them without its space.

Tell outcomes, take reports of running trials (and decide to stop them), judge them
against the budget (``best``, ``max_cost``), summarise them (``result``,
``trials_dataframe``), each ask, report and tell journaled by `TrialLog._append` inside a transaction. `Study`
adds the space and its proposer (``ask``, ``optimize``); a study loaded without its space
is a `TrialLog` that can tell and report (`kerneldsl.loop.study.ReadOnlyStudy`).

Other drivers may share the journal: every write is made in a `TrialLog.transaction`,
which first applies what they appended (their asks become trials here, their tells and
reports land on the trials), so decisions (a trial id, whether a trial still runs) are
made on the whole study. The driver's own threads (report channel, proposals) take turns
on one re-entrant lock.
"""

from __future__ import annotations

import copy
import math
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from .budget import Budget
from .history import impute_failed
from .journal import Journal
from .options import ModelOptions, Schedule
from .results import TickTockResult, trials_dataframe
from .runner import Outcome, as_number, outcome_of
from .stopping import CostEstimate, CostStopping
from .trial import Report, Trial, TrialState, best_feasible

__all__ = ["TrialLog", "StudyError", "LOST_REASON"]

LOST_REASON = "lost: the study stopped while it ran"


class StudyError(ValueError):
    """A study was used in a way that cannot work (tell twice, a foreign trial, ask past the end, ...)."""


class TrialLog:
    """Trials (in id order) judged against ``budget``, on the schedule and models they were asked with.

    ``stopping`` decides on reports (None: never stop); ``journal``, when open, records every report and tell.
    """

    def __init__(self, budget: Budget, schedule: Schedule, models: ModelOptions, trials: Sequence[Trial] = (),
                 stopping: CostStopping | None = None):
        if stopping is not None and not isinstance(stopping, CostStopping):
            raise TypeError(f"Study: stopping must be a kerneldsl.CostStopping or None, got {type(stopping).__name__}")
        self.budget, self.schedule, self.model_options, self.stopping = budget, schedule, models, stopping
        self._max_cost = budget.first
        self._budget_warnings: list[str] = []
        self.trials: list[Trial] = list(trials)
        self.journal: Journal | None = None
        self._mutex = threading.RLock()

    # ------------------------------------------------------------------ views
    @property
    def n_trials(self) -> int | None:
        """How many trials the study has (None: not fixed)."""
        return self.schedule.n_trials

    @property
    def log_loss(self) -> bool:
        """Whether the loss is modelled in log space (losses must then be positive)."""
        return self.model_options.log_loss

    @property
    def kernels(self) -> dict[str, str]:
        """The kernel source of the loss and the cost model."""
        return self.model_options.kernels

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
        impute_failed(self.trials, self.model_options.loss_scale)
        return TickTockResult(list(self.trials), self.max_cost, self._journal_name(), self._info())

    def _info(self) -> dict[str, Any]:
        return {"loss_kernel": self.kernels["loss"], "cost_kernel": self.kernels["cost"],
                "tick_ratio": self.schedule.tick_ratio}

    def _journal_name(self) -> str | None:
        return str(self.journal.path) if self.journal is not None else None

    def trials_dataframe(self):
        """One row per trial (pandas): id, state, phase, loss, cost, feasibility, timings, ``params_*`` and
        ``outputs_*`` columns, as Optuna's ``Study.trials_dataframe``."""
        impute_failed(self.trials, self.model_options.loss_scale)
        return trials_dataframe(self.trials, self.max_cost)

    # ------------------------------------------------------------------ tell
    def tell(self, trial: Trial | int, outputs: Mapping[str, Any] | None = None, error: str | None = None) -> Trial:
        """Record what ``trial`` (a `Trial` this study asked, or its id) produced: ``outputs`` with at least
        ``loss`` and ``cost`` (extra keys are kept), or ``error`` (a reason) for a trial that failed.

        A loss that is NaN or infinite, or a cost that is not finite and positive, makes the trial failed with
        that reason, as in ``optimize``. Telling a trial twice, a trial of another study, or outputs without
        ``loss`` and ``cost`` raises `StudyError` and writes nothing.
        """
        with self.transaction():
            return self._tell(self._owned(trial), outputs, error)

    def _tell(self, target: Trial, outputs: Mapping[str, Any] | None, error: str | None) -> Trial:
        if (outputs is None) == (error is None):
            raise StudyError(f"Study.tell(trial {target.id}): pass either outputs={{'loss': ..., 'cost': ...}} "
                             "or error='reason', not " + ("both" if outputs is not None else "neither"))
        if error is not None:
            if not isinstance(error, str) or not error.strip():
                raise StudyError(f"Study.tell(trial {target.id}): error must be a non-empty string, got {error!r}")
            return self.finish(target, Outcome(TrialState.FAILED, error=error.strip()))
        self._check_outputs(target, outputs)
        return self.finish(target, outcome_of(outputs, positive_loss=self.log_loss))

    @staticmethod
    def _check_outputs(target: Trial, outputs: Any) -> None:
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
        with self.transaction():
            return self._report(self._trial_of(trial, "Study.report"), cost, progress, loss)

    def _report(self, target: Trial, cost, progress, loss) -> bool:
        problem = _report_problem(target, cost, progress, loss)
        if problem is not None:
            message = f"trial {target.id}: report ignored: {problem}"
            target.warnings.append(message)
            warnings.warn(message, RuntimeWarning, stacklevel=2)
            return target.stop_requested
        report = Report(float(as_number(cost)), float(as_number(progress)),
                        None if loss is None else float(as_number(loss)), time.time())
        self._append(report.record(target.id))
        target.reports.append(report)
        if self.stopping is not None and not target.stop_requested and report.progress < 1.0:  # done: nothing to save
            estimate = self.stopping.estimate(report.cost, report.progress, _prior(target))
            if self.stopping.should_stop(estimate, self.max_cost):
                target.stop_requested, target.estimated_cost = True, estimate.cost
        return target.stop_requested

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

    def finish(self, trial: Trial, outcome: Outcome) -> Trial:
        """Record ``outcome`` as what the running ``trial`` produced (journaled); a trial asked to stop that did not
        complete is stopped. `tell` checks the user's outputs first; the driver of `Study.optimize` tells here.

        A trial that another driver marked lost meanwhile (this driver's lease ran out while it ran) keeps the
        outcome it came back with; marking a trial lost that has ended meanwhile does nothing."""
        with self.transaction():
            if trial.state.finished and (trial.state is not TrialState.LOST or outcome.state is TrialState.LOST):
                return trial
            if trial.stop_requested and outcome.state is not TrialState.LOST and not _completed(trial, outcome):
                spent = outcome.cost if outcome.cost is not None else trial.reports[-1].cost
                outcome = Outcome(TrialState.STOPPED, outcome.loss, spent, outcome.outputs, outcome.error,
                                  outcome.seconds)
            told = copy.copy(trial)
            told.state, told.loss, told.cost = outcome.state, outcome.loss, outcome.cost
            told.error, told.outputs = outcome.error, dict(outcome.outputs)
            told.timings = {**trial.timings, **({"objective": outcome.seconds} if outcome.seconds else {})}
            told.finished = time.time()
            self._append(told.tell_record())  # written first: a record that cannot be stored changes nothing
            for name in ("state", "loss", "cost", "error", "outputs", "timings", "finished"):
                setattr(trial, name, getattr(told, name))
        return trial

    def mark_lost(self, own: bool = True) -> list[Trial]:
        """Running trials whose driver is gone become lost (journaled); returned for retrying.

        A driver is gone when its lease on the journal is over (`kerneldsl.loop.journal`); ``own``: this
        study's own running trials too (those ``optimize`` did not ask: asked with ``ask`` and never told).
        Without a journal every running trial is this study's own."""
        with self.transaction():
            running = self.running
            if self.journal is None:
                gone = running if own else []
            else:
                expired = self.journal.expired(t.driver for t in running)
                gone = [t for t in running if t.driver in expired or (own and t.driver == self.journal.driver)]
            for trial in gone:
                self.finish(trial, Outcome(TrialState.LOST, error=LOST_REASON))
        return gone

    # ------------------------------------------------------------------ journal
    @contextmanager
    def transaction(self) -> Iterator[None]:
        """This driver's turn on the study: with a journal, its lock, and the other drivers' new records applied."""
        with self._mutex:
            journal = self._writable()
            if journal is None:
                yield
                return
            with journal.transaction() as records:
                self._apply(records)
                yield

    def sync(self) -> None:
        """Apply what other drivers appended to the journal since the last look."""
        with self.transaction():
            pass

    def _writable(self) -> Journal | None:
        """The journal that transactions write to (None: none)."""
        return self.journal

    def _apply(self, records: Sequence[dict]) -> None:
        """Other drivers' records (checked by the journal): asks become trials, tells and reports land on theirs."""
        for record in records:
            kind, trial_id = record["kind"], record["trial"]
            if kind == "ask":
                self._add(Trial.from_ask(record))
            elif kind == "tell":
                self.trials[trial_id].apply_tell(record)
            elif kind == "report":
                self.trials[trial_id].reports.append(Report.from_record(record))

    def _add(self, trial: Trial) -> None:
        """A trial asked (by this driver or another) joins the study."""
        self.trials.append(trial)

    def _append(self, record: dict) -> None:
        """Journal ``record`` (an ask, report or tell) inside a `transaction`, when there is a journal."""
        if self.journal is not None:
            self.journal.append(record)

    def close(self) -> None:
        """Close the journal (the study's trials stay readable)."""
        if self.journal is not None and not self.journal.closed:
            self.journal.close()

    def __enter__(self) -> "TrialLog":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        states = {s.value: n for s in TrialState if (n := sum(t.state is s for t in self.trials))}
        return (f"Study({len(self.trials)} trials {states}, max_cost={self.max_cost:g}, "
                f"journal={self._journal_name()!r})")


def _report_problem(trial: Trial, cost, progress, loss) -> str | None:
    """Why a report cannot be right (None when it can)."""
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


def _completed(trial: Trial, outcome: Outcome) -> bool:
    """A trial asked to stop that ran to its end anyway (an ok result after a report of progress 1)."""
    return outcome.state is TrialState.OK and bool(trial.reports) and trial.reports[-1].progress >= 1.0


def _prior(trial: Trial) -> CostEstimate | None:
    """The cost model's belief about the trial's final log cost when it was asked (None for the initial design)."""
    prediction = trial.prediction or {}
    if prediction.get("log_cost") is None or prediction.get("log_cost_sd") is None:
        return None
    return CostEstimate(prediction["log_cost"], prediction["log_cost_sd"])
