"""`kd.tick_tock` end to end on `kd.SyntheticTask`: it optimises, resumes, survives failures, proposes valid configs.

The loop runs with small optimiser settings (`FAST`, `SEARCH`) so the file stays
fast on two shared cores; the runs are deterministic (seeded Sobol designs, QMC
samplers and restarts, one torch thread), so the numbers quoted in the docstrings
are what these tests see.
"""

from __future__ import annotations

import json
import math
import os
import signal
import statistics
import subprocess
import sys
import textwrap
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

import kerneldsl as kd
from kerneldsl.loop.journal import read_journal
from kerneldsl.space.sampling import sample
from kerneldsl.loop.tick_tock import phase_of
from kerneldsl.loop.runner import TrialRunner


FAST = dict(num_restarts=2, raw_samples=32, mc_samples=16, acq_options={"maxiter": 50}, fit_options={"maxiter": 50},
            progress=False)
"""Small acquisition and fit settings for the failure and resume runs (the defaults are several times slower)."""
SEARCH = {**FAST, "num_restarts": 4, "raw_samples": 64, "mc_samples": 32}
"""The main run's settings: with FAST's 2 restarts and 16 MC samples one seed in four stalls for 20 trials."""

MAIN_SEED, MAIN_INIT, MAIN_ITER = 1, 8, 12
TOLERANCE = 0.08
"""Gap to the known best feasible loss (0.382) that the main run must close within MAIN_INIT + MAIN_ITER trials."""

TESTS_DIR = Path(__file__).resolve().parent


def assert_valid_configs(space: kd.Space, trials: list[kd.Trial]) -> None:
    """Every trial's config is exactly what the space allows: conditions, rounding, bounds, linear constraints."""
    for trial in trials:
        config, where = trial.config, f"trial {trial.id} ({trial.phase}): {trial.config}"
        X = space.to_search([config])  # raises on inactive-but-given, active-but-missing, out of bounds, bad choice/int
        assert bool(space.feasible(X)[0]), f"{where} violates {space.violated_constraints(X[0])}"
        assert space.to_configs(X)[0] == config, f"{where} is not its own rounding"
        for p in space.parameters:
            if p.name not in config:
                continue
            value = config[p.name]
            if isinstance(p, kd.Int):
                assert type(value) is int, f"{where}: {p.name} is {type(value).__name__}, not int"
            elif isinstance(p, kd.Choice):
                assert value in p.choices, f"{where}: {p.name} not among {p.choices}"
            else:
                assert type(value) is float and p.lower <= value <= p.upper, where
        assert ("z" in config) == (config["model"] == "large"), f"{where}: z must be given exactly for the large model"


def gap_of_best(task: kd.SyntheticTask, configs: list[dict]) -> float:
    """Best noise-free loss within the task's budget among ``configs``, minus the known best feasible loss."""
    losses = [task.loss(c) for c in configs if task.cost(c) <= task.max_cost]
    return min(losses, default=math.inf) - task.best_feasible()[1]


def sobol_configs(space: kd.Space, n: int, seed: int) -> list[dict]:
    return space.to_configs(sample(space, n, seed=seed))


# --------------------------------------------------------------------------- the main run


@pytest.fixture(scope="module")
def main_run(tmp_path_factory):
    """One tick-tock run (8 Sobol + 12 model-based trials) with a journal and a plot, shared by several tests."""
    out = tmp_path_factory.mktemp("main_run")
    task = kd.SyntheticTask()
    result = kd.tick_tock(task, task.space(), task.max_cost, n_init=MAIN_INIT, n_iter=MAIN_ITER, seed=MAIN_SEED,
                          journal=str(out / "journal.jsonl"), plot=str(out / "run.png"), **SEARCH)
    return task, result, out


