"""kerneldsl.integrations.optuna with the real Optuna: SQLite and journal storages shared by worker processes,
resuming from the storage alone, enqueue_trial, pruners, define-by-run spaces, and clear errors for bad input."""

from __future__ import annotations

import math
import os
import pickle
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest
import torch

optuna = pytest.importorskip("optuna", reason="Optuna is not installed: pip install -e '.[optuna]' in a clone of kerneldsl")

import kerneldsl as kd  # noqa: E402
from kerneldsl.compiler.errors import KernelNameError  # noqa: E402
from kerneldsl.model import default_feature_chain  # noqa: E402
from kerneldsl.integrations.optuna import (COST_CONSTRAINT, ESTIMATED_COST_ATTR, HOW_ATTR,  # noqa: E402
                                           ITERATION_ATTR, PARAMS_ATTR, PHASE_ATTR, PREDICTION_ATTR, STOPPED_ATTR,
                                           CostPruner, HandsOnSampler, OptunaSpace)

optuna.logging.set_verbosity(optuna.logging.WARNING)
REPO = Path(__file__).resolve().parents[2]
FAST = kd.AcquisitionOptions(num_restarts=2, raw_samples=32, mc_samples=64)
"""Small acquisition settings: a proposal in well under a second on 2-parameter studies."""
MAX_COST = 2.0

WORKER = textwrap.dedent('''
    """One worker process: optimise the shared study for N trials with its own HandsOnSampler."""
    import math
    import sys

    import torch

    torch.set_num_threads(1)
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    import kerneldsl as kd
    from kerneldsl.integrations.optuna import HandsOnSampler

    optuna.logging.set_verbosity(optuna.logging.WARNING)


    def objective(trial):
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
        trial.set_user_attr("cost", math.exp(2 * x))       # the cost grows with x, the loss falls towards x = 0.8
        return (x - 0.8) ** 2 + (y - 0.3) ** 2 + 0.05


    if __name__ == "__main__":
        where, n_trials, max_cost = sys.argv[1], int(sys.argv[2]), sys.argv[3]
        storage = where if where.startswith("sqlite") else JournalStorage(JournalFileBackend(where))
        sampler = HandsOnSampler(max_cost=None if max_cost == "none" else float(max_cost), n_startup_trials=4, seed=0,
                                 acquisition=kd.AcquisitionOptions(num_restarts=2, raw_samples=32, mc_samples=64))
        study = optuna.load_study(study_name="shared", storage=storage, sampler=sampler)
        study.optimize(objective, n_trials=n_trials)
''')


def loss_and_cost(trial) -> float:
    """The workers' objective, in this process."""
    x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
    trial.set_user_attr("cost", math.exp(2 * x))
    return (x - 0.8) ** 2 + (y - 0.3) ** 2 + 0.05


def run_workers(tmp_path: Path, where: str, n_trials: int, max_cost: str, workers: int = 2) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    processes = [subprocess.Popen([sys.executable, str(script), where, str(n_trials), max_cost],
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path)
                 for _ in range(workers)]
    for process in processes:
        output, _ = process.communicate(timeout=240)
        assert process.returncode == 0, output


def check_schedule(trials, n_startup: int, tick_ratio: float) -> None:
    """Every trial's recorded phase is the one kerneldsl's schedule gives its number."""
    schedule = kd.Schedule(n_init=n_startup, tick_ratio=tick_ratio)
    for trial in trials:
        iteration, phase = schedule.slot(trial.number)
        assert trial.user_attrs[ITERATION_ATTR] == iteration, trial
        if phase is kd.Phase.INIT:
            assert trial.user_attrs[PHASE_ATTR] == "init" and trial.user_attrs[HOW_ATTR].startswith("random")
        else:
            how = trial.user_attrs[HOW_ATTR]
            assert how.startswith("acquisition"), trial.user_attrs
            gave_way = phase is kd.Phase.TICK and "min_tick_gain" in how   # a tick with too little to gain
            assert trial.user_attrs[PHASE_ATTR] == ("tock" if gave_way else phase.value), trial.user_attrs


