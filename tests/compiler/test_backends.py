"""The ``reference`` and ``torch`` backends: the same kernels through both, values and gradients compared.

IRs come from ``ir_strategies.kernel_irs`` (built directly, no front end);
comparisons go through ``harness.assert_backends_agree`` in float64.
"""

from __future__ import annotations

import contextlib
from unittest import mock

import gpytorch
import pytest
import torch
from botorch.models import SingleTaskGP
from gpytorch.mlls import ExactMarginalLogLikelihood
from hypothesis import given, settings
from hypothesis import strategies as st

from harness import assert_backends_agree, assert_close, build_kernels, random_hyperparameters, slot_gradients
from ir_strategies import SPAN, kernel_irs, levels_of
from kerneldsl import KernelError
from kerneldsl.compiler.backends import get_backend
from kerneldsl.compiler.backends.reference import SharedKernel
from kerneldsl.compiler.backends import torch_kernel
from kerneldsl.compiler.backends.tiling import ACCELERATOR_TILES, CPU_TILES, plan_tiles, resolve_tiles
from kerneldsl.compiler.ir import KernelIR, Product, Sum, Term
from kerneldsl.compiler.kinds import KIND_NAMES
from kerneldsl.compiler.options import KernelOptions


F64 = torch.float64
SMOOTH_KINDS = tuple(kind for kind in KIND_NAMES if kind != "matern12")
"""Kinds without matern12, whose reference value has sqrt(eps) error at zero distance (see harness)."""

# (kernel batch, x1 batch, x2 batch): gpytorch broadcasting of kernel and data batch dims.
BATCH_CASES = [((), (), ()), ((2,), (), ()), ((2,), (2,), (2,)), ((), (3,), (3,)), ((2,), (3, 1), (2,))]


def _inputs(ir: KernelIR, seed: int, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, len(ir.features), generator=torch.Generator().manual_seed(seed), dtype=F64)


def _torch_kernel(ir: KernelIR, seed: int = 0, batch_shape=(), options: KernelOptions | None = None):
    kernel = get_backend("torch")(ir, torch.Size(batch_shape), options).to(F64)
    kernel.set_hyperparameters(random_hyperparameters(kernel, torch.Generator().manual_seed(seed)))
    return kernel


def _ir(terms: list[tuple[str, tuple[int, ...]]], nodes: list[Sum | Product], num_features: int) -> KernelIR:
    """A hand-written IR: terms as (kind, features), slots in order."""
    built, names = [], []
    for t, (kind, feats) in enumerate(terms):
        built.append(Term(kind, feats, tuple(range(len(names), len(names) + len(feats))), f"t{t}", SPAN))
        names += [f"t{t}.x{f}" for f in feats]
    weights = [f"{n.label}.w{i}" for n in nodes if isinstance(n, Sum) for i in range(len(n.weights))]
    return KernelIR(features=tuple(f"x{i}" for i in range(num_features)), terms=tuple(built), nodes=tuple(nodes),
                    levels=levels_of(len(terms), nodes), root=len(terms) + len(nodes) - 1 if nodes else 0,
                    lengthscale_names=tuple(names), weight_names=tuple(weights))


def _shared_ir() -> KernelIR:
    """``a = m52(x0, x1) * cat(x2); b = a + rbf(x3); kernel = a + b * m12(x0)``: node ``a`` has two parents."""
    terms = [("matern52", (0, 1)), ("categorical", (2,)), ("rbf", (3,)), ("matern32", (0, 3))]
    nodes = [Product((0, 1), "a", SPAN), Sum((4, 2), (0, 1), None, "b", SPAN),
             Product((5, 3), "c", SPAN), Sum((4, 6), (2, 3), None, "kernel", SPAN)]
    return _ir(terms, nodes, 4)