def test_finds_known_best_feasible_loss_where_random_search_does_not(main_run):
    """Within 20 trials tick-tock gets within 0.08 of the best feasible loss; Sobol points of that count mostly do not.

    Measured while writing this test (SEARCH settings, 8 + 12 trials, gap after the 20th trial): tick-tock 0.014 /
    0.032 / 0.023 / 0.039 for seeds 0 / 1 / 2 / 3; with larger settings (128 raw, 64 MC samples) at most 0.074; with
    FAST's smaller settings seed 1 stalls at 0.19 (hence SEARCH). Since the initial design is balanced over the
    branches, seed 0's 8 initial points alone come within 0.074, so the run uses seed 1 (initial design 0.216 off).
    Sobol designs of 20 points over 300 seeds: median gap 0.17, and 15% of them get within 0.08; over the
    seeds 0-19 used below, 3 of 20 do (median 0.18).
    """
    task, result, _ = main_run
    n = len(result.trials)
    assert n == MAIN_INIT + MAIN_ITER
    gap = result.best.loss - task.best_feasible()[1]
    sobol_gaps = [gap_of_best(task, sobol_configs(task.space(), n, seed)) for seed in range(20)]
    assert sum(g <= TOLERANCE for g in sobol_gaps) <= 5, f"random search is too good a baseline: {sorted(sobol_gaps)}"
    median = statistics.median(sobol_gaps)
    assert gap <= TOLERANCE, f"tick-tock's best is {gap:.4f} above the best feasible loss (Sobol median {median:.3f})"
    # The model-based iterations did the work: the initial design alone is far off.
    assert gap_of_best(task, [t.config for t in result.trials[:MAIN_INIT]]) > TOLERANCE


def test_every_proposal_is_a_valid_config(main_run):
    task, result, _ = main_run
    assert_valid_configs(task.space(), result.trials)
    assert any(t.config["model"] == "large" for t in result.trials)
    assert any(t.config["model"] == "small" for t in result.trials)


def test_best_is_the_lowest_loss_within_max_cost(main_run):
    task, result, _ = main_run
    feasible = [t for t in result.trials if t.state == "ok" and t.cost <= task.max_cost]
    assert result.best is min(feasible, key=lambda t: t.loss)
    assert result.best.cost <= task.max_cost
    assert any(t.cost > task.max_cost for t in result.trials), "no trial over budget: the filter is not exercised"
    # A budget just below the best trial's cost picks another trial, one within that budget.
    tighter = kd.TickTockResult(result.trials, max_cost=0.999 * result.best.cost).best
    assert tighter is not result.best and tighter.cost < result.best.cost
    assert tighter.loss >= result.best.loss
    best_so_far = result.best_so_far()
    assert best_so_far[-1] == result.best.loss
    assert all(a is None or b <= a for a, b in zip(best_so_far, best_so_far[1:]))


def test_best_on_hand_made_trials():
    """Over-budget and failed trials never count; cost exactly max_cost does."""
    def trial(i, status, loss, cost):
        return kd.Trial(id=i, config={}, phase=kd.Phase.INIT, state=kd.TrialState(status), loss=loss, cost=cost)

    trials = [trial(0, "ok", 0.5, 1.0), trial(1, "ok", 0.1, 2.5), trial(2, "failed", None, 0.5),
              trial(3, "ok", 0.3, 2.0), trial(4, "ok", 0.4, 0.5)]
    assert kd.TickTockResult(trials, max_cost=2.0).best is trials[3]
    assert kd.TickTockResult(trials, max_cost=0.4).best is None
    assert kd.TickTockResult(trials, max_cost=math.inf).best is trials[1]


def test_phases_follow_phase_of(main_run):
    """Initial trials are "init" (iteration 0); iteration k is `phase_of(k, 0.5)`: tock, tick, tock, ...

    A tick whose best expected cost reduction is below ``min_tick_gain`` runs as a tock and says so.
    """
    _, result, _ = main_run
    assert [t.id for t in result.trials] == list(range(MAIN_INIT + MAIN_ITER))
    for t in result.trials[:MAIN_INIT]:
        assert (t.phase, t.iteration, t.prediction) == ("init", 0, None)
    ticks = 0
    for k, t in enumerate(result.trials[MAIN_INIT:], start=1):
        assert t.iteration == k
        planned = phase_of(k, 0.5)
        assert planned == ("tick" if k % 2 == 0 else "tock")
        if t.phase != planned:
            assert (planned, t.phase) == ("tick", "tock") and "min_tick_gain" in t.proposal, t
        ticks += t.phase == "tick"
        assert t.prediction is not None and t.prediction["cost"] > 0
        assert t.timings["fit"] >= 0 and t.timings["acquisition"] >= 0
    assert ticks >= 2, "no tick ran: the alternation is not exercised"