def test_two_processes_on_sqlite_share_a_study_within_budget_and_a_new_sampler_resumes(tmp_path):
    url = f"sqlite:///{tmp_path / 'study.db'}"
    optuna.create_study(study_name="shared", storage=url)
    run_workers(tmp_path, url, n_trials=5, max_cost=str(MAX_COST))

    study = optuna.load_study(study_name="shared", storage=url)
    trials = study.get_trials()
    assert sorted(t.number for t in trials) == list(range(10))              # none lost, none twice
    assert all(t.state is optuna.trial.TrialState.COMPLETE for t in trials)
    assert len({(t.params["x"], t.params["y"]) for t in trials}) == 10       # no point asked twice
    check_schedule(trials, n_startup=4, tick_ratio=0.5)
    model_based = [t for t in trials if t.number >= 4]
    assert {t.user_attrs[PHASE_ATTR] for t in model_based} == {"tick", "tock"}
    for t in model_based:                                                    # proposals are recorded ...
        assert t.system_attrs[PARAMS_ATTR] == t.params                       # ... and were the ones evaluated
    predicted = [t.user_attrs[PREDICTION_ATTR]["cost"] for t in model_based]
    assert sum(predicted) / len(predicted) <= 1.15 * MAX_COST, predicted    # proposals aim within the budget
    for t in trials:                                                         # the constraint Optuna sees
        assert t.constraints == {COST_CONSTRAINT: pytest.approx(t.user_attrs["cost"] - MAX_COST)}
    best = study.best_trial                                                  # the best feasible trial
    assert best.user_attrs["cost"] <= MAX_COST and best.value < 0.30, (best.value, best.user_attrs)

    # A new sampler (nothing in memory) on the stored study continues model-based where the schedule says.
    sampler = HandsOnSampler(max_cost=MAX_COST, n_startup_trials=4, seed=1, acquisition=FAST)
    resumed = optuna.load_study(study_name="shared", storage=url, sampler=sampler)
    resumed.optimize(loss_and_cost, n_trials=2)
    new = resumed.get_trials()[10:]
    check_schedule(new, n_startup=4, tick_ratio=0.5)                         # iterations 7 (tock) and 8 (tick)
    assert sampler.history(resumed).training_data().models.X_loss.shape == (12, 2)


def test_two_processes_on_a_journal_storage_loss_only(tmp_path):
    path = str(tmp_path / "journal.log")
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))
    optuna.create_study(study_name="shared", storage=storage)
    run_workers(tmp_path, path, n_trials=4, max_cost="none")

    trials = optuna.load_study(study_name="shared", storage=storage).get_trials()
    assert sorted(t.number for t in trials) == list(range(8))
    check_schedule(trials, n_startup=4, tick_ratio=0.0)                      # no budget: only tocks
    for t in trials[4:]:
        assert t.user_attrs[PHASE_ATTR] == "tock" and "cost" not in t.user_attrs[PREDICTION_ATTR]
        assert t.constraints == {}                                           # no budget, no constraint


def test_running_trials_are_pending_points():
    sampler = HandsOnSampler(max_cost=MAX_COST, n_startup_trials=3, seed=0, acquisition=FAST)
    study = optuna.create_study(sampler=sampler)
    study.optimize(loss_and_cost, n_trials=3)
    first = study.ask()                                                        # another worker's trial, running
    first.suggest_float("x", 0.0, 1.0)                                         # its y is proposed, not yet suggested
    second = study.ask()
    loss_and_cost(second)
    assert study.trials[second.number].user_attrs[PREDICTION_ATTR]["pending"] == 1
    pending = sampler.history(study, exclude=second.number).training_data().X_pending
    proposed = study.trials[first.number].system_attrs[PARAMS_ATTR]
    assert pending.tolist() == [[proposed["x"], proposed["y"]]]
    assert second.params != proposed


def test_enqueued_params_win(tmp_path):
    sampler = HandsOnSampler(max_cost=MAX_COST, n_startup_trials=3, seed=0, acquisition=FAST)
    study = optuna.create_study(sampler=sampler, storage=f"sqlite:///{tmp_path / 'e.db'}")
    study.optimize(loss_and_cost, n_trials=4)
    study.enqueue_trial({"x": 0.123, "y": 0.456})
    study.enqueue_trial({"x": 0.25})                                         # y from the model
    study.optimize(loss_and_cost, n_trials=2)
    whole, part = study.trials[4:]
    assert whole.params == {"x": 0.123, "y": 0.456}
    assert whole.user_attrs[PHASE_ATTR] == "init" and whole.user_attrs[HOW_ATTR] == "given (study.enqueue_trial)"
    assert part.params["x"] == 0.25 and part.params["y"] == part.system_attrs[PARAMS_ATTR]["y"]
    assert part.user_attrs[HOW_ATTR].endswith("(params given to study.enqueue_trial win)")


