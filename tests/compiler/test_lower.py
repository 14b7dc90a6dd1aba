"""Lowering: sugar, flattening, sharing, levels and parameter names of the intermediate form."""

import subprocess
import sys

import pytest

import kerneldsl as kd
from kerneldsl.compiler.ir import Product, Sum

FEATURES = ["e", "b", "a1", "a2", "w", "r1", "r2"]
GROUPS = {"lr": ["a1", "a2"], "widths": ["r1", "r2"]}


def ir_of(source, features=FEATURES, groups=GROUPS):
    return kd.compile_ir(source, features, groups)


def test_card_example():
    ir = kd.compile_ir("(arch_a + arch_b) * regime + joint", ["x", "y", "z", "u"],
                       {"arch_a": ["x"], "arch_b": ["y"], "regime": ["z"], "joint": ["x", "y", "z", "u"]})
    assert [t.kind for t in ir.terms] == ["matern52"] * 4
    assert [t.features for t in ir.terms] == [(0,), (1,), (2,), (0, 1, 2, 3)]
    assert ir.weight_names == ("(arch_a+arch_b).weight[arch_a]", "(arch_a+arch_b).weight[arch_b]",
                               "kernel.weight[(arch_a+arch_b)*regime]", "kernel.weight[joint]")
    assert ir.lengthscale_names[-1] == "joint.lengthscale[u]"
    root = ir.node(ir.root)
    assert isinstance(root, Sum) and len(root.children) == 2
    assert [len(level) for level in ir.levels] == [1, 1, 1]


def test_sums_flatten_into_one_nary_sum():
    ir = ir_of("e + (b + (w + rbf({a1})))")
    assert len(ir.nodes) == 1
    (root,) = ir.nodes
    assert isinstance(root, Sum) and len(root.children) == 4 and len(root.weights) == 4


def test_products_flatten_but_sums_inside_products_stay():
    ir = ir_of("e * (b * (w + a1))")
    root = ir.node(ir.root)
    assert isinstance(root, Product) and len(root.children) == 3
    assert isinstance(ir.node(root.children[2]), Sum)


def test_named_definitions_are_shared_not_flattened():
    ir = ir_of("s = e + b\nkernel = s + w + s * w")
    s = dict(ir.definitions)["s"]
    root = ir.node(ir.root)
    assert root.children[0] == s  # s stays a node of its own
    product = ir.node(root.children[2])
    assert isinstance(product, Product) and product.children[0] == s  # the same node, not a copy
    assert ir.num_terms == 3 and ir.num_lengthscales == 3  # e, b, w once each


def test_fj_is_additive_plus_joint_in_one_sum():
    ir = ir_of("fj(lr)")
    (root,) = ir.nodes
    assert [ir.terms[c].features for c in root.children] == [(2,), (3,), (2, 3)]
    assert ir.weight_names == ("kernel.weight[matern52(a1)]", "kernel.weight[matern52(a2)]", "kernel.weight[lr]")


def test_fj_and_additive_of_one_feature_are_one_term():
    assert ir_of("fj({w})").num_terms == 1 and not ir_of("fj({w})").nodes
    assert ir_of("additive({w})").num_terms == 1


def test_additive_over_group():
    ir = ir_of("additive(widths)")
    assert [t.features for t in ir.terms] == [(5,), (6,)]
    assert ir.weight_names == ("kernel.weight[matern52(r1)]", "kernel.weight[matern52(r2)]")


def test_bare_group_is_shared_default_kernel():
    ir = ir_of("lr * e + lr")
    assert [t.label for t in ir.terms] == ["lr", "e"]
    assert ir.terms[0].kind == "matern52"


def test_source_groups_expand_inside_sets():
    ir = ir_of("sched = {a1, a2}\nkernel = matern32({sched, w})")
    assert ir.terms[0].features == (2, 3, 4) and ir.terms[0].kind == "matern32"


def test_fixed_weights_multiply_when_flattened():
    ir = ir_of("0.5 * e + 0.5 * (0.2 * b + 0.8 * w)")
    (root,) = ir.nodes
    assert root.fixed == (0.5, 0.1, 0.4) and root.weights == ()
    assert ir.num_weights == 0


def test_learned_sum_inside_fixed_sum_stays_nested():
    ir = ir_of("0.5 * e + 0.5 * (b + w)")
    assert len(ir.nodes) == 2


def test_hamming_alias_and_kinds():
    ir = ir_of("hamming({a1, a2}) * categorical({w}) * matern12(e) * rbf(b) * matern32(w)")
    assert [t.kind for t in ir.terms] == ["categorical", "categorical", "matern12", "rbf", "matern32"]


def test_levels_are_topological():
    ir = ir_of("s = fj(lr) * e\nt = s + fj(widths)\nkernel = t * s + b")
    computed = set(range(ir.num_terms))
    for level in ir.levels:
        for node_id in level:
            assert set(ir.node(node_id).children) <= computed
        computed |= set(level)
    assert ir.root == max(computed)


def test_spans_reach_the_ir():
    ir = ir_of("# comment\nk = e *\n  matern32({b})\nkernel = k")
    assert ir.terms[1].span.line == 3 and ir.terms[1].span.column == 3


def test_parameter_names_unique_and_fingerprint_ignores_labels():
    ir = ir_of("e + e * b + rbf(b) + rbf(b)")
    assert len(set(ir.lengthscale_names)) == ir.num_lengthscales
    assert "rbf(b)#2.lengthscale[b]" in ir.lengthscale_names
    same_structure = kd.compile_ir("u + u * v + rbf(v) + rbf(v)", ["u", "v", *FEATURES[2:]], {})
    assert ir.fingerprint() != kd.compile_ir("e + b", FEATURES, GROUPS).fingerprint()
    # Different feature names, same columns: only labels differ.
    renamed = kd.compile_ir("e + e * b + rbf(b) + rbf(b)", ["e", "b", "q1", "q2", "w", "r1", "r2"], {})
    assert renamed.fingerprint() == ir.fingerprint()
    assert same_structure.num_terms == ir.num_terms


def test_explain_cli(tmp_path):
    path = tmp_path / "k.kernel"
    path.write_text("regime = fj(lr) * e\nkernel = regime + w\n")
    run = subprocess.run([sys.executable, "-m", "kerneldsl.cli", "explain", str(path),
                          "--features", ",".join(FEATURES), "--group", "lr=a1,a2"],
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert "regime = fj(lr) * e" in run.stdout
    assert "terms (5):" in run.stdout and "level 1:" in run.stdout
    assert "parameters: 6 lengthscales + 5 sum weights + 1 outputscale = 12" in run.stdout
    path.write_text("kernel = fj(lrr)\n")
    run = subprocess.run([sys.executable, "-m", "kerneldsl.cli", "explain", str(path), "--features", "a1,a2",
                          "--group", "lr=a1,a2"], capture_output=True, text=True)
    assert run.returncode == 1
    assert run.stderr.startswith("KernelNameError: line 1, column 13: unknown group or feature 'lrr'")
    assert "did you mean 'lr'?" in run.stderr and "Traceback" not in run.stderr