def test_phase_of_schedules():
    assert [phase_of(k, 0.5) for k in range(1, 7)] == ["tock", "tick"] * 3
    assert [phase_of(k, 1 / 3) for k in range(1, 7)] == ["tock", "tock", "tick"] * 2
    assert {phase_of(k, 0.0) for k in range(1, 50)} == {"tock"}
    assert {phase_of(k, 1.0) for k in range(1, 50)} == {"tick"}
    assert sum(phase_of(k, 0.25) == "tick" for k in range(1, 101)) == 25


def test_journal_holds_every_trial(main_run):
    _, result, out = main_run
    header, records = read_journal(out / "journal.jsonl")
    assert header["seed"] == MAIN_SEED and header["parameters"] == list(kd.SyntheticTask().space().names)
    assert [r.id for r in records] == list(range(len(result.trials)))
    for record, trial in zip(records, result.trials):
        assert (record.config, record.loss, record.cost, record.phase) == (
            trial.config, trial.loss, trial.cost, trial.phase)
    assert result.journal == str(out / "journal.jsonl")


def test_plot_is_a_png(main_run):
    _, result, out = main_run
    path = out / "run.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    import matplotlib.image

    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 1000
    assert float(image[..., :3].std()) > 0.05, "the picture is blank"
    assert "best within max_cost: trial" in result.summary()


# --------------------------------------------------------------------------- failures


HANG_SECONDS, TIMEOUT = 3.0, 1.0


@dataclass
class FlakyTask:
    """`SyntheticTask` with every kind of failure.

    Raises for shift > 0.25, returns a NaN loss for shift < -0.9, an infinite loss for the large model at depth 7
    and hangs past the timeout for the small model at depth 8: 49% of Sobol points fail. The best feasible
    config (shift 0.3) lies in the failing region, so a loop blind to failures keeps proposing there.
    """

    task: kd.SyntheticTask = field(default_factory=lambda: kd.SyntheticTask(fail_above=0.25, nan_below=-0.9))

    def failing(self, config: dict) -> bool:
        return config["shift"] > 0.25 or config["shift"] < -0.9 or self.infinite(config) or self.hangs(config)

    @staticmethod
    def infinite(config: dict) -> bool:
        return config["model"] == "large" and config["depth"] == 7

    @staticmethod
    def hangs(config: dict) -> bool:
        return config["model"] == "small" and config["depth"] == 8

    def __call__(self, config: dict) -> dict:
        if self.hangs(config):
            time.sleep(HANG_SECONDS)
        result = self.task(config)
        if self.infinite(config):
            result["loss"] = math.inf
        return result


FAILING_CONFIGS = [
    {"model": "small", "effort": 0.5, "shift": 0.9, "depth": 3},  # raises
    {"model": "small", "effort": 0.5, "shift": -0.95, "depth": 3},  # NaN loss
    {"model": "large", "effort": 0.2, "shift": 0.0, "depth": 7, "z": 0.5},  # infinite loss
    {"model": "small", "effort": 0.2, "shift": 0.0, "depth": 8},  # times out
]
FAIL_INIT, FAIL_ITER = 6, 6


@pytest.fixture(scope="module")
def failure_run(tmp_path_factory):
    journal = tmp_path_factory.mktemp("failure_run") / "journal.jsonl"
    task = FlakyTask()
    result = kd.tick_tock(task, task.task.space(), task.task.max_cost, n_init=FAIL_INIT, n_iter=FAIL_ITER, seed=0,
                          initial_configs=FAILING_CONFIGS, journal=str(journal), timeout=TIMEOUT, isolation="thread",
                          **FAST)
    return task, result, journal


def test_failures_are_recorded_with_their_reason(failure_run):
    _, result, journal = failure_run
    given = result.trials[: len(FAILING_CONFIGS)]
    assert [t.config for t in given] == FAILING_CONFIGS
    assert all(t.state == "failed" and t.loss is None for t in given)
    raised, nan, inf, hung = (t.error for t in given)
    assert raised.startswith("RuntimeError: synthetic failure: shift=0.900") and "synthetic.py" in raised
    assert "loss=nan" in nan
    assert "loss=inf" in inf
    assert hung.startswith(f"timed out after {TIMEOUT:g} s")
    assert given[1].cost is not None and given[1].cost > 0, "a NaN loss keeps its measured cost"
    ok_losses = [t.loss for t in result.trials if t.state == "ok"]
    for t in result.trials:
        if t.state == "failed":
            assert t.error and t.imputed_loss > max(ok_losses)
        else:
            assert t.error is None and t.imputed_loss is None
    # Kept in the journal, exactly as in the result.
    _, records = read_journal(journal)
    assert [(r.state, r.error) for r in records] == [(t.state, t.error) for t in result.trials]