@settings(max_examples=30, deadline=None)
@given(ir=kernel_irs(), seed=st.integers(0, 2**16), batches=st.sampled_from(BATCH_CASES))
def test_backends_agree(ir, seed, batches):
    kernel_batch, x1_batch, x2_batch = batches
    x1 = _inputs(ir, seed, *x1_batch, 5)
    x2 = _inputs(ir, seed + 1, *x2_batch, 4)
    assert_backends_agree(ir, x1, x2, batch_shape=torch.Size(kernel_batch), seed=seed)


def test_backends_agree_on_shared_nodes_and_repeated_children():
    ir = _ir([("matern12", (0,)), ("rbf", (1, 0))],
             [Product((0, 0, 1), "sq", SPAN), Sum((2, 0, 2), (), (0.5, 1.5, 0.25), "fixed", SPAN),
              Sum((3, 2), (0, 1), None, "kernel", SPAN)], 2)
    assert_backends_agree(ir, _inputs(ir, 0, 6), _inputs(ir, 1, 3))
    assert_backends_agree(_shared_ir(), _inputs(_shared_ir(), 2, 2, 6), _inputs(_shared_ir(), 3, 2, 7),
                          batch_shape=torch.Size([2]))


def test_many_features_per_term_take_the_chunked_path():
    """More features than the chunk size: distances are summed over feature chunks (checkpointed)."""
    ir = _ir([("matern52", tuple(range(20))), ("categorical", tuple(range(20, 32))), ("rbf", (3, 25))],
             [Product((0, 1, 2), "kernel", SPAN)], 32)
    x1, x2 = _inputs(ir, 0, 6) * 3, _inputs(ir, 1, 5) * 3
    assert_backends_agree(ir, x1, x2)
    _gradcheck(_torch_kernel(ir), x1[:3], x2[:2], fast_mode=True)


@settings(max_examples=15, deadline=None)
@given(ir=kernel_irs(max_features=3, max_terms=4, max_composites=3), seed=st.integers(0, 2**16))
def test_matrix_is_symmetric_and_positive_definite(ir, seed):
    x = _inputs(ir, seed, 12)
    for name, kernel in build_kernels(ir).items():
        kernel.set_hyperparameters(random_hyperparameters(kernel, torch.Generator().manual_seed(seed)))
        with torch.no_grad():
            matrix = kernel(x).to_dense()
        if name == "torch":
            assert torch.equal(matrix, matrix.mT), "torch: K(x, x) is not exactly symmetric"
        else:
            assert_close(matrix, matrix.mT, 1e-12, f"{name}: K(x, x) symmetric")
        jitter = 1e-8 * torch.eye(len(x), dtype=F64)
        assert torch.linalg.cholesky_ex(matrix + jitter).info == 0, f"{name}: Cholesky failed"


def _gradcheck(kernel, x1: torch.Tensor, x2: torch.Tensor, fast_mode: bool = False) -> None:
    """gradcheck of the torch backend w.r.t. raw hyperparameters and inputs: full, x1 is x2, diag."""
    names = ("raw_outputscale", "raw_lengthscale", "weight_logits")
    params = tuple(getattr(kernel, n).detach().clone().requires_grad_(True) for n in names)

    def call(args, *xs, diag=False):
        with gpytorch.settings.lazily_evaluate_kernels(False):
            out = torch.func.functional_call(kernel, dict(zip(names, args)), xs, {"diag": diag})
        return out if diag else out.to_dense()

    a = x1.detach().clone().requires_grad_(True)
    b = x2.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda *t: call(t[:3], t[3], t[4]), (*params, a, b), fast_mode=fast_mode)
    assert torch.autograd.gradcheck(lambda *t: call(t[:3], t[3], t[3]), (*params, a), fast_mode=fast_mode)
    n = min(a.shape[-2], b.shape[-2])
    a, b = (x[..., :n, :].detach().clone().requires_grad_(True) for x in (a, b))
    assert torch.autograd.gradcheck(lambda *t: call(t[:3], t[3], t[4], diag=True), (*params, a, b),
                                    fast_mode=fast_mode)


