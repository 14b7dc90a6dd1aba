"""kerneldsl.integrations.ax with the real Ax: the kernel reaches Ax's fitted model, names follow Ax's transforms."""

from __future__ import annotations

import json
import logging
import traceback

import pytest
import torch

pytest.importorskip("ax", reason="Ax is not installed: pip install -e '.[ax]' in a clone of kerneldsl (ax-platform)")

from ax.api.client import Client  # noqa: E402
from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig  # noqa: E402
from ax.generators.torch.botorch_modular.input_constructors.covar_modules import covar_module_argparse  # noqa: E402
from ax.storage.json_store.decoder import generation_strategy_from_json  # noqa: E402
from botorch.models import SingleTaskGP  # noqa: E402
from botorch.utils.datasets import SupervisedDataset  # noqa: E402

import kerneldsl as kd  # noqa: E402
from kerneldsl.integrations.ax import (KernelLanguageKernel, ModelFeatures, configure_kernel,  # noqa: E402
                                       fitted_kernel, kernel_config)

logging.getLogger("ax").setLevel(logging.WARNING)  # Ax logs every trial at INFO
pytestmark = pytest.mark.filterwarnings("ignore::Warning:ax")  # Ax's own deprecation and pandas warnings


def quadratic(p: dict) -> float:
    return (p["x"] - 0.3) ** 2 + (p["y"] - 0.6) ** 2 + 0.1 * p["lr"]


def three_parameter_client() -> Client:
    client = Client()
    client.configure_experiment(parameters=[
        RangeParameterConfig(name="x", parameter_type="float", bounds=(0.0, 1.0)),
        RangeParameterConfig(name="y", parameter_type="float", bounds=(0.0, 1.0)),
        RangeParameterConfig(name="lr", parameter_type="float", bounds=(1e-4, 1.0), scaling="log"),
    ])
    client.configure_optimization(objective="-loss")
    return client


def test_client_runs_ten_trials_and_the_fitted_model_uses_the_kernel():
    client = three_parameter_client()
    strategy = configure_kernel(client, "matern52({x, y}) + fj(lr)", initialization_random_seed=0)
    prior = kd.compile("matern52({x, y}) + fj(lr)", features=["x", "y", "lr"]).get_hyperparameters()
    for _ in range(10):
        for index, parameters in client.get_next_trials(max_trials=1).items():
            client.complete_trial(index, raw_data={"loss": quadratic(parameters)})

    nodes = list(client.summarize()["generation_node"])
    assert len(nodes) == 10 and nodes[-5:] == ["MBM"] * 5, nodes   # center + 4 Sobol, then 5 from the model

    model = strategy.adapter.generator.surrogate.model                # Ax's public accessors
    assert type(model) is SingleTaskGP
    kernel = model.covar_module
    assert isinstance(kernel, KernelLanguageKernel) and fitted_kernel(strategy) is kernel
    assert kernel.features == ("x", "y", "lr")                       # Ax's columns, in its order
    assert kernel.ir.features == ("x", "y", "lr")
    assert [[kernel.ir.features[f] for f in term.features] for term in kernel.ir.terms] == [["x", "y"], ["lr"]]
    assert kernel.ir.num_weights == 2 and len(kernel.ir.weight_groups()) == 1
    text = kernel.describe()
    assert "matern52(x=" in text and "matern52(lr=" in text, text
    fitted = kernel.get_hyperparameters()
    assert set(fitted) == set(prior)
    assert any(not torch.allclose(fitted[name].double(), prior[name].double()) for name in prior)  # it was fitted
    assert model.train_inputs[0].shape == (9, 3)                      # fitted on the 9 trials before the last


def test_a_kernel_naming_an_unknown_parameter_fails_before_any_trial():
    client = three_parameter_client()
    with pytest.raises(kd.KernelNameError) as caught:
        configure_kernel(client, "matern52({x, w}) + fj(lr)")
    message = str(caught.value)
    assert "'w'" in message and "line 1, column 14" in message
    assert "x, y, lr" in message                                      # the valid names, in column order
    frames = traceback.extract_tb(caught.tb)
    assert not [f.filename for f in frames if "/ax/" in f.filename]  # no Ax frame: raised before Ax is asked
    assert caught.value.__cause__ is None and caught.value.__suppress_context__
    assert len(client.summarize()) == 0
    trials = client.get_next_trials(max_trials=1)                     # Ax's default strategy took over
    assert len(trials) == 1


