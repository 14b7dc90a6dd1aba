"""Comparing models: the paired table finds a known winner, sizes are checked, journals are data, the CLI runs."""

import math
import textwrap

import pytest
import torch
from botorch.models import SingleTaskGP
from gpytorch.constraints import Interval
from gpytorch.kernels import RBFKernel

import kerneldsl as kd
from kerneldsl.cli import main as cli_main
from kerneldsl.evaluation import compare as cmp
from kerneldsl.evaluation.cv import CrossValidationError
from kerneldsl.evaluation.sweep import journal_outputs, load_trials

SPACE_MODULE = textwrap.dedent("""
    import kerneldsl as kd

    space = kd.Space([kd.Scalar("a", 0.0, 1.0), kd.Scalar("b", 1e-3, 1.0, log=True), kd.Choice("c", ["x", "y"])])
    feature_chain = kd.Chain(space, [kd.PassThrough("a"), kd.Log("b"), kd.OneHot("c")])
""")


def _blind(train_X, train_Y):
    """A GP whose lengthscale cannot exceed 1e-3: it predicts about the training mean everywhere."""
    covar = RBFKernel(batch_shape=train_X.shape[:-2], lengthscale_constraint=Interval(1e-5, 1e-3))
    return SingleTaskGP(train_X, train_Y, covar_module=covar)


@pytest.fixture(scope="module")
def smooth():
    x = torch.linspace(0, 1, 14, dtype=torch.float64).unsqueeze(-1)
    return x, torch.sin(4 * x)


def test_paired_table_finds_the_known_winner(smooth):
    X, Y = smooth
    models = [cmp.Candidate("blind", _blind), cmp.Candidate("rbf", SingleTaskGP)]
    records = cmp.compare(models, X, Y, sizes=[12], seeds=range(3), held_out=4, progress=False)
    assert len(records) == 6 and {r["folds"] for r in records} == {4}
    (result,) = cmp.paired(records, ["blind", "rbf"], [12])
    assert (result.candidate, result.reference, result.seeds) == ("rbf", "blind", 3)
    for metric in ("mlpd", "rmse", "mae"):
        assert result.verdict(metric) == "win", (metric, result.advantage[metric])
    table = cmp.paired_table([result])
    assert "| rbf | 12 | 3 |" in table and " win " in table
    rows = cmp.summarise(records, ["blind", "rbf"], [12])
    assert [r["model"] for r in rows] == ["blind", "rbf"] and all(r["seeds"] == 3 for r in rows)
    assert rows[1]["rmse"] < 0.2 < rows[0]["rmse"]
    reversed_ = cmp.paired(records, ["rbf", "blind"], [12])[0]
    assert reversed_.verdict("rmse") == "loss"


def test_named_baselines_fit_a_mixed_space():
    """Each baseline builds its model on the space's points; botorch_mixed treats the choice as categorical."""
    from botorch.models import MixedSingleTaskGP

    namespace: dict = {}
    exec(SPACE_MODULE, namespace)
    space, chain = namespace["space"], namespace["feature_chain"]
    g = torch.Generator().manual_seed(0)
    lower, upper = space.bounds.to(torch.float64)
    X = space.to_search(space.to_configs(lower + (upper - lower) * torch.rand(12, space.dim, generator=g,
                                                                               dtype=torch.float64)))
    Y = (X[:, :1] - 0.5) ** 2 + X[:, 2:3]
    records = cmp.compare([cmp.Candidate(name, cmp.baseline(name, space, chain)) for name in cmp.BASELINES], X, Y,
                          sizes=[10], seeds=[0], held_out=2, progress=False)
    assert [r["model"] for r in records] == list(cmp.BASELINES)
    assert all(math.isfinite(r[m]) for r in records for m in ("mlpd", "rmse", "mae"))
    mixed = cmp.baseline("botorch_mixed", space)(X, Y)
    assert isinstance(mixed, MixedSingleTaskGP) and space.parameters[2].name == "c"
    with pytest.raises(CrossValidationError, match="unknown baseline 'botorch_fancy'"):
        cmp.baseline("botorch_fancy", space)


def test_verdicts_at_two_standard_errors():
    p = cmp.Paired("a", "b", 10, 5, {"mlpd": (0.3, 0.1), "rmse": (-0.3, 0.1), "mae": (0.1, 0.1),
                                     "mean_density": (0.2, math.nan)})
    assert [p.verdict(m) for m in ("mlpd", "rmse", "mae", "mean_density")] == ["win", "loss", "tie", "tie"]


@pytest.mark.parametrize("sizes", [[2], [15], [5, 99], []])
def test_subset_sizes_outside_the_data_are_errors(sizes):
    with pytest.raises(CrossValidationError, match="between 3 and the 14 trials"):
        cmp.check_sizes(sizes, 14)


def _journal(path, space):
    """A study's journal of 9 trials, the third failed (it keeps its cost)."""
    torch.manual_seed(0)
    with kd.Study(space, 10.0, path, n_init=9, n_trials=9, seed=1) as study:
        for i, trial in enumerate(study.ask(9)):
            if i == 2:
                study.tell(trial, {"loss": float("nan"), "cost": 2.0 + i / 10})
            else:
                study.tell(trial, {"loss": 1.0 + trial.config["a"] ** 2, "cost": 2.0 + i / 10})
    return path