@settings(max_examples=10, deadline=None)
@given(ir=kernel_irs(max_features=3, max_terms=4, max_composites=3), seed=st.integers(0, 2**16),
       batch=st.sampled_from([(), (2,)]))
def test_gradcheck_including_identical_points(ir, seed, batch):
    x1 = _inputs(ir, seed, *batch, 4)
    x1[..., 3, :] = x1[..., 1, :]  # a repeated point: zero distance inside K(x1, x1)
    x2 = _inputs(ir, seed + 1, *batch, 3)
    x2[..., 0, :] = x1[..., 0, :]  # and between x1 and x2
    _gradcheck(_torch_kernel(ir, seed, batch), x1, x2)


@pytest.mark.parametrize("kind", KIND_NAMES)
def test_gradient_at_zero_distance_is_finite_and_the_limit(kind):
    """At identical points the gradient is 0: the true limit (a subgradient for matern12/categorical)."""
    ir = _ir([(kind, (0, 1))], [], 2)
    kernel = _torch_kernel(ir)
    x = _inputs(ir, 0, 3).requires_grad_(True)
    y = x.detach().clone()
    kernel(x, y).to_dense().diagonal().sum().backward()
    assert torch.equal(x.grad, torch.zeros_like(x))
    assert torch.equal(kernel.raw_lengthscale.grad, torch.zeros_like(kernel.raw_lengthscale))


def _mll(kernel, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
    model = SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=None).to(F64)
    model.train()
    mll = ExactMarginalLogLikelihood(model.likelihood, model)
    return mll(model(*model.train_inputs), model.train_targets).sum()


@settings(max_examples=10, deadline=None)
@given(ir=kernel_irs(max_features=3, max_terms=4, max_composites=4, kinds=SMOOTH_KINDS),
       seed=st.integers(0, 2**16))
def test_marginal_log_likelihood_agrees_including_priors(ir, seed):
    X = _inputs(ir, seed, 10)
    Y = torch.sin(6 * X.sum(-1, keepdim=True))
    values, grads = {}, {}
    for name, kernel in build_kernels(ir).items():
        kernel.set_hyperparameters(random_hyperparameters(kernel, torch.Generator().manual_seed(seed)))
        values[name] = _mll(kernel, X, Y)
        grads[name] = slot_gradients(kernel, values[name])
    assert_close(values["torch"], values["reference"], 1e-10, "marginal log likelihood")
    assert_close(grads["torch"], grads["reference"], 1e-9, "marginal log likelihood gradient")


def test_shared_node_is_one_module_and_its_priors_count_once():
    ir = _shared_ir()
    kernels = build_kernels(ir)
    ref, flat = kernels["reference"], kernels["torch"]
    for kernel in kernels.values():
        kernel.set_hyperparameters(random_hyperparameters(ref, torch.Generator().manual_seed(0)))
    shared = [m for m in ref.modules() if isinstance(m, SharedKernel)]
    assert len(shared) == 1
    node_a = ref.kernel.base_kernel.kernels[1].kernels[0].kernels[0]  # kernel -> c -> b -> a
    assert shared[0].target is node_a, "a node with two parents must be one module used twice"
    learned_sums = sum(1 for n in ir.nodes if isinstance(n, Sum) and n.weights)
    assert len(list(ref.named_priors())) == 1 + ir.num_terms + learned_sums

    def log_prior(kernel):
        return sum(prior.log_prob(closure(module)).sum() for _, module, prior, closure, _ in kernel.named_priors())
    assert_close(log_prior(ref), log_prior(flat), 1e-12, "sum of prior log densities")
    X = _inputs(ir, 4, 9)
    assert_close(_mll(ref, X, X[:, :1]), _mll(flat, X, X[:, :1]), 1e-10, "MLL with a shared node")


