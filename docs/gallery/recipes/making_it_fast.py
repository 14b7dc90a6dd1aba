"""
Making it fast
==============

A hands-on kernel has many small terms; evaluated as a tree of gpytorch modules, each
term is its own handful of tensor operations. kerneldsl compiles the whole expression
into one kernel instead, on one of several backends, all built from the same
intermediate form:

* ``reference``: the plain gpytorch module tree (``MaternKernel`` / ``RBFKernel`` with
  ``active_dims``, products, a weighted-sum module, ``ScaleKernel``); the oracle and the
  baseline;
* ``torch``: one ``Kernel`` evaluating every base term at once with vectorised PyTorch,
  level by level; CPU and CUDA, tiles large matrices so memory stays
  ``O(n*m + terms * tile)``;
* ``cpu``: fused kernels generated as C from the expression and compiled by the system's C
  compiler (``$CC``, default ``cc``) at first use, then cached (``~/.cache/kerneldsl``):
  rows over OpenMP threads, columns in SIMD loops, memory of K and its gradient only;
* ``triton``: generated fused GPU kernels (forward and backward) for the expression;
* ``auto`` (the default): ``triton`` on CUDA inputs when triton is installed; on the CPU
  ``cpu`` for kernel matrices of at least 2**16 entries (``fused_threshold``) when a C compiler
  works, ``torch`` below that. A ``kd.Study``'s kernels run ``cpu`` at every size
  (``fused_threshold=0``): it evaluates them often enough to repay the first compilation.

Every backend keeps gpytorch's ``Kernel`` conventions (raw ``hyperparameters()``,
``batch_shape``, indexing, ``expand_batch``), so models and code do not change with the
backend. This recipe checks that the backends agree, times your own kernel with
``kerneldsl bench``, and collects the GPU notes.
"""

import subprocess
import sys
from pathlib import Path

import torch

import kerneldsl as kd

torch.set_num_threads(1)

# %%
# The same kernel on every backend
# --------------------------------
#
# Compile once per backend, copy the hyperparameters across, and compare K(X, X). A
# backend that cannot run here (``triton`` without a CUDA device, ``cpu`` without a C
# compiler) says why.

SOURCE = """
lr = matern52({log_lr}) * categorical({optimizer_adam, optimizer_sgd})
size = matern52({log_width, log_epochs})
kernel = lr + size + lr * size
"""
FEATURES = ["log_lr", "log_width", "log_epochs", "optimizer_adam", "optimizer_sgd"]

torch.manual_seed(0)
X = torch.rand(300, len(FEATURES), dtype=torch.float64)
reference = kd.compile(SOURCE, FEATURES, backend="reference")
reference.set_hyperparameters({name: 0.2 + 0.6 * torch.rand(()).item()
                               for name in reference.get_hyperparameters() if "lengthscale" in name})
K_ref = reference(X).to_dense()
for backend in ("torch", "cpu", "triton"):
    try:
        kernel = kd.compile(SOURCE, FEATURES, backend=backend)
        kernel.set_hyperparameters(reference.get_hyperparameters())
        difference = (kernel(X).to_dense() - K_ref).abs().max().item()
        print(f"{backend:>7}: max |K - K_reference| = {difference:.1e}")
    except Exception as err:  # noqa: BLE001 - a backend that cannot run here says why
        print(f"{backend:>7}: not available here ({type(err).__name__}: {str(err).splitlines()[0]})")

# %%
# ``kerneldsl bench`` on your own kernel
# --------------------------------------
#
# Which backend is fastest for *your* kernel on *your* machine? ``kerneldsl bench`` times
# K(X, X) forward, forward+backward (to the hyperparameters) and one step of exact-MLL
# fitting of a botorch ``SingleTaskGP``, for each backend and kernel batch size (``--batch
# 1,8``: also a batch of 8 kernels, as for 8 leave-one-out folds fitted together), as
# medians of interleaved repeats, with speed-ups against the first backend. Small sizes
# here, to keep the page fast; drop ``--no-memory`` to also measure peak memory (one fresh
# process per cell), and use ``--space-module`` instead of ``--features`` to take the
# columns from your feature chain.