@pytest.mark.parametrize("result, cost", [
    ({"loss": math.nan, "cost": 2.0}, 2.0),
    ({"loss": math.nan, "cost": 0.0}, None),
    ({"loss": None, "cost": -1.0}, None),
    ({"loss": "big", "cost": math.inf}, None),
    ({"loss": "big", "cost": 3.0}, 3.0),
])
def test_a_failed_trial_keeps_its_cost_only_when_the_cost_model_can_use_it(result, cost):
    """The cost model works in log space: a failed trial's cost is kept only if finite and positive."""
    outcome = TrialRunner(lambda config: result)({})
    assert outcome.state is kd.TrialState.FAILED and outcome.loss is None and outcome.cost == cost


NOT_A_NUMBER = "which is not a number: return an int or float (e.g. tensor.item())"


@pytest.mark.parametrize("loss, shown", [
    ("0.5", "'0.5' (str)"),
    (torch.tensor([0.5]), "<Tensor of shape (1,), dtype torch.float32>"),
    (True, "True (bool)"),
    ([0.5], "[0.5] (list)"),
])
def test_a_loss_that_is_not_a_number_fails_the_trial(loss, shown):
    """Strings, booleans and tensors with dimensions are not read as numbers silently."""
    outcome = TrialRunner(lambda config: {"loss": loss, "cost": 2.0})({})
    assert outcome.state is kd.TrialState.FAILED and outcome.cost == 2.0
    assert outcome.error == f"objective returned loss={shown}, {NOT_A_NUMBER}"


@pytest.mark.parametrize("loss", [0.25, 1, torch.tensor(0.25, requires_grad=True), torch.tensor(0.25).numpy()])
def test_number_like_losses_are_accepted(loss):
    """Python numbers and 0-dimensional numpy/torch scalars (what ``.item()`` would give) are numbers."""
    outcome = TrialRunner(lambda config: {"loss": loss, "cost": 2.0})({})
    assert outcome.state is kd.TrialState.OK and outcome.loss == float(loss) and outcome.cost == 2.0


def test_loop_survives_failures_and_steers_away(failure_run):
    """Half of the space fails; Sobol points land there at that rate, the model-based proposals rarely do.

    Measured while writing this test: 49% of Sobol points fail on `FlakyTask`; none of the 6 model-based
    proposals of this run did. With failed trials left out of the loss model, 2 of 6 failed and the rest
    crowded towards the failing optimum (shift 0.2-0.3), which this test rejects.
    """
    task, result, _ = failure_run
    space = task.task.space()
    assert len(result.trials) == len(FAILING_CONFIGS) + FAIL_INIT + FAIL_ITER
    assert_valid_configs(space, result.trials)
    model_based = result.trials[len(FAILING_CONFIGS) + FAIL_INIT:]
    assert all(t.proposal.startswith("acquisition") for t in model_based), [t.proposal for t in model_based]
    assert all(t.state == ("failed" if task.failing(t.config) else "ok") for t in result.trials)
    sobol_rate = statistics.fmean(task.failing(c) for c in sobol_configs(space, 1024, seed=0))
    assert 0.45 < sobol_rate < 0.55
    n_failed = sum(task.failing(t.config) for t in model_based)
    assert n_failed <= sobol_rate * len(model_based) / 2, f"{n_failed} of {len(model_based)} proposals failed"
    assert result.best is not None and result.best in model_based
    assert result.best.loss - task.task.best_feasible()[1] < 0.1


# --------------------------------------------------------------------------- journal resume


RESUME = dict(n_init=3, n_iter=2, seed=5, min_tick_gain=0, **FAST)
"""min_tick_gain=0: the tick never gives way to a tock (it once hit log(0) and fell back to a random point)."""
CRASH_AT = 5
"""The child process dies (SIGKILL) inside its 5th objective call: trial 4, the first tick."""