def test_failed_and_pruned_trials_teach_the_models_as_the_study_does():
    def objective(trial):
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
        trial.set_user_attr("cost", math.exp(2 * x))
        if trial.number in (1, 5):
            raise RuntimeError("CUDA out of memory")
        trial.report(10.0 if trial.number in (2, 6) else 0.1, step=1)          # the pruner stops 2 and 6
        if trial.should_prune():
            raise optuna.TrialPruned()
        return (x - 0.8) ** 2 + (y - 0.3) ** 2 + 0.05

    sampler = HandsOnSampler(max_cost=MAX_COST, n_startup_trials=4, seed=0, acquisition=FAST)
    study = optuna.create_study(sampler=sampler, pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    study.optimize(objective, n_trials=8, catch=(RuntimeError,))
    states = [t.state.name for t in study.trials]
    assert states == ["COMPLETE", "FAIL", "PRUNED", "COMPLETE"] * 2
    assert all(t.user_attrs[PHASE_ATTR] in ("tick", "tock") for t in study.trials[4:])

    history = sampler.history(study)
    assert [t.state for t in history.trials] == [kd.TrialState.OK, kd.TrialState.FAILED, kd.TrialState.STOPPED,
                                                 kd.TrialState.OK] * 2
    data = history.training_data()
    assert data.models.X_loss.shape[0] == 6                                  # 4 ok + 2 failed (imputed)
    assert data.models.X_cost.shape[0] == 8                                  # pruned ones at their recorded cost
    pruned = history.trials[2]
    assert pruned.estimated_cost == pytest.approx(study.trials[2].user_attrs["cost"])
    assert study.trials[2].constraints == {COST_CONSTRAINT: pytest.approx(pruned.estimated_cost - MAX_COST)}


def test_the_cost_pruner_stops_trials_that_will_overrun_the_budget():
    def objective(trial):
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
        loss, cost, epochs = (x - 0.8) ** 2 + (y - 0.3) ** 2 + 0.05, math.exp(2 * x), 5
        for epoch in range(1, epochs + 1):
            trial.set_user_attr("cost", cost * epoch / epochs)                 # seconds so far
            trial.set_user_attr("progress", epoch / epochs)
            trial.report(10.0 if trial.number == 2 else loss, step=epoch)     # the loss, for the wrapped pruner
            if trial.should_prune():
                raise optuna.TrialPruned()
        return loss

    sampler = HandsOnSampler(max_cost=MAX_COST, n_startup_trials=6, seed=0, acquisition=FAST)
    pruner = CostPruner(MAX_COST, pruner=optuna.pruners.ThresholdPruner(upper=1.0))
    study = optuna.create_study(sampler=sampler, pruner=pruner)
    study.optimize(objective, n_trials=8)
    final = {t.number: math.exp(2 * t.params["x"]) for t in study.trials}
    pruned = [t for t in study.trials if t.state is optuna.trial.TrialState.PRUNED]
    for_cost = [t for t in pruned if ESTIMATED_COST_ATTR in t.system_attrs]
    assert {t.number for t in pruned} - {t.number for t in for_cost} == {2}   # the loss pruner's
    assert for_cost and all(final[t.number] > MAX_COST for t in for_cost)
    assert all(t.user_attrs["progress"] < 1 and "exceeds max_cost=2" in t.user_attrs[STOPPED_ATTR] for t in for_cost)
    assert all(final[t.number] > MAX_COST for t in pruned if t.number != 2)    # nothing within budget stopped
    history = {t.id: t for t in sampler.history(study).trials}
    for t in for_cost:                                                         # the estimate reaches the cost model
        assert history[t.number].estimated_cost == pytest.approx(t.system_attrs[ESTIMATED_COST_ATTR])
        assert t.constraints[COST_CONSTRAINT] == pytest.approx(t.system_attrs[ESTIMATED_COST_ATTR] - MAX_COST)

    with pytest.warns(RuntimeWarning, match=r"trial -1 reports cost=-1.0 at progress=0.5 .*ignored"):
        assert not pruner.prune(study, optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING, user_attrs={"cost": -1.0, "progress": 0.5}))


