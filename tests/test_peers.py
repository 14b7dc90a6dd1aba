"""benchmarks/peers.py: a small run on the MNIST surrogate (resumable raw file, report, plot), the define-by-run
translation of a conditional space for Optuna, and the paired verdicts of the report."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

import kerneldsl as kd

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO.parent / "shared" / "data" / "mnist1_sweep.jsonl"


@pytest.fixture(scope="module")
def peers():
    spec = importlib.util.spec_from_file_location("peers_benchmark", REPO / "benchmarks" / "peers.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def _record(method: str, seed: int, losses: list[float | None], max_cost: float = 1.0) -> dict:
    trials = [{"loss": loss, "cost": 0.5, "propose_seconds": 0.1} for loss in losses]
    return {"task": "t", "method": method, "seed": seed, "n_trials": len(losses), "n_init": 1, "max_cost": max_cost,
            "info": {}, "wall_seconds": 1.0, "trials": trials}


def test_paired_verdicts(peers):
    a = {s: _record("a", s, [1.0, 0.5 - 0.01 * s]) for s in range(4)}
    b = {s: _record("b", s, [1.0, 0.8 + 0.02 * s]) for s in range(4)}
    verdict, mean, se, n = peers.paired(a, b)
    assert (verdict, n) == ("win", 4) and mean == pytest.approx(-0.3 - 0.045) and se > 0
    assert peers.paired(b, a)[0] == "loss"
    noisy = {s: _record("c", s, [1.0, 0.8 + (0.3 if s % 2 else -0.3)]) for s in range(4)}
    assert peers.paired(noisy, b)[0] == "tie"
    # a run without an in-budget trial counts as the worst loss seen
    none = {s: _record("d", s, [None, None]) for s in range(4)}
    assert peers.paired(a, none)[0] == "win"
    table = peers.markdown_table([*a.values(), *b.values()])
    assert "| a | 4 |" in table and "1 / 0 / 0" in table and "0 / 0 / 1" in table


def test_best_so_far_counts_only_in_budget_trials(peers):
    record = _record("a", 0, [0.9, 0.2, None, 0.4])
    record["trials"][1]["cost"] = 2.0  # over budget
    assert peers.best_so_far(record) == [0.9, 0.9, 0.9, 0.4]
    assert math.isnan(peers.best_so_far(_record("a", 0, [None]))[0])


def test_optuna_define_by_run_suggests_only_active_parameters(peers):
    optuna = pytest.importorskip("optuna")
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import digits_task
    finally:
        sys.path.remove(str(REPO / "examples"))
    space = digits_task.make_space()
    sgd = {"optimizer": "sgd", "nesterov": True, "momentum_damping": 0.01, "lr": 0.1, "batch_size": 64, "epochs": 8,
           "width": 64, "weight_decay": 1e-4}
    config = peers.suggest_config(optuna.trial.FixedTrial(sgd), space)
    assert config == sgd
    space.to_search([config])  # a valid config of the space
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    for _ in range(8):
        trial = study.ask()
        config = peers.suggest_config(trial, space)
        space.to_search([config])
        assert ("beta1_damping" in config) == (config["optimizer"] == "adam") == ("nesterov" not in config)
        study.tell(trial, 1.0)


def test_ax_translation_of_a_conditional_space(peers):
    pytest.importorskip("ax")
    space = kd.SyntheticTask().space()
    with pytest.raises(peers.BenchmarkError, match="linear constraints"):
        peers.ax_parameters(space)
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import digits_task
    finally:
        sys.path.remove(str(REPO / "examples"))
    configs = {c.name: c for c in peers.ax_parameters(digits_task.make_space())}
    assert configs["optimizer"].dependent_parameters == {"adam": ["beta1_damping", "beta2_damping"],
                                                         "sgd": ["nesterov", "momentum_damping"]}
    assert configs["lr"].scaling == "log" and configs["batch_size"].parameter_type == "int"


@pytest.mark.skipif(not SWEEP.exists(), reason=f"needs the MNIST sweep at {SWEEP} (see ../shared/data/README.md)")
def test_peers_on_the_surrogate_is_resumable(peers, tmp_path, monkeypatch, capsys):
    pytest.importorskip("optuna")
    monkeypatch.setenv("KERNELDSL_CACHE_DIR", str(tmp_path / "cache"))
    args = ["surrogate", "--seeds", "2", "--trials", "5", "--n-init", "4", "--out", str(tmp_path),
            "--methods", "kerneldsl-handson,optuna-tpe,optuna-random"]
    peers.main(args)
    raw = tmp_path / "peers_surrogate.jsonl"
    records = [json.loads(line) for line in raw.read_text().splitlines()]
    assert sorted((r["method"], r["seed"]) for r in records) == sorted(
        (m, s) for m in ("kerneldsl-handson", "optuna-tpe", "optuna-random") for s in (0, 1))
    assert all(len(r["trials"]) == 5 and r["max_cost"] == pytest.approx(19.018, abs=1e-3) for r in records)
    assert (tmp_path / "peers_surrogate.png").stat().st_size > 10_000
    capsys.readouterr()
    peers.main(args)  # everything is done: nothing runs again
    assert len(raw.read_text().splitlines()) == 6
    assert "seed 0: best in-budget loss" not in capsys.readouterr().out
    peers.main(["surrogate", "--report-only", "--out", str(tmp_path)])
    out = capsys.readouterr().out
    assert "| kerneldsl-handson | 2 |" in out and "| optuna-tpe | 2 |" in out and "paired wins" in out
    with pytest.raises(SystemExit, match="has 5 trials"):
        peers.main([*args[:4], "6", *args[5:]])  # other sizes do not mix into the same raw file
