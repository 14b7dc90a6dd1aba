"""``kerneldsl bench``: the table, --json, --space-module, peak memory, skipped backends and bad input.

Tiny cases only (n = 8, one repeat): these tests check what is reported, never how fast.
"""

import json

import pytest
import torch

import kerneldsl as kd
from kerneldsl.bench import BenchError, bench, make_step, peak_memory_mib
from kerneldsl.cli import main as cli_main

SOURCE = "matern52({a, b}) * laplace({c}) + categorical({c})\n"
SPACE_MODULE = """
import kerneldsl as kd

space = kd.Space([kd.Scalar("a", 0.0, 1.0), kd.Scalar("b", 0.0, 1.0), kd.Scalar("c", 0.0, 1.0)])
feature_chain = kd.Chain(space, [kd.PassThrough("a"), kd.PassThrough("b"), kd.PassThrough("c")])
"""
TINY = ["--n", "8", "--repeats", "1", "--threads", "1", "--no-memory"]


@pytest.fixture
def kernel_file(tmp_path):
    path = tmp_path / "toy.kernel"
    path.write_text(SOURCE)
    return path


def test_table_has_every_backend_and_batch_with_speedups(kernel_file, capsys):
    assert cli_main(["bench", str(kernel_file), "--features", "a,b,c", "--batch", "1,2",
                     "--device", "cpu", *TINY]) == 0
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["reference"], ["torch"], ["cpu"])]
    assert [(r[0], r[1]) for r in rows] == [(b, batch) for batch in "12" for b in ("reference", "torch", "cpu")]
    for row in rows:
        assert all(float(x) > 0 for x in row[2:5]), row  # forward, fwd+bwd, MLL milliseconds
        assert row[5:7] == ["-", "-"]  # --no-memory
        assert all(x.endswith("x") for x in row[7:10])
    assert [r[7:10] for r in rows if r[0] == "reference"] == [["1.00x"] * 3] * 2
    assert "triton     skipped: triton kernels run on CUDA devices only" in out
    assert "n=8, float64, cpu, 1 thread," in out and "3 features, 3 base terms" in out


def test_json_holds_every_sample_and_the_skipped_backend(kernel_file, tmp_path, capsys):
    (tmp_path / "toy_space.py").write_text(SPACE_MODULE)
    assert cli_main(["bench", str(kernel_file), "--space-module", str(tmp_path / "toy_space.py"),
                     "--batch", "2", "--backends", "torch,reference", "--device", "cpu", "--json", *TINY]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["n"] == 8 and result["dtype"] == "float64" and result["device"] == "cpu"
    assert result["baseline"] == "torch" and result["skipped"] == []
    assert [(c["backend"], c["batch"]) for c in result["cells"]] == [("torch", 2), ("reference", 2)]
    for cell in result["cells"]:
        assert set(cell["median_ms"]) == {"forward", "forward+backward", "mll"}
        assert all(len(v) == 1 and v[0] > 0 for v in cell["samples_ms"].values())
        assert cell["peak_mib"] == {"train": None, "mll": None}
    assert result["cells"][0]["speedup"] == {"forward": 1.0, "forward+backward": 1.0, "mll": 1.0}


def test_peak_memory_is_measured_in_a_fresh_process():
    ir = kd.compile_ir(SOURCE, ["a", "b", "c"])
    peak = peak_memory_mib(ir, "torch", ["train", "mll"], n=200, dtype=torch.float64, device="cpu")
    assert set(peak) == {"train", "mll"}
    # K(X, X) and dL/dK alone are 200 x 200 float64 = 0.3 MiB each
    assert all(0.3 < value < 200 for value in peak.values()), peak


def test_every_workload_runs_forward_and_backward_batched():
    ir = kd.compile_ir(SOURCE, ["a", "b", "c"])
    for workload in ("train", "mll", "acqf"):
        forward, forward_backward = make_step(ir, "torch", workload, 6, torch.float64, "cpu", batch=3)
        forward()
        forward_backward()
    with pytest.raises(BenchError, match="unknown workload 'fit'"):
        make_step(ir, "torch", "fit", 6, torch.float64, "cpu")


@pytest.mark.parametrize("args, message", [
    (["--features", "a,b,c", "--backends", "reference,troch"], "unknown backend 'troch': did you mean 'torch'?"),
    (["--features", "a,b,c", "--batch", "1,0"], "--batch takes comma-separated positive integers, got '1,0'"),
    (["--features", "a,b,c", "--batch", "x"], "--batch takes comma-separated positive integers, got 'x'"),
    (["--features", "a,b,c", "--n", "1"], "--n must be at least 2 points, got 1"),
    (["--features", "a,b,c", "--dtype", "float16"], "unknown dtype 'float16': use float64 or float32"),
    (["--features", "a,b,c", "--device", "tpu"], "unknown device 'tpu'"),
    (["--features", "a,b,c", "--backends", "triton", "--device", "cpu"], "no backend can run here: triton: "),
    (["--features", "a,b"], "unknown feature 'c'"),
    (["--space-module", "no_such_module_xyz"], "cannot import space module 'no_such_module_xyz'"),
])
def test_bad_input_is_a_clear_error(kernel_file, capsys, args, message):
    assert cli_main(["bench", str(kernel_file), "--repeats", "1", "--no-memory", *args]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err, err


def test_unreadable_file_and_missing_features(tmp_path, capsys):
    assert cli_main(["bench", str(tmp_path / "missing.kernel"), "--features", "a"]) == 2
    assert "cannot read kernel file" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        cli_main(["bench", str(tmp_path / "missing.kernel")])
    assert info.value.code == 2
    assert "one of the arguments --features --space-module is required" in capsys.readouterr().err


def test_bench_function_reports_cuda_only_backends_as_skipped():
    ir = kd.compile_ir(SOURCE, ["a", "b", "c"])
    result = bench(ir, backends=("torch", "triton"), n=4, repeats=1, device="cpu", memory=False)
    assert [c.backend for c in result.cells] == ["torch"]
    assert [s.backend for s in result.skipped] == ["triton"]
