"""The ask/tell study: typed trials, q-batches with pending points, the journal of asks and tells, bad use.

The objective is `kd.SyntheticTask` (closed-form loss and cost); model settings are
small so that each proposal takes a fraction of a second.
"""

from __future__ import annotations

import itertools
import json
import math
import warnings

import pytest
import torch

import kerneldsl as kd
from kerneldsl.loop.journal import read_journal
from kerneldsl.space.sampling import balanced_sample

FAST = dict(num_restarts=2, raw_samples=32, mc_samples=16, acq_options={"maxiter": 30}, fit_options={"maxiter": 30})
TASK = kd.SyntheticTask()


def new_study(tmp_path=None, **kwargs) -> kd.Study:
    options = {"n_init": 4, "seed": 0, **FAST, **kwargs}
    journal = str(tmp_path / "study.jsonl") if tmp_path is not None else None
    return kd.Study(TASK.space(), TASK.max_cost, journal, **options)


def tell_all(study: kd.Study, trials) -> None:
    for trial in trials:
        study.tell(trial, TASK(trial.config))


# --------------------------------------------------------------------------- ask / tell


def test_ask_and_tell_record_typed_trials(tmp_path):
    study = new_study(tmp_path, n_trials=6)
    first = study.ask()
    assert isinstance(first, kd.Trial) and (first.id, first.phase, first.state) == (0, kd.Phase.INIT, kd.TrialState.RUNNING)
    assert study.running == [first]
    told = study.tell(first, {**TASK(first.config), "accuracy": torch.tensor(0.9)})
    assert told is first and first.state is kd.TrialState.OK and first.loss == TASK(first.config)["loss"]
    assert first.outputs == {"accuracy": pytest.approx(0.9)} and first.finished >= first.started
    tell_all(study, study.ask(3))
    assert [t.phase for t in study.trials] == [kd.Phase.INIT] * 4

    model_based = study.ask(2)
    assert [(t.id, t.iteration, t.phase) for t in model_based] == [(4, 1, kd.Phase.TOCK), (5, 2, kd.Phase.TICK)]
    assert all(t.prediction is not None and t.proposal.startswith("acquisition") for t in model_based)
    tell_all(study, model_based)
    assert study.finished and study.best is min((t for t in study.trials if t.feasible(TASK.max_cost)),
                                                key=lambda t: t.loss)


def test_ask_n_builds_a_q_batch_with_pending_points():
    study = new_study(tick_ratio=0.0)  # every model-based trial is a tock: the same acquisition each time
    tell_all(study, study.ask(4))
    batch = study.ask(4)
    assert [t.phase for t in batch] == [kd.Phase.TOCK] * 4
    # Each point was optimised with the earlier ones of the batch pending (botorch's X_pending).
    assert [t.prediction.get("pending", 0) for t in batch] == [0, 1, 2, 3]
    assert all(t.proposal.startswith("acquisition") for t in batch), [t.proposal for t in batch]
    X = study.space.to_search([t.config for t in batch])
    gaps = [float((a - b).abs().max()) for a, b in itertools.combinations(X, 2)]
    assert min(gaps) > 0.01, f"q-batch points crowd together: {gaps}"
    # Asked while those four run: they are pending for the next proposal too.
    (later,) = study.ask(1)
    assert later.prediction["pending"] == 4
    # Fitting happens once per ask: the batch's later points record no fit time.
    assert batch[0].timings["fit"] > 0 and [t.timings["fit"] for t in batch[1:]] == [0.0] * 3


def test_a_pending_point_moves_the_proposal_away_from_it():
    """Same model, same seeds: without pending points the tock proposes p; with p pending it proposes another point
    (botorch's convention: the value of x is that of {x} and the pending points together, lowest at x = p)."""
    study = new_study(tick_ratio=0.0)
    tell_all(study, study.ask(4))
    history = study.history()
    assert history.training_data().X_pending is None
    request = [kd.ProposalRequest(trial_id=4, iteration=1, phase=kd.Phase.TOCK)]
    (free,) = study.proposer.propose(history, request)
    running = kd.Trial(4, study.space.to_configs(free.x[None])[0], kd.Phase.TOCK)  # asked, not told: pending
    (with_pending,) = study.proposer.propose(study.history(asking=[running]), request)
    assert free.how.startswith("acquisition") and with_pending.how.startswith("acquisition")
    assert float((free.x - with_pending.x).abs().max()) > 0.01
    assert with_pending.prediction["pending"] == 1 and "pending" not in free.prediction


