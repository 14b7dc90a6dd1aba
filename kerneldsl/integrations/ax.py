"""A kernel-language kernel as the GP kernel of Ax's Bayesian optimisation.

Ax (``ax-platform``, ``pip install -e '.[ax]' in a clone of kerneldsl``) builds its models through
``ModelConfig(botorch_model_class=..., covar_module_class=..., covar_module_options=...)``:
at every fit it calls Ax's ``covar_module_argparse`` dispatcher for the kernel class with the
training data, then ``covar_module_class(**options)``, and passes the result to botorch's
``SingleTaskGP(covar_module=...)``. This module registers ``KernelLanguageKernel`` with that
dispatcher, so the kernel is compiled at fit time over the columns Ax's model actually sees:
the feature names of Ax's training data, i.e. the experiment's parameter names after Ax's
transforms.

How Ax's transforms name the columns (they are then scaled to [0, 1] by botorch's
``Normalize`` input transform, which the kernel's default priors expect):

- a range parameter keeps its name (``scaling="log"``: the column is log10 of the value);
- a choice parameter that Ax treats as ordered (numbers, bools, two values, or
  ``is_ordered=True``) is one column under its own name;
- an unordered choice with three or more values becomes one-hot columns
  ``NAME_OH_PARAM_0``, ``NAME_OH_PARAM_1``, ... (one per value, in the order given), and
  this module adds a group ``NAME`` over them, so ``categorical(NAME)`` works;
- a choice with a single value (a fixed parameter) has no column.

``configure_kernel(client, "matern52({lr, wd}) + categorical(optimizer)")`` gives an
``ax.Client`` Ax's usual strategy (center point, Sobol, then Bayesian optimisation) with that
kernel, after checking the kernel against the experiment's search space. Importing this module
also registers the kernel class with Ax's storage, so ``client.save_to_json_file`` works, and
``Client.load_from_json_file`` too once this module is imported.
"""

from __future__ import annotations

import re
import reprlib
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from botorch.models import ModelListGP, SingleTaskGP
from gpytorch.kernels import Kernel

try:
    from ax.adapter.registry import MBM_X_trans_base
    from ax.adapter.transforms.one_hot import OH_PARAM_INFIX
    from ax.api.client import Client
    from ax.api.utils.generation_strategy_dispatch import choose_generation_strategy
    from ax.api.utils.structs import GenerationStrategyDispatchStruct
    from ax.core.search_space import SearchSpace
    from ax.generation_strategy.generation_strategy import GenerationStrategy
    from ax.generators.torch.botorch_modular.generator import BoTorchGenerator
    from ax.generators.torch.botorch_modular.input_constructors.covar_modules import covar_module_argparse
    from ax.generators.torch.botorch_modular.utils import ModelConfig
    from ax.storage.botorch_modular_registry import register_kernel
except ImportError as err:  # pragma: no cover - exercised only without the extra
    raise ImportError("kerneldsl.integrations.ax needs Ax: pip install -e '.[ax]' in a clone of kerneldsl "
                      f"(ax-platform), which is not importable here: {err}") from err

from ..api import build
from ..compiler.ast import Definition
from ..compiler.backends import get_backend
from ..compiler.errors import KernelError, KernelNameError
from ..compiler.ir import KernelIR
from ..compiler.lower import compile_ir
from ..compiler.options import KernelOptions
from ..compiler.parse import parse

__all__ = ["KernelLanguageKernel", "ModelFeatures", "check_kernel", "configure_kernel", "fitted_kernel",
           "kernel_config"]

MODEL_CONFIG_NAME = "kerneldsl"
"""The ``ModelConfig.name`` of ``kernel_config`` (Ax shows it in the strategy's name)."""

_ONE_HOT = re.compile(rf"^(?P<parameter>.+){re.escape(OH_PARAM_INFIX)}(?P<index>\d+)$")


