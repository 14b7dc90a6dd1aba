"""Sweep loading (the shared MNIST sweep when present, and malformed files) and the hands-on GP."""

import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch

import kerneldsl as kd

REPO = Path(__file__).resolve().parents[2]
SHARED_SWEEP = REPO.parent / "shared" / "data" / "mnist1_sweep.jsonl"
needs_sweep = pytest.mark.skipif(
    not SHARED_SWEEP.exists(), reason=f"shared MNIST sweep not found at {SHARED_SWEEP} (only in the project workspace)"
)


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_space_example", REPO / "examples" / "mnist_space.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mnist = load_example()


@needs_sweep
def test_load_shared_sweep():
    sweep = mnist.load(SHARED_SWEEP)
    assert len(sweep) == 256 and sweep.trials == list(range(256))
    assert sweep.X.shape == (256, 22) and sweep.Y.shape == (256, 2)
    assert sweep.output_names == ("loss", "training_time")
    loss = sweep.output("loss")
    assert int(loss.isnan().sum()) == 60 and int((~loss.isnan()).sum()) == 196
    assert not sweep.output("training_time").isnan().any()
    assert torch.equal(mnist.space.round(sweep.X), sweep.X)
    for got, want in zip(mnist.space.to_configs(sweep.X), sweep.configs):
        assert got.keys() == want.keys()
        for name, value in want.items():
            assert type(got[name]) is type(value)
            assert got[name] == (pytest.approx(value, rel=1e-12) if isinstance(value, float) else value)
    F = mnist.feature_chain(sweep.X)
    assert F.shape == (256, 26) and ((F >= 0) & (F <= 1)).all()


@needs_sweep
def test_declared_sweep_bounds_reject_real_trials():
    declared = kd.Int("conv2_channels", 8, 128, log=True)  # the sweep's own declaration
    strict = kd.Space([declared if p.name == declared.name else p for p in mnist.space])
    with pytest.raises(kd.ConfigError, match=r"line \d+ \(trial \d+\): parameter 'conv2_channels' = 7 is outside"):
        kd.load_sweep(SHARED_SWEEP, strict)


def test_hands_on_kernel_compiles_against_the_chain_features():
    assert len(mnist.HANDS_ON_KERNEL.strip().splitlines()) <= 15
    kernel = kd.compile(mnist.HANDS_ON_KERNEL, features=mnist.feature_chain.feature_names)
    X = mnist.space.sample(4, seed=0)
    K = kernel(mnist.feature_chain(X)).to_dense()
    assert K.shape == (4, 4) and torch.allclose(K, K.T)


@needs_sweep
def test_hands_on_gp_fits_the_trials_with_a_loss():
    from botorch.fit import fit_gpytorch_mll
    from botorch.models import SingleTaskGP
    from botorch.models.transforms.outcome import Standardize
    from gpytorch.mlls import ExactMarginalLogLikelihood

    sweep = mnist.load(SHARED_SWEEP)
    has_loss = ~sweep.output("loss").isnan()
    X, y = sweep.X[has_loss], sweep.output("loss")[has_loss].log().unsqueeze(-1)
    kernel = kd.compile(mnist.HANDS_ON_KERNEL, features=mnist.feature_chain.feature_names, backend="torch")
    model = SingleTaskGP(X, y, covar_module=kernel, input_transform=mnist.feature_chain,
                         outcome_transform=Standardize(m=1))
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    model.train()
    with torch.no_grad():
        before = mll(model(*model.train_inputs), model.train_targets).item()
    fit_gpytorch_mll(mll, optimizer_kwargs={"options": {"maxiter": 10}})  # bounded: a full fit takes minutes
    model.train()
    with torch.no_grad():
        after = mll(model(*model.train_inputs), model.train_targets).item()
    assert after > before + 0.2, (before, after)
    model.eval()
    with torch.no_grad():
        mean = model.posterior(X).mean.squeeze(-1)
    assert torch.corrcoef(torch.stack([mean, y.squeeze(-1)]))[0, 1] > 0.9


