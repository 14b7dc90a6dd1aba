"""Bad sources: each error class with its message, position and caret; fuzzing finds only KernelErrors."""

import warnings

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import kerneldsl as kd
from kerneldsl import KernelError, KernelNameError, KernelSyntaxError, KernelWarning
from strategies import programs

FEATURES = ["log_lr", "log_batch_size", "momentum", "1cycle_max_lr", "opt=adam", "opt=sgd"]
GROUPS = {"lr": ["log_lr", "1cycle_max_lr"], "opt": ["opt=adam", "opt=sgd"]}


def compile_error(source, features=FEATURES, groups=GROUPS):
    with pytest.raises(KernelError) as info:
        kd.compile(source, features=features, groups=groups, backend="reference")
    return info.value


# (source, error class, message fragment, line, column)
BAD = [
    ("lr +", KernelSyntaxError, "missing a kernel after the operator", 1, 4),
    ("lr opt", KernelSyntaxError, "missing operator between two terms", 1, 4),
    ("(lr + opt", KernelSyntaxError, "unclosed '('", 1, 7),
    ("k = (lr + opt\nx = lr\nk", KernelSyntaxError, "unclosed '(': expected ')'", 1, 5),  # not line 2
    ("k = lr * fj({log_lr, momentum\n\nk", KernelSyntaxError, "unclosed '{': expected '}'", 1, 13),
    ("k = (lr + (opt\n* lr)\nk", KernelSyntaxError, "unclosed '(': expected ')'", 1, 5),
    ("g = {h}\nh = {g}\nlr", KernelError, "groups refer to each other in a cycle: g -> h -> g", 1, 1),
    ("matern52({log_lr, momentum)", KernelSyntaxError, "unclosed '{'", 1, 27),
    ("lr)", KernelSyntaxError, "unexpected closing bracket", 1, 3),
    ("{log_lr + momentum}", KernelSyntaxError, "feature set holds feature names only", 1, 9),
    ("lr * 0.3", KernelSyntaxError, "numeric weight goes before its term", 1, 6),
    ("lr - opt", KernelSyntaxError, "'-' is not an operator", 1, 4),
    ("k = lr\nk2 = lr $ opt", KernelSyntaxError, "unexpected character '$'", 2, 9),
    ('"log_lr"', KernelSyntaxError, "quoted name can only stand inside a feature set", 1, 1),
    ("a = lr = opt", KernelSyntaxError, "'=' can only follow a plain name", 1, 8),
    ("materm52({log_lr})", KernelNameError, "unknown function 'materm52'", 1, 1),
    ("matern52({log_lrr})", KernelNameError, "unknown feature 'log_lrr'", 1, 11),
    ("regime * lr", KernelNameError, "unknown name 'regime'", 1, 1),
    ("lrs", KernelNameError, "unknown name 'lrs'", 1, 1),
    ("matern52({})", KernelError, "empty feature set", 1, 10),
    ("a = b\nb = a\na", KernelError, "cycle: a -> b -> a", 1, 1),
    ("a = lr\na = opt\na", KernelError, "'a' is defined twice (first on line 1)", 2, 1),
    ("lr = {log_lr}\nlr", KernelError, "already a group passed in groups=", 1, 1),
    ("log_lr = lr\nlog_lr", KernelError, "is a feature name", 1, 1),
    ("fj = lr\nfj", KernelError, "is a kernel function", 1, 1),
    ("matern52(lr, opt)", KernelError, "takes exactly one feature set or group, got 2", 1, 1),
    ("matern52()", KernelError, "got 0 arguments", 1, 1),
    ("matern52(lr + opt)", KernelError, "takes a feature set or group, not a kernel expression", 1, 10),
    ("r = lr * opt\nfj(r)", KernelError, "'r' is a kernel", 2, 4),
    ("0.5 * lr + opt", KernelError, "either every term of a sum has a numeric weight or none", 1, 12),
    ("0.5 * lr + 0.6 * opt", KernelError, "must add up to 1", 1, 1),
    ("kernel = 0.5 * lr", KernelError, "numeric weight can only stand on a term of a sum", 1, 10),
    ("matern52({log_lr, lr})", KernelError, "appears twice in this set", 1, 19),
    ("a = lr\nopt", KernelError, None, None, None),  # valid but warns: tested below
    ("a = lr", KernelError, "defines no kernel", 1, 7),
    ("", KernelError, "defines no kernel", 1, 1),
    ("lr\nopt = lr", KernelError, None, None, None),
    ("x = lr\nx + opt\nkernel = x", KernelError, "bare expression must be the last statement", 2, 1),
    ("kernel = lr\nopt * lr", KernelError, "both a final expression and a definition named 'kernel'", 2, 1),
]