def test_define_by_run_conditionals_and_step_grids():
    def objective(trial):
        opt = trial.suggest_categorical("opt", ["adam", "sgd"])
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        width = trial.suggest_int("width", 16, 64, step=16)
        drop = trial.suggest_float("drop", 0.0, 0.5, step=0.125)
        if opt == "sgd":
            trial.suggest_float("momentum", 0.0, 0.99)                       # conditional: sampled at random
        return (math.log10(lr) + 2) ** 2 + (width - 48) ** 2 / 500 + drop + 0.3 * (opt == "sgd") + 0.1

    sampler = HandsOnSampler(n_startup_trials=4, seed=0, acquisition=FAST)
    study = optuna.create_study(sampler=sampler)
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                       # Optuna warns of off-grid values
        warnings.filterwarnings("ignore", "Optimization failed", RuntimeWarning)  # botorch's L-BFGS, not ours
        study.optimize(objective, n_trials=8)
    space = sampler.infer_relative_search_space(study, study.trials[-1])
    assert sorted(space) in (["drop", "lr", "opt", "width"], ["drop", "lr", "momentum", "opt", "width"])
    features = default_feature_chain(OptunaSpace.from_distributions(space).space).feature_names
    assert {"log_lr", "width", "drop", "opt_adam", "opt_sgd"} <= set(features)
    for t in study.trials[4:]:
        assert t.user_attrs[HOW_ATTR].startswith("acquisition")
        proposed = t.system_attrs[PARAMS_ATTR]
        assert {k: t.params[k] for k in proposed} == proposed                # relative values were taken as they are
        assert t.params["width"] in (16, 32, 48, 64) and t.params["drop"] in (0.0, 0.125, 0.25, 0.375, 0.5)
        assert ("momentum" in t.params) == (t.params["opt"] == "sgd")


def test_a_given_space_models_conditional_parameters():
    sgd = lambda c: c["opt"] == "sgd"  # noqa: E731
    space = kd.Space([kd.Choice("opt", ["adam", "sgd"]), kd.Scalar("momentum", 0.0, 0.99, condition=sgd),
                      kd.Scalar("lr", 1e-4, 1.0, log=True)])

    def objective(trial):
        opt = trial.suggest_categorical("opt", ["adam", "sgd"])
        momentum = trial.suggest_float("momentum", 0.0, 0.99) if opt == "sgd" else 0.0
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        return (math.log10(lr) + 2) ** 2 + (momentum - 0.9) ** 2 + 0.2 * (opt == "adam") + 0.1

    sampler = HandsOnSampler(loss_kernel="matern52({log_lr, momentum}) * categorical({opt_adam, opt_sgd})",
                             space=space, n_startup_trials=4, seed=0, acquisition=FAST)
    study = optuna.create_study(sampler=sampler)
    study.optimize(objective, n_trials=7)
    assert [t.user_attrs[HOW_ATTR].split(":")[0] for t in study.trials[:4]] == ["sobol"] * 4
    assert {t.params["opt"] for t in study.trials[:4]} == {"adam", "sgd"}    # balanced over the branches
    for t in study.trials:
        assert t.system_attrs[PARAMS_ATTR] == t.params                       # momentum modelled too, when active
    assert sampler.history(study).training_data().models.X_loss.shape == (7, 3)

    def mismatched(trial):
        trial.suggest_categorical("opt", ["adam", "sgd"])
        return trial.suggest_float("lr", 1e-3, 1.0, log=True)

    with pytest.raises(ValueError, match=r"trial 7 suggested 'lr' as FloatDistribution\(.*but space= declares"):
        study.optimize(mismatched, n_trials=2)


def test_a_kernel_naming_an_unknown_feature_lists_the_features():
    sampler = HandsOnSampler(loss_kernel="matern52({x, log_lrr})", seed=0)
    study = optuna.create_study(sampler=sampler)
    study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("lr", 1e-3, 1, log=True), n_trials=1)
    with pytest.raises(KernelNameError) as info:
        study.optimize(lambda t: t.suggest_float("x", 0, 1) + t.suggest_float("lr", 1e-3, 1, log=True), n_trials=1)
    message = str(info.value)
    assert "unknown feature 'log_lrr'" in message and "did you mean 'log_lr'?" in message
    assert "in HandsOnSampler's loss_kernel; the features of this study's search space: log_lr, x" in message

    space = kd.Space([kd.Scalar("x", 0, 1)])
    with pytest.raises(KernelNameError, match="unknown feature 'y'"):
        HandsOnSampler(cost_kernel="matern52({x, y})", space=space)          # with a space: at construction


def test_a_one_value_categorical_has_no_feature_and_a_kernel_naming_it_says_so():
    def objective(trial):
        trial.suggest_categorical("opt", ["adam"])
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(sampler=HandsOnSampler(loss_kernel="matern52(x) * categorical(opt)", seed=0))
    study.optimize(objective, n_trials=1)
    with pytest.raises(KernelNameError, match=r"(?s)unknown group or feature 'opt'.*parameters without a feature: "
                                              r"opt \(CategoricalDistribution\(choices=\('adam',\)\) has a single"):
        study.optimize(objective, n_trials=1)
    with pytest.raises(kd.SpaceError, match="'opt': a Choice needs at least two choices"):
        HandsOnSampler(space=kd.Space([kd.Choice("opt", ["adam"])]))