@dataclass(frozen=True)
class ModelFeatures:
    """The input columns of Ax's model, in order, by the names a kernel source uses.

    ``names``: one per column (Ax's parameter names after its transforms);
    ``one_hot``: each one-hot-encoded choice parameter and its columns, in value order.
    """

    names: tuple[str, ...]
    one_hot: Mapping[str, tuple[str, ...]] = field(default_factory=dict)

    @classmethod
    def from_names(cls, names: Sequence[str]) -> ModelFeatures:
        """The features of columns named ``names`` (e.g. ``SupervisedDataset.feature_names``)."""
        names = tuple(names)
        indexed: dict[str, list[tuple[int, str]]] = {}
        for name in names:
            match = _ONE_HOT.match(name)
            if match and match["parameter"] not in names:
                indexed.setdefault(match["parameter"], []).append((int(match["index"]), name))
        return cls(names, {p: tuple(n for _, n in sorted(cols)) for p, cols in indexed.items()})

    @classmethod
    def from_search_space(cls, search_space: SearchSpace) -> ModelFeatures:
        """The features Ax's BoTorch model sees for ``search_space``: its parameters after the
        search-space transforms of Ax's BoTorch generator (fixed parameters removed, choices
        encoded as numbers or one-hot, log and logit scales), in column order."""
        space = search_space.clone()
        for transform in MBM_X_trans_base:
            space = transform(search_space=space).transform_search_space(space)
        return cls.from_names(list(space.parameters))

    def groups(self, groups: Mapping[str, Sequence[str]] | None = None,
               defined: Collection[str] = ()) -> dict[str, list[str]]:
        """A group per one-hot-encoded choice parameter, and ``groups``.

        ``groups`` win on equal names, and so do the names a source ``defined`` itself.
        """
        merged = {parameter: list(columns) for parameter, columns in self.one_hot.items() if parameter not in defined}
        merged.update({name: list(members) for name, members in (groups or {}).items()})
        return merged

    def describe(self) -> str:
        """The column names, then the one-hot groups: for error messages."""
        text = ", ".join(self.names)
        if self.one_hot:
            text += "; one-hot choice groups: " + ", ".join(
                f"{p} = {{{', '.join(cols)}}}" for p, cols in self.one_hot.items())
        return text


def _lower(source: str, features: ModelFeatures, groups: Mapping[str, Sequence[str]] | None) -> KernelIR:
    """``compile_ir`` over Ax's columns; an unknown name's error lists the columns there are."""
    if not isinstance(source, str):
        raise KernelError(f"the kernel must be kernel-language source (a str), got {type(source).__name__}")
    defined = {stmt.name for stmt in parse(source).statements if isinstance(stmt, Definition)}
    try:
        return compile_ir(source, features.names, features.groups(groups, defined))
    except KernelNameError as err:
        listing = f"the features of Ax's model here (parameters after Ax's transforms): {features.describe()}"
        hint = f"{err.hint}\n{listing}" if err.hint else listing
        raise KernelNameError(err.message, source=source, line=err.line, column=err.column, hint=hint) from None


