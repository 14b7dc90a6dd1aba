"""The event loop of `Study.optimize`: keep trials in flight on a pool, tell each one as it finishes.

`TrialLoop.run` repeats until the study has its trials and none is running:

1. fill: the trials of drivers whose lease on the shared journal is over are marked lost
   (looked at every `LEASE_LOOK` of the lease at most), then as many trials are asked as
   there are free slots (``ask(free, retry)``: the configs of lost trials first), each running
   until told, and a `TrialCall` submitted for each. The first free slot gets the proposal
   made ahead (step 2) when there is one: a worker that finishes gets its next config at once;
2. while trials run, a thread of the driver prepares the next proposal (`Study.prepare`)
   with every running trial pending; a trial that finishes meanwhile leaves it valid (its
   point was chosen with that trial pending); an ask of another driver meanwhile makes the
   ask propose again (`Study._ask`). The ask record is written when the trial is handed out;
3. wait for the first trial to finish (at most until the nearest timeout deadline); reports
   are answered meanwhile by the report channel's thread (`kerneldsl.loop.reporting`);
4. collect the finished trials and `TrialLog.finish` them (a trial taken down with another
   trial's worker runs again);
5. fail the trials past their deadline ("timed out") and cancel them on the pool;
6. with nothing in flight, wait while trials of other drivers of the journal still run:
   they are finished by their driver, or marked lost here when its lease is over and run
   again, so every driver returns the same study.

Each trial records how long its worker slot waited for it (``timings["wait"]``: from the
slot becoming free to the trial being asked). Warnings raised while proposing are counted
and summarised once at the end instead of breaking the progress bar.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from ..progress import Progress
from .executors import TrialCall, TrialPool
from .reporting import ReportChannel
from .runner import Outcome, takes_reporter
from .trial import Phase, Trial, TrialState
from .trial_log import TrialLog

__all__ = ["TrialLoop", "AskFunction", "PrepareFunction", "LEASE_LOOK"]

LEASE_LOOK = 0.2
"""Fraction of the journal's lease between two looks for drivers whose lease is over."""


AskFunction = Callable[[int, Sequence[Trial], Any, "float | None"], list[Trial]]
"""``ask(count, retry, prepared, free_since)``: ask ``count`` trials (journaled), the configs of the lost trials
``retry`` first, with proposals ``prepared`` ahead if still valid (else made now), past a fixed ``n_trials``
fewer; ``free_since``: when the worker slot became free."""
PrepareFunction = Callable[[int], Any]
"""``prepare(count)``: proposals for the next ``count`` trials, made on the loop's proposal thread."""


