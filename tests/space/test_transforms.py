"""Feature transforms and Chain: hand-computed MNIST features, bounds, gradients, botorch use."""

import importlib.util
import math
from pathlib import Path

import pytest
import torch
from botorch.acquisition import LogExpectedImprovement
from botorch.models import SingleTaskGP
from botorch.models.transforms.input import ChainedInputTransform
from botorch.optim.optimize_mixed import optimize_acqf_mixed_alternating

import kerneldsl as kd
from kerneldsl.space.transforms import Step

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "mnist_space.py"


def load_example():
    spec = importlib.util.spec_from_file_location("mnist_space_example", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


mnist = load_example()
L = math.log

SGD = {"optimizer": "sgd", "nesterov": False, "epochs": 12, "batch_size": 256,
       "conv1_weight_decay": 1e-4, "conv2_weight_decay": 3e-5, "conv3_weight_decay": 2e-3,
       "dense1_weight_decay": 1e-6, "dense2_weight_decay": 0.05,
       "1cycle_initial_lr_pct": 0.1, "1cycle_final_lr_pct": 0.001, "1cycle_pct_warmup": 0.3,
       "1cycle_max_lr": 0.5, "1cycle_momentum_max_damping_factor": 0.1,
       "1cycle_momentum_min_damping_factor_pct": 0.5,
       "conv1_channels": 16, "conv2_channels": 32, "conv3_channels": 64, "dense1_units": 128}
ADAM = {"optimizer": "adam", "epochs": 1, "batch_size": 4096,
        "conv1_weight_decay": 0.3, "conv2_weight_decay": 1e-7, "conv3_weight_decay": 1e-7,
        "dense1_weight_decay": 1e-3, "dense2_weight_decay": 1e-3,
        "1cycle_initial_lr_pct": 0.5, "1cycle_final_lr_pct": 1 / 30000, "1cycle_pct_warmup": 0.01,
        "1cycle_max_lr": 20.0, "1cycle_beta1_max_damping_factor": 0.1,
        "1cycle_beta1_min_damping_factor_pct": 0.2, "beta2_damping_factor": 1e-3,
        "conv1_channels": 3, "conv2_channels": 128, "conv3_channels": 15, "dense1_units": 256}
SGD_NESTEROV = {**SGD, "nesterov": True, "epochs": 60, "batch_size": 15}


def hand_features(c):
    """The MNIST features written out with math.log, independently of the library."""
    wd = [L(c[f"{layer}_weight_decay"]) for layer in mnist.LAYERS]
    widths = [L(c[w]) for w in mnist.WIDTHS]
    sgd, adam = c["optimizer"] == "sgd", c["optimizer"] == "adam"
    m_max = c["1cycle_momentum_max_damping_factor"] if sgd else 1e-4  # inactive: lower bounds
    m_pct = c["1cycle_momentum_min_damping_factor_pct"] if sgd else 0.1
    b1_max = c["1cycle_beta1_max_damping_factor"] if adam else 1e-4
    b1_pct = c["1cycle_beta1_min_damping_factor_pct"] if adam else 0.1
    b2 = c["beta2_damping_factor"] if adam else 1e-4
    max_lr = c["1cycle_max_lr"]
    return {
        "log_epochs": L(c["epochs"]), "log_batch_size": L(c["batch_size"]),
        "log_mean_weight_decay": sum(wd) / 5,
        **{f"rel_{layer}_weight_decay": w - sum(wd) / 5 for layer, w in zip(mnist.LAYERS, wd)},
        "optimizer_adam": float(adam), "optimizer_sgd": float(sgd),
        "nesterov_true": float(c.get("nesterov") is True), "nesterov_false": float(c.get("nesterov") is False),
        "log_max_lr": L(max_lr), "log_warmup_pct": L(c["1cycle_pct_warmup"]),
        "log_initial_lr": L(c["1cycle_initial_lr_pct"] * max_lr),
        "log_final_lr": L(c["1cycle_final_lr_pct"] * max_lr),
        "log_momentum_max_damping": L(m_max), "log_momentum_min_damping": L(m_pct * m_max),
        "log_beta1_max_damping": L(b1_max), "log_beta1_min_damping": L(b1_pct * b1_max),
        "log_beta2_damping": L(b2),
        "log_mean_width": sum(widths) / 4,
        **{f"rel_{w}": x - sum(widths) / 4 for w, x in zip(mnist.WIDTHS, widths)},
    }


def test_mnist_features_match_hand_computation():
    chain = mnist.feature_chain
    assert list(chain.feature_names) == list(hand_features(SGD))
    assert len(chain.feature_names) == 26
    X = mnist.space.to_search([SGD, ADAM, SGD_NESTEROV])
    F = chain(X)
    lo, hi = chain.feature_bounds
    raw = lo + F * (hi - lo)
    for row, cfg in zip(raw, (SGD, ADAM, SGD_NESTEROV)):
        want = hand_features(cfg)
        torch.testing.assert_close(row, torch.tensor(list(want.values()), dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert ((F >= -1e-12) & (F <= 1 + 1e-12)).all()


def test_mnist_feature_bounds_by_hand():
    chain = mnist.feature_chain
    bounds = dict(zip(chain.feature_names, chain.feature_bounds.T.tolist()))
    assert bounds["log_epochs"] == pytest.approx([0.0, L(60)])
    assert bounds["optimizer_sgd"] == [0.0, 1.0]
    spread = 0.8 * (L(0.3) - L(1e-7))  # rel_i = 0.8 x_i - 0.2 * sum(others)
    assert bounds["rel_conv1_weight_decay"] == pytest.approx([-spread, spread])
    assert bounds["log_initial_lr"] == pytest.approx([L(0.01 / 80), L(20 / 2)])
    assert bounds["log_mean_width"] == pytest.approx([(L(3) + L(7) + L(15) + L(7)) / 4, (L(64) + L(128) + L(256) + L(256)) / 4])
    F = chain(mnist.space.to_search([ADAM]))[0]
    named = dict(zip(chain.feature_names, F.tolist()))
    assert named["log_epochs"] == 0.0 and named["log_batch_size"] == pytest.approx(1.0)
    assert named["log_max_lr"] == pytest.approx(1.0) and named["log_warmup_pct"] == pytest.approx(0.0)


def test_inactive_parameters_do_not_reach_the_features():
    X = mnist.space.to_search([ADAM, SGD])
    moved = X.clone()
    for name in ("nesterov", "1cycle_momentum_max_damping_factor"):
        moved[0, mnist.space.index(name)] = mnist.space.bounds[1, mnist.space.index(name)]
    moved[1, mnist.space.index("beta2_damping_factor")] = -2.0
    moved.requires_grad_(True)
    F = mnist.feature_chain(moved)
    torch.testing.assert_close(F, mnist.feature_chain(X))
    F.sum().backward()
    assert moved.grad[0, mnist.space.index("1cycle_momentum_max_damping_factor")] == 0
    assert moved.grad[1, mnist.space.index("beta2_damping_factor")] == 0
    assert moved.grad[1, mnist.space.index("1cycle_momentum_max_damping_factor")] != 0


SMALL = kd.Space([
    kd.Choice("kind", ["a", "b", "c"]),
    kd.Scalar("x", 0.5, 4.0),
    kd.Scalar("y", -1.0, 2.0),
    kd.Scalar("rate", 1e-3, 1.0, log=True),
    kd.Int("n", 2, 64, log=True),
    kd.Scalar("z", 1.0, 3.0, condition=lambda c: c["kind"] != "a"),
])


def small_chain(normalize=True):
    return kd.Chain(SMALL, [
        kd.Log("x", "rate"),
        kd.Multiply("xy", "x", "y"),
        kd.Subtract("rate_per_n", "log_rate", "log_n"),
        kd.Mean("mean_xz", "log_x", "z"),
        kd.OneHot("kind"),
        kd.PassThrough("y", "z", out=["y", "zz"]),
    ], normalize=normalize)


def small_points(n, seed):
    g = torch.Generator().manual_seed(seed)
    lo, hi = SMALL.bounds
    X = lo + (hi - lo) * torch.rand(n, SMALL.dim, generator=g, dtype=torch.float64)
    X[:, 0] = torch.tensor([0.3, 1.2, 1.7, 0.7, 1.4])[torch.arange(n) % 5].double()  # away from kinks
    return X


def test_small_chain_values_and_bounds():
    chain = small_chain(normalize=False)
    assert chain.feature_names == ("log_x", "log_rate", "xy", "rate_per_n", "mean_xz", "kind_a", "kind_b",
                                   "kind_c", "y", "zz")
    x = SMALL.to_search([{"kind": "b", "x": 2.0, "y": -0.5, "rate": 0.01, "n": 8, "z": 1.5},
                         {"kind": "a", "x": 1.0, "y": 1.0, "rate": 0.1, "n": 2}])
    F = chain(x)
    want = [[L(2), L(0.01), -1.0, L(0.01) - L(8), (L(2) + 1.5) / 2, 0, 1, 0, -0.5, 1.5],
            [0.0, L(0.1), 1.0, L(0.1) - L(2), (0 + 1.0) / 2, 1, 0, 0, 1.0, 1.0]]
    torch.testing.assert_close(F, torch.tensor(want, dtype=torch.float64))
    bounds = dict(zip(chain.feature_names, chain.feature_bounds.T.tolist()))
    assert bounds["xy"] == [-4.0, 8.0]
    assert bounds["rate_per_n"] == pytest.approx([L(1e-3) - L(64), 0 - L(2)])
    relaxed = chain(torch.tensor([[1.25, 1.0, 0.0, -1.0, 1.0, 1.0]], dtype=torch.float64))
    assert relaxed[0, 5:8].tolist() == pytest.approx([0.0, 0.75, 0.25])  # between choices b and c


def test_chain_gradcheck_and_batches():
    chain = small_chain()
    X = small_points(5, 0).requires_grad_(True)
    assert torch.autograd.gradcheck(chain.transform, (X,))
    Xm = mnist.space.to_search([SGD, ADAM]).requires_grad_(False)
    Xm[:, 0] = torch.tensor([0.8, 0.2], dtype=torch.float64)  # relaxed choice indices: one-hot is
    Xm[0, 1] = 0.7  # piecewise linear with kinks at the integers
    Xm.requires_grad_(True)
    assert torch.autograd.gradcheck(mnist.feature_chain.transform, (Xm,))
    batched = small_points(15, 1).reshape(3, 5, SMALL.dim)
    torch.testing.assert_close(chain(batched), chain(batched.reshape(15, -1)).reshape(3, 5, -1))


def test_chain_in_botorch_model_and_acquisition_optimisation():
    chain = small_chain()
    torch.manual_seed(0)
    X = SMALL.sample(12, seed=0)
    y = (X[:, 1] - X[:, 2]).unsqueeze(-1) + 0.1 * X[:, 0:1]
    features = ChainedInputTransform(round=SMALL.rounding_transform(), features=chain)
    model = SingleTaskGP(X, y, input_transform=features)
    model.eval()
    assert model.train_inputs[0].shape == (12, len(chain.feature_names))
    post = model.posterior(SMALL.sample(6, seed=3).reshape(3, 2, SMALL.dim))
    assert post.mean.shape == (3, 2, 1)
    # index-coded choices and log-int values plug straight into botorch's mixed optimiser
    model = SingleTaskGP(X, y, input_transform=chain)
    acqf = LogExpectedImprovement(model, best_f=y.max())
    cand, value = optimize_acqf_mixed_alternating(
        acqf, bounds=SMALL.bounds, discrete_dims=SMALL.discrete_dims(), cat_dims=SMALL.cat_dims(),
        num_restarts=2, raw_samples=16)
    assert torch.isfinite(value).all()
    discrete = [SMALL.index("kind"), SMALL.index("n")]
    torch.testing.assert_close(SMALL.round(cand)[:, discrete], cand[:, discrete], rtol=0, atol=1e-9)
    assert SMALL.to_configs(cand)[0]["kind"] in ("a", "b", "c")


def test_chain_equals_and_flags():
    a, b = small_chain(), small_chain()
    assert a.equals(b) and not a.equals(small_chain(normalize=False))
    assert a.transform_on_train and a.transform_on_eval and a.transform_on_fantasize
    assert "rate_per_n" in a.describe()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_chain_runs_on_cuda():
    chain = small_chain().to("cuda")
    X = small_points(5, 0)
    torch.testing.assert_close(chain(X.cuda()).cpu(), small_chain()(X))


@pytest.mark.parametrize("transforms, message", [
    ([kd.Log("nope")], r"no feature or coordinate named 'nope'"),
    ([kd.Add("s", "rate", "x")], r"parameter 'rate' is searched in log space: its coordinate is 'log_rate'"),
    ([kd.Log("y")], r"'y' can be as low as -1.0; its log needs positive values"),
    ([kd.Add("s", "kind", "x")], r"'kind' is a Choice index; use OneHot\('kind'\)"),
    ([kd.OneHot("x")], r"'x' is not a Choice parameter; Choice parameters: \['kind'\]"),
    ([kd.Log("x"), kd.Log("x")], r"feature 'log_x' is already produced by Log"),
    ([kd.Add("x", "y", "z")], r"output 'x' would shadow the existing column 'x'"),
    (["y"], r"Chain entries must be feature transforms"),
    ([], r"at least one transform"),
])
def test_bad_chains(transforms, message):
    with pytest.raises(kd.SpaceError, match=message):
        kd.Chain(SMALL, transforms)


@pytest.mark.parametrize("make, message", [
    (lambda: kd.Multiply("c", "y", "y"), r"Multiply: inputs \['y', 'y'\] repeat a name"),
    (lambda: kd.Add("c", "y"), r"needs at least 2 inputs"),
    (lambda: kd.Log("x", "rate", out=["a"]), r"2 inputs but 1 output names"),
    (lambda: kd.RelativeToMean("abc", mean="m"), r"takes a list of inputs"),
    (lambda: kd.OneHot(), r"needs at least one Choice"),
])
def test_bad_transform_arguments(make, message):
    with pytest.raises(kd.SpaceError, match=message):
        make()


class Constant(kd.FeatureTransform):
    """A user-defined transform emitting a constant feature."""

    def bind(self, context):
        return Step(self, ("one",), ((1.0, 1.0),), lambda columns, active: [torch.ones_like(columns["y"])])


def test_custom_transforms_and_constant_features():
    chain = kd.Chain(SMALL, [Constant(), kd.PassThrough("y")], normalize=False)
    assert chain(small_points(2, 0))[:, 0].tolist() == [1.0, 1.0]
    with pytest.raises(kd.SpaceError, match=r"cannot normalise constant features \[\('one', \(1.0, 1.0\)\)\]"):
        kd.Chain(SMALL, [Constant(), kd.PassThrough("y")])


def test_origins_name_the_formula_and_the_parameters_of_every_feature():
    origins = {o.feature: o for o in mnist.feature_chain.origins()}
    assert list(origins) == list(mnist.feature_chain.feature_names)
    rel = origins["rel_conv1_weight_decay"]
    assert (rel.transform, rel.formula) == ("RelativeToMean", "log_conv1_weight_decay - log_mean_weight_decay")
    assert rel.parameters == tuple(f"{layer}_weight_decay" for layer in mnist.LAYERS)  # through the mean
    assert origins["log_initial_lr"].parameters == ("1cycle_initial_lr_pct", "1cycle_max_lr")
    assert origins["nesterov_false"].formula == "nesterov == False"
    space = kd.Space([kd.Scalar("a", 1.0, 2.0), kd.Scalar("b", 1.0, 2.0)])
    chain = kd.Chain(space, [kd.Multiply("ab", "a", "b"), kd.Mean("m", "ab", "b"), kd.Subtract("d", "m", "a")])
    assert [(o.formula, o.parameters) for o in chain.origins()] == [
        ("a * b", ("a", "b")), ("mean(ab, b)", ("a", "b")), ("m - a", ("a", "b"))]