class KernelLanguageKernel(Kernel):
    """A kernel-language kernel as a gpytorch ``Kernel`` class that Ax constructs at each fit.

    Ax passes ``features`` (the column names of its training data) and ``batch_shape`` (the
    number of outcomes of a batched multi-output model) through the ``covar_module_argparse``
    input constructor registered below; ``source``, ``groups``, ``backend`` and the
    ``KernelOptions`` fields (priors, constraints, tiling) come from ``covar_module_options``.
    Each one-hot-encoded choice parameter is also a group of its columns (see the module doc).

    The compiled kernel is ``.kernel``; ``describe()``, ``get_hyperparameters()``,
    ``set_hyperparameters()`` and ``ir`` are its, so ``kd.plot_structure`` takes this kernel too.

    Raises:
        KernelError: the source, groups or options do not fit these features (a
            ``KernelNameError`` for an unknown name lists the features there are).
    """

    has_lengthscale = False

    def __init__(self, source: str, features: Sequence[str], groups: Mapping[str, Sequence[str]] | None = None,
                 backend: str = "auto", batch_shape: torch.Size | Sequence[int] = torch.Size([]), **options: Any):
        model_features = ModelFeatures.from_names(features)
        kernel = build(_lower(source, model_features, groups), backend=backend, batch_shape=batch_shape, **options)
        super().__init__(batch_shape=kernel.batch_shape)
        self.source = source
        self.features = model_features.names
        self.kernel = kernel

    def forward(self, x1: torch.Tensor, x2: torch.Tensor, diag: bool = False, last_dim_is_batch: bool = False,
                **params):
        return self.kernel.forward(x1, x2, diag=diag, last_dim_is_batch=last_dim_is_batch, **params)

    @property
    def ir(self) -> KernelIR:
        """The compiled kernel's intermediate form (terms, features, readable names)."""
        return self.kernel.ir

    def describe(self, batch_index: int | tuple[int, ...] | None = None) -> str:
        """The expression with its learned weights and lengthscales (the compiled kernel's ``describe``)."""
        return self.kernel.describe(batch_index)

    def get_hyperparameters(self):
        """Readable name -> constrained value (the compiled kernel's ``get_hyperparameters``)."""
        return self.kernel.get_hyperparameters()

    def set_hyperparameters(self, values: Mapping[str, object]) -> None:
        """Set hyperparameters by readable name (the compiled kernel's ``set_hyperparameters``)."""
        self.kernel.set_hyperparameters(values)


register_kernel(KernelLanguageKernel)  # Ax's JSON and SQL storage: a client with this kernel saves and loads


@covar_module_argparse.register(KernelLanguageKernel)
def _kernel_language_kernel_inputs(covar_module_class: type[Kernel], botorch_model_class: type | None = None,
                                   dataset=None, **options: Any) -> dict[str, Any]:
    """Ax's input constructor for ``KernelLanguageKernel``: the features and batch shape of the data."""
    options.pop("remove_task_features", None)  # Ax's flag for kernels over task features; not ours
    if dataset is None:
        raise KernelError("KernelLanguageKernel takes its features from Ax's training data, and Ax passed none")
    names = list(dataset.feature_names)
    if "features" in options and list(options["features"]) != names:
        raise KernelError(f"covar_module_options gives features={reprlib.repr(options['features'])}, but Ax's "
                          f"model sees the columns {names}",
                          hint="leave features out: they come from the experiment's search space")
    options["features"] = names
    if "batch_shape" not in options:
        outcomes = dataset.Y.shape[-1]
        options["batch_shape"] = torch.Size([outcomes]) if outcomes > 1 else torch.Size([])
    return options


def check_kernel(kernel: str, search_space: SearchSpace,
                 groups: Mapping[str, Sequence[str]] | None = None) -> KernelIR:
    """Lower ``kernel`` over the features Ax's model sees for ``search_space``.

    Returns:
        The ``KernelIR`` (its ``features`` are the model's columns).

    Raises:
        KernelError: the kernel does not fit the search space (a ``KernelNameError`` names the
            unknown parameter and lists the features there are).
    """
    return _lower(kernel, ModelFeatures.from_search_space(search_space), groups)


def kernel_config(kernel: str, *, groups: Mapping[str, Sequence[str]] | None = None, backend: str = "auto",
                  search_space: SearchSpace | None = None, **kernel_options: Any) -> ModelConfig:
    """An Ax ``ModelConfig``: botorch's ``SingleTaskGP`` with the kernel-language ``kernel``.

    Use it wherever Ax takes model configs, e.g. ``SurrogateSpec(model_configs=[...])`` of a
    ``GeneratorSpec(Generators.BOTORCH_MODULAR, ...)``. The source, ``backend`` and options
    (``KernelOptions`` fields) are checked now; the names when ``search_space`` is given
    (``check_kernel``), else at the first fit.

    Args:
        kernel: kernel-language source over the model's features (see the module doc).
        groups: extra named groups (group name -> feature or group names).
        backend: the compiled kernel's backend (``kd.compile``'s ``backend``).
        search_space: the Ax search space to check the names against now.
        **kernel_options: ``KernelOptions`` fields (priors, constraints, tiling).
    """
    if not isinstance(kernel, str):
        raise KernelError(f"the kernel must be kernel-language source (a str), got {type(kernel).__name__}")
    parse(kernel)
    KernelOptions.from_kwargs(dict(kernel_options))
    get_backend(backend)
    if search_space is not None:
        check_kernel(kernel, search_space, groups)
    options: dict[str, Any] = {"source": kernel, "backend": backend, **kernel_options}
    if groups is not None:
        options["groups"] = {name: list(members) for name, members in groups.items()}
    return ModelConfig(botorch_model_class=SingleTaskGP, covar_module_class=KernelLanguageKernel,
                       covar_module_options=options, name=MODEL_CONFIG_NAME)


