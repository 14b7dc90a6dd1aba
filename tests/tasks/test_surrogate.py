"""kd.SurrogateTask: deterministic answers, seeded noise, failures, the cache, and clear errors.

Most tests fit a surrogate on a small stand-in sweep written from `kd.SyntheticTask` (closed-form loss and
cost, a failure region), so they run without the MNIST sweep; one checks the real sweep when it is there.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

import pytest

import kerneldsl as kd
from kerneldsl.tasks import SurrogateError, SurrogateOptions

pytest.importorskip("sklearn")

REPO = Path(__file__).resolve().parents[2]
SWEEP = REPO.parent / "shared" / "data" / "mnist1_sweep.jsonl"
OPTIONS = SurrogateOptions(n_estimators=40)  # small ensembles: fast fits
FAIL_ABOVE = 0.6  # stand-in trials with shift above this failed (no loss)


@pytest.fixture(scope="module")
def sweep_path(tmp_path_factory) -> Path:
    """A 48-trial stand-in sweep over SyntheticTask's space: loss, training_time, and failures (shift > 0.6)."""
    task = kd.SyntheticTask()
    space = task.space()
    configs = space.to_configs(space.sample(48, seed=3))
    path = tmp_path_factory.mktemp("sweep") / "stand_in.jsonl"
    with path.open("w") as f:
        for i, config in enumerate(configs):
            result = {"training_time": task.cost(config)}
            if config["shift"] <= FAIL_ABOVE:
                result["loss"] = task.loss(config)
            f.write(json.dumps({"trial": i, "config": config, "result": result}) + "\n")
    return path


@pytest.fixture(scope="module")
def surrogate(sweep_path, tmp_path_factory) -> kd.SurrogateTask:
    return kd.SurrogateTask(sweep_path, kd.SyntheticTask().space(), options=OPTIONS,
                            cache=tmp_path_factory.mktemp("cache"))


CONFIG = {"model": "large", "effort": 0.4, "shift": 0.2, "depth": 3, "z": 0.5}


def test_answers_are_deterministic_and_follow_the_sweep(surrogate, sweep_path):
    first = surrogate(CONFIG)
    assert first == surrogate(CONFIG)
    assert set(first) == {"loss", "cost"} and first["loss"] > 0 and first["cost"] > 0
    again = kd.SurrogateTask(sweep_path, kd.SyntheticTask().space(), options=OPTIONS, cache=False)
    assert again(CONFIG) == first  # a fresh fit gives the same models
    # The stand-in's cost grows with effort; the surrogate learned that much.
    cheap, dear = dict(CONFIG, effort=0.05), dict(CONFIG, effort=0.95)
    assert surrogate(cheap)["cost"] < surrogate(dear)["cost"]
    costs = [json.loads(line)["result"]["training_time"] for line in sweep_path.read_text().splitlines()]
    assert surrogate.max_cost == pytest.approx(statistics.median(costs))


def test_failed_region_fails_with_its_cost(surrogate):
    failed = surrogate(dict(CONFIG, shift=0.95, effort=0.0))
    assert math.isnan(failed["loss"]) and failed["cost"] > 0
    outcome = surrogate.predict(dict(CONFIG, shift=0.95, effort=0.0))
    assert outcome.failed and outcome.loss is None and outcome.p_fail >= 0.5
    assert not surrogate.predict(CONFIG).failed


def test_cache_round_trip(sweep_path, tmp_path):
    space = kd.SyntheticTask().space()
    fitted = kd.SurrogateTask(sweep_path, space, options=OPTIONS, cache=tmp_path)
    entries = list(tmp_path.glob("*.pkl"))
    assert len(entries) == 1
    loaded = kd.SurrogateTask(sweep_path, space, options=OPTIONS, cache=tmp_path)
    assert loaded(CONFIG) == fitted(CONFIG)
    other = kd.SurrogateTask(sweep_path, space, options=SurrogateOptions(n_estimators=41), cache=tmp_path)
    assert len(list(tmp_path.glob("*.pkl"))) == 2  # other options, another entry
    assert other(CONFIG) != fitted(CONFIG)
    entries[0].write_bytes(b"not a pickle")  # a damaged entry is refitted, not fatal
    assert kd.SurrogateTask(sweep_path, space, options=OPTIONS, cache=tmp_path)(CONFIG) == fitted(CONFIG)