def test_batched_model_with_kernel_batch_shape():
    ir = _shared_ir()
    X = _inputs(ir, 5, 8)
    Y = torch.stack([X.sum(-1), X.prod(-1), X[:, 0]], dim=-1)
    values = {}
    for name, kernel in build_kernels(ir, batch_shape=torch.Size([3])).items():
        kernel.set_hyperparameters(random_hyperparameters(kernel, torch.Generator().manual_seed(1)))
        values[name] = _mll(kernel, X, Y)
        model = SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=None).to(F64)
        posterior = model.posterior(_inputs(ir, 6, 4))
        assert posterior.mean.shape == (4, 3) and torch.isfinite(posterior.variance).all()
    assert_close(values["torch"], values["reference"], 1e-10, "batched MLL")


def test_output_shapes_follow_gpytorch_broadcasting():
    ir = _shared_ir()
    x1, x2 = _inputs(ir, 0, 6, 2), _inputs(ir, 1, 6, 9)
    for name, kernel in build_kernels(ir).items():
        assert kernel(x1, x2).shape == (6, 2, 9), name
        assert kernel(x1, diag=True).shape == (6, 2), name
    for name, kernel in build_kernels(ir, batch_shape=torch.Size([4])).items():
        assert kernel(_inputs(ir, 2, 4, 5)).shape == (4, 5, 5), name
        assert kernel(_inputs(ir, 2, 5)).shape == (4, 5, 5), name


def test_float32_matches_float64_reference():
    ir = _shared_ir()
    x1, x2 = _inputs(ir, 0, 7), _inputs(ir, 1, 5)
    ref = build_kernels(ir, backends=("reference",))["reference"]
    kernel = get_backend("torch")(ir).to(torch.float32)
    values = random_hyperparameters(ref, torch.Generator().manual_seed(3))
    ref.set_hyperparameters(values)
    kernel.set_hyperparameters(values)
    with torch.no_grad():
        for a, b in ((x1, x2), (x1, x1)):
            out = kernel(a.float(), b.float() if b is not a else a.float()).to_dense()
            assert out.dtype == torch.float32
            assert_close(out.double(), ref(a, b).to_dense(), 1e-5, "float32 torch vs float64 reference")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu(dtype):
    ir = _shared_ir()
    kernel = _torch_kernel(ir)
    x1, x2 = _inputs(ir, 0, 2, 33), _inputs(ir, 1, 2, 17)
    expected = kernel(x1, x2).to_dense(), kernel(x1).to_dense(), kernel(x1, diag=True)
    gpu = kernel.to(device="cuda", dtype=dtype)
    a, b = x1.to("cuda", dtype), x2.to("cuda", dtype)
    actual = gpu(a, b).to_dense(), gpu(a).to_dense(), gpu(a, diag=True)
    rtol = 1e-5 if dtype == torch.float32 else 1e-12
    for got, exp in zip(actual, expected):
        assert_close(got.cpu().double(), exp, rtol, f"cuda {dtype}")


@pytest.mark.filterwarnings("ignore:The last_dim_is_batch argument is deprecated")
@pytest.mark.parametrize("backend", ["reference", "torch", "auto"])
def test_bad_inputs_raise_kernel_errors(backend):
    ir = _shared_ir()
    kernel = get_backend(backend)(ir).to(F64)
    with pytest.raises(KernelError, match="last_dim_is_batch"):
        kernel(_inputs(ir, 0, 3), last_dim_is_batch=True).to_dense()
    with pytest.raises(KernelError, match=r"x1 must have shape \(\.\.\., n, 4\).*x0, x1, x2, x3"):
        kernel(torch.rand(3, 5, dtype=F64)).to_dense()
    with pytest.raises(KernelError, match="same number of points"):
        kernel(_inputs(ir, 0, 3), _inputs(ir, 1, 2), diag=True)


def test_unknown_backend_name_suggests_the_closest():
    with pytest.raises(KernelError, match="did you mean 'torch'"):
        get_backend("troch")


