"""The event loop of `Study.optimize`: keep trials in flight on a pool, tell each one as it finishes.

`TrialLoop.run` repeats until the study has its trials and none is in flight:

1. fill: ask as many trials as there are free slots (``ask(free, retry)``: the configs of
   lost trials first), each running until told, and submit a `TrialCall` for each;
2. wait for the first to finish (at most until the nearest timeout deadline, and at most
   `POLL` seconds while reports may arrive);
3. take the reports that arrived (journaled before the outcome of the same trial) and
   raise the stop flags the study decides on;
4. collect the finished trials and `TrialLog.finish` them (a trial taken down with another
   trial's worker runs again);
5. fail the trials past their deadline ("timed out") and cancel them on the pool.

Warnings raised while proposing are counted and summarised once at the end instead of
breaking the progress bar. This process alone asks, tells and writes the journal.
"""

from __future__ import annotations

import threading
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

from .executors import TrialCall, TrialPool
from .reporting import POLL, ReportChannel
from .runner import Outcome, takes_reporter
from .trial import Trial, TrialState
from .trial_log import TrialLog

__all__ = ["TrialLoop", "AskFunction"]

AskFunction = Callable[[int, Sequence[Trial]], list[Trial]]
"""``ask(count, retry)``: ask ``count`` trials (journaled), the configs of the lost trials ``retry`` first."""


class TrialLoop:
    """Runs ``objective`` on ``pool`` for ``study``, ``width`` trials in flight, asking through ``ask``."""

    def __init__(self, study: TrialLog, ask: AskFunction, pool: TrialPool, width: int,
                 objective: Callable[..., Any], timeout: float | None = None):
        self.study, self.ask, self.pool, self.width = study, ask, pool, width
        self.objective, self.timeout = objective, timeout
        self.reports = takes_reporter(objective)
        self.channel: ReportChannel | None = None
        self.in_flight: dict[Any, tuple[Trial, TrialCall, float]] = {}  # future -> trial, its call, when it was sent
        self.model_warnings: Counter[str] = Counter()  # raised while proposing: summarised once, not mid-bar

    def run(self, target: int, retry: Sequence[Trial] = (), progress: bool = True) -> None:
        """Run trials until the study counts ``target`` of them; ``retry``: lost trials whose configs run first.
        Closes the pool (and the report channel) at the end, also when interrupted."""
        from tqdm.auto import tqdm

        bar = tqdm(total=target, initial=self.study.n_counted, desc="study", unit="trial", disable=not progress,
                   dynamic_ncols=True)
        retry, interrupted = list(retry), True
        try:
            self.channel = self.pool.report_channel() if self.reports else None
            self._postfix(bar)
            while True:
                retry = self._fill(target, retry, bar)
                if not self.in_flight:
                    break
                self._step(bar)
                self._postfix(bar)
            interrupted = False
        finally:
            bar.close()
            for future in self.in_flight:
                future.cancel()
            self.pool.close(interrupted=interrupted)
            if self.channel is not None:
                self.channel.close()
            _summarise(self.model_warnings, progress)

    def _fill(self, target: int, retry: list[Trial], bar) -> list[Trial]:
        """Ask and submit trials into the free slots; returns the lost trials still to run again."""
        free = min(self.width - len(self.in_flight), target - self.study.n_counted)
        if free <= 0:
            return retry
        _, phase = self.study.schedule.slot(self.study.n_counted)
        bar.set_description(f"study ({phase.value})")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            asked = self.ask(free, retry)
        self.model_warnings.update(f"{w.category.__name__}: {str(w.message).splitlines()[0]}" for w in caught)
        for trial in asked:
            self._submit(trial, TrialCall(trial.id, self.objective, trial.config, self.study.log_loss, self.timeout,
                                          reporter=self._reporter(trial)))
        return retry[min(len(retry), free):]

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

    def _step(self, bar) -> None:
        """Wait for trials, take the reports, tell the finished trials and the timed-out ones."""
        deadlines = [d for _, call, sent in self.in_flight.values()
                     if (d := self.pool.deadline(call, sent, self.timeout))]
        wait = None if not deadlines else max(0.0, min(deadlines) - time.time())
        if self.channel is not None:
            wait = POLL if wait is None else min(wait, POLL)
        done = self.pool.wait(list(self.in_flight), wait)
        self._take_reports()  # before the tells: a trial's reports are journaled before its outcome
        for future in done:
            trial, call, _ = self.in_flight.pop(future)
            outcome = self.pool.collect(future, call)
            if outcome is None:  # taken down with another trial's worker: run it again
                self._submit(trial, call)
                continue
            self.study.finish(trial, outcome)
            bar.update(1)
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
                bar.update(1)

    def _take_reports(self) -> None:
        """Record the reports that arrived through the channel and raise the stop flags the study decides on."""
        if self.channel is None:
            return
        for trial_id, cost, progress, loss in self.channel.drain():
            if self.study.report(trial_id, cost, progress, loss):
                self.channel.stop(trial_id)

    def _postfix(self, bar) -> None:
        best = self.study.best
        failed = sum(t.state is TrialState.FAILED for t in self.study.trials)
        text = f"best loss {best.loss:.4g} at cost {best.cost:.3g}" if best else "no feasible trial yet"
        bar.set_postfix_str(text + (f", {failed} failed" if failed else ""))


def _summarise(model_warnings: Counter[str], progress: bool) -> None:
    """Warnings of model fitting and acquisition, once each with their count (printed, or warned without a bar)."""
    for text, count in model_warnings.most_common():
        line = f"while proposing, {count} x {text}"
        if progress:
            print(line)
        else:
            warnings.warn(line, RuntimeWarning, stacklevel=4)