def test_noise_is_seeded_by_seed_and_config(surrogate):
    level = surrogate.noise_level()
    assert 0 < level.log_loss < 5 and 0 < level.log_cost < 5
    noisy = surrogate.with_noise(1.0, seed=7)
    assert noisy(CONFIG) == noisy(CONFIG)  # same seed, same config: same draw
    assert noisy(CONFIG) == surrogate.with_noise(1.0, seed=7)(CONFIG)
    assert noisy(CONFIG) != surrogate.with_noise(1.0, seed=8)(CONFIG)
    assert noisy(CONFIG) != surrogate(CONFIG)
    assert noisy(CONFIG) != noisy(dict(CONFIG, effort=0.41))
    assert surrogate(CONFIG) == surrogate.with_noise(0.0, seed=7)(CONFIG)  # no noise: the seed does not matter
    draws = [math.log(surrogate.with_noise(1.0, seed=s)(CONFIG)["cost"]) for s in range(40)]
    spread = statistics.stdev(draws)
    assert 0.5 * level.log_cost < spread < 1.6 * level.log_cost  # noise at the measured level
    assert surrogate.noise == 0.0 and noisy.noise == 1.0 and noisy.seed == 7


def test_held_out_error_and_optimum(surrogate):
    error = surrogate.held_out_error()
    assert error.n_all == 48 and error.n_loss < 48 and error.folds == 5
    assert error.rmse_log_cost < error.sd_log_cost  # better than predicting the mean
    assert error.spearman_log_cost > 0.5
    assert "log loss" in error.table() and "failure classifier" in error.table()
    config, outcome = surrogate.approximate_optimum(n=256)
    assert outcome.cost <= surrogate.max_cost and not outcome.failed
    assert surrogate.predict(config).loss == pytest.approx(outcome.loss)


def test_unknown_parameter_is_an_error(surrogate):
    with pytest.raises(kd.ConfigError, match="SurrogateTask config: unknown parameter 'depht'"):
        surrogate({**CONFIG, "depht": 3})


@pytest.mark.parametrize("change, message", [
    ({"effort": 1.5}, r"parameter 'effort' = 1.5 is outside its bounds \[0.0, 1.0\]"),
    ({"depth": 0}, r"parameter 'depth' = 0 is outside its bounds"),
    ({"model": "huge"}, r"parameter 'model' = 'huge'"),
])
def test_config_outside_the_space_is_an_error(surrogate, change, message):
    with pytest.raises(kd.ConfigError, match=message):
        surrogate({**CONFIG, **change})


def test_missing_and_inactive_parameters_are_errors(surrogate):
    with pytest.raises(kd.ConfigError, match="parameter 'z' is active but missing"):
        surrogate({k: v for k, v in CONFIG.items() if k != "z"})
    with pytest.raises(kd.ConfigError, match="parameter 'z' = 0.5 is given but inactive"):
        surrogate({**CONFIG, "model": "small"})


def test_bad_settings_and_sweeps(sweep_path, tmp_path):
    space = kd.SyntheticTask().space()
    with pytest.raises(ValueError, match="noise must be a finite number >= 0"):
        kd.SurrogateTask(sweep_path, space, options=OPTIONS, noise=-1, cache=False)
    with pytest.raises(SurrogateError, match="folds must be an integer >= 2"):
        SurrogateOptions(folds=1)
    no_cost = tmp_path / "no_cost.jsonl"
    no_cost.write_text(json.dumps({"trial": 0, "config": CONFIG, "result": {"loss": 0.3}}) + "\n")
    with pytest.raises(SurrogateError, match=r"trial 0 has no 'training_time'"):
        kd.SurrogateTask(no_cost, space, options=OPTIONS, cache=False)
    with pytest.raises(SurrogateError, match="cannot read the sweep"):
        kd.SurrogateTask(tmp_path / "missing.jsonl", space, options=OPTIONS)
    with pytest.raises(TypeError, match="space must be a kerneldsl.Space"):
        kd.SurrogateTask(sweep_path, "space", cache=False)


def test_missing_scikit_learn_says_how_to_install(sweep_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)  # import of it now raises ImportError
    with pytest.raises(ImportError, match=r"needs scikit-learn.*\[benchmarks\]"):
        kd.SurrogateTask(sweep_path, kd.SyntheticTask().space(), options=OPTIONS, cache=False)


@pytest.mark.skipif(not SWEEP.exists(), reason=f"needs the MNIST sweep at {SWEEP} (see ../shared/data/README.md)")
def test_mnist_surrogate(tmp_path):
    sys.path.insert(0, str(REPO / "examples"))
    try:
        import mnist_surrogate
    finally:
        sys.path.remove(str(REPO / "examples"))
    task = mnist_surrogate.make_task(SWEEP, cache=tmp_path)
    assert task.max_cost == pytest.approx(19.018, abs=1e-3)  # the sweep's median training time
    first = json.loads(SWEEP.read_text().splitlines()[0])
    assert task.predict(first["config"]).failed  # the sweep's first trial failed; the surrogate agrees
    config, outcome = task.approximate_optimum(n=512)
    assert outcome.loss < 0.2 and outcome.cost <= task.max_cost
