"""Choice combinations (the branches of a space) and the balanced initial design built on them."""

from __future__ import annotations

import math
from collections import Counter

import torch

import kerneldsl as kd
from kerneldsl.space import balanced_sample, choice_combinations
from kerneldsl.space.sampling import MAX_BRANCHES


def optimizer_space(constraint: bool = False) -> kd.Space:
    """The digits example's shape: nesterov and momentum only for sgd, beta only for adam."""
    sgd = lambda c: c["optimizer"] == "sgd"  # noqa: E731
    return kd.Space([
        kd.Choice("optimizer", ["adam", "sgd"]),
        kd.Choice("nesterov", [True, False], condition=sgd),
        kd.Scalar("momentum", 0.1, 0.9, condition=sgd),
        kd.Scalar("beta", 0.1, 0.9, condition=lambda c: c["optimizer"] == "adam"),
        kd.Scalar("lr", 1e-4, 1.0, log=True),
        kd.Int("width", 8, 64, log=True),
    ], constraints=[kd.LinearConstraint({"log_lr": 1.0, "log_width": 1.0}, math.log(4.0))] if constraint else [])


def test_branches_fix_their_choices_and_what_they_switch_off():
    space = optimizer_space()
    branches = choice_combinations(space)
    assert [b.values for b in branches] == [{"optimizer": "adam"}, {"optimizer": "sgd", "nesterov": True},
                                            {"optimizer": "sgd", "nesterov": False}]
    adam, sgd_true, _ = branches
    assert adam.fixed == {0: 0.0, 1: 0.0, 2: 0.1}  # nesterov and momentum off, at their defaults
    assert sgd_true.fixed == {0: 1.0, 1: 0.0, 3: 0.1}  # beta off
    assert adam.free(space) == [3, 4, 5] and adam.free_ints(space) == [5]
    assert choice_combinations(space, limit=2) is None


def test_a_space_without_choices_has_one_branch_and_a_condition_on_an_int_is_undetermined():
    space = kd.Space([kd.Int("layers", 1, 4), kd.Scalar("dropout", 0.0, 0.5, condition=lambda c: c["layers"] > 1)])
    (branch,) = choice_combinations(space)
    assert branch.fixed == {} and branch.undetermined == (1,)
    X = torch.tensor([[1.0, 0.25], [3.0, 0.25]], dtype=torch.float64, requires_grad=True)
    Y = space.deactivate(X)
    assert Y.tolist() == [[1.0, 0.0], [3.0, 0.25]]  # dropout switched off (its default) where layers == 1
    Y.sum().backward()
    assert X.grad.tolist() == [[1.0, 0.0], [1.0, 1.0]]


def test_balanced_design_covers_every_branch_early_and_is_prefix_stable():
    space = optimizer_space(constraint=True)
    X = balanced_sample(space, 9, seed=0)
    configs = space.to_configs(X)
    assert bool(space.feasible(X).all())
    branches = Counter((c["optimizer"], c.get("nesterov")) for c in configs)
    assert branches == {("adam", None): 3, ("sgd", True): 3, ("sgd", False): 3}
    assert len({(c["optimizer"], c.get("nesterov")) for c in configs[:3]}) == 3, "the first 3 points cover all"
    for n in (1, 4, 7):
        assert torch.equal(balanced_sample(space, n, seed=2), balanced_sample(space, 20, seed=2)[:n])
    assert not torch.equal(balanced_sample(space, 9, seed=1), X)
    plain = kd.Space([kd.Scalar("x", 0.0, 1.0), kd.Int("k", 1, 5)])
    assert torch.equal(balanced_sample(plain, 7, seed=3), kd.sample(plain, 7, seed=3))


def test_many_branches_balance_each_choice_on_its_own():
    space = kd.Space([kd.Choice(f"c{i}", ["a", "b", "c", "d"]) for i in range(4)] + [kd.Scalar("x", 0.0, 1.0)])
    assert 4 ** 4 > MAX_BRANCHES and choice_combinations(space, limit=MAX_BRANCHES) is None
    configs = space.to_configs(balanced_sample(space, 8, seed=0))
    for i in range(4):
        assert Counter(c[f"c{i}"] for c in configs) == {"a": 2, "b": 2, "c": 2, "d": 2}
    assert len({tuple(c[f"c{i}"] for i in range(4)) for c in configs}) > 4, "choices must not move in step"
    assert torch.equal(balanced_sample(space, 5, seed=0), balanced_sample(space, 8, seed=0)[:5])


def test_sample_with_fixed_coordinates():
    space = optimizer_space()
    X = kd.sample(space, 16, seed=0, fixed={0: 1.0, 1: 1.0})
    assert {(c["optimizer"], c["nesterov"]) for c in space.to_configs(X)} == {("sgd", False)}


def test_initial_design_is_balanced_after_the_manual_configs():
    space = optimizer_space()
    manual = [{"optimizer": "adam", "beta": 0.5, "lr": 0.01, "width": 16}]
    X = kd.initial_design(space, 4, configs=manual, seed=0)
    assert torch.equal(X[0], space.to_search(manual)[0])
    assert {(c["optimizer"], c.get("nesterov")) for c in space.to_configs(X[1:])} == {
        ("adam", None), ("sgd", True), ("sgd", False)}