@dataclass
class CountingTask:
    """`SyntheticTask` that appends every config it is called on to ``calls`` (a JSON line each), and
    SIGKILLs its own process inside call number ``crash_at`` (after logging it): a crash mid-trial."""

    calls: str
    crash_at: int | None = None

    def __call__(self, config: dict) -> dict:
        with open(self.calls, "a") as f:
            f.write(json.dumps(config) + "\n")
        if self.crash_at is not None and len(Path(self.calls).read_text().splitlines()) == self.crash_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return kd.SyntheticTask()(config)


CHILD = """
import sys
import torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
import kerneldsl as kd
from test_tick_tock import CRASH_AT, RESUME, CountingTask

task = kd.SyntheticTask()
kd.tick_tock(CountingTask({calls!r}, crash_at=CRASH_AT), task.space(), task.max_cost, journal={journal!r}, **RESUME)
print("the objective did not crash the process")
"""


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")
def test_resume_after_crash_loses_nothing_and_reruns_the_lost_trial_once(tmp_path):
    journal, calls, script = tmp_path / "run.jsonl", tmp_path / "calls.jsonl", tmp_path / "child.py"
    script.write_text(textwrap.dedent(CHILD.format(tests=str(TESTS_DIR), calls=str(calls), journal=str(journal))))
    child = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stdout + child.stderr
    _, before = read_journal(journal)
    # The crashed trial was asked (journaled) and never told: it is running in the journal.
    assert [(r.id, r.state) for r in before] == [(i, kd.TrialState.OK) for i in range(CRASH_AT - 1)] + [
        (CRASH_AT - 1, kd.TrialState.RUNNING)]
    assert [r.phase for r in before] == [kd.Phase.INIT] * 3 + [kd.Phase.TOCK, kd.Phase.TICK]
    # A crash during a write would leave a torn last line: resuming must drop it.
    with open(journal, "ab") as f:
        f.write(b'{"kind":"tell","trial":4,"sta')

    task = kd.SyntheticTask()
    result = kd.tick_tock(CountingTask(str(calls)), task.space(), task.max_cost, journal=str(journal), **RESUME)

    total = RESUME["n_init"] + RESUME["n_iter"]
    lost, retry = result.trials[CRASH_AT - 1], result.trials[CRASH_AT]
    assert [t.id for t in result.trials] == list(range(total + 1)), "one more trial: the lost one"
    assert (lost.state, lost.error) == (kd.TrialState.LOST, "lost: the study stopped while it ran")
    assert (retry.retry_of, retry.config, retry.phase, retry.state) == (lost.id, lost.config, lost.phase, kd.TrialState.OK)
    assert sum(t.state is not kd.TrialState.LOST for t in result.trials) == total
    for old, new in zip(before[: CRASH_AT - 1], result.trials):  # nothing finished lost, nothing changed
        assert old == new
    _, after = read_journal(journal)
    assert after == result.trials
    called = [json.loads(line) for line in calls.read_text().splitlines()]
    # Calls: the 4 finished trials once each, the crashed call, its retry, then the trials after it.
    assert len(called) == total + 1
    assert called[: CRASH_AT - 1] == [t.config for t in result.trials[: CRASH_AT - 1]]
    assert called[CRASH_AT - 1] == called[CRASH_AT] == lost.config
    assert called[CRASH_AT:] == [t.config for t in result.trials[CRASH_AT:]]
    assert_valid_configs(task.space(), result.trials)
    # The lost trial teaches the models nothing: it has no loss, no cost and no imputed loss.
    assert (lost.loss, lost.cost, lost.imputed_loss) == (None, None, None)

    # Resuming a finished run runs nothing.
    again = kd.tick_tock(CountingTask(str(calls)), task.space(), task.max_cost, journal=str(journal), **RESUME)
    assert again.trials == result.trials and len(calls.read_text().splitlines()) == total + 1


