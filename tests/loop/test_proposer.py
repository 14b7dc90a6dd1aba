"""The proposer protocol: a study asks its proposer with requests and a history; proposers work without a study."""

from __future__ import annotations

import pytest
import torch

import kerneldsl as kd

TASK = kd.SyntheticTask()
FAST = dict(num_restarts=2, raw_samples=32, mc_samples=16, acq_options={"maxiter": 30}, fit_options={"maxiter": 30})


class Recording(kd.BaseProposer):
    """Sobol points (a RandomProposer's), recording what the study asked for."""

    def __init__(self, space: kd.Space):
        self.inner, self.calls = kd.RandomProposer(space, seed=1), []

    def propose(self, history, requests):
        self.calls.append((list(requests), history.training_data().X_pending))
        return self.inner.propose(history, requests)


def tell_all(study, trials) -> None:
    for trial in trials:
        study.tell(trial, TASK(trial.config))


def test_a_study_asks_its_proposer_for_the_model_based_trials():
    proposer = Recording(TASK.space())
    study = kd.Study(TASK.space(), TASK.max_cost, n_init=2, proposer=proposer)
    tell_all(study, study.ask(2))  # the initial design: the study's own
    assert proposer.calls == []
    batch = study.ask(3)
    (requests, pending), = proposer.calls
    assert requests == [kd.ProposalRequest(2, 1, kd.Phase.TOCK), kd.ProposalRequest(3, 2, kd.Phase.TICK),
                        kd.ProposalRequest(4, 3, kd.Phase.TOCK)]
    assert pending is None
    assert [(t.id, t.iteration, t.phase, t.proposal) for t in batch] == [
        (r.trial_id, r.iteration, r.phase, "random: Sobol point (RandomProposer)") for r in requests]
    study.ask()  # the three still running are pending points of the next proposal
    assert proposer.calls[-1][1].shape == (3, len(TASK.space().names))


def test_proposers_work_without_a_study():
    """A History made from trials alone (as an Optuna sampler would rebuild them) is the study's own."""
    study = kd.Study(TASK.space(), TASK.max_cost, n_init=4, seed=0, **FAST)
    tell_all(study, study.ask(4))
    study.tell(study.ask(), error="CUDA out of memory")
    running = study.ask()
    trials = [kd.Trial(t.id, dict(t.config), t.phase, state=t.state, loss=t.loss, cost=t.cost) for t in study.trials]
    history = kd.History(study.space, trials, study.max_cost)
    mine, theirs = history.training_data(), study.history().training_data()
    for name in ("X_loss", "y_loss", "X_cost", "y_cost", "X_ok", "X_within"):
        assert torch.equal(getattr(mine.models, name), getattr(theirs.models, name)), name
    assert torch.equal(mine.X_pending, theirs.X_pending) and len(mine.X_pending) == 1
    assert trials[4].imputed_loss is not None and running.state is kd.TrialState.RUNNING

    requests = [kd.ProposalRequest(6, 2, kd.Phase.TICK), kd.ProposalRequest(7, 3, kd.Phase.TOCK)]
    random = kd.RandomProposer(study.space, seed=3).propose(history, requests)
    again = kd.RandomProposer(study.space, seed=3).propose(history, requests)
    assert [p.phase for p in random] == [kd.Phase.TICK, kd.Phase.TOCK]
    assert all(torch.equal(a.x, b.x) for a, b in zip(random, again))
    seen = mine.X_seen
    assert all(not ((seen - p.x).abs().amax(-1) < 1e-9).any() for p in random)
    assert study.space.to_configs(torch.stack([p.x for p in random]))  # valid configs of the space


def test_a_proposer_of_your_own_refuses_the_default_proposers_options():
    with pytest.raises(ValueError, match=r"proposer=RandomProposer makes the proposals, so these options of the default "
                                         r"TickTockProposer would not be used: models.loss_kernel, acquisition.num_restarts"):
        kd.Study(TASK.space(), 6.0, proposer=kd.RandomProposer(TASK.space()), loss_kernel="matern52(effort)",
                 num_restarts=2)
    with pytest.raises(TypeError, match=r"proposer must be a kerneldsl.BaseProposer, got function"):
        kd.Study(TASK.space(), 6.0, proposer=lambda history, requests: [])
    study = kd.Study(TASK.space(), 6.0, proposer=kd.RandomProposer(TASK.space()), log_loss=False)  # the study's own
    assert study.log_loss is False