Path("my.kernel").write_text(SOURCE)
kerneldsl_command = str(Path(sys.executable).parent / "kerneldsl")
command = [kerneldsl_command, "bench", "my.kernel", "--features", ",".join(FEATURES),
           "--n", "200", "--batch", "1,8", "--repeats", "3", "--threads", "1", "--no-memory"]
print(subprocess.run(command, capture_output=True, text=True).stdout)

# %%
# ``--json`` gives the same measurements (every timed sample included) for your own
# tables and plots:

import json  # noqa: E402

from matplotlib.figure import Figure  # noqa: E402

cells = json.loads(subprocess.run(command + ["--json"], capture_output=True, text=True).stdout)["cells"]
fig = Figure(figsize=(8, 3.2), layout="constrained")
axes = fig.subplots(1, 2, sharey=True)
for ax, batch in zip(axes, (1, 8)):
    rows = [c for c in cells if c["batch"] == batch]
    for i, workload in enumerate(("forward", "forward+backward", "mll")):
        ax.bar([j + 0.27 * (i - 1) for j in range(len(rows))], [c["median_ms"][workload] for c in rows],
               width=0.27, label=workload)
    ax.set_xticks(range(len(rows)), [c["backend"] for c in rows])
    ax.set_title(f"n = 200, batch {batch}")
axes[0].set_ylabel("median ms")
axes[0].legend()
fig

