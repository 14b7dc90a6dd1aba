"""The registry of base-kernel kinds (``kinds.KINDS``), swept kind by kind.

Every kind's values and gradients on every backend against ``reference`` (float64)
are checked where the hypothesis strategies draw kinds from the registry
(test_backends, test_random_programs) and by the triton ``all_kinds`` program
(test_fused); here: each kind in the language (lowering, check errors, describe(),
the README), each kind's torch and triton math against autograd, and ``laplace``
against gpytorch's own Matern 1/2.
"""

from __future__ import annotations

import math
import re
import types
from pathlib import Path

import pytest
import torch
from gpytorch.kernels import MaternKernel, ProductKernel

import kerneldsl as kd
from ir_strategies import SPAN
from kerneldsl import KernelError, KernelNameError
from kerneldsl.compiler.backends import get_backend
from kerneldsl.compiler.backends.triton_codegen import generate
from kerneldsl.compiler.ir import KernelIR, Term
from kerneldsl.compiler.kinds import BY_FUNCTION, KIND_NAMES, KINDS, Distance, Kind

FEATURES = ["a", "b", "c"]
README = Path(__file__).resolve().parents[2] / "README.md"


def readme_row(kind: Kind) -> str:
    """The kind's row of the README's language table, as the registry states it."""
    aliases = f" (alias {', '.join(f'`{a}`' for a in kind.aliases)})" if kind.aliases else ""
    return f"| `{kind.name}(g)`{aliases} | `{kind.math.formula}`: {kind.use} |"


@pytest.mark.parametrize("name", KIND_NAMES)
def test_readme_language_table_documents_every_kind(name):
    assert readme_row(KINDS[name]) in README.read_text().splitlines()


def test_function_names_are_unique_and_not_sugar():
    names = [f for kind in KINDS.values() for f in kind.functions]
    assert len(names) == len(set(names)) == len(BY_FUNCTION)
    assert not set(names) & {"additive", "fj", "kernel"}


# --- the language ------------------------------------------------------------------------

@pytest.mark.parametrize("function", BY_FUNCTION)
def test_every_function_name_lowers_to_its_kind(function):
    ir = kd.compile_ir(f"{function}({{a, c}}) * {function}(b)", FEATURES)
    assert [(t.kind, t.features) for t in ir.terms] == [(BY_FUNCTION[function].name, (0, 2)),
                                                       (BY_FUNCTION[function].name, (1,))]
    assert ir.lengthscale_names[0] == f"{BY_FUNCTION[function].name}(a, c).lengthscale[a]"


CHECK_ERRORS = [
    # (source with {f} for the function, error class, message fragment, column from the function's length)
    ("{f}()", KernelError, "{f}() takes exactly one feature set or group, got 0 arguments", lambda n: 1),
    ("{f}({{a}}, b)", KernelError, "{f}() takes exactly one feature set or group, got 2 arguments", lambda n: 1),
    ("{f}(a + b)", KernelError, "{f}() takes a feature set or group, not a kernel expression", lambda n: n + 2),
    ("{f}({{a, zz}})", KernelNameError, "unknown feature 'zz'", lambda n: n + 6),
    ("{f} = a\n{f}", KernelError, "'{f}' is a kernel function; a definition cannot reuse it", lambda n: 1),
]


@pytest.mark.parametrize("function", BY_FUNCTION)
@pytest.mark.parametrize("source, cls, fragment, column", CHECK_ERRORS)
def test_check_errors_name_the_function_and_the_place(function, source, cls, fragment, column):
    source = source.format(f=function)
    with pytest.raises(cls) as info:
        kd.compile_ir(source, FEATURES)
    assert fragment.format(f=function) in str(info.value)
    assert (info.value.line, info.value.column) == (1, column(len(function)))


@pytest.mark.parametrize("function", BY_FUNCTION)
def test_misspelt_function_suggests_it(function):
    with pytest.raises(KernelNameError) as info:
        kd.compile_ir(f"{function[:-1]}({{a}})", FEATURES)
    assert str(info.value).startswith(f"line 1, column 1: unknown function '{function[:-1]}'")
    assert str(info.value).endswith(f"did you mean '{function}'?")


@pytest.mark.parametrize("function", BY_FUNCTION)
def test_group_cannot_take_a_function_name(function):
    with pytest.raises(KernelError, match=f"group '{function}' has the name of a kernel function"):
        kd.compile("a", features=FEATURES, groups={function: ["a"]})


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_describe_names_every_kind_with_its_lengthscales(backend):
    kernel = kd.compile(" * ".join(f"{kind}({{a, b}})" for kind in KIND_NAMES), features=FEATURES,
                        backend=backend)
    kernel.set_hyperparameters({f"{kind}(a, b).lengthscale[b]": 0.25 for kind in KIND_NAMES})
    text = kernel.describe()
    for kind in KIND_NAMES:
        assert f"{kind}(a=" in text and "b=0.25" in text, text


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_unknown_kind_in_an_ir_is_a_kernel_error(backend):
    ir = KernelIR(features=("a",), terms=(Term("cauchy", (0,), (0,), "t0", SPAN),), nodes=(), levels=(), root=0,
                  lengthscale_names=("t0.a",), weight_names=())
    with pytest.raises(KernelError, match="term 't0' has unknown base-kernel kind 'cauchy'.*\n.*known kinds: "):
        get_backend(backend)(ir)
    with pytest.raises(KernelError, match="unknown base-kernel kind 'cauchy'"):
        generate(ir)


