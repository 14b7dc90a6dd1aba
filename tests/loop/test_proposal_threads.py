"""The proposer's torch threads: one for small models unless told otherwise, and the caller's count comes back."""

import pytest
import torch

import kerneldsl as kd
from kerneldsl.loop.options import SMALL_MODEL_POINTS, AcquisitionOptions
from kerneldsl.loop.proposals import proposal_threads
from kerneldsl.model import LeanConstantMean


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_small_models_use_one_thread_and_the_callers_count_is_restored(two_threads):
    with proposal_threads(None, 40) as chosen:
        assert chosen == 1 and torch.get_num_threads() == 1
    assert torch.get_num_threads() == 2
    with proposal_threads(None, SMALL_MODEL_POINTS + 1) as chosen:
        assert chosen == 2
    with pytest.raises(RuntimeError):
        with proposal_threads(3, 40):
            assert torch.get_num_threads() == 3
            raise RuntimeError("a failing fit")
    assert torch.get_num_threads() == 2


def test_threads_is_a_study_option_checked_where_it_is_given(two_threads):
    space = kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Scalar("y", 0.0, 1.0)])
    study = kd.Study(space, 10.0, n_init=3, threads=2, num_restarts=2, raw_samples=16, mc_samples=16)
    for trial in study.ask(3):
        study.tell(trial, {"loss": 0.1 + trial.config["x"], "cost": 1.0 + trial.config["y"]})
    trial = study.ask()
    assert trial.phase is kd.Phase.TOCK and trial.proposal.startswith("acquisition")
    assert torch.get_num_threads() == 2
    with pytest.raises(ValueError, match="threads must be a positive integer"):
        AcquisitionOptions(threads=0)


def test_lean_mean_equals_gpytorchs_constant_mean():
    from gpytorch.means import ConstantMean

    for batch, x in [((), (5, 3)), ((2,), (2, 5, 3)), ((2,), (4, 2, 5, 3)), ((), (7, 1, 5, 3))]:
        lean, plain = LeanConstantMean(batch_shape=torch.Size(batch)), ConstantMean(batch_shape=torch.Size(batch))
        with torch.no_grad():
            plain.constant.fill_(0.25)
        lean.load_state_dict(plain.state_dict())
        X = torch.rand(*x)
        assert torch.equal(lean(X), plain(X))
    with pytest.raises(RuntimeError, match="do not broadcast"):
        LeanConstantMean(batch_shape=torch.Size([3]))(torch.rand(2, 5, 1))