@pytest.fixture
def toy_files(tmp_path):
    namespace: dict = {}
    exec(SPACE_MODULE, namespace)
    (tmp_path / "toy_space.py").write_text(SPACE_MODULE)
    (tmp_path / "toy.kernel").write_text("kernel = matern52({a, log_b}) * categorical({c_x, c_y})\n")
    _journal(tmp_path / "journal.jsonl", namespace["space"])
    return tmp_path, namespace["space"]


def test_a_journal_is_data_for_loss_and_cost(toy_files):
    path, space = toy_files
    trials, configs, outputs = journal_outputs(path / "journal.jsonl")
    assert trials == list(range(9)) and len(configs) == 9
    assert math.isnan(outputs["loss"][2]) and outputs["cost"][2] == pytest.approx(2.2)
    sweep = load_trials(path / "journal.jsonl", space)
    assert sweep.output_names == ("loss", "cost") and sweep.X.shape == (9, space.dim)
    assert sweep.target("loss")[0].shape == (8, space.dim) and sweep.target("cost")[0].shape == (9, space.dim)


def test_cli_compares_kernels_on_a_journal(toy_files, capsys):
    path, _ = toy_files
    plot = path / "cv.png"
    args = ["cv", "--data", str(path / "journal.jsonl"), "--space-module", str(path / "toy_space.py"),
            "--kernel", str(path / "toy.kernel"), "--kernel", "botorch_default", "--target", "cost", "--log",
            "--n", "6", "--seeds", "2", "--held-out", "2", "--plot", str(plot), "--threads", "1"]
    assert cli_main(args) == 0
    captured = capsys.readouterr()
    assert "9 trials, 9 with 'cost'; target log(cost)" in captured.out  # the failed trial has a cost
    assert "2 model(s) x 1 subset size(s) x 2 seed(s): 4 cells, 8 folds to fit" in captured.err
    progress = [line for line in captured.err.splitlines() if line.startswith("cv: ")]  # stderr is no terminal
    assert [line.split(" done; ")[0] for line in progress] == [
        "cv: toy n=6 seed=0 (2 folds)", "cv: botorch_default n=6 seed=0 (2 folds)",
        "cv: toy n=6 seed=1 (2 folds)", "cv: botorch_default n=6 seed=1 (2 folds)"]
    assert progress[-1].split(" done; ")[1].startswith("8/8 folds, ")
    assert "| toy | 6 | 2 | 2 |" in captured.out and "| botorch_default | 6 | 2 |" in captured.out
    assert plot.stat().st_size > 0


@pytest.mark.parametrize("n", ["1", "9", "4,0"])
def test_cli_rejects_subset_sizes_outside_the_trials(toy_files, capsys, n):
    path, _ = toy_files
    args = ["cv", "--data", str(path / "journal.jsonl"), "--space-module", str(path / "toy_space.py"),
            "--kernel", str(path / "toy.kernel"), "--n", n]
    assert cli_main(args) == 1
    assert "between 3 and the 8 trials with the target" in capsys.readouterr().err


def test_plot_is_a_figure_and_leaves_the_callers_backend_alone(tmp_path, monkeypatch):
    import matplotlib
    from matplotlib.figure import Figure

    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")
    records = [{"model": m, "n": n, "seed": s, "folds": n, **{k: 1.0 + s + (m == "b") for k in cmp.METRICS}}
               for m in ("a", "b") for n in (4, 8) for s in (0, 1)]
    rows = cmp.summarise(records, ["a", "b"], [4, 8])
    fig = cmp.plot(rows, ["a", "b"], tmp_path / "cv.png", "toy")
    assert isinstance(fig, Figure) and len(fig.axes) == len(cmp.METRICS)
    assert (tmp_path / "cv.png").stat().st_size > 10_000
    assert matplotlib.get_backend() == "svg"


def test_cli_warns_when_the_reference_backend_needs_much_memory(toy_files, capsys, monkeypatch):
    import kerneldsl.bench as bench

    path, _ = toy_files
    monkeypatch.setattr(bench, "REFERENCE_MEMORY_WARNING", 1000)  # bytes
    args = ["cv", "--data", str(path / "journal.jsonl"), "--space-module", str(path / "toy_space.py"),
            "--kernel", str(path / "toy.kernel"), "--kernel", "botorch_default", "--target", "cost", "--n", "5",
            "--held-out", "2", "--backend", "reference", "--threads", "1"]
    assert cli_main(args) == 0
    warned = [line for line in capsys.readouterr().err.splitlines() if line.startswith("MemoryWarning")]
    assert warned == ["MemoryWarning: the reference backend (gpytorch's module tree) needs about 0.0 GiB for toy's "
                      "batched fit of 2 folds at n = 4, batch 2 (2 base terms x 13 tables of batch x n x n values); "
                      "the torch and cpu backends need a fraction of it"]