def test_failed_outputs_are_failed_trials_not_errors():
    study = new_study()
    trial = study.ask()
    study.tell(trial, {"loss": math.nan, "cost": 2.0})
    assert trial.state is kd.TrialState.FAILED and "loss=nan" in trial.error and trial.cost == 2.0
    other = study.ask()
    study.tell(other, error="CUDA out of memory")
    assert (other.state, other.error, other.cost) == (kd.TrialState.FAILED, "CUDA out of memory", None)


# --------------------------------------------------------------------------- bad use


@pytest.mark.parametrize(("call", "match"), [
    (lambda s, t: s.tell(t, TASK(t.config)), r"trial 0 was already told \(state ok\)"),
    (lambda s, t: s.tell(1, {"loss": 0.5, "cost": 1.0}), r"no trial 1 in this study"),
    (lambda s, t: s.tell(new_study().ask(), {"loss": 0.5, "cost": 1.0}), r"trial 0 was not asked by this study"),
    (lambda s, t: s.tell("0", {"loss": 0.5, "cost": 1.0}), r"expected a Trial or a trial id, got str"),
    (lambda s, t: s.ask(), r"n_trials=1 and 1 of them are asked \(0 left\)"),
])
def test_bad_use_is_a_clear_error_and_the_journal_stays_intact(tmp_path, call, match):
    study = new_study(tmp_path, n_trials=1)
    trial = study.ask()
    study.tell(trial, TASK(trial.config))
    before = (tmp_path / "study.jsonl").read_bytes()
    with pytest.raises(kd.StudyError, match=match):
        call(study, trial)
    assert (tmp_path / "study.jsonl").read_bytes() == before


@pytest.mark.parametrize(("outputs", "error", "match"), [
    ({"cost": 1.0}, None, r"outputs have no 'loss'"),
    ({"loss": "0.5", "cost": 1.0}, None, r"loss='0.5' is not a number \(an int or a float; e.g. tensor.item\(\)\)"),
    ({"loss": 0.5, "cost": 1.0}, "boom", r"either outputs=.* or error='reason', not both"),
    (None, None, r"not neither"),
    ([0.5, 1.0], None, r"outputs must be a mapping"),
    (None, "  ", r"error must be a non-empty string"),
])
def test_bad_tells_are_refused_and_the_trial_stays_running(tmp_path, outputs, error, match):
    study = new_study(tmp_path)
    trial = study.ask()
    before = (tmp_path / "study.jsonl").read_bytes()
    with pytest.raises(kd.StudyError, match=match):
        study.tell(trial, outputs, error=error)
    assert trial.state is kd.TrialState.RUNNING and (tmp_path / "study.jsonl").read_bytes() == before
    study.tell(trial, TASK(trial.config))  # and it can still be told properly


def test_optimize_needs_a_trial_count():
    with pytest.raises(kd.StudyError, match="pass n_trials"):
        new_study().optimize(TASK)
    with pytest.raises(ValueError, match="n must be a positive integer"):
        new_study().ask(0)


# --------------------------------------------------------------------------- journal, load, resume


def test_journal_records_asks_and_tells(tmp_path):
    study = new_study(tmp_path)
    running, done = study.ask(2)
    study.tell(done, TASK(done.config))
    kinds = [json.loads(line)["kind"] for line in (tmp_path / "study.jsonl").read_text().splitlines()]
    assert kinds == ["header", "ask", "ask", "tell"]
    _, trials = read_journal(tmp_path / "study.jsonl")
    assert trials == study.trials and trials[0].state is kd.TrialState.RUNNING