def test_auto_runs_the_torch_path_on_cpu_and_agrees_with_reference():
    ir = _shared_ir()
    kernels = build_kernels(ir, backends=("reference", "auto"))
    assert_backends_agree(kernels, _inputs(ir, 0, 2, 6), _inputs(ir, 1, 2, 5), seed=3)
    assert kernels["auto"].last_path == "torch"


def test_frozen_auto_kernel_hands_large_inputs_to_the_fused_path():
    """A frozen ``auto`` kernel evaluates small inputs itself (prepared hyperparameters, torch path) and sends
    inputs at or above ``FUSED_CPU_THRESHOLD`` entries through ``forward``, where the fused C kernels run."""
    from kerneldsl.compiler.backends import auto

    ir = _shared_ir()
    kernel = build_kernels(ir, backends=("auto",))["auto"]
    frozen = kernel.frozen()
    small, large = _inputs(ir, 0, 2, 6), _inputs(ir, 1, 2, 5)
    sentinel = torch.zeros(2, 5, 5, dtype=F64)
    with mock.patch.object(auto.AutoKernel, "_fused_cpu", return_value=sentinel) as fused, \
            mock.patch.object(auto, "FUSED_CPU_THRESHOLD", 2 * 5 * 5):
        with torch.no_grad():
            assert frozen(small, small[..., :4, :]).shape == (2, 6, 4) and not fused.called  # 48 entries
            assert frozen(large, large) is sentinel and fused.call_count == 1  # 50 entries
            assert kernel.forward(large, large) is sentinel and fused.call_count == 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_auto_runs_the_triton_path_on_cuda():
    pytest.importorskip("triton")
    ir = _shared_ir()
    kernels = build_kernels(ir, backends=("torch", "auto"), device="cuda")
    assert_backends_agree(kernels, _inputs(ir, 0, 2, 40).cuda(), _inputs(ir, 1, 2, 33).cuda(), seed=3, rtol=1e-9)
    assert kernels["auto"].last_path == "triton"


@pytest.mark.parametrize("backend", ["reference", "torch"])
def test_fixed_weights_are_exact_whatever_the_default_dtype(backend):
    """Literal weights built under a float32 default and moved to float64 are not float32-rounded."""
    terms = [("rbf", (0,)), ("matern52", (1,))]
    nodes = [Sum((0, 1), (), (0.3, 0.7), "kernel", SPAN)]
    ir = _ir(terms, nodes, 2)
    default = torch.get_default_dtype()
    torch.set_default_dtype(torch.float32)
    try:
        kernel = get_backend(backend)(ir)
    finally:
        torch.set_default_dtype(default)
    kernel = kernel.to(F64)
    x = _inputs(ir, 0, 4)
    parts = [get_backend("reference")(_ir([t], [], 2)).to(F64)(x).to_dense() for t in terms]
    assert_close(kernel(x).to_dense(), 0.3 * parts[0] + 0.7 * parts[1], 1e-14, f"{backend}: fixed weights")


# --- Tiled evaluation (compiler/backends/tiling.py): tiny forced tiles so that every path runs --------


def _tiled(entries: int) -> KernelOptions:
    """Options that tile every evaluation bigger than ``entries`` kernel entries."""
    return KernelOptions(tile_size=entries, tile_threshold=0)


@contextlib.contextmanager
def _tiled_calls():
    """Counts the evaluations that took the tiled path."""
    with mock.patch.object(torch_kernel, "evaluate_tiled", wraps=torch_kernel.evaluate_tiled) as spy:
        yield spy


@pytest.mark.parametrize("mode, n, m, batch, entries", [
    ("full", 7, 8, (), 9), ("full", 2, 13, (6,), 24), ("full", 8, 3, (), 9), ("full", 5, 5, (2, 3), 1),
    ("upper", 7, 7, (), 9), ("upper", 8, 8, (2,), 18), ("upper", 5, 5, (), 1),
    ("diag", 7, 7, (), 3), ("diag", 8, 8, (4,), 12)])
