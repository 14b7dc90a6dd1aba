"""Benchmark a kernel on every backend available here: ``kerneldsl bench`` and ``benchmarks/backends.py``.

Workloads (``make_step``), each a forward and a forward+backward closure on random
inputs (features uniform in [0, 1], random hyperparameters, the same on every backend):

- ``train``: K(X, X) over ``n`` points, backward to the hyperparameters (fitting's kernel);
- ``mll``: the exact marginal log likelihood of a botorch ``SingleTaskGP`` (Cholesky
  included), backward to all hyperparameters: one step of fitting;
- ``acqf``: K(candidates [60, 2], X), backward to the candidates (acquisition optimisation).

A kernel batch ``b > 1`` means ``batch_shape=[b]`` and inputs ``[b, n, d]`` (a batch of models,
e.g. leave-one-out folds).

Times (``time_cells``) are medians over repeats in which every (backend, batch) cell and
measurement runs once in turn, so that machine load hits them alike; on a CUDA device they
are measured with CUDA events. Peak memory (``peak_memory_mib``) is the growth of the peak
resident set (VmHWM, reset through /proc/self/clear_refs) during one step after a warm-up
step, in a fresh process per cell with a fixed glibc mmap threshold so that freed large
tensors go back to the system: it counts everything the step holds at its peak (tensors
saved for backward, temporaries, gradients). On CUDA it is ``torch.cuda.max_memory_allocated``
growth instead.

The gpytorch module tree (``reference``) keeps about `REFERENCE_TABLES_PER_TERM` tables of
``batch x n x n`` values per base term through a forward and backward;
``reference_memory_bytes`` estimates that, and `bench` warns (`MemoryWarning`) before a
cell would need more than `REFERENCE_MEMORY_WARNING` bytes. Long runs show their progress
(`kerneldsl.progress.Progress`: a bar on a terminal, one line per finished step in a log).
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import queue as queues
import statistics
import time
import warnings
from dataclasses import asdict, dataclass, field
from typing import Callable, Sequence

import torch

from .compiler.backends import BACKENDS, get_backend
from .compiler.errors import did_you_mean
from .compiler.ir import KernelIR
from .progress import Progress

WORKLOADS = ("train", "mll", "acqf")
MEASURES = {"forward": ("train", 0), "forward+backward": ("train", 1), "mll": ("mll", 1)}
"""What ``kerneldsl bench`` reports: measure -> (workload, 0 forward / 1 forward+backward)."""
MEMORY_WORKLOADS = ("train", "mll")
"""The workloads whose forward+backward peak memory ``kerneldsl bench`` reports."""
DTYPES = ("float64", "float32")


class BenchError(ValueError):
    """Bad benchmark options (a backend, batch size, dtype or device that cannot be benchmarked)."""


class MemoryWarning(UserWarning):
    """A run is estimated to need a lot of memory (the gpytorch tree of the ``reference`` backend)."""


REFERENCE_TABLES_PER_TERM = 13
"""Tables of ``batch x n x m`` values the gpytorch tree holds per base term at the peak of a forward and
backward (measured: 12.9 for the MNIST example's 25 Matern 5/2 terms at n = 150-381, batch 1-4)."""
REFERENCE_MEMORY_WARNING = 2 * 2**30
"""Bytes above which `warn_reference_memory` warns."""


def reference_memory_bytes(ir: KernelIR, n: int, batch: int = 1, itemsize: int = 8, m: int | None = None) -> int:
    """Estimated peak bytes of the ``reference`` backend's K(X1, X2) forward and backward, ``X1`` of ``n``
    and ``X2`` of ``m`` points (default ``n``), kernel batch ``batch``, ``itemsize`` bytes per value."""
    return REFERENCE_TABLES_PER_TERM * ir.num_terms * batch * n * (n if m is None else m) * itemsize


def warn_reference_memory(ir: KernelIR, n: int, batch: int = 1, itemsize: int = 8, what: str = "") -> bool:
    """Warn (`MemoryWarning`) when the ``reference`` backend would need more than `REFERENCE_MEMORY_WARNING`
    bytes for ``n`` points at kernel batch ``batch``; returns whether it warned."""
    need = reference_memory_bytes(ir, n, batch, itemsize)
    if need <= REFERENCE_MEMORY_WARNING:
        return False
    warnings.warn(f"the reference backend (gpytorch's module tree) needs about {need / 2**30:.1f} GiB for "
                  f"{what or 'a forward and backward'} at n = {n}, batch {batch} ({ir.num_terms} base terms x "
                  f"{REFERENCE_TABLES_PER_TERM} tables of batch x n x n values); the torch and cpu backends need a "
                  "fraction of it", MemoryWarning, stacklevel=3)
    return True


def random_hyperparameters(ir: KernelIR, batch_shape: Sequence[int] = (), seed: int = 0) -> dict[str, torch.Tensor]:
    """Values in [0.3, 2.3] for every readable hyperparameter of ``ir`` (sum weights are normalised)."""
    g = torch.Generator().manual_seed(seed)
    names = ("outputscale", *ir.lengthscale_names, *ir.weight_names)
    return {name: 0.3 + 2 * torch.rand(tuple(batch_shape), generator=g, dtype=torch.float64) for name in names}


def make_kernel(ir: KernelIR, backend: str, dtype: torch.dtype, device: str, seed: int = 0,
                batch_shape: Sequence[int] = ()):
    """The backend's kernel with the same random hyperparameters (per batch element) on every backend."""
    kernel = get_backend(backend)(ir, torch.Size(batch_shape)).to(device=device, dtype=dtype)
    kernel.set_hyperparameters(random_hyperparameters(ir, batch_shape, seed))
    return kernel


def make_step(ir: KernelIR, backend: str, workload: str, n: int, dtype: torch.dtype, device: str,
              batch: int = 1) -> tuple[Callable[[], None], Callable[[], None]]:
    """``(forward, forward_backward)`` closures for one backend, workload and kernel batch size."""
    from botorch.models import SingleTaskGP
    from gpytorch.mlls import ExactMarginalLogLikelihood

    batch_shape = (batch,) if batch > 1 else ()
    kernel = make_kernel(ir, backend, dtype, device, batch_shape=batch_shape)
    g = torch.Generator().manual_seed(1)
    d = len(ir.features)
    X = torch.rand(*batch_shape, n, d, generator=g, dtype=dtype).to(device)
    weights = torch.randn(*batch_shape, n, n, generator=g, dtype=dtype).to(device)
    if workload == "train":
        def forward():
            return (kernel(X).to_dense() * weights).sum()
    elif workload == "mll":
        Y = torch.sin(5 * X[..., :3].sum(-1, keepdim=True))
        model = SingleTaskGP(X, Y, covar_module=kernel, outcome_transform=None).to(device=device, dtype=dtype)
        model.train()
        mll = ExactMarginalLogLikelihood(model.likelihood, model)

        def forward():
            return -mll(model(X), model.train_targets).sum()
    elif workload == "acqf":
        candidates = torch.rand(60, *batch_shape, 2, d, generator=g, dtype=dtype).to(device).requires_grad_(True)

        def forward():
            return kernel(candidates, X).to_dense().sum()
    else:
        raise BenchError(f"unknown workload '{workload}': use one of {', '.join(WORKLOADS)}")

    def forward_only():
        with torch.no_grad():
            forward()

    def forward_backward():
        forward().backward()

    return forward_only, forward_backward


# --- timing ------------------------------------------------------------------------------

def _time_once(fn: Callable[[], None], device: str) -> float:
    """Seconds of one call: CUDA events on a CUDA device, ``perf_counter`` otherwise."""
    if device.startswith("cuda"):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize()
        start.record()
        fn()
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1e3
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def time_cells(cells: dict, repeats: int, device: str, progress: Progress | None = None) -> dict:
    """Seconds of every ``{cell: {label: fn}}``, each list one sample per repeat, cells interleaved.

    Every function runs once first as a warm-up (lazy imports, caches, compilation).
    ``progress`` counts one step per cell's warm-up and one per repeat.
    """
    for cell, fns in cells.items():
        for fn in fns.values():
            fn()
        if progress is not None:
            progress.finished(f"warm-up of {_cell_name(cell)}", units=1)
    samples = {cell: {label: [] for label in fns} for cell, fns in cells.items()}
    for repeat in range(repeats):
        for cell, fns in cells.items():
            for label, fn in fns.items():
                samples[cell][label].append(_time_once(fn, device))
        if progress is not None:
            progress.finished(f"repeat {repeat + 1}/{repeats}", units=1)
    return samples


def _cell_name(cell) -> str:
    """``torch, batch 20`` for a ``(backend, batch)`` cell; the cell as text otherwise."""
    if isinstance(cell, tuple) and len(cell) == 2:
        return f"{cell[0]}, batch {cell[1]}"
    return str(cell)


# --- peak memory -------------------------------------------------------------------------------

def read_status_kb(field_name: str) -> int:
    """A kB field of ``/proc/self/status`` (``VmRSS``, ``VmHWM``, ...)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field_name} not in /proc/self/status")




def _peak_memory_child(args, queue) -> None:
    ir, backend, workloads, n, dtype, device, threads, batch = args
    torch.set_num_threads(threads)
    steps = {w: make_step(ir, backend, w, n, dtype, device, batch)[1] for w in workloads}
    for step in steps.values():
        step()  # first call: lazy initialisation is not the step's memory
    result = {}
    for workload, step in steps.items():
        gc.collect()
        if device.startswith("cuda"):
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            base = torch.cuda.memory_allocated()
            step()
            torch.cuda.synchronize()
            result[workload] = (torch.cuda.max_memory_allocated() - base) / 2**20
            continue
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak resident set (VmHWM) to the current one
        base = read_status_kb("VmRSS")
        step()
        result[workload] = (read_status_kb("VmHWM") - base) / 1024
    queue.put(result)


def memory_unavailable_reason(device: str) -> str | None:
    """Why peak memory cannot be measured here (None when it can)."""
    if device.startswith("cuda") or os.path.exists("/proc/self/clear_refs"):
        return None
    return "peak memory needs Linux's /proc/self/clear_refs (or a CUDA device)"


def peak_memory_mib(ir: KernelIR, backend: str, workloads: Sequence[str], n: int, dtype: torch.dtype,
                    device: str, batch: int = 1) -> dict[str, float]:
    """Peak memory growth (MiB) of one forward+backward of each workload, in one fresh process."""
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    proc = ctx.Process(target=_peak_memory_child,
                       args=((ir, backend, tuple(workloads), n, dtype, device, torch.get_num_threads(), batch),
                             queue))
    # A fixed mmap threshold: glibc otherwise raises it after the first free of a large block and
    # then keeps freed tables in its heap, so a second step would reuse them unseen.
    saved = os.environ.get("MALLOC_MMAP_THRESHOLD_")
    os.environ["MALLOC_MMAP_THRESHOLD_"] = str(128 * 1024)
    try:
        proc.start()
    finally:
        if saved is None:
            del os.environ["MALLOC_MMAP_THRESHOLD_"]
        else:
            os.environ["MALLOC_MMAP_THRESHOLD_"] = saved
    try:
        while True:  # the child's result, or an error as soon as it dies without one
            try:
                return queue.get(timeout=1.0)
            except queues.Empty:
                if not proc.is_alive():
                    raise BenchError(f"the peak-memory process of {backend} at batch {batch} (n={n}) stopped "
                                     f"with exit code {proc.exitcode} before reporting") from None
    finally:
        proc.join()


# --- the whole benchmark of one kernel ------------------------------------------------------------

@dataclass
class Cell:
    """One backend at one kernel batch size: median milliseconds, their samples, peak memory, speed-ups."""

    backend: str
    batch: int
    median_ms: dict[str, float]
    samples_ms: dict[str, list[float]]
    peak_mib: dict[str, float | None]
    speedup: dict[str, float] = field(default_factory=dict)
    """Baseline's median / this cell's median, per measure (baseline: the first backend, same batch)."""


@dataclass
class Skipped:
    backend: str
    reason: str


@dataclass
class BenchResult:
    """Everything ``kerneldsl bench`` measured, as a table (``table()``) or JSON data (``asdict``)."""

    kernel: str
    features: int
    terms: int
    composites: int
    levels: int
    n: int
    dtype: str
    device: str
    threads: int
    repeats: int
    load_average: float | None
    baseline: str
    memory: str
    """How peak memory was measured, or why it was not."""
    cells: list[Cell]
    skipped: list[Skipped]

    def to_json(self) -> dict:
        return asdict(self)

    def table(self) -> str:
        load = f", load average {self.load_average:.1f} at start" if self.load_average is not None else ""
        lines = [f"kernel {self.kernel}: {self.features} features, {self.terms} base terms, "
                 f"{self.composites} sums/products in {self.levels} levels",
                 f"n={self.n}, {self.dtype}, {self.device}, {self.threads} thread{'s' * (self.threads != 1)}, "
                 f"medians of {self.repeats} interleaved repeats{load}",
                 f"peak memory: {self.memory}",
                 f"speed-up: {self.baseline}'s median / the backend's, same batch",
                 ""]
        header = (f"{'backend':<10} {'batch':>5} {'forward ms':>11} {'fwd+bwd ms':>11} {'MLL ms':>9} "
                  f"{'peak MiB fwd+bwd':>17} {'peak MiB MLL':>13} {'speed-up fwd':>13} {'fwd+bwd':>8} {'MLL':>7}")
        lines += [header, "-" * len(header)]
        for c in self.cells:
            t, m, s = c.median_ms, c.peak_mib, c.speedup
            lines.append(f"{c.backend:<10} {c.batch:>5} {t['forward']:>11.2f} {t['forward+backward']:>11.2f} "
                         f"{t['mll']:>9.2f} {_mib(m.get('train')):>17} {_mib(m.get('mll')):>13} "
                         f"{s['forward']:>12.2f}x {s['forward+backward']:>7.2f}x {s['mll']:>6.2f}x")
        for skip in self.skipped:
            lines.append(f"{skip.backend:<10} skipped: {skip.reason}")
        return "\n".join(lines)


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def resolve_device(device: str) -> str:
    """``auto`` -> ``cuda`` when a CUDA device is present, else ``cpu``; a clear error for a missing one."""
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BenchError(f"device '{device}' is not available: torch sees no CUDA device")
    if device != "cpu" and not device.startswith("cuda"):
        raise BenchError(f"unknown device '{device}': use cpu, cuda, cuda:N or auto")
    return device


def skip_reason(backend: str, device: str) -> str | None:
    """Why ``backend`` cannot be benchmarked on ``device`` (None when it can)."""
    if backend == "triton":
        if not device.startswith("cuda"):
            return "triton kernels run on CUDA devices only (this run is on the CPU)"
        from .compiler.backends.triton_kernel import triton_unavailable_reason

        return triton_unavailable_reason()
    if backend == "cpu":
        if device != "cpu":
            return "the cpu backend's fused C kernels run on the CPU only (this run is on a GPU)"
        from .compiler.backends.c_kernel import compiler_unavailable_reason

        return compiler_unavailable_reason()
    return None


def check_options(backends: Sequence[str], batches: Sequence[int], n: int, repeats: int, dtype: str) -> None:
    """Raise ``BenchError`` naming the first bad option."""
    if not backends:
        raise BenchError("no backends given")
    for b in backends:
        if b not in BACKENDS:
            hint = did_you_mean(b, BACKENDS) or f"known backends: {', '.join(BACKENDS)}"
            raise BenchError(f"unknown backend '{b}': {hint}")
    if len(set(backends)) != len(backends):
        raise BenchError(f"a backend is listed twice: {', '.join(backends)}")
    if not batches or any(b < 1 for b in batches):
        raise BenchError(f"kernel batch sizes must be positive integers, got {list(batches)}")
    if n < 2:
        raise BenchError(f"--n must be at least 2 points, got {n}")
    if repeats < 1:
        raise BenchError(f"repeats must be at least 1, got {repeats}")
    if dtype not in DTYPES:
        raise BenchError(f"unknown dtype '{dtype}': use {' or '.join(DTYPES)}")


def bench(ir: KernelIR, kernel: str = "kernel", backends: Sequence[str] = ("reference", "torch", "triton"),
          batches: Sequence[int] = (1,), n: int = 381, repeats: int = 10, dtype: str = "float64",
          device: str = "auto", memory: bool = True, progress: bool = False, log=None) -> BenchResult:
    """Time forward, forward+backward and the exact MLL of ``ir`` on each backend and batch size.

    ``kernel`` labels the result. Backends that cannot run here are reported in ``skipped``
    with the reason; speed-ups are against the first backend that runs. ``progress`` reports
    each finished step (warm-ups, repeats, memory cells) to ``log`` (default: stderr): a bar on
    a terminal, one line per step otherwise. A ``reference`` cell estimated to need more than
    `REFERENCE_MEMORY_WARNING` bytes gets a `MemoryWarning` before anything runs.
    """
    check_options(backends, batches, n, repeats, dtype)
    device = resolve_device(device)
    torch_dtype = getattr(torch, dtype)
    skipped = [Skipped(b, r) for b in backends if (r := skip_reason(b, device)) is not None]
    runnable = [b for b in backends if b not in {s.backend for s in skipped}]
    if not runnable:
        raise BenchError("no backend can run here: " + "; ".join(f"{s.backend}: {s.reason}" for s in skipped))
    if "reference" in runnable:
        warn_reference_memory(ir, n, max(batches), torch.tensor([], dtype=torch_dtype).element_size(),
                              "the benchmark's K(X, X) and MLL steps")
    load_average = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
    workloads = tuple(dict.fromkeys(w for w, _ in MEASURES.values()))
    reason = memory_unavailable_reason(device) if memory else "not measured (--no-memory)"
    cell_count = len(batches) * len(runnable)
    steps_total = cell_count + repeats + (cell_count if reason is None else 0)
    with Progress(steps_total, "bench", "step", file=log, enabled=progress) as bar:
        cells = {}
        for batch in batches:
            for backend in runnable:
                bar.running(f"building {backend}, batch {batch}")
                steps = {w: make_step(ir, backend, w, n, torch_dtype, device, batch) for w in workloads}
                cells[backend, batch] = {label: steps[w][i] for label, (w, i) in MEASURES.items()}
        bar.running("timing")
        samples = time_cells(cells, repeats, device, bar)
        results = []
        for (backend, batch), per_label in samples.items():
            peak = {w: None for w in MEMORY_WORKLOADS}
            if reason is None:
                bar.running(f"peak memory of {backend}, batch {batch}")
                peak = peak_memory_mib(ir, backend, MEMORY_WORKLOADS, n, torch_dtype, device, batch)
                bar.finished(f"peak memory of {backend}, batch {batch}", units=1)
            results.append(Cell(backend, batch, {k: 1e3 * statistics.median(v) for k, v in per_label.items()},
                                {k: [1e3 * x for x in v] for k, v in per_label.items()}, peak))
    for cell in results:
        base = next(c for c in results if c.backend == runnable[0] and c.batch == cell.batch)
        cell.speedup = {k: base.median_ms[k] / v for k, v in cell.median_ms.items()}
    how = reason or ("growth of torch.cuda.max_memory_allocated during one step after a warm-up, fresh process "
                     "per cell" if device.startswith("cuda") else
                     "growth of the peak resident set during one step after a warm-up, fresh process per cell")
    return BenchResult(kernel, len(ir.features), ir.num_terms, len(ir.nodes), len(ir.levels), n, dtype, device,
                       torch.get_num_threads(), repeats, load_average, runnable[0], how, results, skipped)
