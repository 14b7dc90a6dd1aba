"""gpytorch's Kernel conventions on every backend: ``hyperparameters()``, batch indexing, ``expand_batch``.

``hyperparameters()`` is gpytorch's generator of raw ``Parameter``s (what optimisers take);
the readable view is ``get_hyperparameters()``. ``k[i]``, ``k[i, j]``, tensor indices,
``k.expand_batch(...)`` and indexing a lazily evaluated ``k(X)`` index the batch
dimensions of the parameters only. The triton backend runs under Triton's CPU interpreter.
"""

from __future__ import annotations

import pytest
import torch
from gpytorch.lazy import LazyEvaluatedKernelTensor

import kerneldsl as kd
from harness import random_hyperparameters


SOURCE = "a = matern52({x, y}) * categorical({z})\na + rbf({y})"
FEATURES = ["x", "y", "z"]
BACKENDS = ["reference", "torch", "auto", "triton", "cpu"]
F64 = torch.float64


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    if request.param == "triton":
        pytest.importorskip("triton")
        monkeypatch.setenv("TRITON_INTERPRET", "1")
    return request.param


def kernel(backend: str, batch_shape=(), seed: int = 0):
    k = kd.compile(SOURCE, FEATURES, backend=backend, batch_shape=batch_shape).to(F64)
    k.set_hyperparameters(random_hyperparameters(k, torch.Generator().manual_seed(seed)))
    return k


def points(*shape: int) -> torch.Tensor:
    return torch.rand(*shape, len(FEATURES), generator=torch.Generator().manual_seed(1), dtype=F64)


def dense(k, x1, x2=None) -> torch.Tensor:
    return k(x1, x2).to_dense().detach()


def test_hyperparameters_is_gpytorchs_generator_of_parameters(backend):
    k = kernel(backend)
    params = list(k.hyperparameters())
    assert params and all(isinstance(p, torch.nn.Parameter) for p in params)
    assert {id(p) for p in params} == {id(p) for p in k.parameters()}
    before = k.get_hyperparameters()
    optimizer = torch.optim.Adam(k.hyperparameters(), lr=0.1)  # failed with "one of the params is str"
    x = points(4)
    dense_value = k(x).to_dense()
    dense_value.sum().backward()
    optimizer.step()
    after = k.get_hyperparameters()
    assert list(after) == list(before)
    assert any(not torch.allclose(after[n], before[n]) for n in before)


def test_batch_index_of_a_kernel(backend):
    k = kernel(backend, batch_shape=(3, 2))
    x = points(3, 2, 5)
    K = dense(k, x)
    values = k.get_hyperparameters()

    every = slice(None)
    # (kernel index, the same batch elements as an index of the data, new batch shape)
    cases = [(1, (1,), (2,)), ((2, 1), (2, 1), ()), ((every, 1), (every, 1), (3,)),
             ((..., 0), (every, 0), (3,)), ((-1, ...), (-1,), (2,))]
    for index, data_index, batch in cases:
        sub = k[index]
        assert sub.batch_shape == batch, index
        torch.testing.assert_close(dense(sub, x[data_index]), K[data_index], msg=f"k[{index}]")
        for name, value in sub.get_hyperparameters().items():
            torch.testing.assert_close(value, values[name][data_index], msg=f"k[{index}] {name}")

    rows = torch.tensor([2, 0, 1]).unsqueeze(-1)
    cols = torch.tensor([1, 0]).unsqueeze(-2)
    sub = k[rows, cols]
    assert sub.batch_shape == (3, 2)
    torch.testing.assert_close(dense(sub, x[rows, cols]), K[rows, cols])

    torch.testing.assert_close(dense(k, x), K)  # the original is untouched
    with pytest.raises(IndexError, match="does not fit a kernel with 2 batch dimension"):
        k[0, 0, 0]
    assert kernel(backend)[0].batch_shape == ()  # gpytorch: an unbatched kernel indexes to itself