def test_tiles_cover_every_entry_once_within_the_tile_size(mode, n, m, batch, entries):
    x1, x2 = torch.zeros(*batch, n, 1), torch.zeros(m, 1)
    plan = plan_tiles(mode, x1, x2, torch.Size(), entries, 0)
    count = torch.zeros(n) if mode == "diag" else torch.zeros(n, m)
    for tile in plan.tiles:
        pairs = (tile.rows.stop - tile.rows.start) * (1 if mode == "diag" else tile.cols.stop - tile.cols.start)
        assert max(1, len(x1[..., 0, 0].flatten())) * pairs <= max(entries, len(x1[..., 0, 0].flatten()))
        if mode == "diag":
            assert tile.rows == tile.cols
            count[tile.rows] += 1
            continue
        count[tile.rows, tile.cols] += 1
        if tile.mirrored:
            assert tile.rows.start < tile.cols.start
            count[tile.cols, tile.rows] += 1
        assert tile.mode == ("upper" if mode == "upper" and tile.rows == tile.cols else "full")
    assert torch.equal(count, torch.ones_like(count)), count
    assert plan.shape == (*batch, n) + (() if mode == "diag" else (m,))


def test_small_or_untiled_evaluations_run_in_one_piece():
    x = torch.zeros(30, 1)
    assert plan_tiles("upper", x, x, torch.Size(), None, 0) is None, "tile_size=None never tiles"
    assert plan_tiles("upper", x, x, torch.Size(), 100, 900) is None, "30 x 30 entries: not above the threshold"
    assert plan_tiles("upper", x, x, torch.Size([2]), 100, 900) is not None
    assert plan_tiles("full", x, x, torch.Size(), 900, 0) is None, "one tile: one piece"
    ir = _shared_ir()
    with _tiled_calls() as spy:
        get_backend("torch")(ir)(_inputs(ir, 0, 20)).to_dense()
    assert not spy.called, "the default threshold keeps small kernels in one piece"


def test_auto_tiling_takes_the_device_defaults():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert resolve_tiles("auto", "auto", cpu) == (CPU_TILES.size, CPU_TILES.threshold)
    assert resolve_tiles("auto", "auto", gpu) == (ACCELERATOR_TILES.size, ACCELERATOR_TILES.threshold)
    assert resolve_tiles(64, 0, gpu) == (64, 0), "explicit values win on every device"
    assert resolve_tiles(None, "auto", cpu) == (None, CPU_TILES.threshold)
    assert CPU_TILES.threshold < ACCELERATOR_TILES.threshold, "a GPU tiles for memory only, far later"
    assert KernelOptions().tile_size == KernelOptions().tile_threshold == "auto"
    ir = _shared_ir()
    x = _inputs(ir, 0, 700)  # 490000 entries: above the CPU's threshold
    with _tiled_calls() as spy:
        get_backend("torch")(ir)(x).diag()  # diag: 700 entries, one piece
        assert not spy.called
        get_backend("torch")(ir)(x).to_dense()
    assert spy.call_count == 1, "auto tiles a 700 x 700 K on the CPU"


@pytest.mark.parametrize("name, value", [("tile_size", 0), ("tile_size", 2.5), ("tile_size", True),
                                         ("tile_threshold", -1), ("tile_threshold", "big"),
                                         ("fused_threshold", -1), ("fused_threshold", 1.5)])
def test_bad_tile_and_fused_options_raise_kernel_errors(name, value):
    with pytest.raises(KernelError, match=name):
        KernelOptions.from_kwargs({name: value})


@settings(max_examples=10, deadline=None)
@given(ir=kernel_irs(), seed=st.integers(0, 2**16), batches=st.sampled_from(BATCH_CASES),
       entries=st.sampled_from([1, 4, 9]))
