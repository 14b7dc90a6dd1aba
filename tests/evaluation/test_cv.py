"""Leave-one-out cross-validation: fold structure, metrics by hand, batched = per fold, CLI, benchmark output."""

import functools
import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from botorch.models import SingleTaskGP
from gpytorch.kernels import RBFKernel, ScaleKernel

import kerneldsl as kd
from kerneldsl.cli import main as cli_main
from kerneldsl.evaluation.cv import (Z95, CrossValidationError, cross_validate, kernel_model, loo_cv, shuffled_subset,
                          subset_order)

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO.parent / "shared" / "data" / "mnist1_sweep.jsonl"

SPACE_MODULE = """
import kerneldsl as kd

space = kd.Space([
    kd.Scalar("a", 0.0, 1.0),
    kd.Scalar("b", 1e-3, 1.0, log=True),
    kd.Choice("c", ["x", "y"]),
])
feature_chain = kd.Chain(space, [kd.PassThrough("a"), kd.Log("b"), kd.OneHot("c")])
"""
SOURCE = "kernel = matern52({a, log_b}) * categorical({c_x, c_y}) + matern52({a})"


@pytest.fixture(scope="module")
def toy():
    """A small space, its feature chain, and 9 observations of a smooth function with a choice."""
    namespace: dict = {}
    exec(SPACE_MODULE, namespace)
    space, chain = namespace["space"], namespace["feature_chain"]
    g = torch.Generator().manual_seed(3)
    U = torch.rand(9, 3, generator=g, dtype=torch.float64)
    X = space.from_unit(U)
    Y = (torch.sin(5 * X[:, 0]) + 0.3 * X[:, 1] + 0.5 * X[:, 2]).unsqueeze(-1)
    return space, chain, X, Y


def _set_hyperparameters(model):
    """Deterministic non-default hyperparameters, the same for every fold of a batch."""
    batch = model.train_inputs[0].shape[:-2]
    with torch.no_grad():
        for name, p in model.named_parameters():
            tail = p.shape[len(batch):]
            if "noise" in name:
                model.likelihood.noise = torch.tensor(0.03, dtype=torch.float64)
            elif tail.numel():
                p.copy_(torch.linspace(-0.6, 0.4, tail.numel(), dtype=p.dtype).reshape(tail).expand_as(p))
    return model


def test_each_fold_trains_on_all_but_its_held_out_point(toy):
    _, _, X, Y = toy
    seen = []

    def recording(train_X, train_Y):
        seen.append((train_X.clone(), train_Y.clone()))
        return SingleTaskGP(train_X, train_Y)

    result = loo_cv(recording, X, Y, chunk_size=4, fit=False)
    assert [tx.shape for tx, _ in seen] == [(4, 8, 3), (4, 8, 3), (1, 8, 3)]
    train_X = torch.cat([tx for tx, _ in seen])
    train_Y = torch.cat([ty for _, ty in seen])
    for i in range(len(X)):
        others = [j for j in range(len(X)) if j != i]
        assert torch.equal(train_X[i], X[others]) and torch.equal(train_Y[i], Y[others])
        assert not (train_X[i] == X[i]).all(-1).any()
    assert result.held_out == tuple(range(9)) and result.n == 9
    assert torch.equal(result.observed, Y.squeeze(-1))

    seen.clear()
    subset = loo_cv(recording, X, Y, held_out=[5, 2], fit=False)
    assert subset.held_out == (5, 2) and subset.metrics().folds == 2 and subset.metrics().n == 9
    assert torch.equal(seen[0][0][0], X[[0, 1, 2, 3, 4, 6, 7, 8]])
    assert torch.equal(subset.observed, Y[[5, 2]].squeeze(-1))


def test_metrics_match_the_closed_form_leave_one_out_predictive(toy):
    """Fixed hyperparameters, no outcome transform: R&W eq. 5.12 gives every fold's predictive."""
    _, _, X, Y = toy
    X = X / X.abs().max(0).values
    lengthscale, outputscale, noise = 0.4, 0.3, 0.05

    def fixed(train_X, train_Y):
        batch = train_X.shape[:-2]
        kernel = ScaleKernel(RBFKernel(batch_shape=batch), batch_shape=batch)
        model = SingleTaskGP(train_X, train_Y, covar_module=kernel, outcome_transform=None)
        as64 = functools.partial(torch.tensor, dtype=torch.float64)  # gpytorch setters round Python floats to float32
        kernel.base_kernel.lengthscale = as64(lengthscale)
        kernel.outputscale = as64(outputscale)
        model.likelihood.noise = as64(noise)
        model.mean_module.constant.data.fill_(0.0)
        return model

    result = loo_cv(fixed, X, Y, fit=False)
    y = Y.squeeze(-1)
    K = outputscale * torch.exp(-0.5 * torch.cdist(X, X).square() / lengthscale**2) + noise * torch.eye(len(X))
    Kinv = torch.linalg.inv(K)
    variance = 1 / Kinv.diagonal()
    mean = y - (Kinv @ y) * variance
    torch.testing.assert_close(result.mean, mean, rtol=1e-6, atol=1e-9)  # gpytorch solves differently
    torch.testing.assert_close(result.variance, variance, rtol=1e-6, atol=1e-9)

    log_density = -0.5 * (math.log(2 * math.pi) + variance.log() + (y - mean) ** 2 / variance)
    m = result.metrics()
    assert m.mlpd == pytest.approx(log_density.mean().item(), rel=1e-6)
    assert m.mean_density == pytest.approx(log_density.exp().mean().item(), rel=1e-6)
    assert m.rmse == pytest.approx(((mean - y) ** 2).mean().sqrt().item(), rel=1e-6)
    assert m.mae == pytest.approx((mean - y).abs().mean().item(), rel=1e-6)
    covered = ((y - mean).abs() <= Z95 * variance.sqrt()).double().mean().item()
    assert m.coverage95 == pytest.approx(covered) and 0 < covered < 1  # the toy data exercise both sides
    folds = result.folds()
    assert [f.index for f in folds] == list(range(9))
    assert folds[4].log_density == pytest.approx(log_density[4].item(), rel=1e-6)
    assert folds[4].covered95 == bool((y[4] - mean[4]).abs() <= Z95 * variance[4].sqrt())


