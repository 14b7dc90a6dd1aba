"""Search spaces: conversions, conditions, rounding, constraints, sampling and bad input."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import kerneldsl as kd


def make_space(constraints=()):
    return kd.Space(
        [
            kd.Choice("opt", ["adam", "sgd", "rmsprop"]),
            kd.Choice("nesterov", [True, False], condition=lambda c: c["opt"] == "sgd"),
            kd.Scalar("lr", 1e-4, 1.0, log=True),
            kd.Scalar("dropout", 0.0, 0.5),
            kd.Int("layers", 1, 6),
            kd.Int("width", 8, 512, log=True),
            kd.Scalar("momentum", 0.5, 0.99, condition=lambda c: c["opt"] != "adam"),
            kd.Choice("extra", [None, 1, 2.5, "x"], condition=lambda c: c.get("nesterov") is True),
            kd.Int("depth_bonus", -3, 3, condition=lambda c: c["layers"] > 3),
        ],
        constraints,
    )


SPACE = make_space()


def expected_active(config):
    """Independent statement of SPACE's conditions."""
    return {
        "nesterov": config["opt"] == "sgd",
        "momentum": config["opt"] != "adam",
        "extra": config.get("nesterov") is True,
        "depth_bonus": config["layers"] > 3,
    }


def value_strategy(p):
    if isinstance(p, kd.Choice):
        return st.sampled_from(p.choices)
    if isinstance(p, kd.Int):
        return st.integers(int(p.lower), int(p.upper))
    return st.floats(p.lower, p.upper, allow_nan=False)


@st.composite
def configs(draw, space=SPACE):
    config = {}
    for p in space:
        if p.condition is None or p.condition(config):
            config[p.name] = draw(value_strategy(p))
    return config


def assert_same_config(got, want):
    assert got.keys() == want.keys()
    for name, value in want.items():
        param = SPACE[name]
        if isinstance(param, kd.Scalar):
            assert got[name] == pytest.approx(value, rel=1e-12, abs=1e-300)
        else:
            assert got[name] == value and type(got[name]) is type(value), name


def random_search_points(n, seed, shape=()):
    g = torch.Generator().manual_seed(seed)
    lo, hi = SPACE.bounds
    return lo + (hi - lo) * torch.rand(*shape, n, SPACE.dim, generator=g, dtype=torch.float64)


# ------------------------------------------------------------------ conversions
@settings(max_examples=150, deadline=None)
@given(st.lists(configs(), min_size=1, max_size=5))
def test_user_search_user_round_trip(cfgs):
    X = SPACE.to_search(cfgs)
    assert X.shape == (len(cfgs), SPACE.dim) and X.dtype == torch.float64
    for got, want in zip(SPACE.to_configs(X), cfgs):
        assert_same_config(got, want)
    assert torch.equal(SPACE.round(X), X)  # valid configs are already canonical


@settings(max_examples=50, deadline=None)
@given(st.integers(0, 2**31))
def test_search_user_search_round_trip(seed):
    X = SPACE.round(random_search_points(20, seed))
    back = SPACE.to_search(SPACE.to_configs(X))
    torch.testing.assert_close(back, X, rtol=0, atol=1e-12)


def test_log_coordinates_and_inactive_defaults():
    cfg = {"opt": "adam", "lr": 0.01, "dropout": 0.1, "layers": 2, "width": 64}
    x = SPACE.to_search([cfg])[0]
    assert SPACE.coordinate_names[:6] == ("opt", "nesterov", "log_lr", "dropout", "layers", "log_width")
    assert x[SPACE.index("lr")] == pytest.approx(math.log(0.01))
    assert x[SPACE.index("log_width")] == pytest.approx(math.log(64))
    assert x[SPACE.index("momentum")] == 0.5  # inactive: lower bound
    assert x[SPACE.index("nesterov")] == 0.0  # inactive: first choice
    assert x[SPACE.index("depth_bonus")] == -3.0


def test_explicit_inactive_value():
    space = kd.Space([kd.Choice("a", ["x", "y"]),
                      kd.Scalar("b", 1.0, 10.0, log=True, condition=lambda c: c["a"] == "y", inactive=2.0),
                      kd.Choice("c", [None, "u"], condition=lambda c: c["a"] == "y", inactive="u")])
    x = space.to_search([{"a": "x"}])[0]
    assert x.tolist() == [0.0, pytest.approx(math.log(2.0)), 1.0]