@pytest.mark.parametrize("source, cls, fragment, line, column", [b for b in BAD if b[2] is not None])
def test_error_messages(source, cls, fragment, line, column):
    err = compile_error(source)
    assert type(err) is cls, f"{type(err).__name__}: {err}"
    assert fragment in str(err)
    assert (err.line, err.column) == (line, column), str(err)
    text = str(err).splitlines()
    assert text[0].startswith(f"line {line}, column {column}: ")
    source_line = source.splitlines()[line - 1] if source else ""
    assert text[1] == "    " + source_line
    assert text[2] == "    " + " " * (column - 1) + "^"


@pytest.mark.parametrize("source, suggestion", [
    ("materm52({log_lr})", "did you mean 'matern52'?"),
    ("matern52({log_lrr})", "did you mean 'log_lr'?"),
    ("lrs", "did you mean 'lr'?"),
    ("fj(opts)", "did you mean 'opt'?"),
])
def test_unknown_names_suggest_closest(source, suggestion):
    assert suggestion in str(compile_error(source))


def test_bad_python_arguments():
    with pytest.raises(KernelNameError, match="group 'lr' names 'log_lrr', which is neither a feature nor a group"
                                              "\ndid you mean 'log_lr'"):
        kd.compile("lr", features=FEATURES, groups={"lr": ["log_lrr"]})
    with pytest.raises(KernelError, match="listed twice"):
        kd.compile("a", features=["a", "a"])
    with pytest.raises(KernelError, match="must not be empty"):
        kd.compile("a", features=[])
    with pytest.raises(KernelError, match="has the name of a feature"):
        kd.compile("a", features=["a"], groups={"a": ["a"]})
    with pytest.raises(KernelError, match="unknown backend 'gpu'"):
        kd.compile("a", features=["a"], backend="gpu")
    with pytest.raises(KernelError, match="unknown compile option 'lengthscale_prio'.*\n.*lengthscale_prior"):
        kd.compile("a", features=["a"], lengthscale_prio=None)
    with pytest.raises(KernelSyntaxError, match="must be a string"):
        kd.compile(None, features=["a"])


def test_unclosed_bracket_says_where_the_parser_failed():
    err = compile_error("k = (lr + opt\nx = lr\nk")
    assert err.hint == "a newline inside brackets does not end the statement, so the parser only failed on line 2"


def message(cls, call) -> str:
    with pytest.raises(cls) as info:
        call()
    return str(info.value)


def test_bad_groups_and_batch_shape_arguments():
    assert message(KernelError, lambda: kd.compile("a", features=["a"], groups=["a"])) == (
        "groups must be a mapping from group name to a list of feature or group names, got list ['a']\n"
        "e.g. groups={'lr': ['log_lr', 'log_wd']}")
    assert message(KernelError, lambda: kd.compile("g", features=["a"], groups={"g": [5]})) == (
        "group 'g' must list feature or group names (strings), got 5")
    for bad, shown in [(3, "3 (int)"), ("3", "'3' (str)"), ([2.5], "[2.5] (list)"), (None, "None (NoneType)")]:
        assert message(KernelError, lambda: kd.compile("a", features=["a"], batch_shape=bad)) == (
            f"batch_shape must be a torch.Size or a list of non-negative ints, got {shown}\n"
            "e.g. batch_shape=torch.Size([3]) or batch_shape=[3] for a batch of 3 kernels")
    assert message(KernelError, lambda: kd.compile("a", features=["a"], batch_shape=[2, -1])) == (
        "batch_shape must not have negative sizes, got (2, -1)")
    assert kd.compile("a", features=["a"], batch_shape=(2, 3), backend="torch").batch_shape == (2, 3)