def test_load_without_space_reads_tells_and_refuses_to_ask(tmp_path):
    study = new_study(tmp_path, n_trials=6)
    tell_all(study, study.ask(4))
    running = study.ask()
    study.close()

    loaded = kd.Study.load(tmp_path / "study.jsonl")
    assert loaded.trials == study.trials and loaded.best == study.best and loaded.max_cost == TASK.max_cost
    assert "5 trials" in loaded.result().summary()
    frame = loaded.trials_dataframe()
    assert list(frame["number"]) == [0, 1, 2, 3, 4] and list(frame["state"]) == ["ok"] * 4 + ["running"]
    assert {"params_model", "params_effort", "loss", "cost", "feasible", "phase"} <= set(frame.columns)
    loaded.result().plot(str(tmp_path / "loaded.png"))
    assert (tmp_path / "loaded.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(kd.StudyError, match="loaded without its space.*Study.load\\(path, space=space\\)"):
        loaded.ask()
    loaded.tell(running.id, TASK(running.config))  # a worker's result can still be told
    loaded.close()

    resumed = kd.Study.load(tmp_path / "study.jsonl", space=TASK.space(), **FAST)
    assert [t.state for t in resumed.trials] == [kd.TrialState.OK] * 5 and resumed.n_trials == 6
    last = resumed.ask()
    assert (last.id, last.phase) == (5, kd.Phase.TICK) and resumed.finished


def test_a_resumed_study_keeps_running_trials_for_tell_and_optimize_reruns_them(tmp_path):
    study = new_study(tmp_path)
    a, b = study.ask(2)
    study.tell(a, TASK(a.config))
    study.close()

    reopened = new_study(tmp_path)
    assert [t.state for t in reopened.trials] == [kd.TrialState.OK, kd.TrialState.RUNNING]
    calls = []

    def objective(config):
        calls.append(config)
        return TASK(config)

    result = reopened.optimize(objective, n_trials=3, progress=False)
    lost, retry = result.trials[1], result.trials[2]
    assert (lost.state, lost.error) == (kd.TrialState.LOST, "lost: the study stopped while it ran")
    assert (retry.retry_of, retry.config, retry.state) == (1, b.config, kd.TrialState.OK)
    assert calls[0] == b.config and len(calls) == 3
    assert reopened.n_counted == 4 and len(reopened.trials) == 5
    assert read_journal(tmp_path / "study.jsonl")[1] == reopened.trials


def test_a_journal_of_format_1_loads_and_is_converted(tmp_path):
    path = tmp_path / "old.jsonl"
    space = TASK.space()
    configs = space.to_configs(kd.sample(space, 3, seed=0))
    header = {"kind": "header", "version": 1, "parameters": list(space.names), "max_cost": TASK.max_cost,
              "seed": 0, "n_init": 4, "initial_configs": []}
    lines = [header] + [{"kind": "trial", "trial": i, "iteration": 0, "phase": "init", "config": c, "status": "ok",
                         **TASK(c), "error": None, "outputs": {}, "timings": {"objective": 0.1}, "proposal": "sobol",
                         "prediction": None, "started": 1.0} for i, c in enumerate(configs)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))

    _, trials = read_journal(path)
    assert [(t.id, t.state, t.loss) for t in trials] == [(i, kd.TrialState.OK, TASK(c)["loss"])
                                                         for i, c in enumerate(configs)]
    study = kd.Study(space, TASK.max_cost, str(path), n_init=4, seed=0, **FAST)
    assert study.trials == trials
    assert json.loads(path.read_text().splitlines()[0])["version"] == 2
    nxt = study.ask()
    # The initial design goes on where the journal left it (the balanced design's 4th point).
    assert nxt.id == 3 and nxt.config == space.to_configs(balanced_sample(space, 4, seed=0))[3]


@pytest.mark.parametrize(("line", "match"), [
    ('{"kind":"tell","trial":0,"state":"ok","loss":"abc","cost":1.0}', r"study.jsonl:4: trial 0: loss is 'abc' \(str\), expected a finite number or null"),
    ('{"kind":"tell","trial":7,"state":"ok","loss":0.5,"cost":1.0}', r"study.jsonl:4: tell for trial 7, which was never asked"),
    ('{"kind":"tell","trial":0,"state":"done","loss":0.5,"cost":1.0}', r"study.jsonl:4: trial 0: unknown trial state 'done'"),
    ('{"kind":"ask","trial":5,"phase":"init","config":{}}', r"study.jsonl:4: expected trial 2, got trial 5"),
])
def test_damaged_journals_name_the_file_and_line(tmp_path, line, match):
    study = new_study(tmp_path)
    study.ask(2)
    study.close()
    with open(tmp_path / "study.jsonl", "a") as f:
        f.write(line + "\n")
    with pytest.raises(kd.JournalError, match=match):
        read_journal(tmp_path / "study.jsonl")
    with pytest.raises(kd.JournalError, match=match):
        new_study(tmp_path)


def test_proposals_do_not_make_gpytorch_add_jitter():
    """Starting the acquisition optimisation at an observed point made the joint posterior of (observed points,
    candidate) singular, and gpytorch warned 'A not p.d., added jitter' at about every proposal."""
    from linear_operator.utils.warnings import NumericalWarning

    study = new_study(n_init=6)
    tell_all(study, study.ask(6))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(4):
            tell_all(study, [study.ask()])
    assert not [w for w in caught if issubclass(w.category, NumericalWarning)], [str(w.message) for w in caught]
