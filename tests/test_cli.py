"""The command line's ``explain`` (features from --features, --space-module or the source) and ``--version``."""

from importlib import metadata
from pathlib import Path

import pytest

import kerneldsl as kd
from kerneldsl.cli import main

REPO = Path(__file__).resolve().parent.parent
HANDS_ON = REPO / "examples" / "mnist_hands_on.kernel"
MNIST_SPACE = REPO / "examples" / "mnist_space.py"


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_version(capsys):
    assert kd.__version__ == metadata.version("kerneldsl")
    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0
    assert capsys.readouterr().out == f"kerneldsl {kd.__version__}\n"


def test_version_without_package_metadata(monkeypatch):
    def missing(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "version", missing)
    assert kd._package_version() == "0+unknown"


def test_explain_takes_the_features_of_a_space_module(capsys):
    code, out, err = run(capsys, "explain", HANDS_ON, "--space-module", MNIST_SPACE)
    assert code == 0, err
    from kerneldsl.space_module import load_space_module

    names = load_space_module(MNIST_SPACE).feature_chain.feature_names
    assert f"features ({len(names)}): {', '.join(names)}" in out
    assert "inferred" not in out


def test_explain_infers_the_features_from_the_source(tmp_path, capsys):
    path = tmp_path / "k.kernel"
    path.write_text('g = {h, a}\nh = {b, "1x"}\nk = fj(g) * lr + c\nk\n')
    code, out, err = run(capsys, "explain", path, "--group", "lr=d,e")
    assert code == 0, err
    assert out.splitlines()[0] == ("# features inferred from the names the source uses (set them with --features "
                                   "or --space-module): a, b, 1x, d, e, c")
    assert "features (6): a, b, 1x, d, e, c" in out
    # An error of the source is reported as it is, not as a missing feature list.
    path.write_text("k = (a + b\nk\n")
    code, out, err = run(capsys, "explain", path)
    assert code == 1 and err.startswith("KernelSyntaxError: line 1, column 5: unclosed '(': expected ')'")


def test_explain_reports_bad_options(tmp_path, capsys):
    (tmp_path / "empty_space.py").write_text("x = 1\n")
    code, _, err = run(capsys, "explain", HANDS_ON, "--space-module", tmp_path / "empty_space.py")
    assert code == 1 and "needs a top-level `space = kerneldsl.Space([...])`" in err
    with pytest.raises(SystemExit) as info:
        main(["explain", str(HANDS_ON), "--features", "a", "--space-module", str(MNIST_SPACE)])
    assert info.value.code == 2
    assert "argument --space-module: not allowed with argument --features" in capsys.readouterr().err


def test_every_command_reports_bad_input_in_one_line(tmp_path, capsys):
    missing = tmp_path / "missing.kernel"
    for argv in (["explain", missing], ["bench", missing, "--features", "a"],
                 ["fit", "--data", missing, "--space-module", MNIST_SPACE, "--kernel", missing]):
        code, _, err = run(capsys, *argv)
        assert code == 2 and err == f"error: cannot read {'kernel file ' * (argv[0] != 'explain')}{missing}: " \
                                    "No such file or directory\n", argv
    code, _, err = run(capsys, "cv", "--data", missing, "--space-module", MNIST_SPACE, "--kernel", HANDS_ON,
                       "--n", "4,x")
    assert code == 1 and err == "OptionError: --n takes comma-separated integers, got '4,x'\n"
    code, _, err = run(capsys, "bench", HANDS_ON, "--space-module", MNIST_SPACE, "--batch", "0")
    assert code == 1 and err == "OptionError: --batch takes comma-separated positive integers, got '0'\n"


def help_text(capsys, *command: str) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert info.value.code == 0
    return capsys.readouterr().out


def test_help_is_plain_text_and_every_command_has_a_description_and_examples(capsys):
    top = help_text(capsys)
    assert "``" not in top and "A kernel language for hands-on Bayesian optimisation" in top
    commands = top[top.index("{") + 1:top.index("}")].split(",")
    assert commands == ["explain", "features", "cv", "fit", "bench"]
    for command in commands:
        text = help_text(capsys, command)
        description = text.split("\n\n")[1]  # after the usage
        assert not description.startswith(("positional arguments", "options")), (command, text)
        assert "``" not in text and "Example" in text, command
        example = text[text.index("Example"):].replace("\\\n", " ")
        assert f"kerneldsl {command} " in example, command
    fit = help_text(capsys, "fit")
    assert "Fit one SingleTaskGP" in fit and "--space-module examples/mnist_space.py" in fit
    assert "kerneldsl fit --data" in fit and "kerneldsl cv --data" not in fit