def test_feature_names_follow_ax_transforms_at_fit_time():
    client = Client()
    client.configure_experiment(parameters=[
        RangeParameterConfig(name="lr", parameter_type="float", bounds=(1e-4, 1.0), scaling="log"),
        RangeParameterConfig(name="layers", parameter_type="int", bounds=(1, 8)),
        ChoiceParameterConfig(name="optimizer", parameter_type="str", values=["adam", "sgd", "rmsprop"]),
        ChoiceParameterConfig(name="nesterov", parameter_type="bool", values=[True, False]),
        ChoiceParameterConfig(name="width", parameter_type="int", values=[64, 128, 256]),
        ChoiceParameterConfig(name="dataset", parameter_type="str", values=["digits"]),
    ])
    client.configure_optimization(objective="-loss")
    configs = [("adam", True, 64), ("sgd", False, 128), ("rmsprop", True, 256), ("sgd", True, 64)]
    for i, (optimizer, nesterov, width) in enumerate(configs):
        index = client.attach_trial({"lr": 10.0 ** -(i + 1), "layers": i + 1, "optimizer": optimizer,
                                     "nesterov": nesterov, "width": width, "dataset": "digits"})
        client.complete_trial(index, raw_data={"loss": float(i % 3) + 0.1 * i})
    source = "matern52({lr, layers, width}) * categorical(optimizer) + matern52(nesterov)"
    strategy = configure_kernel(client, source, initialization_budget=0)

    one_hot = ("optimizer_OH_PARAM_0", "optimizer_OH_PARAM_1", "optimizer_OH_PARAM_2")
    expected = ModelFeatures(("lr", "layers", *one_hot, "nesterov", "width"), {"optimizer": one_hot})
    assert ModelFeatures.from_search_space(strategy.experiment.search_space) == expected
    client.get_next_trials(max_trials=1)                              # fits Ax's model on the 4 trials
    kernel = fitted_kernel(strategy)
    assert kernel.features == expected.names                          # what Ax's training data is named
    categorical_term = next(t for t in kernel.ir.terms if t.kind == "categorical")
    assert [kernel.ir.features[f] for f in categorical_term.features] == list(one_hot)


def test_the_kernel_follows_the_outcomes_of_a_batched_model():
    X = torch.rand(6, 3, dtype=torch.float64)
    Y = torch.stack([X.sum(-1), X[:, 0]], dim=-1)
    dataset = SupervisedDataset(X, Y, feature_names=["a", "b", "c"], outcome_names=["f", "g"])
    config = kernel_config("matern52({a, b}) * matern52(c)")
    inputs = covar_module_argparse(KernelLanguageKernel, dataset=dataset, botorch_model_class=SingleTaskGP,
                                   **config.covar_module_options)
    assert inputs["features"] == ["a", "b", "c"] and inputs["batch_shape"] == torch.Size([2])
    kernel = KernelLanguageKernel(**inputs)
    assert kernel.batch_shape == torch.Size([2])
    model = SingleTaskGP(X, Y, covar_module=kernel)
    assert model.posterior(X[:2]).mean.shape == (2, 2)


def test_the_wrapper_evaluates_as_its_compiled_kernel():
    kernel = KernelLanguageKernel("matern52({a, b}) + fj(c)", features=["a", "b", "c"], backend="torch")
    X, Z = torch.rand(5, 3, dtype=torch.float64), torch.rand(4, 3, dtype=torch.float64)
    kernel.double()
    assert torch.allclose(kernel(X, Z).to_dense(), kernel.kernel(X, Z).to_dense())
    assert torch.allclose(kernel(X, diag=True), kernel.kernel(X, diag=True))
    assert kernel.describe() == kernel.kernel.describe()


def test_kernel_config_checks_source_backend_and_options_now():
    config = kernel_config("matern52({a, b})", groups={"g": ["a"]}, lengthscale_prior=None)
    assert config.botorch_model_class is SingleTaskGP and config.covar_module_class is KernelLanguageKernel
    assert config.covar_module_options["source"] == "matern52({a, b})"
    assert config.covar_module_options["groups"] == {"g": ["a"]}
    with pytest.raises(kd.KernelSyntaxError):
        kernel_config("matern52({a, b}")
    with pytest.raises(kd.KernelError, match="unknown backend"):
        kernel_config("matern52(a)", backend="fortran")
    with pytest.raises(kd.KernelError, match="unknown compile option 'lenghtscale_prior'"):
        kernel_config("matern52(a)", lenghtscale_prior=None)


def test_an_unknown_name_in_groups_lists_the_features():
    with pytest.raises(kd.KernelNameError) as caught:
        KernelLanguageKernel("matern52(g)", features=["lr", "opt_OH_PARAM_0", "opt_OH_PARAM_1", "opt_OH_PARAM_2"],
                             groups={"g": ["lr", "momentum"]})
    message = str(caught.value)
    assert "'momentum'" in message
    assert "lr, opt_OH_PARAM_0, opt_OH_PARAM_1, opt_OH_PARAM_2" in message
    assert "opt = {opt_OH_PARAM_0, opt_OH_PARAM_1, opt_OH_PARAM_2}" in message


def test_fitted_kernel_before_the_model_phase_says_why():
    client = three_parameter_client()
    strategy = configure_kernel(client, "matern52({x, y, lr})")
    client.get_next_trials(max_trials=1)
    with pytest.raises(ValueError, match="has fitted no BoTorch model"):
        fitted_kernel(strategy)


def test_configure_kernel_needs_an_experiment():
    with pytest.raises(ValueError, match="configure_experiment"):
        configure_kernel(Client(), "matern52(x)")


def test_a_client_with_the_kernel_saves_and_loads(tmp_path):
    client = three_parameter_client()
    configure_kernel(client, "matern52({x, y}) + fj(lr)", groups={"xy": ["x", "y"]}, initialization_budget=2)
    path = tmp_path / "snapshot.json"
    client.save_to_json_file(str(path))
    strategy = generation_strategy_from_json(json.loads(path.read_text())["generation_strategy"])
    config = strategy.nodes_by_name["MBM"].generator_specs[0].generator_kwargs["surrogate_spec"].model_configs[0]
    assert config.covar_module_class is KernelLanguageKernel
    assert config.covar_module_options == {"source": "matern52({x, y}) + fj(lr)", "backend": "auto",
                                           "groups": {"xy": ["x", "y"]}}
    loaded = Client.load_from_json_file(str(path))
    assert len(loaded.get_next_trials(max_trials=1)) == 1