def test_bounds_defaults_and_discrete_dims():
    bounds = SPACE.bounds
    assert bounds.shape == (2, SPACE.dim)
    assert bounds[:, SPACE.index("opt")].tolist() == [0.0, 2.0]
    assert bounds[:, SPACE.index("log_lr")].tolist() == pytest.approx([math.log(1e-4), 0.0])
    assert SPACE.defaults.shape == (SPACE.dim,)
    discrete = SPACE.discrete_dims()
    assert discrete[SPACE.index("layers")] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert discrete[SPACE.index("width")][0] == pytest.approx(math.log(8))
    assert len(discrete[SPACE.index("width")]) == 505
    assert SPACE.cat_dims() == {0: [0.0, 1.0, 2.0], 1: [0.0, 1.0], 7: [0.0, 1.0, 2.0, 3.0]}


# ------------------------------------------------------------------ conditions and rounding
@settings(max_examples=30, deadline=None)
@given(st.integers(0, 2**31))
def test_round_is_idempotent_and_valid(seed):
    X = random_search_points(8, seed, shape=(3,))  # [3, 8, d] batch
    R = SPACE.round(X)
    assert R.shape == X.shape
    assert torch.equal(SPACE.round(R), R)
    for cfg in SPACE.to_configs(R.reshape(-1, SPACE.dim)):
        SPACE.to_search([cfg])  # every rounded point is a valid config


def test_active_mask_matches_conditions_and_learns_hidden_dependencies():
    X = SPACE.round(random_search_points(200, 3))
    cfgs = SPACE.to_configs(X)
    mask = SPACE.active_mask(X)
    for row, cfg in zip(mask.tolist(), cfgs):
        assert row == [name in cfg for name in SPACE.names]
        for name, on in expected_active(cfg).items():
            assert (name in cfg) == on
    SPACE._condition_inputs = set()  # forget what probing found: evaluation must rediscover it
    assert torch.equal(SPACE.active_mask(X), mask)
    assert SPACE._condition_inputs == {"opt", "nesterov", "layers"}


def test_rounding_of_log_ints_happens_in_user_units():
    cfg = {"opt": "adam", "lr": 0.01, "dropout": 0.1, "layers": 2, "width": 64}
    X = SPACE.to_search([cfg])
    X[0, SPACE.index("width")] = math.log(64.6)
    X[0, SPACE.index("layers")] = 2.4
    R = SPACE.round(X)
    assert math.exp(R[0, SPACE.index("width")]) == pytest.approx(65.0)
    assert R[0, SPACE.index("layers")] == 2.0


def test_rounding_transform_gradients():
    X = SPACE.round(random_search_points(5, 0)).requires_grad_(True)
    noise = torch.rand(X.shape, generator=torch.Generator().manual_seed(0), dtype=X.dtype)  # seeded: the
    # approximate rounding is only within 1e-3 of the exact one away from rounding boundaries
    Y = X + 0.2 * (noise - 0.5) * (SPACE.bounds[1] - SPACE.bounds[0]) / 10
    Y = Y.detach().requires_grad_(True)
    ste = SPACE.rounding_transform()
    out = ste(Y)
    exact = SPACE.round(Y.detach())
    discrete = [SPACE.index(n) for n in ("opt", "layers", "width")]
    torch.testing.assert_close(out[:, discrete], exact[:, discrete])
    out[:, SPACE.index("width")].sum().backward()
    grad = Y.grad[:, SPACE.index("width")]
    assert torch.all((grad - 1).abs() < 0.05)  # straight-through in log space
    approx = SPACE.rounding_transform(method="approximate", tau=1e-3)(Y.detach())
    torch.testing.assert_close(approx[:, discrete], exact[:, discrete], atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="unknown rounding method"):
        SPACE.rounding_transform(method="floor")


# ------------------------------------------------------------------ constraints and sampling
def test_sampling_is_valid_reproducible_and_balanced():
    X = SPACE.sample(300, seed=1)
    assert X.shape == (300, SPACE.dim)
    assert torch.equal(X, SPACE.sample(300, seed=1))
    assert not torch.equal(X, SPACE.sample(300, seed=2))
    assert torch.equal(SPACE.round(X), X)
    cfgs = SPACE.to_configs(X)
    for cfg in cfgs:
        for name, on in expected_active(cfg).items():
            assert (name in cfg) == on, (name, cfg)
    counts = {v: sum(c["opt"] == v for c in cfgs) for v in ("adam", "sgd", "rmsprop")}
    assert min(counts.values()) > 80, counts  # equal mass per choice (100 each for Sobol)
    assert {c["layers"] for c in cfgs} == set(range(1, 7))
    U = SPACE.sample(200, seed=5, method="uniform")
    assert torch.equal(U, SPACE.sample(200, seed=5, method="uniform"))
    assert torch.equal(SPACE.round(U), U)


