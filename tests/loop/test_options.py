"""A study's options: keywords routed to the three dataclasses, the journal header written from them, bad options."""

from __future__ import annotations

import json

import pytest

import kerneldsl as kd
from kerneldsl.loop.options import SETTINGS, settings_of

TASK = kd.SyntheticTask()


def header_of(path) -> dict:
    with open(path) as handle:
        return json.loads(handle.readline())


def test_keywords_and_dataclasses_make_the_same_study(tmp_path):
    by_keywords = kd.Study(TASK.space(), 6.0, tmp_path / "a.jsonl", n_init=3, seed=2, tick_ratio=0.25,
                           log_loss=False, num_restarts=2, mc_samples=16, min_tick_gain=0.0)
    by_dataclasses = kd.Study(TASK.space(), 6.0, tmp_path / "b.jsonl",
                              schedule=kd.Schedule(n_init=3, seed=2, tick_ratio=0.25),
                              models=kd.ModelOptions(log_loss=False),
                              acquisition=kd.AcquisitionOptions(num_restarts=2, mc_samples=16, min_tick_gain=0.0))
    for study in (by_keywords, by_dataclasses):
        assert study.schedule == kd.Schedule(n_init=3, seed=2, tick_ratio=0.25)
        assert study.proposer.options == kd.AcquisitionOptions(num_restarts=2, mc_samples=16, min_tick_gain=0.0)
        assert study.log_loss is False and study.proposer.scale.log is False
        study.close()
    assert header_of(tmp_path / "a.jsonl") == header_of(tmp_path / "b.jsonl")


def test_a_keyword_overrides_the_field_of_a_dataclass_passed_whole():
    study = kd.Study(TASK.space(), 6.0, schedule=kd.Schedule(n_init=3, seed=5), n_init=4)
    assert (study.schedule.n_init, study.schedule.seed) == (4, 5)


def test_the_header_holds_the_settings_and_loads_back(tmp_path):
    path = tmp_path / "s.jsonl"
    configs = [{"model": "small", "effort": 0.5, "shift": 0.1, "depth": 2}]
    with kd.Study(TASK.space(), 6.0, path, n_init=2, n_trials=5, seed=3, initial_configs=configs, tick_ratio=0.5,
                  loss_kernel="matern52(effort)") as study:
        study.ask()
    header = header_of(path)
    assert list(header) == ["kind", "version", "parameters", *SETTINGS]
    assert settings_of(header) == {"n_trials": 5, "max_cost": 6.0, "seed": 3, "n_init": 2, "initial_configs": configs,
                                   "loss_kernel": "matern52(effort)", "tick_ratio": 0.5, "log_loss": True}
    loaded = kd.Study.load(path)
    assert isinstance(loaded, kd.ReadOnlyStudy) and not isinstance(loaded, kd.Study)
    assert loaded.schedule == study.schedule and loaded.kernels == study.kernels
    with kd.Study.load(path, space=TASK.space()) as resumed:
        assert resumed.schedule == study.schedule and len(resumed.trials) == 1


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: kd.Study(TASK.space(), 6.0, num_restart=2), TypeError,
     r"Study: unknown option 'num_restart' \(did you mean 'num_restarts'\?\); the options are Schedule: n_init, "
     r"n_trials, seed, initial_configs, tick_ratio; ModelOptions: loss_kernel, .*; AcquisitionOptions: num_restarts"),
    (lambda: kd.tick_tock(TASK, TASK.space(), 6.0, n_iter=1, kernel="matern52(all)", progress=False), TypeError,
     r"tick_tock: unknown option 'kernel'"),
    (lambda: kd.tick_tock(TASK, TASK.space(), 6.0, n_iter=1, n_trials=3, progress=False), TypeError,
     r"tick_tock: n_trials is len\(initial_configs\) \+ n_init \+ n_iter"),
    (lambda: kd.Study(TASK.space(), 6.0, schedule={"n_init": 2}), TypeError,
     r"Study: schedule must be a kerneldsl.Schedule, got dict"),
    (lambda: kd.Schedule(initial_configs={"effort": 0.5}), TypeError, r"initial_configs must be a list of config dicts"),
    (lambda: kd.Schedule(tick_ratio=-0.1), ValueError, r"Schedule: tick_ratio must lie in \[0, 1\], got -0.1"),
    (lambda: kd.AcquisitionOptions(raw_samples=0), ValueError, r"raw_samples must be a positive integer, got 0"),
    (lambda: kd.ModelOptions(loss_kernel=3), TypeError, r"loss_kernel must be kernel-language source"),
])
def test_bad_options_are_clear_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
