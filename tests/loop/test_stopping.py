"""Partial results: reports while a trial runs, stopping trials that will overrun the budget, moving budgets."""

from __future__ import annotations

import math
import warnings

import pytest
import torch

import kerneldsl as kd
from kerneldsl.loop.journal import read_journal
from kerneldsl.loop.stopping import CostEstimate

FAST = dict(num_restarts=2, raw_samples=32, mc_samples=16, acq_options={"maxiter": 30}, fit_options={"maxiter": 30})
TASK = kd.SyntheticTask()
STEPS = 10


class Reporting:
    """`SyntheticTask` trained in ``STEPS`` equal steps: after step k it reports cost k/STEPS of the true cost and a
    loss that falls towards the final one; it returns what it has when the study asks it to stop."""

    def __init__(self):
        self.steps_run: dict[str, int] = {}

    def __call__(self, config: dict, report) -> dict:
        final = TASK(config)
        for k in range(1, STEPS + 1):
            cost = final["cost"] * k / STEPS
            self.steps_run[repr(config)] = k
            if report(cost=cost, progress=k / STEPS, loss=final["loss"] * (1 + (STEPS - k) / STEPS)):
                return {"loss": None, "cost": cost}
        return final


def test_the_rule_combines_extrapolation_and_model_by_precision():
    rule = kd.CostStopping(margin=0.1, confidence=0.9, extrapolation_sd=0.3)
    alone = rule.estimate(cost=2.0, progress=0.5)
    assert alone.log_mean == pytest.approx(math.log(4.0)) and alone.log_sd == pytest.approx(0.3)
    prior = CostEstimate(math.log(8.0), 0.3)  # the model thinks 8, as sure as the report's 4
    both = rule.estimate(cost=2.0, progress=0.5, prior=prior)
    assert both.log_mean == pytest.approx(math.log(math.sqrt(32.0))) and both.log_sd == pytest.approx(0.3 / math.sqrt(2))
    late = rule.estimate(cost=3.6, progress=0.9, prior=prior)  # late reports outweigh the model
    assert abs(late.log_mean - math.log(4.0)) < abs(late.log_mean - math.log(8.0)) / 5
    assert rule.estimate(cost=4.0, progress=1.0, prior=prior) == CostEstimate(math.log(4.0), 0.0)
    z = 1.2815515655446004  # the 0.9 quantile of a standard normal
    edge = math.log(5.0 * 1.1) + z * 0.3
    assert rule.should_stop(CostEstimate(edge + 1e-6, 0.3), max_cost=5.0)
    assert not rule.should_stop(CostEstimate(edge - 1e-6, 0.3), max_cost=5.0)
    assert not rule.should_stop(CostEstimate(100.0, 0.0), max_cost=math.inf)
    with pytest.raises(ValueError, match="confidence=0.3 is out of range"):
        kd.CostStopping(confidence=0.3)


def test_trials_that_will_overrun_are_stopped_early_and_the_others_are_not(tmp_path):
    objective = Reporting()
    max_cost = 4.0
    result = kd.tick_tock(objective, TASK.space(), max_cost, n_init=12, n_iter=0, seed=1, progress=False,
                          journal=str(tmp_path / "run.jsonl"), **FAST)
    over, under = 0, 0
    for trial in result.trials:
        true_cost = TASK.cost(trial.config)
        steps = objective.steps_run[repr(trial.config)]
        if true_cost > 1.5 * max_cost:
            over += 1
            assert trial.state is kd.TrialState.STOPPED and steps < STEPS, (trial, true_cost)
            assert trial.cost == pytest.approx(true_cost * steps / STEPS) and trial.estimated_cost > max_cost
        elif true_cost <= max_cost:
            under += 1
            assert trial.state is kd.TrialState.OK and steps == STEPS, (trial, true_cost)
        assert len(trial.reports) == steps
    assert over >= 2 and under >= 2, f"the design must exercise both sides: {over} over, {under} under"
    assert result.best is not None and result.best.state is kd.TrialState.OK
    assert all(t.state is not kd.TrialState.STOPPED for t in result.trials if t is result.best)
    # Every report is in the journal, as the study saw it.
    assert read_journal(tmp_path / "run.jsonl")[1] == result.trials
    assert "trials stopped for cost" in result.summary()