def test_tiled_backends_agree(ir, seed, batches, entries):
    """Partial tiles (7 x 8 in tiles of up to 3 x 3), symmetric, diag, broadcast batches."""
    kernel_batch, x1_batch, x2_batch = batches
    x1 = _inputs(ir, seed, *x1_batch, 7)
    x2 = _inputs(ir, seed + 1, *x2_batch, 8)
    with _tiled_calls() as spy:
        assert_backends_agree(ir, x1, x2, batch_shape=torch.Size(kernel_batch), options=_tiled(entries), seed=seed)
    assert spy.call_count >= 4, "K(x1, x2) and K(x1, x1), with and without gradients, tiled"


def test_tiled_acquisition_shape_and_batched_folds_agree():
    """K([6, 2, d], X) as in acquisition optimisation, and a batch of folds K(X_b, X_b) with batch_shape [3]."""
    ir = _shared_ir()
    with _tiled_calls() as spy:
        assert_backends_agree(ir, _inputs(ir, 0, 6, 2), _inputs(ir, 1, 7), options=_tiled(12), seed=1)
        folds = _inputs(ir, 2, 3, 8)
        assert_backends_agree(ir, folds, folds[..., :5, :], batch_shape=torch.Size([3]), options=_tiled(30), seed=2)
    assert spy.call_count == 8, "K(x1, x2) and K(x1, x1) of both, with and without gradients, tiled"


@settings(max_examples=6, deadline=None)
@given(ir=kernel_irs(max_features=3, max_terms=4, max_composites=3), seed=st.integers(0, 2**16),
       batch=st.sampled_from([(), (2,)]))
def test_tiled_gradcheck_including_identical_points(ir, seed, batch):
    """2 x 2 tiles of a 5 x 4 K: gradcheck (fast mode: each backward recomputes every tile)."""
    x1 = _inputs(ir, seed, *batch, 5)
    x1[..., 3, :] = x1[..., 1, :]  # a repeated point, in another tile than its twin
    x2 = _inputs(ir, seed + 1, *batch, 4)
    x2[..., 0, :] = x1[..., 0, :]
    with _tiled_calls() as spy:
        _gradcheck(_torch_kernel(ir, seed, batch, options=_tiled(4 * (2 if batch else 1))), x1, x2, fast_mode=True)
    assert spy.called


def test_tiled_marginal_log_likelihood_agrees():
    ir = _shared_ir()
    X = _inputs(ir, 3, 11)
    Y = torch.sin(6 * X.sum(-1, keepdim=True))
    values, grads = {}, {}
    with _tiled_calls() as spy:
        for name, kernel in build_kernels(ir, options=_tiled(16)).items():
            kernel.set_hyperparameters(random_hyperparameters(kernel, torch.Generator().manual_seed(4)))
            values[name] = _mll(kernel, X, Y)
            grads[name] = slot_gradients(kernel, values[name])
    assert spy.called
    assert_close(values["torch"], values["reference"], 1e-10, "tiled marginal log likelihood")
    assert_close(grads["torch"], grads["reference"], 1e-9, "tiled marginal log likelihood gradient")


def test_tiled_forward_saves_no_pair_tables_for_backward():
    """Memory: what autograd keeps from a tiled forward is the inputs and hyperparameters, nothing per pair."""
    ir = _shared_ir()
    x = _inputs(ir, 0, 40).requires_grad_(True)
    saved = {}
    for label, options in (("one piece", KernelOptions(tile_size=None)), ("tiled", _tiled(64))):
        kernel = _torch_kernel(ir, options=options)
        sizes = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t: sizes.append(t.numel()) or t, lambda t: t):
            matrix = kernel(x).to_dense()
        saved[label] = max(sizes)
        matrix.sum().backward()
    assert saved["one piece"] >= 40 * 41 // 2, "the untiled path keeps [*, pairs] tables (the check can fail)"
    assert saved["tiled"] <= x.numel(), saved