class TrialLoop:
    """Runs ``objective`` on ``pool`` for ``study``, ``width`` trials in flight, asking through ``ask``;
    with ``prepare``, the next proposal is made ahead while trials run (None: each when it is needed, as one
    worker wants: its proposal then knows the outcome of the trial before)."""

    def __init__(self, study: TrialLog, ask: AskFunction, pool: TrialPool, width: int,
                 objective: Callable[..., Any], timeout: float | None = None,
                 prepare: PrepareFunction | None = None):
        self.study, self.ask, self.prepare, self.pool, self.width = study, ask, prepare, pool, width
        self.objective, self.timeout = objective, timeout
        self.reports = takes_reporter(objective)
        self.channel: ReportChannel | None = None
        self.in_flight: dict[Any, tuple[Trial, TrialCall, float]] = {}  # future -> trial, its call, when it was sent
        self.model_warnings: Counter[str] = Counter()  # raised while proposing: summarised once, not mid-bar
        self.free_since: list[float] = []  # when each free worker slot became free
        self._ahead = cf.ThreadPoolExecutor(1, thread_name_prefix="kerneldsl-propose") if prepare else None
        self._prepared: cf.Future | None = None
        self._looked = 0.0

    def run(self, target: int, retry: Sequence[Trial] = (), progress: bool = True) -> None:
        """Run trials until the study counts ``target`` of them; ``retry``: lost trials whose configs run first.
        Closes the pool (and the report channel) at the end, also when interrupted."""
        bar = Progress(target, "study", "trial", enabled=progress, initial=self.study.n_counted)
        retry, interrupted = list(retry), True
        self.free_since = [time.time()] * self.width
        try:
            self.channel = self.pool.report_channel() if self.reports else None
            if self.channel is not None:
                self.channel.serve(self._on_report)
            self._postfix(bar)
            while True:
                retry = self._fill(target, retry, bar)
                if not self.in_flight:
                    if not self._others_running():
                        break
                    continue
                self._prepare_ahead(target, retry)
                self._step(bar)
                self._postfix(bar)
            interrupted = False
        finally:
            bar.close()
            for future in self.in_flight:
                future.cancel()
            if self._ahead is not None:
                self._ahead.shutdown(wait=not interrupted, cancel_futures=True)
            self.pool.close(interrupted=interrupted)
            if self.channel is not None:
                self.channel.close()
            _summarise(self.model_warnings, progress)

    def _fill(self, target: int, retry: list[Trial], bar) -> list[Trial]:
        """Ask and submit trials into the free slots; returns the lost trials still to run again."""
        retry = retry + self._lost_elsewhere()
        free = min(self.width - len(self.in_flight), target - self.study.n_counted)
        if free <= 0:
            return retry
        _, phase = self.study.schedule.slot(self.study.n_counted)
        bar.describe(f"study ({phase.value})")
        since = sorted(self.free_since)
        asked: list[Trial] = []
        prepared = self._take_prepared(retry)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if prepared is not None:
                asked += self.ask(1, (), prepared, since[0])
            if free - len(asked) > 0:
                asked += self.ask(free - len(asked), retry, None, since[len(asked)])
        self.model_warnings.update(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught)
        for trial in asked:
            self.free_since.remove(min(self.free_since))
            self._submit(trial, TrialCall(trial.id, self.objective, trial.config, self.study.log_loss, self.timeout,
                                          reporter=self._reporter(trial)))
        used = sum(t.retry_of is not None for t in asked)
        return retry[min(len(retry), used):]

    def _prepare_ahead(self, target: int, retry: list[Trial]) -> None:
        """Start the next proposal on the proposal thread, the running trials pending (when one will be needed)."""
        if self._ahead is None or self._prepared is not None or retry:
            return
        if self.study.n_counted >= target or self.study.schedule.slot(self.study.n_counted)[1] is Phase.INIT:
            return  # nothing more to ask, or an initial point (no model: nothing to gain)
        self._prepared = self._ahead.submit(self._prepare)

    def _prepare(self) -> tuple[Any, list[warnings.WarningMessage]]:
        with warnings.catch_warnings(record=True) as caught:  # the main thread proposes only after this is done
            warnings.simplefilter("always")
            return self.prepare(1), list(caught)

    def _take_prepared(self, retry: list[Trial]) -> Any:
        """The proposal made ahead (waiting for it to be done), or None; dropped when lost trials run first."""
        if self._prepared is None:
            return None
        future, self._prepared = self._prepared, None
        prepared, caught = future.result()
        self.model_warnings.update(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught)
        return None if retry else prepared

    def _lost_elsewhere(self) -> list[Trial]:
        """Running trials of drivers whose lease is over, marked lost (looked at every `LEASE_LOOK` lease)."""
        journal = self.study.journal
        if journal is None or time.monotonic() - self._looked < LEASE_LOOK * journal.lease:
            return []
        self._looked = time.monotonic()
        return self.study.mark_lost(own=False)

    def _others_running(self) -> bool:
        """Whether trials of drivers in other processes still run (then waits a little: they end, or become lost).
        Trials of another driver in this process (an ``ask`` not told yet) are not waited for: nothing would end
        them while this thread waits."""
        journal = self.study.journal
        if journal is None:
            return False
        self.study.sync()
        if not journal.elsewhere(t.driver for t in self.study.running):
            return False
        time.sleep(min(1.0, LEASE_LOOK * journal.lease))
        return True

    def _submit(self, trial: Trial, call: TrialCall) -> None:
        self.in_flight[self.pool.submit(call)] = (trial, call, time.time())

    def _reporter(self, trial: Trial) -> Callable[..., bool] | None:
        """The second argument of a reporting objective: through the channel, or calling the study directly."""
        if not self.reports:
            return None
        if self.channel is not None:
            return self.channel.reporter(trial.id)
        lock, report = threading.Lock(), self.study.report  # a thread-isolated trial reports from its own thread

        def direct(cost: float, progress: float, loss: float | None = None) -> bool:
            with lock:
                return report(trial, cost, progress, loss)

        return direct

    def _on_report(self, trial_id: int, cost: Any, progress: Any, loss: Any) -> bool:
        """A report through the channel (on its thread): recorded, and the study's decision returned."""
        return self.study.report(trial_id, cost, progress, loss)

    def _step(self, bar) -> None:
        """Wait for trials, tell the finished trials and the timed-out ones."""
        deadlines = [d for _, call, sent in self.in_flight.values()
                     if (d := self.pool.deadline(call, sent, self.timeout))]
        wait = None if not deadlines else max(0.0, min(deadlines) - time.time())
        if self.channel is not None or self.study.journal is not None:
            look = 1.0 if self.study.journal is None else LEASE_LOOK * self.study.journal.lease
            wait = look if wait is None else min(wait, look)  # errors of the report thread, other drivers' leases
        done = self.pool.wait(list(self.in_flight), wait)
        if self.channel is not None and self.channel.error is not None:
            raise self.channel.error
        for future in done:
            trial, call, _ = self.in_flight.pop(future)
            outcome = self.pool.collect(future, call)
            if outcome is None:  # taken down with another trial's worker: run it again
                self._submit(trial, call)
                continue
            self.study.finish(trial, outcome)
            self.free_since.append(time.time())
            self._finished(bar, trial)
        self._expire(bar)

    def _expire(self, bar) -> None:
        """Fail the trials past their deadline and give up on them on the pool."""
        now = time.time()
        for future, (trial, call, sent) in list(self.in_flight.items()):
            deadline = self.pool.deadline(call, sent, self.timeout)
            if deadline is not None and now >= deadline and not future.done():
                del self.in_flight[future]
                how = self.pool.cancel(future, call)
                self.study.finish(trial, Outcome(TrialState.FAILED, error=f"timed out after {self.timeout:g} s ({how})",
                                                 seconds=now - sent))
                self.free_since.append(time.time())
                self._finished(bar, trial)

    def _best(self) -> str:
        best = self.study.best
        failed = sum(t.state is TrialState.FAILED for t in self.study.trials)
        text = f"best loss {best.loss:.4g} at cost {best.cost:.3g}" if best else "no feasible trial yet"
        return text + (f", {failed} failed" if failed else "")

    def _postfix(self, bar: Progress) -> None:
        bar.running(self._best())

    def _finished(self, bar: Progress, trial: Trial) -> None:
        """One more trial told: the bar moves; in a log, a line with the trial and the best so far."""
        outcome = trial.state.value if trial.loss is None or trial.cost is None else \
            f"loss {trial.loss:.4g}, cost {trial.cost:.3g}"
        bar.finished(f"trial {trial.id} ({trial.phase.value}, {outcome}; {self._best()})", units=1)


def _summarise(model_warnings: Counter[str], progress: bool) -> None:
    """Warnings of model fitting and acquisition, once each with their count (printed, or warned without a bar)."""
    for text, count in model_warnings.most_common():
        line = f"while proposing, {count} x {text}"
        if progress:
            print(line)
        else:
            warnings.warn(line, RuntimeWarning, stacklevel=4)