def test_stopped_trials_teach_the_cost_model_their_estimate_and_the_loss_model_their_last_loss():
    study = kd.Study(TASK.space(), 4.0, n_init=8, seed=1, **FAST)
    objective = Reporting()
    for trial in study.ask(8):
        outputs = objective(trial.config, lambda **kw: study.report(trial, **kw))
        study.tell(trial, outputs)
    stopped = [i for i, t in enumerate(study.trials) if t.state is kd.TrialState.STOPPED]
    ok = [i for i, t in enumerate(study.trials) if t.state is kd.TrialState.OK]
    assert stopped and len(ok) >= 2
    data = study.history().training_data().models
    X = study.space.to_search([t.config for t in study.trials])
    assert len(data.X_loss) == len(ok) + len(stopped) and len(data.X_cost) == len(ok) + len(stopped)
    for i in stopped:
        trial = study.trials[i]
        row = (data.X_cost == X[i]).all(-1).nonzero().flatten().tolist()
        assert row and float(data.y_cost[row[0]]) == pytest.approx(math.log(trial.estimated_cost))
        row = (data.X_loss == X[i]).all(-1).nonzero().flatten().tolist()
        assert row and float(data.y_loss[row[0]]) == pytest.approx(math.log(trial.reports[-1].loss))
        assert trial.loss is None and trial not in (study.best,)
    nxt = study.ask()  # the models fit with stopped trials at their partial losses, and propose
    assert nxt.proposal.startswith("acquisition") and nxt.prediction["log_cost_sd"] > 0


def test_reports_survive_a_crash_and_load_with_the_study(tmp_path):
    path = tmp_path / "study.jsonl"
    study = kd.Study(TASK.space(), 6.0, str(path), n_init=4, seed=0, **FAST)
    trial = study.ask()
    for k in (1, 2, 3):
        study.report(trial, cost=0.5 * k, progress=k / 10, loss=1.0 / k)
    # the process dies here: no tell; every report was appended and fsynced as it came
    loaded = kd.Study.load(path)
    assert [(r.cost, r.progress, r.loss) for r in loaded.trials[0].reports] == [(0.5, 0.1, 1.0), (1.0, 0.2, 0.5),
                                                                                (1.5, 0.3, 1 / 3)]
    assert loaded.trials[0].state is kd.TrialState.RUNNING
    assert loaded.trials_dataframe()["reports"].tolist() == [3]


@pytest.mark.parametrize(("report", "problem"), [
    (dict(cost=-1.0, progress=0.5), "cost=-1 is negative"),
    (dict(cost=0.1, progress=0.6), "cost=0.1 is below the previous report's 1"),
    (dict(cost=2.0, progress=0.2), "progress=0.2 is below the previous report's 0.5"),
    (dict(cost=2.0, progress=0.0), r"progress=0 is outside \(0, 1\]"),
    (dict(cost=2.0, progress=1.5), r"progress=1.5 is outside \(0, 1\]"),
    (dict(cost=math.nan, progress=0.6), "cost=nan is not a finite number"),
    (dict(cost=2.0, progress=0.6, loss="low"), "loss='low' is not a number"),
])
def test_bad_reports_are_recorded_on_the_trial_not_raised(tmp_path, report, problem):
    study = kd.Study(TASK.space(), 6.0, str(tmp_path / "s.jsonl"), n_init=4, seed=0, **FAST)
    trial = study.ask()
    assert study.report(trial, cost=1.0, progress=0.5) is False
    with pytest.warns(RuntimeWarning, match=problem):
        assert study.report(trial, **report) is False
    assert len(trial.reports) == 1 and trial.warnings and problem.replace("\\", "")[:10] in trial.warnings[0]
    study.tell(trial, TASK(trial.config))
    with pytest.warns(RuntimeWarning, match=r"the trial has ended \(state ok\)"):
        study.report(trial, cost=9.0, progress=1.0)
    assert read_journal(tmp_path / "s.jsonl")[1][0].warnings == trial.warnings[:1]


def test_a_stopped_trial_may_be_told_without_a_loss_and_only_it():
    study = kd.Study(TASK.space(), 1.0, n_init=4, seed=0, **FAST)
    trial, other = study.ask(2)
    assert study.report(trial, cost=0.9, progress=0.1) is True  # 9x the budget, surely
    study.tell(trial, {"loss": None, "cost": 0.9})
    assert (trial.state, trial.cost, trial.loss) == (kd.TrialState.STOPPED, 0.9, None)
    with pytest.raises(kd.StudyError, match="loss=None is not a number"):
        study.tell(other, {"loss": None, "cost": 0.9})


def test_the_budget_may_change_on_resume_and_old_trials_are_rejudged(tmp_path):
    path = str(tmp_path / "study.jsonl")
    first = kd.Study(TASK.space(), 6.0, path, n_init=6, seed=0, **FAST)
    for trial in first.ask(6):
        first.tell(trial, TASK(trial.config))
    first.close()
    best_at_6 = first.best
    tighter = kd.Study(TASK.space(), 0.8 * best_at_6.cost, path, n_init=6, seed=0, **FAST)
    assert [t.budget for t in tighter.trials] == [6.0] * 6
    assert tighter.best is None or tighter.best.cost <= 0.8 * best_at_6.cost
    trial = tighter.ask()
    assert trial.budget == pytest.approx(0.8 * best_at_6.cost)
    tighter.tell(trial, TASK(trial.config))
    assert "budget moved: 6 for trials 0-5" in tighter.result().summary()