def test_indexed_kernel_is_independent(backend):
    """The copy's readable view, setter and training act on its own parameters (reference: its own module tree)."""
    k = kernel(backend, batch_shape=(2,))
    x = points(4)
    name = k.ir.lengthscale_names[0]
    original = k.get_hyperparameters()
    sub = k[1]
    sub.set_hyperparameters({name: 0.3, "outputscale": 2.0})
    assert float(sub.get_hyperparameters()[name]) == pytest.approx(0.3)
    torch.testing.assert_close(k.get_hyperparameters()[name], original[name])
    expected = kernel(backend, batch_shape=(2,))
    expected.set_hyperparameters({name: 0.3, "outputscale": 2.0})
    torch.testing.assert_close(dense(sub, x), dense(expected, x)[1])
    assert "kernel = 2 *" in sub.describe()
    optimizer = torch.optim.Adam(sub.hyperparameters(), lr=0.1)
    sub(x).to_dense().sum().backward()
    optimizer.step()
    torch.testing.assert_close(k.get_hyperparameters()[name], original[name])


def test_expand_batch(backend):
    k = kernel(backend, batch_shape=(2,))
    x = points(3, 2, 4)
    expanded = k.expand_batch(3, 2)
    assert expanded.batch_shape == (3, 2) and k.batch_shape == (2,)
    assert k.expand_batch(torch.Size([2])) is k
    torch.testing.assert_close(dense(expanded, x), dense(k, x))
    for name, value in expanded.get_hyperparameters().items():
        assert value.shape == (3, 2), name
    # Every batch element owns its parameters: the expanded kernel trains.
    assert all(p.is_contiguous() for p in expanded.parameters())
    optimizer = torch.optim.Adam(expanded.hyperparameters(), lr=0.1)
    expanded(x).to_dense()[0].sum().backward()
    optimizer.step()
    after = expanded.get_hyperparameters()["outputscale"]
    assert not torch.allclose(after[0], after[1])
    assert kernel(backend).expand_batch(4).batch_shape == (4,)
    with pytest.raises(kd.KernelError, match=r"cannot expand a kernel with batch shape \(2,\) to batch shape \(3,\)"):
        k.expand_batch(3)


def test_index_a_lazily_evaluated_kernel_tensor(backend):
    """gpytorch indexes ``k(X)`` without evaluating it: by indexing the kernel and the inputs."""
    k = kernel(backend, batch_shape=(3, 2))
    x = points(3, 2, 5)
    lazy = k(x)
    assert isinstance(lazy, LazyEvaluatedKernelTensor)
    K = lazy.to_dense().detach()
    torch.testing.assert_close(k(x)[1].to_dense(), K[1])
    torch.testing.assert_close(k(x)[2, 0].to_dense(), K[2, 0])
    torch.testing.assert_close(k(x)[:, 1, :3, 1:].to_dense(), K[:, 1, :3, 1:])
    # A kernel batch that broadcasts against the inputs' batch: gpytorch expands it, then indexes.
    k1 = kernel(backend, batch_shape=(2,))
    torch.testing.assert_close(k1(x)[2, 1].to_dense(), dense(k1, x)[2, 1])



def test_rebatching_a_module_tree_with_a_shared_node():
    """On ``reference``, indexing and expanding rebatch every module of the tree, a node used twice
    (a second parent's ``SharedKernel`` holds no parameters of its own) and products included."""
    k = kd.compile("a = rbf({x})\na * matern52({y}) + a + categorical({z})", FEATURES, backend="reference",
                   batch_shape=(3,)).to(F64)
    k.set_hyperparameters(random_hyperparameters(k, torch.Generator().manual_seed(0)))
    x = points(3, 4)
    K = dense(k, x)
    for index, batch in ((slice(1, None), (2,)), (2, ())):
        sub = k[index]
        assert sub.batch_shape == batch
        torch.testing.assert_close(dense(sub, x[index]), K[index])
    expanded = k.expand_batch(2, 3)
    assert expanded.batch_shape == (2, 3) and all(p.shape[:2] == (2, 3) for p in expanded.parameters())
    torch.testing.assert_close(dense(expanded, x), K.expand(2, 3, 4, 4))