@pytest.mark.parametrize("source, groups", [
    ("g = {h, log_lr}\nh = {momentum}\nmatern52(g)", None),  # a source group lists one defined later
    ("matern52(g)", {"g": ["h", "log_lr"], "h": ["momentum"]}),  # Python groups list Python groups, any order
    ("h = {momentum}\nmatern52(g)", {"g": ["h", "log_lr"]}),  # a Python group lists a source group
])
def test_groups_may_list_groups_in_any_order(source, groups):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the listed group counts as used
        ir = kd.compile_ir(source, FEATURES, groups)
    assert [[ir.features[f] for f in t.features] for t in ir.terms] in (
        [["momentum", "log_lr"]], [["log_lr", "momentum"]])


def test_groups_listing_groups_errors():
    assert message(KernelError, lambda: kd.compile_ir("g", FEATURES, {"g": ["h"], "h": ["g"]})) == (
        "groups refer to each other in a cycle: g -> h -> g")
    assert message(KernelError, lambda: kd.compile_ir("g", FEATURES, {"g": ["lr", "log_lr"], "lr": ["log_lr"]})) == (
        "group 'g' lists feature 'log_lr' twice")
    assert message(KernelError, lambda: kd.compile_ir("g = {lr, log_lr}\nlr = {log_lr}\ng", FEATURES)) == (
        "line 1, column 10: feature 'log_lr' appears twice in this set\n    g = {lr, log_lr}\n             ^")
    assert message(KernelNameError, lambda: kd.compile_ir("g", FEATURES, {"g": ["lrr"], "lr": ["log_lr"]})) == (
        "group 'g' names 'lrr', which is neither a feature nor a group\ndid you mean 'lr'?")


def test_huge_names_are_shortened_in_messages():
    name = "x" * 1_000_000
    short = "x" * 40 + "…"
    err = compile_error(f"lr * {name}")
    assert str(err).splitlines()[0] == f"line 1, column 6: unknown name '{short}': not a definition, group or feature"
    assert str(err).splitlines()[1] == "    lr * " + "x" * 95 + "…"  # the source line, cut to 100 characters
    assert str(err).splitlines()[2] == "    " + " " * 5 + "^"
    assert len(str(err)) < 300
    err = compile_error(f"matern52({{{name}}})")
    assert str(err).splitlines()[0] == f"line 1, column 11: unknown feature '{short}'"
    assert message(KernelNameError, lambda: kd.compile("g", features=["a"], groups={"g": [name]})) == (
        f"group 'g' names '{short}', which is neither a feature nor a group")
    assert message(KernelError, lambda: kd.compile("a", features=["a", name, name])) == (
        f"feature '{short}' is listed twice in features")
    # Apostrophes are not quotes: a hint's prose stays whole.
    hint = "use backend='torch', move the model and inputs to a CUDA device, or run Triton's CPU interpreter"
    assert KernelError("m", hint=hint).hint == hint
    # A long line is shown around the caret.
    err = compile_error("lr + " * 40 + "nope" + " + lr" * 40)
    source_line, caret = str(err).splitlines()[1:3]
    assert len(source_line) == 4 + 1 + 100 + 1 and source_line.startswith("    …")
    assert source_line[caret.index("^"):].startswith("nope")


def test_unused_definition_warns_with_position():
    with pytest.warns(KernelWarning, match="line 1, column 1: definition 'a' is never used"):
        kd.compile("a = lr\nopt", features=FEATURES, groups=GROUPS, backend="reference")
    with pytest.warns(KernelWarning, match="group 'w' is never used"):
        kd.compile("w = {momentum}\nlr", features=FEATURES, groups=GROUPS, backend="reference")