def test_constraints_are_satisfied_and_exported_for_botorch():
    constraint = kd.LinearConstraint({"log_lr": 1.0, "log_width": 1.0}, math.log(0.05))  # lr * width <= 0.05
    space = make_space([constraint])
    X = space.sample(128, seed=0)
    cfgs = space.to_configs(X)
    assert all(c["lr"] * c["width"] <= 0.05 * (1 + 1e-9) for c in cfgs)
    assert space.feasible(X).all()
    (idx, coef, rhs), = space.inequality_constraints()
    assert idx.tolist() == [space.index("log_lr"), space.index("log_width")]
    assert coef.tolist() == [-1.0, -1.0] and rhs == pytest.approx(-math.log(0.05))
    assert torch.all((X[:, idx] * coef).sum(-1) >= rhs - 1e-9)  # botorch's convention
    unconstrained = SPACE.sample(512, seed=0)
    assert not space.feasible(unconstrained).all()


def test_infeasible_constraints_fail_clearly():
    space = make_space([kd.LinearConstraint({"log_lr": 1.0}, math.log(1e-4) - 1.0)])
    with pytest.raises(kd.SamplingError, match=r"feasible fraction about 0.*max_draws"):
        space.sample(10, max_draws=2000)


def test_initial_design_puts_manual_configs_first():
    manual = [{"opt": "adam", "lr": 0.01, "dropout": 0.1, "layers": 2, "width": 64}]
    X = kd.initial_design(SPACE, 6, configs=manual, seed=0)
    assert X.shape == (6, SPACE.dim)
    assert_same_config(SPACE.to_configs(X[:1])[0], manual[0])
    torch.testing.assert_close(X[1:], kd.space.balanced_sample(SPACE, 5, seed=0))  # balanced over the branches
    space = make_space([kd.LinearConstraint({"log_lr": 1.0}, math.log(1e-3))])
    with pytest.raises(kd.ConfigError, match=r"config 0: .* violates the linear constraint\(s\) \['1\*log_lr <= "):
        kd.initial_design(space, 4, configs=manual)


# ------------------------------------------------------------------ bad input
GOOD = {"opt": "sgd", "nesterov": True, "lr": 0.01, "dropout": 0.1, "layers": 5, "width": 64,
        "momentum": 0.9, "extra": None, "depth_bonus": 0}


@pytest.mark.parametrize("change, message", [
    ({"color": "red"}, r"config 1: unknown parameter 'color' \(value 'red'\)"),
    ({"lr": None}, r"parameter 'lr' = None is not a number"),
    ({"lr": 2.0}, r"parameter 'lr' = 2.0 is outside its bounds \[0.0001, 1.0\]"),
    ({"lr": float("nan")}, r"parameter 'lr' = nan is NaN"),
    ({"layers": 2.5}, r"parameter 'layers' = 2.5 is not an integer"),
    ({"layers": True}, r"parameter 'layers' = True is not a number"),
    ({"dropout": "0.1"}, r"parameter 'dropout' = '0.1' is not a number"),
    ({"opt": "lbfgs"}, r"parameter 'opt' = 'lbfgs' is not among its choices \['adam', 'sgd', 'rmsprop'\]"),
    ({"nesterov": 1}, r"parameter 'nesterov' = 1 is not among its choices"),
    ({"extra": float("nan")}, r"parameter 'extra' = nan is not among its choices"),
    ({"opt": "adam"}, r"parameter 'nesterov' = True is given but inactive"),
])
def test_bad_configs_name_parameter_and_value(change, message):
    with pytest.raises(kd.ConfigError, match=message):
        SPACE.to_search([GOOD, {**GOOD, **change}])
    assert issubclass(kd.ConfigError, ValueError)


def test_missing_active_parameter_and_clipping():
    cfg = dict(GOOD)
    del cfg["momentum"]
    with pytest.raises(kd.ConfigError, match=r"config 0: parameter 'momentum' is active but missing"):
        SPACE.to_search([cfg])
    clipped = SPACE.to_configs(SPACE.to_search([{**GOOD, "lr": 3.0, "layers": 9}], clip=True))[0]
    assert clipped["lr"] == pytest.approx(1.0) and clipped["layers"] == 6
    with pytest.raises(kd.ConfigError, match="list of configs"):
        SPACE.to_search(GOOD)