def test_a_complete_trial_without_its_cost_is_an_error_naming_it(tmp_path):
    def forgets(trial):
        return trial.suggest_float("x", 0.0, 1.0)

    study = optuna.create_study(sampler=HandsOnSampler(max_cost=MAX_COST, seed=0),
                                storage=f"sqlite:///{tmp_path / 'c.db'}")
    with pytest.raises(ValueError, match=r"trial 0 is COMPLETE but its cost \(the user attribute 'cost'\) is missing: "
                                         r"call trial.set_user_attr\('cost', cost\)"):
        study.optimize(forgets, n_trials=3)
    assert [t.state.name for t in study.trials] == ["COMPLETE"]              # stored as it finished


def test_two_objectives_loss_and_cost():
    def objective(trial):
        x, y = trial.suggest_float("x", 0.0, 1.0), trial.suggest_float("y", 0.0, 1.0)
        return (x - 0.8) ** 2 + (y - 0.3) ** 2 + 0.05, math.exp(2 * x)

    sampler = HandsOnSampler(max_cost=MAX_COST, n_startup_trials=3, seed=0, acquisition=FAST)
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=sampler)
    study.optimize(objective, n_trials=5)
    assert [t.user_attrs[PHASE_ATTR] for t in study.trials] == ["init"] * 3 + ["tock", "tick"]
    assert all(t.constraints[COST_CONSTRAINT] == pytest.approx(t.values[1] - MAX_COST) for t in study.trials)

    with pytest.raises(ValueError, match="this study has 2 objectives and no max_cost was given"):
        optuna.create_study(directions=["minimize", "minimize"], sampler=HandsOnSampler()).optimize(objective, 1)


def test_maximised_losses_and_the_log_scale():
    sampler = HandsOnSampler(n_startup_trials=3, seed=0, acquisition=FAST)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(lambda t: 1 - (t.suggest_float("x", -1, 1) - 0.5) ** 2, n_trials=4)   # an accuracy, say
    assert study.trials[-1].user_attrs[PHASE_ATTR] == "tock"
    assert sampler.history(study).scale.log is False                          # loss = -value < 0: plain scale

    strict = HandsOnSampler(n_startup_trials=2, seed=0, log_loss=True, acquisition=FAST)
    study = optuna.create_study(sampler=strict)
    with pytest.raises(ValueError, match=r"log_loss=True\): trial \d has loss -?[0-9.e-]+, whose log is not defined"):
        study.optimize(lambda t: t.suggest_float("x", -1, 1), n_trials=4)


@pytest.mark.parametrize("given", [False, True])
def test_the_sampler_pickles_and_keeps_working(given):
    space = kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Scalar("y", 0.0, 1.0)]) if given else None
    sampler = HandsOnSampler(max_cost=MAX_COST, n_startup_trials=2, seed=0, space=space, acquisition=FAST)
    study = optuna.create_study(sampler=sampler)
    study.optimize(loss_and_cost, n_trials=3)
    study.sampler = pickle.loads(pickle.dumps(sampler))                       # as Ray Tune saves its searcher
    study.optimize(loss_and_cost, n_trials=1)
    assert study.trials[-1].user_attrs[PHASE_ATTR] == "tick"


def test_bad_arguments():
    with pytest.raises(ValueError, match="max_cost must be a finite positive number"):
        HandsOnSampler(max_cost=0)
    with pytest.raises(ValueError, match="tick_ratio=0.5 needs max_cost"):
        HandsOnSampler(tick_ratio=0.5)
    with pytest.raises(TypeError, match="feature_chain must be a kerneldsl.Chain or a callable"):
        HandsOnSampler(feature_chain=["x"])
    with pytest.raises(ValueError, match="n_init must be a non-negative integer"):
        HandsOnSampler(n_startup_trials=-1)
    with pytest.raises(ValueError, match="CostPruner: max_cost must be a finite positive number"):
        CostPruner(math.inf)


def readme_ray_snippet() -> str:
    text = (REPO / "README.md").read_text()
    start = text.index("from ray import tune")
    return text[start:text.index("```", start)]


@pytest.mark.slow
def test_ray_tune_optuna_search_with_the_sampler(tmp_path):
    """The README's Ray Tune snippet, run where Ray is installed (it is not a dependency of any extra)."""
    pytest.importorskip("ray.tune.search.optuna", reason="Ray Tune is not installed (pip install 'ray[tune]')")
    script = tmp_path / "ray_snippet.py"
    script.write_text(readme_ray_snippet())
    env = {**os.environ, "HOME": str(tmp_path)}                              # Ray writes ~/ray_results
    result = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_readme_has_the_ray_snippet():
    assert "OptunaSearch(sampler=HandsOnSampler(" in readme_ray_snippet()