def test_valid_program_does_not_warn():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        kd.compile("a = lr\nw = {momentum}\nkernel = a * w", features=FEATURES, groups=GROUPS, backend="reference")


def _mutate(source: str, data) -> str:
    """Delete, duplicate or insert characters at random places."""
    chars = list(source)
    for _ in range(data.draw(st.integers(1, 4))):
        op = data.draw(st.sampled_from(["delete", "insert", "swap"]))
        i = data.draw(st.integers(0, max(len(chars) - 1, 0)))
        if op == "delete" and chars:
            del chars[i]
        elif op == "insert":
            chars.insert(i, data.draw(st.sampled_from(list("(){},=+*#\"\n 0.5-$xfjk") + ["fj(", "{", "kernel ="])))
        elif chars:
            j = data.draw(st.integers(0, len(chars) - 1))
            chars[i], chars[j] = chars[j], chars[i]
    return "".join(chars)


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(programs(), st.data())
def test_mutated_sources_raise_only_kernel_errors(program, data):
    source = _mutate(program.source, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelWarning)
        try:
            kd.compile_ir(source, program.features, program.groups)
        except KernelError as err:
            assert "Traceback" not in str(err) and "lark" not in str(err).lower()
            assert err.line is None or err.line >= 1


@settings(max_examples=60, deadline=None)
@given(st.text(max_size=40))
def test_random_text_raises_only_kernel_errors(text):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", KernelWarning)
        try:
            kd.compile_ir(text, ["a", "b"], {"g": ["a"]})
        except KernelError:
            pass


CHOICE_FEATURES = ["lr", "opt_adam", "opt_sgd", "opt_rms-prop", "optimum"]


@pytest.mark.parametrize("source", ["categorical({opt})", "categorical(opt)", "lr * opt", "fj({lr, opt})"])
def test_a_choice_name_suggests_every_feature_of_the_choice(source):
    with pytest.raises(KernelNameError) as info:
        kd.compile(source, features=CHOICE_FEATURES)
    assert str(info.value).endswith('did you mean {opt_adam, opt_sgd, "opt_rms-prop"}? (every feature named opt_*)')
    with pytest.raises(KernelNameError, match=r"did you mean \{opt_adam, opt_sgd, \"opt_rms-prop\"\}\?"):
        kd.compile("categorical(g)", features=CHOICE_FEATURES, groups={"g": ["opt"]})


def test_a_long_family_is_cut():
    features = [f"c_{i}" for i in range(30)]
    with pytest.raises(KernelNameError, match=r"\{c_0, c_1, .*, c_11, … \(30 in all\)\}"):
        kd.compile("categorical(c)", features=features)


def test_all_is_the_built_in_group_of_every_feature():
    features = ["a", "b", "c"]
    assert kd.compile_ir("matern52(all)", features).terms[0].features == (0, 1, 2)
    assert kd.compile_ir("fj(all)", features).num_terms == 4  # additive over 3 features + the joint term
    assert kd.compile_ir("rest = {all}\nmatern52(rest)", features).terms[0].features == (0, 1, 2)
    # a definition or a groups= entry named all replaces it, and a feature named all keeps its name
    assert kd.compile_ir("all = {a, b}\nmatern52(all)", features).terms[0].features == (0, 1)
    assert kd.compile_ir("matern52(all)", features, {"all": ["c"]}).terms[0].features == (2,)
    assert kd.compile_ir("matern52(all)", ["a", "all"]).terms[0].features == (1,)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the built-in group unused is no warning
        kd.compile_ir("matern52(a)", features)


def test_all_without_features_is_a_clear_error():
    from kerneldsl.compiler.explain import infer_features

    with pytest.raises(KernelNameError) as info:
        infer_features("k = matern52(all) * a\nk")
    assert (info.value.line, info.value.column) == (1, 14)
    assert "'all' is the built-in group of every feature, and the features are not known here" in str(info.value)
    assert infer_features("all = {a, b}\nmatern52(all) * c") == ["a", "b", "c"]