# %%
# On the project's 26-feature, 25-term MNIST kernel at n = 381 (``make bench``, float64, one
# thread of this project's 2-core CPU; ``benchmarks/RESULTS.md``), the vectorised ``torch``
# backend is 2.5-3.1x faster than the gpytorch tree; from n = 381 to 8000 (2 threads,
# forward+backward of K(X, X) / peak memory) the fused ``cpu`` backend beats the
# ``torch`` backend 4.5-9x:
#
# =====================  ===================  ==================  ======================
# n                      torch in one piece   torch, tiled        cpu (fused C)
# =====================  ===================  ==================  ======================
# 381                    95 ms / 188 MB       160 ms / 117 MB     21 ms / 42 MB
# 1000                   0.99 s / 0.75 GB     0.84 s / 0.15 GB    0.13 s / 0.07 GB
# 2000                   3.9 s / 2.9 GB       3.0 s / 0.18 GB     0.50 s / 0.19 GB
# 4000                   24.3 s / 10.0 GB     14.6 s / 0.32 GB    2.7 s / 0.28 GB
# 8000                   does not fit         50.0 s / 1.0 GB     9.2 s / 1.0 GB
# 381, 20 batched folds  2.6 s / 2.1 GB       2.2 s / 0.16 GB     0.35 s / 0.21 GB
# =====================  ===================  ==================  ======================
#
# Other knobs: ``kd.compile(..., tile_size=..., tile_threshold=...)`` (the ``torch``
# backend's tiles; ``"auto"`` by default, ``tile_size=None`` never tiles), ``dtype``
# float32 where its precision suffices, ``torch.set_num_threads`` (the ``cpu`` backend's
# OpenMP threads), ``kd.compile(..., fused_threshold=0)`` (``auto`` on the fused C kernels at every
# size, as a study's kernels are), and ``kerneldsl cv --backend cpu`` to fit small cross-validation
# cells on the fused kernels (``auto`` takes the torch path below 2**16 entries).
#
# Proposals
# ---------
#
# A study's proposal fits its loss and cost models and optimises the tick or tock acquisition;
# ``benchmarks/proposals.py`` times it against Optuna's ``GPSampler`` doing the same job (kerneldsl / ``GPSampler``, one
# thread, seconds per model-based ask, quiet machine, medians of 3 asks, cont8 of 11; ``benchmarks/RESULTS.md``):
#
# ============================================  ===========  ===========  ===========
# space                                         n = 10       n = 100      n = 300
# ============================================  ===========  ===========  ===========
# mixed4: a log scalar, two log ints, a choice  0.13 / 0.39  0.18 / 0.33  0.23 / 0.71
# cont8: eight log scalars                      0.05 / 0.06  0.06 / 0.13  0.08 / 0.65
# digits, its hands-on kernels                  0.38 / 0.78  0.45 / 1.01  0.48 / 1.52
# MNIST, 19 parameters, 25-term kernel          0.56 / 1.69  0.85 / 1.50  0.92 / 3.15
# ============================================  ===========  ===========  ===========
#
# What a study does for it, and what you can do:
#
# * Its kernels run the fused C kernels at every size and are frozen for the acquisition.
# * Its fits run scipy's L-BFGS-B on the marginal likelihood with the gradient in closed form
#   (``kerneldsl.fitting``), warm-started from the last fit. When the loss and cost models share
#   a kernel and their points (give neither its own kernel, or both the same source) they are
#   fitted together, one batched objective with each model its own iterations, and the
#   acquisition evaluates both with one kernel call: a quarter of a proposal on cont8.
#   A hands-on cost kernel buys a better cost model at the price of that sharing.
# * With nothing pending, tick and tock are closed forms (``analytic=True``); with pending trials
#   (``ask(n)``, several workers) the Monte-Carlo forms run, about twice as long.
# * The acquisition's starts are drawn from its raw points with probability proportional to the
#   closed form's value, as Optuna's ``GPSampler`` draws them (botorch's Boltzmann weights gave
#   most starts to where the acquisition is nearly zero, and they crawled for 15-25 evaluations;
#   ``start_weights="boltzmann"`` brings them back), and they stop once they come within 3% of the
#   range of a start at least as good (``kerneldsl.loop.restarts.MergedRestarts``): on small models
#   most starts climb one optimum, and the batch no longer waits for the slowest.
#   ``acq_options={"callback": None}`` runs every start to convergence.
# * Proposals run on one torch thread up to 1000 trials (``threads=`` overrides it); the
#   caller's thread count is restored.
# * With several workers ``optimize`` makes the next proposal while trials run, so a worker
#   rarely waits for one (``trials_dataframe()`` shows ``wait_seconds``).
#
# On a GPU
# --------
#
# ``make install`` installs the CPU build of torch. For a GPU, install a CUDA build of
# ``torch`` (pick the index for your CUDA version on pytorch.org's "Get started" page),
# then Triton with kerneldsl's ``triton`` extra, in a clone on a machine with an NVIDIA
# driver::
#
#     pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cu126
#     pip install -e ".[triton]" -c constraints.txt
#     python -c "import torch; print(torch.cuda.is_available())"
#     kerneldsl bench examples/mnist_hands_on.kernel --space-module examples/mnist_space.py --device cuda
#
# Models follow their data: put ``train_X`` on the GPU and ``auto`` compiles Triton
# kernels (``kd.tick_tock(..., device="cuda")`` and ``kd.Study(..., device="cuda")`` place
# the loop's models there). The Triton kernels are tested against ``reference`` on a GPU
# (``pytest tests/compiler -k cuda``) and under Triton's CPU interpreter in CI.
#
# On one NVIDIA H200 (float64, forward+backward in ms, CUDA events;
# ``benchmarks/backends_gpu.py``, from ``benchmarks/RESULTS.md``), the fused ``triton``
# kernels against the gpytorch tree:
#
# ==================================  =========  =====  ======  ===============
# case                                reference  torch  triton  triton speed-up
# ==================================  =========  =====  ======  ===============
# K(X, X), n = 381                    49.9       3.9    3.1     15.9x
# 20 batched models, n = 381          42.8       8.2    5.4     8.0x
# K(X, X), n = 2000                   59.2       8.5    7.8     7.6x
# K(X, X), n = 8000                   395        155    102     3.9x
# K(candidates [60, 2], X), n = 381   84.3       6.1    4.2     19.9x
# ==================================  =========  =====  ======  ===============
#
# ``triton`` is the fastest backend everywhere on the GPU; at small n everything is
# launch-bound, so its margin over the gpytorch tree (about 100 small kernels) is largest
# there, and at n = 8000 the ``torch`` backend in one piece comes within 1.1x of it. In
# float32 the Triton kernels ran 1.7x faster at n = 2000.
