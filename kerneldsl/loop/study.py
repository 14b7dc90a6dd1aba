"""`Study`: cost-aware Bayesian optimisation as ask/tell, with a crash-safe journal.

A study owns its trials. ``ask`` proposes configs (the initial design first, then
model-based ticks and tocks), ``tell`` records what a trial produced, ``optimize``
runs an objective in a loop of asks and tells. Any number of trials may be running:
model-based proposals treat them as pending points (botorch's ``X_pending``), and
``ask(n)`` builds a q-batch sequentially and greedily, each point pending for the
next.

How the pieces fit::

    Study(space, max_cost, journal, n_init=..., num_restarts=..., proposer=...)
      options.StudyOptions.of      keywords -> Schedule, ModelOptions, AcquisitionOptions
      options.header               -> journal.Journal (resumed when it exists: its trials come back)
    Study.ask(n)
      Schedule.slot(position)      -> initial design (given configs, balanced Sobol) or (iteration, phase)
      Study.history(asking)        -> history.History: trials as search points, failed ones imputed
      proposer.propose(history, [ProposalRequest(trial id, iteration, phase), ...])
                                   -> [Proposal(x, phase, how, prediction)]  (proposals.TickTockProposer by default)
      Trial(...) -> journal: ask record
    Study.tell(trial, outputs) / TrialLog.report(...) -> journal: tell / report records
    Study.optimize(objective, n_trials, executor=...)
      executors.trial_pool         -> TrialPool (this process, process pool, any Executor, Dask)
      optimize.TrialLoop.run       -> ask, submit, wait, report, TrialLog.finish (journaled), until done

Schedule: trial positions count every trial that is not lost. Positions below
``len(initial_configs) + n_init`` get the initial design (the user's configs, then
scrambled Sobol points seeded by ``seed``, balanced over the space's branches by
`kerneldsl.space.sampling.balanced_sample` so that every choice value is seen early);
position ``p`` after that is model-based iteration ``k = p - n_initial + 1``, a tick
when ``floor(k * tick_ratio)`` steps up (`Schedule.slot`, `phase_of`). The phase belongs
to the position, not to the time it is asked, so with several trials in flight ticks and
tocks still alternate in the order asked: ``ask(4)`` after the initial design gives tock,
tick, tock, tick, each with the earlier ones pending.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from torch import Tensor

from ..model import default_feature_chain
from ..space.sampling import balanced_sample
from ..space.space import Space
from .budget import Budget, BudgetLike
from .executors import trial_pool
from .history import FAILED_LOSS_MARGIN, MIN_FAILED_GAP, History
from .journal import Journal, JournalError, read_journal
from .optimize import TrialLoop
from .options import (CHECKED_SETTINGS, AcquisitionOptions, ModelOptions, Schedule, StudyOptions, check_count, header,
                      settings_of)
from .proposals import TickTockProposer
from .proposer import BaseProposer, Proposal, ProposalRequest
from .results import TickTockResult
from .stopping import CostStopping
from .trial import Phase, Trial
from .trial_log import LOST_REASON, StudyError, TrialLog

__all__ = ["Study", "ReadOnlyStudy", "StudyError", "Prepared", "FAILED_LOSS_MARGIN", "MIN_FAILED_GAP", "REPROPOSE"]

REPROPOSE = 2
"""How often an ask makes its proposals again outside the journal's lock when other drivers' asks overtook them."""


@dataclass(frozen=True)
class Prepared:
    """Trials made ready to ask (`Study.prepare`): valid while the study has ``n_known`` trials."""

    n_known: int
    count: int
    retry: tuple[Trial, ...]
    asked: list[Trial]
    """The retries and initial-design trials (not added yet)."""
    requests: list[ProposalRequest]
    proposals: list[Proposal]

_MODEL_BUILDING = ("loss_kernel", "cost_kernel", "feature_chain", "kernel_groups", "kernel_options", "fit_options")
"""`ModelOptions` fields that only the default proposer uses (the study itself uses log_loss, device, dtype)."""
_ACQUISITION = tuple(f.name for f in fields(AcquisitionOptions))


class Study(TrialLog):
    """An optimisation study of ``space`` under the budget ``max_cost``: ask for configs, tell their outcomes.

    ``journal`` is the path of a JSON-lines file that records every ask and tell
    (flushed and fsynced); an existing journal is resumed (its settings must match).

    Options come as three dataclasses, or as keywords routed by name to their fields
    (a keyword overrides the field of a dataclass passed whole; an unknown one is a
    TypeError listing them all):

    * ``schedule`` (`Schedule`): ``n_init`` Sobol points follow the ``initial_configs``;
      ``n_trials`` (optional) fixes how many trials the study has, which ``optimize`` runs
      to and ``ask`` stops at; ``seed``; ``tick_ratio``;
    * ``models`` (`ModelOptions`): kernels, features, fitting, ``log_loss``, device, dtype;
    * ``acquisition`` (`AcquisitionOptions`): ``num_restarts``, ``raw_samples``, ...

    ``proposer`` (a `BaseProposer`) replaces the default `TickTockProposer`, which is built
    from ``models`` and ``acquisition`` (they cannot be given with a proposer of your own,
    except ``log_loss``, ``device`` and ``dtype``, which the study uses itself).
    ``stopping`` decides on reports of running trials (`CostStopping`; None: never stop).
    The models, acquisitions and options are those of `kerneldsl.tick_tock`.
    """

    def __init__(self, space: Space, max_cost: BudgetLike, journal: str | os.PathLike | None = None, *,
                 schedule: Schedule | None = None, models: ModelOptions | None = None,
                 acquisition: AcquisitionOptions | None = None, proposer: BaseProposer | None = None,
                 stopping: CostStopping | None = CostStopping(), **options: Any):
        if not isinstance(space, Space):
            raise TypeError(f"Study: space must be a kerneldsl.Space, got {type(space).__name__}")
        budget = Budget.of(max_cost)
        chosen = StudyOptions.of("Study", schedule, models, acquisition, **options)
        if chosen.schedule.initial_configs:
            space.to_search(list(chosen.schedule.initial_configs))  # validates them now, not when their turn comes
        feature_chain = chosen.models.feature_chain or default_feature_chain(space)
        super().__init__(budget, chosen.schedule, replace(chosen.models, feature_chain=feature_chain),
                         stopping=stopping)
        self.space, self.feature_chain = space, feature_chain
        self.proposer = self._proposer(proposer, chosen)
        self._X: list[Tensor] = []  # search point of each trial
        self._X_init: Tensor | None = None  # the Sobol part of the initial design, drawn when first needed
        self._resumed = 0  # trials read from the journal, announced by the first optimize
        if journal is not None:
            self._open(journal)

    def _proposer(self, proposer: BaseProposer | None, chosen: StudyOptions) -> BaseProposer:
        """``proposer``, or the default `TickTockProposer` of the chosen options."""
        if proposer is None:
            return TickTockProposer(self.space, self.model_options, chosen.acquisition, seed=chosen.schedule.seed)
        if not isinstance(proposer, BaseProposer):
            raise TypeError(f"Study: proposer must be a kerneldsl.BaseProposer, got {type(proposer).__name__}")
        defaults = {"models": ModelOptions(), "acquisition": AcquisitionOptions()}
        unused = [f"{name}.{key}" for name, keys in (("models", _MODEL_BUILDING), ("acquisition", _ACQUISITION))
                  for key in keys if getattr(getattr(chosen, name), key) != getattr(defaults[name], key)]
        if unused:
            raise ValueError(f"Study: proposer={type(proposer).__name__} makes the proposals, so these options of the "
                             f"default TickTockProposer would not be used: {', '.join(unused)}; pass them to the "
                             "proposer you build, or leave them out")
        return proposer

    def _open(self, path: str | os.PathLike) -> None:
        """Open the journal at ``path``: write its header, or resume its trials (its settings must match)."""
        self.journal = Journal(path, header(self.space.names, self.budget, self.schedule, self.model_options),
                               check_keys=CHECKED_SETTINGS)
        try:
            for trial in self.journal.trials:
                self._add(trial)
            self._resumed = len(self.trials)
        except JournalError:
            self.journal.close()
            raise

    # ------------------------------------------------------------------ loading
    @classmethod
    def load(cls, path: str | os.PathLike, space: Space | None = None, **options: Any) -> "Study | ReadOnlyStudy":
        """Open a finished or running study from its journal.

        Without ``space`` the study is for reading and telling (a `ReadOnlyStudy`): its trials,
        ``best``, ``result()`` (summary, plot) and ``trials_dataframe()``; with the study's
        ``space`` (and its ``feature_chain``, if it had one) ``ask`` continues it. The
        study's settings (budget, seed, initial design, kernels) come from the journal;
        ``options`` set the others (as for ``Study``).
        """
        journal_header, trials = read_journal(path)
        if journal_header is None:
            raise JournalError(f"{path}: no journal there (missing or empty file)")
        settings = settings_of(journal_header)
        if space is None:
            return ReadOnlyStudy(path, journal_header, trials)
        if options.get("proposer") is not None:  # the kernels were the default proposer's
            settings = {k: v for k, v in settings.items() if k not in _MODEL_BUILDING}
        return cls(space, journal=path, **{**settings, **options})

    def _add(self, trial: Trial) -> None:
        try:
            x = self._search_point(trial.config)
        except (ValueError, KeyError, TypeError) as exc:
            where = f"{self.journal.path}: trial {trial.id}" if self.journal is not None else f"trial {trial.id}"
            raise JournalError(f"{where}: its config does not fit this space: {exc}") from None
        self.trials.append(trial)
        self._X.append(x)

    def _search_point(self, config: dict) -> Tensor:
        options = self.model_options
        return self.space.to_search([config], dtype=options.dtype, device=options.torch_device)[0]

    def _info(self) -> dict[str, Any]:
        return {**super()._info(), "features": list(self.feature_chain.feature_names),
                "budget_warnings": list(self._budget_warnings)}

    def history(self, asking: Sequence[Trial] = ()) -> History:
        """The trials as the proposer sees them, with ``asking`` (trials being asked now, not yet added) running."""
        points = self._X + [self._search_point(t.config) for t in asking]
        return History(self.space, [*self.trials, *asking], self.max_cost, self.model_options.loss_scale, points)

    # ------------------------------------------------------------------ ask
    def ask(self, n: int | None = None) -> Trial | list[Trial]:
        """Propose one trial (``n`` None) or a list of ``n`` distinct trials; each is running until told."""
        count = 1 if n is None else check_count("Study.ask", "n", n, positive=True)
        if self.n_trials is not None and self.n_counted + count > self.n_trials:
            left = self.n_trials - self.n_counted
            raise StudyError(f"Study.ask({'' if n is None else n}): the study has n_trials={self.n_trials} and "
                             f"{self.n_counted} of them are asked ({left} left); make a Study with a larger n_trials "
                             "to go on")
        trials = self._ask(count, clip=False)
        return trials[0] if n is None else trials

    def _ask(self, count: int, retry: Sequence[Trial] = (), prepared: Prepared | None = None,
             free_since: float | None = None, clip: bool = True) -> list[Trial]:
        """Ask ``count`` trials, the configs of the lost trials ``retry`` first, and journal them.

        Proposals are made outside the journal's lock (other drivers tell and report meanwhile), then the
        trials are asked under it with the next free ids: ``prepared`` proposals (`prepare`), or new ones.
        Proposals that another driver's asks overtook (made without those trials pending) are made again,
        at most `REPROPOSE` times outside the lock, then under it. ``free_since``: when the worker that runs
        the trials became free (their ``timings["wait"]`` counts from then to now). Past a fixed ``n_trials``
        (other drivers asked the last ones): fewer trials (``clip``), or `StudyError`."""
        for attempt in range(REPROPOSE + 1):
            plan = prepared if prepared is not None and attempt == 0 else self.prepare(count, retry)
            with self.transaction():
                if len(self.trials) == plan.n_known:
                    return self._commit(plan, free_since, clip)
        with self.transaction():  # other drivers keep overtaking: propose with the lock held
            return self._commit(self.prepare(count, retry), free_since, clip)

    def prepare(self, count: int, retry: Sequence[Trial] = ()) -> Prepared:
        """Proposals for the next ``count`` trials (after the configs of ``retry``), every trial asked so far
        (running ones pending) and the initial points of the same batch pending; asked later by `_ask`.

        Safe on another thread than the driver's loop: the trials are copied under the study's lock first."""
        with self.transaction():  # the other drivers' asks and tells first
            n_known, n_counted = len(self.trials), self.n_counted
            trials, points = [copy.copy(t) for t in self.trials], list(self._X)
        asked, requests = self._plan(count, retry, n_known, n_counted)
        proposals: list[Proposal] = []
        if requests:
            history = History(self.space, [*trials, *asked], self.max_cost, self.model_options.loss_scale,
                              points + [self._search_point(t.config) for t in asked])
            proposals = self.proposer.propose(history, requests)
        return Prepared(n_known, count, tuple(retry[:count]), asked, requests, proposals)

    def _plan(self, count: int, retry: Sequence[Trial], n_known: int, n_counted: int
              ) -> tuple[list[Trial], list[ProposalRequest]]:
        """The retries and initial-design trials of the next ``count`` (not added) and the model-based requests."""
        started = time.time()
        asked: list[Trial] = []
        for lost in retry[:count]:
            asked.append(Trial(id=n_known + len(asked), config=dict(lost.config), phase=lost.phase,
                               iteration=lost.iteration, proposal=f"retry of trial {lost.id} ({LOST_REASON})",
                               prediction=lost.prediction, started=started, retry_of=lost.id))
        requests: list[ProposalRequest] = []
        for _ in range(count - len(asked)):
            trial_id = n_known + len(asked) + len(requests)
            iteration, phase = self.schedule.slot(n_counted + len(asked) + len(requests))
            if phase is Phase.INIT:
                config, how = self._initial_point(n_counted + len(asked))
                asked.append(Trial(id=trial_id, config=config, phase=Phase.INIT, proposal=how, started=started))
            else:
                requests.append(ProposalRequest(trial_id, iteration, phase))
        return asked, requests

    def _commit(self, plan: Prepared, free_since: float | None, clip: bool) -> list[Trial]:
        """Ask the trials of ``plan`` (inside a transaction, with nothing asked since it was made) and journal them;
        past a fixed ``n_trials`` (other drivers asked meanwhile): ``clip`` to it, or raise `StudyError`."""
        started, budget = time.time(), self.max_cost
        asked = [replace(t, started=started) for t in plan.asked]
        left = None if self.n_trials is None else self.n_trials - self.n_counted
        for request, proposal in zip(plan.requests, plan.proposals):
            asked.append(Trial(id=request.trial_id, config=self.space.to_configs(proposal.x[None])[0],
                               phase=proposal.phase, iteration=request.iteration, proposal=proposal.how,
                               prediction=proposal.prediction, timings=dict(proposal.timings), started=started))
        asked.sort(key=lambda t: t.id)
        if left is not None and len(asked) > left:  # other drivers asked the last ones meanwhile
            if not clip:
                raise StudyError(f"Study.ask: the study has n_trials={self.n_trials} and {self.n_counted} of them "
                                 f"are asked ({max(left, 0)} left; other drivers of its journal asked the others)")
            asked = asked[:max(left, 0)]
        driver = self.journal.driver if self.journal is not None else None
        for trial in asked:
            trial.budget, trial.driver = budget, driver
            if free_since is not None:
                trial.timings["wait"] = max(0.0, started - free_since)
            self._append(trial.ask_record())
            self._add(trial)
        return asked

    def _initial_point(self, position: int) -> tuple[dict, str]:
        configs = self.schedule.initial_configs
        if position < len(configs):
            return dict(configs[position]), "given"
        if self._X_init is None:
            options = self.model_options
            self._X_init = balanced_sample(self.space, self.schedule.n_init, seed=self.schedule.seed,
                                           dtype=options.dtype, device=options.torch_device)
        return self.space.to_configs(self._X_init[position - len(configs)][None])[0], "sobol"

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
        This process alone asks, tells and writes the journal (`kerneldsl.loop.optimize`).

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
        target = self._target("Study.optimize", n_trials)
        pool, width = trial_pool(objective, executor, n_workers, timeout=timeout, isolation=isolation,
                                 positive_loss=self.log_loss)
        if self._resumed and progress:
            print(f"resuming {self._resumed} trials from {self.journal.path}")
        self._resumed = 0
        loop = TrialLoop(self, self._ask, pool, width, objective, timeout, self.prepare if width > 1 else None)
        try:
            retry = self.mark_lost()
        except BaseException:
            pool.close(interrupted=True)
            raise
        if retry and progress:
            print(f"{len(retry)} trial(s) were running when the study stopped: run again as new trials")
        loop.run(target if target is not None else self.n_counted + n_trials, retry, progress)
        return self.result()

    def _target(self, caller: str, n_trials: int | None) -> int | None:
        """The count of trials ``optimize`` runs to (None: ``n_trials`` more, counted after the lost ones)."""
        if n_trials is None and self.n_trials is None:
            raise StudyError(f"{caller}: pass n_trials (this study has no fixed n_trials)")
        if n_trials is None:
            return self.n_trials
        more = check_count(caller, "n_trials", n_trials)
        done = self.n_counted - len(self.running)
        if self.n_trials is not None and done + more > self.n_trials:
            raise StudyError(f"{caller}(n_trials={n_trials}): the study has n_trials={self.n_trials} and "
                             f"{done} are finished; at most {self.n_trials - done} more can run")
        return None


class ReadOnlyStudy(TrialLog):
    """A study loaded without its space (`Study.load`): trials, best, result, DataFrame, tell and report; ``ask``
    and ``optimize`` need the space. Its journal is opened for writing at the first tell or report."""

    def __init__(self, path: str | os.PathLike, journal_header: Mapping[str, Any], trials: Sequence[Trial]):
        settings = settings_of(journal_header)
        chosen = StudyOptions.of("Study.load", **{k: v for k, v in settings.items() if k != "max_cost"})
        super().__init__(Budget.of(float(settings["max_cost"])), chosen.schedule, chosen.models, trials)
        self.path, self._header = Path(path), dict(journal_header)

    def _journal_name(self) -> str:
        return str(self.path)

    def _writable(self) -> Journal:
        if self.journal is None:  # opened for writing at the first tell only
            self.journal = Journal(self.path, self._header)
            self._catch_up(self.journal.trials)
        return self.journal

    def _catch_up(self, current: Sequence[Trial]) -> None:
        """What happened in the journal between loading and opening it (other drivers went on)."""
        for trial, now in zip(self.trials, current):
            trial.reports.extend(now.reports[len(trial.reports):])
            if now.state.finished and not trial.state.finished:
                trial.apply_tell(now.tell_record())
        for now in current[len(self.trials):]:
            self._add(now)

    def ask(self, n: int | None = None):
        """Refused: asking needs the study's space (``Study.load(path, space=space)``)."""
        raise StudyError(f"{self.path}: this study was loaded without its space; "
                         "pass it to ask for new trials: Study.load(path, space=space)")

    def optimize(self, *args: Any, **kwargs: Any):
        """Refused, as `ask`."""
        self.ask()