def test_journal_of_another_run_is_refused(tmp_path):
    task = kd.SyntheticTask()
    space, journal = task.space(), str(tmp_path / "run.jsonl")
    kd.tick_tock(task, space, task.max_cost, n_init=2, n_iter=0, seed=0, journal=journal, progress=False)

    def never_called(config):
        raise AssertionError("a refused journal must not run any trial")

    with pytest.raises(kd.JournalError, match=r"seed=0.*this study has seed=1"):
        kd.tick_tock(never_called, space, task.max_cost, n_init=2, n_iter=0, seed=1, journal=journal, progress=False)
    # Another budget is allowed (budgets move; each trial keeps the one it ran under): nothing runs, nothing is refused.
    moved = kd.tick_tock(never_called, space, 3.0, n_init=2, n_iter=0, seed=0, journal=journal, progress=False)
    assert [t.budget for t in moved.trials] == [task.max_cost] * 2 and moved.max_cost == 3.0
    other = kd.Space([kd.Scalar("effort", 0.0, 1.0), kd.Int("depth", 1, 8)])
    with pytest.raises(kd.JournalError, match="parameters"):
        kd.tick_tock(never_called, other, task.max_cost, n_init=2, n_iter=0, seed=0, journal=journal, progress=False)
    # Same names, narrower bounds: the journaled configs do not fit.
    narrow = kd.Space([p if p.name != "effort" else kd.Scalar("effort", 0.0, 1e-6) for p in space.parameters],
                      constraints=space.constraints)
    with pytest.raises(kd.JournalError, match=r"trial 0.*does not fit this space.*effort"):
        kd.tick_tock(never_called, narrow, task.max_cost, n_init=2, n_iter=0, seed=0, journal=journal, progress=False)
    # An edited journal: a loss that is not a number is named with its file, line and trial.
    lines = Path(journal).read_text().splitlines()  # header, ask 0, tell 0, ask 1, tell 1
    edited = [lines[0], "", *lines[1:4], json.dumps({**json.loads(lines[4]), "loss": "abc"})]  # a blank line too
    Path(journal).write_text("\n".join(edited) + "\n")
    with pytest.raises(kd.JournalError) as info:
        kd.tick_tock(never_called, space, task.max_cost, n_init=2, n_iter=0, seed=0, journal=journal, progress=False)
    assert str(info.value) == f"{journal}:6: trial 1: loss is 'abc' (str), expected a finite number or null"
    Path(journal).write_text("\n".join(lines[:4] + [json.dumps({**json.loads(lines[4]), "cost": None})]) + "\n")
    with pytest.raises(kd.JournalError, match=r"run.jsonl:5: trial 1: cost is None \(NoneType\), expected a finite "
                                              r"number \(the trial is 'ok'\)$"):
        read_journal(journal)
    Path(journal).write_text("\n".join(lines) + "\n")
    with open(journal, "a") as f:
        f.write("this is not json\n")
    with pytest.raises(kd.JournalError, match=r"run.jsonl:6: damaged journal line"):
        kd.tick_tock(never_called, space, task.max_cost, n_init=2, n_iter=0, seed=0, journal=journal, progress=False)


# --------------------------------------------------------------------------- bad arguments


def _never_called(config):
    raise AssertionError("bad arguments must be refused before any trial runs")


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"n_iter": -1}, ValueError, r"n_iter must be a non-negative integer, got -1"),
        ({"n_init": 2.5}, ValueError, r"n_init must be a non-negative integer"),
        ({"max_cost": 0}, ValueError, r"max_cost must be a positive number"),
        ({"max_cost": -3.0}, ValueError, r"max_cost must be a positive number"),
        ({"max_cost": math.nan}, ValueError, r"max_cost must be a positive number"),
        ({"max_cost": "6"}, ValueError, r"max_cost must be a positive number"),
        ({"space": {"effort": (0, 1)}}, TypeError, r"space must be a kerneldsl.Space, got dict"),
        ({"tick_ratio": 1.5}, ValueError, r"tick_ratio must lie in \[0, 1\]"),
        ({"num_restarts": 0}, ValueError, r"num_restarts must be a positive integer"),
        ({"min_tick_gain": -0.1}, ValueError, r"min_tick_gain must be a non-negative number"),
        ({"timeout": -1.0}, ValueError, r"timeout must be a positive number"),
        ({"objective": "not callable"}, TypeError, r"objective must be callable"),
        ({"initial_configs": [{"model": "small", "effort": 2.0, "shift": 0.0, "depth": 3}]}, kd.ConfigError,
         r"'effort' = 2.0 is outside its bounds"),
        ({"loss_kernel": "matern52(nope)"}, kd.KernelError, r"nope"),
    ],
)
def test_bad_arguments_are_clear_errors(kwargs, error, match):
    task = kd.SyntheticTask()
    arguments = {"objective": _never_called, "space": task.space(), "max_cost": task.max_cost, "n_init": 2,
                 "n_iter": 2, "progress": False, **kwargs}
    with pytest.raises(error, match=match):
        kd.tick_tock(**arguments)