# --- each kind's math ----------------------------------------------------------------------

def _distances() -> torch.Tensor:
    """Distances from 0 (where the kinked kinds take the 0 subgradient) to 4."""
    return torch.cat([torch.zeros(1), torch.rand(40, generator=torch.Generator().manual_seed(0)) * 4]).double()


def _autograd_slope(kind: Kind, distance: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Value and the Triton slope convention's derivative: 2 dv/dr2 (squared), dv/ds (absolute)."""
    d = distance.clone().requires_grad_(True)
    value = kind.math.torch(d)
    (dv,) = torch.autograd.grad(value.sum(), d)
    return value.detach(), (2 * dv if kind.distance is Distance.SQUARED else dv)


@pytest.mark.parametrize("name", KIND_NAMES)
def test_torch_math_is_a_unit_correlation_with_gradients_that_match_finite_differences(name):
    kind = KINDS[name]
    d = _distances()
    value, _ = _autograd_slope(kind, d)
    assert value[0] == 1 and ((value > 0) & (value <= 1)).all()
    assert torch.autograd.gradcheck(kind.math.torch, (d[1:].clone().requires_grad_(True),))


@pytest.mark.parametrize("name", KIND_NAMES)
def test_triton_value_and_slope_lines_agree_with_torch_math(name):
    """The generated lines, run on torch tensors with ``tl`` standing for torch, give f and its slope."""
    kind = KINDS[name]
    d = _distances()
    variable = f"{kind.distance.variable}7"
    tl = types.SimpleNamespace(exp=torch.exp, sqrt=torch.sqrt, where=torch.where, abs=torch.abs)
    scope = {"tl": tl, variable: d}
    for line in kind.math.triton_value(7, variable) + kind.math.triton_slope(7, variable):
        assert re.match(r"\w+ = ", line), f"{name}: not an assignment: {line}"
        exec(line, scope)
    value, slope = _autograd_slope(kind, d)
    torch.testing.assert_close(scope["v7"], value, rtol=1e-14, atol=0)
    torch.testing.assert_close(scope["g7"], slope, rtol=1e-13, atol=1e-300)


def _points(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, len(FEATURES), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def test_laplace_is_the_product_of_gpytorch_matern12_per_feature():
    """An oracle independent of the registry: exp(-sum_f |d_f| / l_f) = prod_f matern12 over feature f alone."""
    lengthscales = {"a": 0.3, "b": 1.7, "c": 0.6}
    kernel = kd.compile("laplace({a, b, c})", features=FEATURES, backend="torch").double()
    kernel.set_hyperparameters({f"laplace(a, b, c).lengthscale[{f}]": v for f, v in lengthscales.items()})
    kernel.set_hyperparameters({"outputscale": 1.0})
    factors = []
    for i, f in enumerate(FEATURES):
        matern = MaternKernel(nu=0.5, active_dims=torch.tensor([i])).double()
        matern.lengthscale = torch.tensor(lengthscales[f], dtype=torch.float64)  # a float would be rounded to float32
        factors.append(matern)
    oracle = ProductKernel(*factors)
    x1, x2 = _points(7, 1), _points(5, 2)  # no shared coordinates: gpytorch's own distance is exact enough there
    with torch.no_grad():
        torch.testing.assert_close(kernel(x1, x2).to_dense(), oracle(x1, x2).to_dense(), rtol=1e-10, atol=0)


def test_laplace_uses_the_l1_distance_unlike_matern12():
    x = torch.tensor([[0.0, 0.0, 0.0], [0.3, 0.4, 0.0]], dtype=torch.float64)
    values = {}
    for kind in ("laplace", "matern12"):
        kernel = kd.compile(f"{kind}({{a, b, c}})", features=FEATURES, backend="torch").double()
        kernel.set_hyperparameters({f"{kind}(a, b, c).lengthscale[{f}]": 1.0 for f in FEATURES} | {"outputscale": 1.0})
        with torch.no_grad():
            values[kind] = float(kernel(x).to_dense()[0, 1])
    assert values["laplace"] == pytest.approx(math.exp(-0.7), rel=1e-12)
    assert values["matern12"] == pytest.approx(math.exp(-0.5), rel=1e-12)
