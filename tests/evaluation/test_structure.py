"""The structure picture of a fitted kernel, and the ``fit`` command that draws it."""

import textwrap

import pytest
import torch

import kerneldsl as kd
from kerneldsl.cli import main as cli_main
from kerneldsl.compiler.priors import DimensionScaledLogNormal, product_dims
from kerneldsl.evaluation.structure import _layout, named_hyperparameters, plot_structure

FEATURES = ["a", "b", "c", "d"]
SOURCE = textwrap.dedent("""
    pair = matern52({a, b}) * fj({c, d})
    kernel = pair + rbf(a) + pair * matern32(d)
""")


@pytest.mark.parametrize("backend", ["torch", "reference"])
def test_picture_is_written_and_draws_each_definition_once(tmp_path, backend):
    kernel = kd.compile(SOURCE, FEATURES, backend=backend)
    values = named_hyperparameters(kernel)
    kernel.set_hyperparameters({name: 0.1 + i / 10 for i, name in enumerate(values) if ".lengthscale[" in name})
    path = tmp_path / "structure.png"
    plot_structure(kernel, path)
    assert path.stat().st_size > 10_000
    rows = _layout(kernel.ir, kernel.sum_weights().tolist())
    references = [r for r in rows if r.reference]
    assert len(references) == 1 and dict(kernel.ir.definitions)["pair"] == references[0].node
    drawn_terms = sorted(r.node for r in rows if r.node < kernel.ir.num_terms)
    assert drawn_terms == list(range(kernel.ir.num_terms))  # every base term once


def test_dimension_scaled_lognormal_counts_term_or_product_features():
    ir = kd.compile_ir(SOURCE, FEATURES)
    dims = {t.label: d for t, d in zip(ir.terms, product_dims(ir))}
    assert dims["kernel/rbf(a)"] == 1  # a summand on its own
    assert dims["pair/matern52(a, b)"] == 4  # times fj({c, d}) (and, in the last summand, matern32(d))
    assert dims["pair/matern52(c)"] == 4  # times matern52({a, b}) and, in the last summand, matern32(d)
    assert dims["pair/matern52(d)"] == 3  # its own feature d and a, b: matern32(d) adds no new feature
    assert dims["kernel/matern32(d)"] == 4  # times pair
    term = DimensionScaledLogNormal("term").term_dims(ir)
    assert term == [len(t.features) for t in ir.terms]
    x = torch.rand(ir.num_lengthscales, dtype=torch.float64) + 0.1
    for rule in (DimensionScaledLogNormal("term"), DimensionScaledLogNormal("product")):
        priors = {}
        for backend in ("torch", "reference"):
            k = kd.compile(SOURCE, FEATURES, backend=backend, lengthscale_prior=rule).double()
            k.set_hyperparameters(dict(zip(ir.lengthscale_names, x.tolist())))
            priors[backend] = sum(p.log_prob(c(m)).sum() for name, m, p, c, _ in k.named_priors()
                                  if "lengthscale" in name)
        assert priors["torch"].item() == pytest.approx(priors["reference"].item(), rel=1e-10)


SPACE_MODULE = textwrap.dedent("""
    import kerneldsl as kd

    space = kd.Space([kd.Scalar("a", 0.0, 1.0), kd.Scalar("b", 1e-3, 1.0, log=True), kd.Choice("c", ["x", "y"])])
    feature_chain = kd.Chain(space, [kd.PassThrough("a"), kd.Log("b"), kd.OneHot("c")])
""")


def test_fit_command_prints_the_kernel_and_draws_it(tmp_path, capsys):
    import json
    import math

    namespace: dict = {}
    exec(SPACE_MODULE, namespace)
    space = namespace["space"]
    X = space.sample(10, seed=0)
    lines = [json.dumps({"trial": i, "config": c, "result": {"loss": 1 + math.sin(4 * c["a"])}})
             for i, c in enumerate(space.to_configs(X))]
    (tmp_path / "sweep.jsonl").write_text("\n".join(lines) + "\n")
    (tmp_path / "space.py").write_text(SPACE_MODULE)
    (tmp_path / "k.kernel").write_text("kernel = matern52({a, log_b}) + categorical({c_x, c_y})\n")
    plot = tmp_path / "s.png"
    assert cli_main(["fit", "--data", str(tmp_path / "sweep.jsonl"), "--space-module", str(tmp_path / "space.py"),
                     "--kernel", str(tmp_path / "k.kernel"), "--log", "--plot", str(plot), "--restarts", "1",
                     "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "fitted on 10 trials with 'loss'" in out and "matern52(a=" in out and "categorical(c_x=" in out
    assert plot.stat().st_size > 10_000


def test_picture_is_a_figure_and_leaves_the_callers_backend_alone(tmp_path, monkeypatch):
    import matplotlib
    from matplotlib.figure import Figure

    monkeypatch.setitem(matplotlib.rcParams, "backend", "svg")
    kernel = kd.compile(SOURCE, FEATURES, backend="torch")
    fig = plot_structure(kernel, tmp_path / "s.png")
    assert isinstance(fig, Figure) and (tmp_path / "s.png").stat().st_size > 10_000
    assert plot_structure(kernel) is not fig  # without a path: only the figure
    assert matplotlib.get_backend() == "svg"