def test_a_budget_schedule_moves_with_finished_trials_and_a_bad_one_never_ends_the_study():
    steps = kd.Study(TASK.space(), [(0, 6.0), (3, 4.0)], n_init=6, seed=0, **FAST)
    for _ in range(5):
        trial = steps.ask()
        steps.tell(trial, TASK(trial.config))
    assert [t.budget for t in steps.trials] == [6.0, 6.0, 6.0, 4.0, 4.0] and steps.max_cost == 4.0

    schedule = kd.Study(TASK.space(), lambda finished: 6.0 if finished < 2 else -1.0, n_init=6, seed=0, **FAST)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(3):
            trial = schedule.ask()
            schedule.tell(trial, TASK(trial.config))
    assert [t.budget for t in schedule.trials] == [6.0] * 3
    assert any("max_cost schedule failed" in str(w.message) and "keeping max_cost=6" in str(w.message) for w in caught)
    assert schedule.result().info["budget_warnings"]
    with pytest.raises(ValueError, match="must start at trial 0"):
        kd.Study(TASK.space(), [(2, 6.0)])
    with pytest.raises(ValueError, match="max_cost must be a positive number"):
        kd.Study(TASK.space(), 0.0)


def test_the_loss_a_stopped_trial_teaches_is_its_last_usable_report():
    from kerneldsl.loop.history import LossScale, stopped_loss

    def trial(state, *losses):
        t = kd.Trial(id=0, config={}, phase=kd.Phase.INIT, state=state)
        t.reports = [kd.Report(0.1 * (k + 1), 0.1 * (k + 1), loss, 0.0) for k, loss in enumerate(losses)]
        return t

    assert stopped_loss(trial(kd.TrialState.STOPPED, 2.0, 0.5), LossScale()) == pytest.approx(math.log(0.5))
    assert stopped_loss(trial(kd.TrialState.STOPPED, 2.0, None), LossScale()) == pytest.approx(math.log(2.0))
    assert stopped_loss(trial(kd.TrialState.STOPPED, 2.0, -1.0), LossScale(log=False)) == -1.0
    assert stopped_loss(trial(kd.TrialState.STOPPED, -1.0), LossScale()) is None  # no log of a negative loss
    assert stopped_loss(trial(kd.TrialState.STOPPED), LossScale()) is None  # reported no loss
    assert stopped_loss(trial(kd.TrialState.OK, 2.0), LossScale()) is None  # not stopped


@pytest.mark.parametrize("mean, sd, upper", [(0.0, 1.0, 0.0), (1.0, 0.5, 0.2), (-1.0, 2.0, 3.0), (5.0, 0.1, 0.0),
                                             (0.0, 1.0, -30.0)])
def test_truncated_mean_is_the_mean_of_a_normal_cut_above(mean, sd, upper):
    from scipy.stats import truncnorm

    from kerneldsl.loop.history import truncated_mean

    as_tensor = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    got = float(truncated_mean(as_tensor(mean), as_tensor(sd), as_tensor(upper)))
    assert got <= upper
    assert got == pytest.approx(truncnorm(-math.inf, (upper - mean) / sd, loc=mean, scale=sd).mean(), rel=1e-6, abs=1e-9)


def test_a_stopped_trial_enters_the_loss_model_below_its_partial_loss():
    """A partial loss bounds the loss the trial would have reached: the loss model is fitted to the prediction of a
    fit without the stopped trials, truncated at the partial loss (here far above every finished loss)."""
    from kerneldsl.loop.history import History
    from kerneldsl.loop.proposals import TickTockProposer
    from kerneldsl.loop.proposer import ProposalRequest

    space = TASK.space()
    trials = []
    for i, config in enumerate(space.to_configs(kd.sample(space, 6, seed=0, dtype=torch.float64))):
        outcome = TASK(config)
        trials.append(kd.Trial(id=i, config=config, phase=kd.Phase.INIT, state=kd.TrialState.OK,
                               loss=outcome["loss"], cost=outcome["cost"]))
    stopped = trials[-1]
    stopped.state, stopped.loss, stopped.estimated_cost = kd.TrialState.STOPPED, None, 50.0
    stopped.reports = [kd.Report(0.1, 5.0, 40.0, 0.0)]  # progress 0.1, cost 5, a partial loss of 40
    history = History(space, trials, TASK.max_cost)
    assert history.training_data().models.stopped == 1
    proposer = TickTockProposer(space, acquisition=kd.AcquisitionOptions(num_restarts=2, raw_samples=16))
    fitted = []
    fit = proposer.models["loss"].fit
    proposer.models["loss"].fit = lambda X, y: fitted.append(y.clone()) or fit(X, y)
    proposer.propose(history, [ProposalRequest(6, 1, kd.Phase.TOCK)])
    assert [len(y) for y in fitted] == [5, 6]  # without the stopped trial, then with it
    imputed = float(fitted[1][-1])
    assert imputed < math.log(40.0) - 1.0 and imputed > max(fitted[0]) - 5.0, (imputed, fitted[0])
