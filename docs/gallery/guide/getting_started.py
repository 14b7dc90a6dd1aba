"""
Getting started
===============

From nothing to a hands-on kernel running cost-aware Bayesian optimisation (tick-tock) on
your own function, in five minutes. Everything below this install section ran when this
page was built; the output under each block is what it printed.

Install
-------

kerneldsl needs Python 3.10 or newer and ``make``. From a clone of the repository::

    make test    # install into .venv/, then run the tests
    make demo    # install into .venv/, then tick-tock on a real task

Both commands install into ``.venv/`` first (the CPU build of ``torch==2.13.0`` and the exact
versions of ``constraints.txt``, no multi-GB CUDA download). ``make demo`` tunes a PyTorch
MLP for 40 trials under a training-time budget and writes ``out/tick_tock_digits.png``
(about two minutes on one core); ``make test`` runs the test suite.

To use kerneldsl from your own environment instead, install the clone::

    pip install -e .             # the library and the `kerneldsl` command
    pip install -e ".[dask]"     # + Dask, to run trials on a cluster
    pip install -e ".[triton]"   # + Triton: fused GPU kernels (needs a CUDA build of torch)
    pip install -e ".[docs]"     # + what `make docs` needs to build this site

Then ``import kerneldsl as kd``. Examples here set ``torch.set_num_threads(1)`` to stay small
and reproducible; leave it out in your own runs.
"""

import math

import torch

import kerneldsl as kd

torch.set_num_threads(1)

# sphinx_gallery_start_ignore
# The docs build hides the models' numerical notes (jitter added to a covariance) that a
# run prints as RuntimeWarnings; a run of this script shows them.
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="while proposing", category=RuntimeWarning)
warnings.filterwarnings("ignore", message="A not p.d.")
# sphinx_gallery_end_ignore

# %%
# Your function
# -------------
#
# Tick-tock minimises a **loss** while keeping the **cost** of a trial (say, training
# seconds) within a budget. Your objective takes a config (a dict) and returns both. Here
# a stand-in for a training run: the best learning rate depends on the optimizer, wider
# and longer training lowers the loss, and the cost is proportional to width times epochs.


def train(config):
    """Pretend to train a model with ``config``; return its validation loss and the seconds it took."""
    best_log_lr = -3.0 if config["optimizer"] == "adam" else -1.0
    loss = (0.05 + 0.08 * (math.log10(config["lr"]) - best_log_lr) ** 2
            + 2.0 / math.sqrt(config["width"]) + 0.6 / config["epochs"])
    seconds = config["epochs"] * config["width"] / 1000
    return {"loss": loss, "cost": seconds}


print(train({"optimizer": "adam", "lr": 1e-3, "width": 64, "epochs": 8}))

# %%
# The search space
# ----------------
#
# A :class:`~kerneldsl.Space` lists the parameters. ``log=True`` searches a parameter on a
# log scale; integers stay integers; choices are choices.

space = kd.Space([
    kd.Choice("optimizer", ["adam", "sgd"]),
    kd.Scalar("lr", 1e-4, 1.0, log=True),
    kd.Int("width", 8, 512, log=True),
    kd.Int("epochs", 1, 32, log=True),
])
for config in space.to_configs(space.sample(3, seed=0)):
    print(config)

# %%
# Features: what the kernel sees
# ------------------------------
#
# The models do not see configs: a feature chain turns each search point into named
# features scaled to [0, 1]. The default chain passes numeric coordinates through (log
# parameters as their logs, ``log_lr``) and one-hot encodes choices. Kernel sources use
# these names.

chain = kd.Chain(space, [kd.PassThrough("log_lr", "log_width", "log_epochs"), kd.OneHot("optimizer")])
print(chain.feature_names)

# %%
# A hands-on kernel
# -----------------
#
# The default model is one Matern kernel over every feature: it assumes every feature
# interacts with every other. You know more than that. The learning rate matters *per
# optimizer*, the model's size (width and epochs) matters on its own, and the two may
# interact a little. Say so, and let the learned weights of the sum decide how much each
# part counts:

LOSS_KERNEL = """
lr_per_optimizer = matern52({log_lr}) * categorical({optimizer_adam, optimizer_sgd})
size = matern52({log_width, log_epochs})
kernel = lr_per_optimizer + size + lr_per_optimizer * size
"""
# The cost depends on the size alone: the learning rate and the optimizer do not enter it.
COST_KERNEL = "matern52({log_width, log_epochs})"

k = kd.compile(LOSS_KERNEL, features=chain.feature_names)
print(k.describe())

# %%
# ``kd.compile`` checked the source: a typo gets a message with the place and a suggestion
# (every error is on :doc:`the language page <language>`).

try:
    kd.compile("matern52({log_lrr}) * categorical({optimizer_adam, optimizer_sgd})", features=chain.feature_names)
except kd.KernelError as err:
    print(f"{type(err).__name__}: {err}")

# %%
# Run tick-tock
# -------------
#
# :func:`~kerneldsl.tick_tock` first evaluates ``n_init`` space-filling (Sobol) configs,
# then alternates **tocks** (lower loss within the budget ``max_cost``) and **ticks** (lower
# cost at no worse loss). Each iteration fits one GP to the log loss and one to the log
# cost, with your kernels. ``num_restarts`` and ``raw_samples`` size the acquisition
# optimisation (small here, to keep the page fast; the defaults are 8 and 256).

result = kd.tick_tock(train, space, max_cost=2.0, n_init=8, n_iter=8, seed=0,
                      feature_chain=chain, loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL,
                      num_restarts=4, raw_samples=64, progress=False)
print(result.summary())

# %%
# ``result.best`` is the trial with the lowest loss among those within the budget;
# ``result.trials`` has every trial (config, phase, state, loss, cost), and
# ``result.trials_dataframe()`` puts them in a pandas table.

best = result.best
print(f"trial {best.id} ({best.phase.value}): loss {best.loss:.4f} at cost {best.cost:.3f}")
result.trials_dataframe().set_index("number")[["phase", "state", "loss", "cost", "params_optimizer", "params_lr",
                                             "params_width", "params_epochs"]].round(4)

# %%
# The picture of the run: every trial's cost against its loss (the budget dashed, the best
# trial starred), the best loss so far, and each trial's cost.

fig = result.plot(title="tick-tock on train()")

# %%
# What did the model learn?
# -------------------------
#
# Fit the loss kernel to every finished trial and draw it: the tree of the source with
# each edge as thick as its learned weight, and the lengthscales per feature (darker:
# shorter, the loss changes faster along that feature).

trials = [t for t in result.trials if t.loss is not None]
X = space.to_search([t.config for t in trials])
Y = torch.tensor([[math.log(t.loss)] for t in trials], dtype=X.dtype)
model = kd.KernelGP(LOSS_KERNEL, chain)(X, Y)
kd.fit_map(model)
print(model.covar_module.describe())
structure = kd.plot_structure(model.covar_module, title="log loss of train()")

# %%
# Where next
# ----------
#
# * :doc:`The language <language>`: every construct and kernel kind.
# * :doc:`/recipes/hands_on_kernel`: write a kernel for a real sweep and check by
#   cross-validation that it predicts better than a one-size-fits-all GP.
# * :doc:`/recipes/tick_tock_budget`: a training script under a time budget, with partial
#   results, early stopping and a moving budget.
# * :doc:`/recipes/many_workers`: trials on a process pool or a Dask cluster, and resuming.