TOY_SPACE = '''
import kerneldsl as kd

space = kd.Space([kd.Choice("opt", ["adam", "sgd"]), kd.Scalar("lr", 1e-4, 1.0, log=True),
                  kd.Int("epochs", 1, 30, log=True), kd.Scalar("wd", 0.0, 0.1)])
'''
TOY_CHAIN = '''
feature_chain = kd.Chain(space, [kd.OneHot("opt"), kd.Log("lr", "epochs"),
                                 kd.Add("log_steps", "log_lr", "log_epochs"), kd.PassThrough("wd")])
'''


def test_features_lists_the_chain_with_where_each_feature_comes_from(tmp_path, capsys):
    (tmp_path / "toy.py").write_text(TOY_SPACE + TOY_CHAIN)
    code, out, err = run(capsys, "features", "--space-module", tmp_path / "toy.py")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith(f"# 6 features of {tmp_path / 'toy.py'}: feature_chain;")
    assert [line.split()[0] for line in lines[1:]] == ["opt_adam", "opt_sgd", "log_lr", "log_epochs", "log_steps",
                                                        "wd"]
    assert lines[1].split(None, 1)[1] == "opt == 'adam'  (OneHot; parameter opt)"
    assert lines[3].split(None, 1)[1] == "log(lr)  (Log; parameter lr)"
    assert lines[5].split(None, 1)[1] == "log_lr + log_epochs  (Add; parameters lr, epochs)"
    # Without a feature_chain (or with --default): the default chain of the space, as a Study builds it.
    (tmp_path / "bare.py").write_text(TOY_SPACE)
    for argv in (["--space-module", tmp_path / "bare.py"], ["--space-module", tmp_path / "toy.py", "--default"]):
        code, out, err = run(capsys, "features", *argv)
        assert code == 0, err
        lines = out.splitlines()
        assert "the default feature chain of `space`" in lines[0]
        assert [line.split()[0] for line in lines[1:]] == ["log_lr", "log_epochs", "wd", "opt_adam", "opt_sgd"]
    (tmp_path / "empty.py").write_text("x = 1\n")
    code, _, err = run(capsys, "features", "--space-module", tmp_path / "empty.py")
    assert code == 1 and "needs a top-level `space = kerneldsl.Space([...])`" in err


def test_the_built_in_group_all_from_the_command_line(tmp_path, capsys):
    (tmp_path / "toy.py").write_text(TOY_SPACE + TOY_CHAIN)
    (tmp_path / "all.kernel").write_text("matern52(all) * categorical({opt_adam, opt_sgd})\n")
    code, out, err = run(capsys, "explain", tmp_path / "all.kernel", "--space-module", tmp_path / "toy.py")
    assert code == 0, err
    assert "  [0] matern52(opt_adam, opt_sgd, log_lr, log_epochs, log_steps, wd)" in out
    code, out, err = run(capsys, "explain", tmp_path / "all.kernel")
    assert code == 1 and "'all' is the built-in group of every feature, and the features are not known" in err
    (tmp_path / "opt.kernel").write_text("matern52(all) * categorical(opt)\n")
    code, out, err = run(capsys, "explain", tmp_path / "opt.kernel", "--space-module", tmp_path / "toy.py")
    assert code == 1 and err.rstrip().endswith("did you mean {opt_adam, opt_sgd}? (every feature named opt_*)")


def test_bench_in_a_log_prints_a_line_per_step_and_warns_of_the_reference_memory(tmp_path, capsys, monkeypatch):
    import kerneldsl.bench as bench

    (tmp_path / "k.kernel").write_text("matern52({a, b}) + rbf(c)\n")
    monkeypatch.setattr(bench, "REFERENCE_MEMORY_WARNING", 10_000)  # bytes: n = 8 at batch 2 needs about 27 KB
    code, out, err = run(capsys, "bench", tmp_path / "k.kernel", "--features", "a,b,c", "--n", "8", "--batch", "2",
                         "--repeats", "2", "--no-memory", "--backends", "reference,torch", "--threads", "1")
    assert code == 0, err
    lines = err.splitlines()
    assert lines[0] == ("MemoryWarning: the reference backend (gpytorch's module tree) needs about 0.0 GiB for the "
                        "benchmark's K(X, X) and MLL steps at n = 8, batch 2 (2 base terms x 13 tables of batch x n "
                        "x n values); the torch and cpu backends need a fraction of it")
    steps = [line.split(" done;")[0] for line in lines[1:]]
    assert steps == ["bench: warm-up of reference, batch 2", "bench: warm-up of torch, batch 2",
                     "bench: repeat 1/2", "bench: repeat 2/2"]
    assert lines[-1].split(" done; ")[1].startswith("4/4 steps, ")
    assert "reference      2" in out
    monkeypatch.setattr(bench, "REFERENCE_MEMORY_WARNING", 2 * 2**30)
    assert bench.reference_memory_bytes(kd.compile_ir("matern52({a, b}) + rbf(c)", ["a", "b", "c"]), 381, 20) \
        == 13 * 2 * 20 * 381 * 381 * 8