# ------------------------------------------------------------------ malformed sweep files
SPACE = kd.Space([kd.Choice("opt", ["adam", "sgd"]), kd.Scalar("lr", 1e-3, 1.0, log=True),
                  kd.Scalar("momentum", 0.0, 0.99, condition=lambda c: c["opt"] == "sgd")])


def write(tmp_path, lines):
    path = tmp_path / "sweep.jsonl"
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


def test_small_sweep_with_missing_outputs(tmp_path):
    path = write(tmp_path, [
        {"trial": 7, "config": {"opt": "adam", "lr": 0.01}, "result": {"time": 3.0}},
        "",
        {"trial": 8, "config": {"opt": "sgd", "lr": 0.1, "momentum": 0.9}, "result": {"loss": 0.5, "time": 4}},
        {"trial": 9, "config": {"opt": "sgd", "lr": 0.1, "momentum": 0.5}, "result": {"loss": None}},
    ])
    sweep = kd.load_sweep(path, SPACE)
    assert sweep.trials == [7, 8, 9] and sweep.output_names == ("time", "loss")
    assert torch.equal(sweep.Y.isnan(), torch.tensor([[False, True], [False, False], [True, True]]))
    assert sweep.output("loss")[1] == 0.5
    assert sweep.X[1].tolist() == pytest.approx([1.0, math.log(0.1), 0.9])
    only_loss = kd.load_sweep(path, SPACE, outputs=["loss"])
    assert only_loss.Y.shape == (3, 1)
    with pytest.raises(kd.SweepError, match=r"no output named 'accuracy'; outputs: \['time', 'loss'\]"):
        sweep.output("accuracy")
    X, Y, keep = sweep.target("loss", log=True)  # the trials with a loss, as a training target
    assert keep.tolist() == [False, True, False]
    assert torch.equal(X, sweep.X[1:2]) and Y.tolist() == [[math.log(0.5)]]
    assert sweep.target("time")[1].tolist() == [[3.0], [4.0]]
    negative = kd.load_sweep(write(tmp_path, [{"trial": 1, "config": {"opt": "adam", "lr": 0.1},
                                                "result": {"loss": -0.5}}]), SPACE)
    with pytest.raises(kd.SweepError, match="output 'loss' has values <= 0, which have no log"):
        negative.target("loss", log=True)


@pytest.mark.parametrize("line, message", [
    ("{not json", r"line 2: not valid JSON"),
    ({"trial": 1, "result": {}}, r"line 2: expected an object with a 'config' object"),
    ({"trial": 1, "config": {"opt": "adam", "lr": 0.1}, "result": [1]}, r"line 2: 'result' must be an object"),
    ({"trial": 1, "config": {"opt": "adam", "lr": 0.1}, "result": {"loss": "big"}},
     r"line 2 \(trial 1\): output 'loss' = 'big' is not a number"),
    ({"trial": 5, "config": {"opt": "adam", "lr": 2.0}}, r"line 2 \(trial 5\): parameter 'lr' = 2.0 is outside its bounds"),
    ({"trial": 5, "config": {"opt": "adam", "lr": 0.1, "momentum": 0.5}},
     r"line 2 \(trial 5\): parameter 'momentum' = 0.5 is given but inactive"),
    ({"trial": 5, "config": {"opt": "sgd", "lr": 0.1}}, r"line 2 \(trial 5\): parameter 'momentum' is active but missing"),
    ({"trial": 5, "config": {"opt": "adam", "lr": 0.1, "beta": 0.5}}, r"line 2 \(trial 5\): unknown parameter 'beta'"),
])
def test_malformed_sweeps_name_the_line_and_trial(tmp_path, line, message):
    path = write(tmp_path, [{"trial": 0, "config": {"opt": "adam", "lr": 0.01}, "result": {"loss": 1.0}}, line])
    with pytest.raises(kd.ConfigError, match=message):
        kd.load_sweep(path, SPACE)


def test_missing_sweep_file(tmp_path):
    with pytest.raises(kd.SweepError, match=r"cannot read sweep file '.*nope.jsonl'"):
        kd.load_sweep(tmp_path / "nope.jsonl", SPACE)