def configure_kernel(client: Client, kernel: str, *, groups: Mapping[str, Sequence[str]] | None = None,
                     backend: str = "auto", initialization_budget: int | None = None,
                     initialization_random_seed: int | None = None, **kernel_options: Any) -> GenerationStrategy:
    """Make ``client`` optimise with the kernel-language ``kernel``: Ax's usual strategy
    (the center of the search space, Sobol points, then Bayesian optimisation with
    botorch's ``SingleTaskGP``) with this kernel in the model.

    Call it after ``client.configure_experiment`` and before the first trial. The kernel is
    checked against the experiment's search space first; if it does not fit, the error is
    raised here and the client is left with Ax's default strategy
    (``client.configure_generation_strategy()``).

    Args:
        client: an ``ax.Client`` with its experiment configured.
        kernel: kernel-language source over the model's features (see the module doc).
        groups: extra named groups (group name -> feature or group names).
        backend: the compiled kernel's backend.
        initialization_budget: trials before Bayesian optimisation (Ax's default: 5).
        initialization_random_seed: the Sobol seed.
        **kernel_options: ``KernelOptions`` fields (priors, constraints, tiling).

    Returns:
        The ``GenerationStrategy`` now set on the client (``fitted_kernel`` reads its model).

    Raises:
        KernelError: the kernel does not fit the search space.
        ValueError: the client has no experiment yet.
    """
    config = kernel_config(kernel, groups=groups, backend=backend, **kernel_options)
    strategy = choose_generation_strategy(
        struct=GenerationStrategyDispatchStruct(method="custom", initialization_budget=initialization_budget,
                                                initialization_random_seed=initialization_random_seed),
        model_config=config)
    try:
        client.set_generation_strategy(strategy)
    except AssertionError as err:  # Ax's none_throws on a client without an experiment
        raise ValueError(f"configure_kernel needs the client's experiment: call client.configure_experiment(...) "
                         f"first ({err})") from None
    try:
        check_kernel(kernel, strategy.experiment.search_space, groups)
    except KernelError:
        client.configure_generation_strategy()
        raise
    return strategy


def fitted_kernel(generation_strategy: GenerationStrategy) -> KernelLanguageKernel:
    """The kernel-language kernel of the model that ``generation_strategy`` fitted last.

    Raises:
        ValueError: its current node has fitted no model with a kernel-language kernel (e.g.
            it is still in the Sobol phase, or outcomes have separate models).
    """
    node = generation_strategy.current_node_name
    adapter = generation_strategy.adapter
    generator = adapter.generator if adapter is not None else None
    if not isinstance(generator, BoTorchGenerator):
        raise ValueError(f"the generation strategy's current node '{node}' has fitted no BoTorch model: the kernel "
                         "is fitted from the first Bayesian-optimisation trial on")
    model = generator.surrogate.model
    if isinstance(model, ModelListGP):
        raise ValueError(f"node '{node}' fitted one model per outcome ({len(model.models)}): read each "
                         "model's covar_module from generation_strategy.adapter.generator.surrogate.model.models")
    kernel = getattr(model, "covar_module", None)
    if not isinstance(kernel, KernelLanguageKernel):
        raise ValueError(f"node '{node}' fitted a {type(model).__name__} whose kernel is "
                         f"{type(kernel).__name__}, not a kernel-language kernel")
    return kernel