def test_bad_search_tensors():
    X = SPACE.to_search([GOOD])
    with pytest.raises(kd.ConfigError, match=r"last dimension must be 9"):
        SPACE.to_configs(X[:, :3])
    bad = X.clone()
    bad[0, SPACE.index("log_lr")] = float("nan")
    with pytest.raises(kd.ConfigError, match=r"row 0: coordinate 'log_lr' = nan is not finite"):
        SPACE.to_configs(bad)
    bad[0, SPACE.index("log_lr")] = 1.0
    with pytest.raises(kd.ConfigError, match=r"row 0: coordinate 'log_lr' = 1.0 is outside its bounds"):
        SPACE.to_configs(bad)
    assert SPACE.to_configs(bad, clip=True)[0]["lr"] == 1.0
    bad[0, SPACE.index("opt")] = float("nan")
    with pytest.raises(kd.ConfigError, match=r"NaN in coordinate 'opt'"):
        SPACE.active_mask(bad)


@pytest.mark.parametrize("params, message", [
    ([kd.Scalar("a", 0, 1), kd.Int("a", 0, 3)], r"parameter name 'a' is declared twice"),
    ([kd.Scalar("a", 1.0, 10.0, log=True), kd.Scalar("log_a", 0, 1)], r"coordinate 'log_a' of parameter 'a' clashes with parameter 'log_a'"),
    ([kd.Choice("a", ["x", "y"]), kd.Scalar("b", 0, 1, condition=lambda c: c["z"] == 1)],
     r"condition of parameter 'b' reads unknown name 'z'; parameters declared before it: \['a'\]"),
    ([kd.Scalar("b", 0, 1, condition=lambda c: c["a"] == "x"), kd.Choice("a", ["x", "y"])],
     r"condition of parameter 'b' reads 'a', which is declared after it"),
    ([kd.Scalar("b", 0, 1, condition=lambda c: c["b"] > 0)], r"reads 'b', which is the parameter itself"),
    ([kd.Choice("a", ["x", "y"]), kd.Scalar("b", 0, 1, condition=lambda c: c["a"] == "x"),
      kd.Scalar("c", 0, 1, condition=lambda c: c["b"] > 0.5)],
     r"condition of parameter 'c' reads 'b', which is inactive here .*use c.get\('b'\)"),
    ([kd.Choice("a", ["x", "y"]), kd.Scalar("b", 0, 1, condition=lambda c: c["a"] + 1)],
     r"condition of parameter 'b' failed on config .*TypeError"),
    (["a"], r"Space entry 0 is 'a', not a Scalar, Int or Choice"),
    ([], r"at least one parameter"),
])
def test_bad_space_declarations(params, message):
    with pytest.raises(kd.SpaceError, match=message):
        kd.Space(params)


@pytest.mark.parametrize("make, message", [
    (lambda: kd.Scalar("", 0, 1), r"non-empty strings"),
    (lambda: kd.Scalar("a", 1, 1), r"lower bound 1 must be below upper bound 1"),
    (lambda: kd.Scalar("a", 0, 1, log=True), r"log=True needs a positive lower bound"),
    (lambda: kd.Scalar("a", 0, float("inf")), r"upper bound must be a finite number"),
    (lambda: kd.Int("a", 0.5, 3), r"lower bound of an Int must be an integer"),
    (lambda: kd.Choice("a", ["x"]), r"at least two choices"),
    (lambda: kd.Choice("a", "xy"), r"must be a list of values"),
    (lambda: kd.Choice("a", ["x", "x"]), r"choice 'x' is listed twice"),
    (lambda: kd.Choice("a", ["x", "y"], inactive="z"), r"'z' is not among its choices"),
    (lambda: kd.Scalar("a", 0, 1, inactive=2), r"outside its bounds"),
    (lambda: kd.Scalar("a", 0, 1, condition="yes"), r"condition must be callable"),
    (lambda: kd.LinearConstraint({}, 1.0), r"non-empty dict"),
    (lambda: kd.LinearConstraint({"a": 0.0}, 1.0), r"all coefficients are zero"),
    (lambda: kd.LinearConstraint({"a": 1.0}, float("nan")), r"bound must be a finite number"),
    (lambda: make_space([kd.LinearConstraint({"lr": 1.0}, 0.0)]), r"'lr' is searched in log space; its coordinate is 'log_lr'"),
    (lambda: make_space([kd.LinearConstraint({"opt": 1.0}, 0.0)]), r"'opt' is a Choice"),
    (lambda: make_space([kd.LinearConstraint({"nope": 1.0}, 0.0)]), r"'nope' is not a search coordinate"),
])
def test_bad_declarations_of_parameters_and_constraints(make, message):
    with pytest.raises(kd.SpaceError, match=message):
        make()