def test_batched_folds_equal_separate_models_per_fold(toy):
    """The compiled kernel, feature chain and per-fold Standardize, batched over folds vs one model per fold."""
    _, chain, X, Y = toy
    factory = kernel_model(SOURCE, chain)

    def with_hyperparameters(train_X, train_Y):
        return _set_hyperparameters(factory(train_X, train_Y))

    batched = loo_cv(with_hyperparameters, X, Y, fit=False)
    chunked = loo_cv(with_hyperparameters, X, Y, fit=False, chunk_size=2)
    means, variances = [], []
    for i in range(len(X)):
        keep = [j for j in range(len(X)) if j != i]
        model = with_hyperparameters(X[keep], Y[keep]).eval()
        with torch.no_grad():
            posterior = model.posterior(X[i:i + 1], observation_noise=True)
        means.append(posterior.mean.item())
        variances.append(posterior.variance.item())
    expected_mean = torch.tensor(means, dtype=torch.float64)
    expected_variance = torch.tensor(variances, dtype=torch.float64)
    for result in (batched, chunked):
        torch.testing.assert_close(result.mean, expected_mean, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(result.variance, expected_variance, rtol=1e-10, atol=1e-10)
    # Standardize is undone: predictions are on the data's scale, not around 0 with unit spread.
    assert abs(batched.mean.mean().item() - Y.mean().item()) < Y.std().item()


def test_fitting_a_kernel_and_a_botorch_class(toy):
    _, chain, X, Y = toy
    for model in (kernel_model(SOURCE, chain), SingleTaskGP):
        result = cross_validate(model, X, Y, n=8, seed=1)
        m = result.metrics()
        assert m.n == m.folds == 8 and m.fit_seconds > 0
        assert all(math.isfinite(v) for v in m.as_dict().values())
        assert set(result.held_out) <= set(range(9)) and len(set(result.held_out)) == 8


def test_subsets_are_seeded_prefixes_of_a_shuffle(toy):
    _, _, X, Y = toy
    assert torch.equal(subset_order(9, 5, 0), subset_order(9, 9, 0)[:5])
    assert not torch.equal(subset_order(9, 9, 0), subset_order(9, 9, 1))
    Xs, Ys = shuffled_subset(X, Y, 4, 2)
    order = subset_order(9, 4, 2)
    assert torch.equal(Xs, X[order]) and torch.equal(Ys, Y[order])


@pytest.mark.parametrize("call, message", [
    (lambda X, Y: loo_cv(SingleTaskGP, X, Y[:5]), "same n"),
    (lambda X, Y: loo_cv(SingleTaskGP, X, torch.full_like(Y, math.nan)), "finite"),
    (lambda X, Y: loo_cv(SingleTaskGP, X, Y, chunk_size=0), "chunk_size"),
    (lambda X, Y: loo_cv(SingleTaskGP, X, Y, held_out=[9]), "held_out"),
    (lambda X, Y: loo_cv(SingleTaskGP, X[:2], Y[:2]), "at least 3"),
    (lambda X, Y: cross_validate(SingleTaskGP, X, Y, n=10), "n=10"),
    (lambda X, Y: kernel_model("kernel = matern52({nope})", _chain_of(X)), "nope"),
])
def test_bad_input_gets_a_clear_error(toy, call, message):
    _, _, X, Y = toy
    with pytest.raises(ValueError, match=message):
        call(X, Y)


def _chain_of(_X):
    namespace: dict = {}
    exec(SPACE_MODULE, namespace)
    return namespace["feature_chain"]


@pytest.fixture
def toy_files(tmp_path, toy):
    space, _, X, Y = toy
    (tmp_path / "toy_space.py").write_text(SPACE_MODULE)
    (tmp_path / "toy.kernel").write_text(SOURCE + "\n")
    lines = []
    for i, (config, y) in enumerate(zip(space.to_configs(X), Y.squeeze(-1).tolist())):
        result = {"loss": math.exp(y)} if i != 3 else {"training_time": 1.0}  # trial 3 failed
        lines.append(json.dumps({"trial": i, "config": config, "result": result}))
    (tmp_path / "toy.jsonl").write_text("\n".join(lines) + "\n")
    return tmp_path


def test_cli_cross_validates_a_kernel_on_a_sweep_file(toy_files, capsys):
    args = ["cv", "--data", str(toy_files / "toy.jsonl"), "--kernel", str(toy_files / "toy.kernel"),
            "--space-module", str(toy_files / "toy_space.py"), "--log", "--per-fold", "--seed", "2"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "9 trials, 8 with 'loss'" in out and "target log(loss)" in out
    assert "| toy | 8 | 8 | 1 |" in out and "MLPD" in out  # the metric table: n = 8, every fold, one seed
    fold_rows = [line.split() for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    assert sorted(int(r[0]) for r in fold_rows) == [0, 1, 2, 4, 5, 6, 7, 8]  # trial ids; failed trial 3 left out


def test_cli_reports_bad_kernels_and_space_modules(toy_files, capsys):
    (toy_files / "bad.kernel").write_text("kernel = matern52({a, nope})\n")
    base = ["cv", "--data", str(toy_files / "toy.jsonl"), "--log"]
    assert cli_main(base + ["--kernel", str(toy_files / "bad.kernel"),
                            "--space-module", str(toy_files / "toy_space.py")]) == 1
    assert "nope" in capsys.readouterr().err
    (toy_files / "empty_space.py").write_text("x = 1\n")
    assert cli_main(base + ["--kernel", str(toy_files / "toy.kernel"),
                            "--space-module", str(toy_files / "empty_space.py")]) == 1
    assert "`space = kerneldsl.Space" in capsys.readouterr().err
    assert cli_main(base + ["--kernel", str(toy_files / "missing.kernel"),
                            "--space-module", str(toy_files / "toy_space.py")]) == 2


def test_cli_requires_the_space_module(toy_files, capsys):
    """No default into the repository's examples/ folder, which an installed wheel does not have."""
    with pytest.raises(SystemExit) as exit_info:
        cli_main(["cv", "--data", str(toy_files / "toy.jsonl"), "--kernel", str(toy_files / "toy.kernel")])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines()[-1] == (
        "kerneldsl cv: error: the following arguments are required: --space-module")


def test_cli_help_example_names_files_that_exist(capsys):
    with pytest.raises(SystemExit):
        cli_main(["cv", "--help"])
    help_text = capsys.readouterr().out
    example = help_text[help_text.index("Example:"):].replace("\\\n", " ").split()
    for option in ("--kernel", "--space-module"):
        assert (REPO / example[example.index(option) + 1]).is_file(), option


@pytest.mark.skipif(not SWEEP.exists(), reason=f"shared MNIST sweep not found at {SWEEP}")
def test_cli_runs_on_the_mnist_sweep(capsys, tmp_path):
    kernel = tmp_path / "k.kernel"
    kernel.write_text("kernel = matern52({log_epochs, log_max_lr}) * categorical({optimizer_adam, optimizer_sgd})\n")
    assert cli_main(["cv", "--data", str(SWEEP), "--kernel", str(kernel), "--log", "--n", "10", "--held-out", "3",
                     "--space-module", str(REPO / "examples" / "mnist_space.py")]) == 0
    assert "196 with 'loss'" in capsys.readouterr().out


@pytest.mark.skipif(not SWEEP.exists(), reason=f"shared MNIST sweep not found at {SWEEP}")
def test_benchmark_json_output_on_a_tiny_run(tmp_path):
    """Format check only: 10 trials, 3 held-out folds, one seed, the fast models (botorch_mixed: test_compare)."""
    command = [sys.executable, str(REPO / "benchmarks" / "cv_mnist.py"), "--data", str(SWEEP), "--n", "10",
               "--seeds", "1", "--held-out", "3", "--models", "optimizer_shared,botorch_default,plain_matern", "--plot", str(tmp_path / "cv.png"), "--json",
               "--raw", str(tmp_path / "raw.jsonl")]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout.strip().splitlines()[-1])
    assert len((tmp_path / "raw.jsonl").read_text().splitlines()) == 3
    assert "| botorch_default | 10 | 1 |" in done.stdout  # the table paired by seed
    keys = {"model", "n", "mlpd", "mean_density", "rmse", "mae", "coverage95", "fit_seconds"}
    assert [r["model"] for r in rows] == ["optimizer_shared", "botorch_default", "plain_matern"]
    for r in rows:
        assert set(r) == keys and r["n"] == 10
        assert all(isinstance(r[k], float) and math.isfinite(r[k]) for k in keys - {"model", "n"})
    assert (tmp_path / "cv.png").stat().st_size > 0
    assert "| optimizer_shared | 10 | 3 | 1 |" in done.stdout

    report = subprocess.run(command + ["--report-only"], capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert json.loads(report.stdout.strip().splitlines()[-1]) == rows  # rebuilt from --raw, nothing recomputed
