"""
From Optuna / Ax
================

Already tuning with Optuna or Ax? Keep your study, your storage and your dashboard, and
let a hands-on kernel propose the trials:

* **Optuna** (``pip install -e ".[optuna]"`` in a clone): ``HandsOnSampler`` is an Optuna sampler
  (``optuna.samplers.BaseSampler``) whose model-based trials are kerneldsl's ticks and tocks
  with your kernels; storages, several processes on one study, ``enqueue_trial``, pruners
  and optuna-dashboard work as usual. ``CostPruner`` stops trials that will overrun the
  budget.
* **Ax** (``pip install -e ".[ax]"`` in a clone): ``configure_kernel`` gives an ``ax.Client`` Ax's
  usual generation strategy with your kernel as the GP's kernel.

This page runs a small study of each on a toy objective.
"""

import math

import optuna
import torch

import kerneldsl as kd
from kerneldsl.integrations.optuna import CostPruner, HandsOnSampler

torch.set_num_threads(1)
optuna.logging.set_verbosity(optuna.logging.WARNING)

# sphinx_gallery_start_ignore
# The docs build hides the models' numerical notes (jitter added to a covariance); a run shows them.
import warnings  # noqa: E402

warnings.filterwarnings("ignore", message="while proposing", category=RuntimeWarning)
warnings.filterwarnings("ignore", message="A not p.d.")
warnings.filterwarnings("ignore", message="Optimization failed in `gen_candidates_scipy`")
# sphinx_gallery_end_ignore

# %%
# An Optuna objective with a cost
# -------------------------------
#
# A usual Optuna objective, plus one line: what the trial cost, as the user attribute
# ``cost`` (e.g. seconds of training). The budget is about that cost.


def objective(trial):
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    width = trial.suggest_int("width", 8, 256, log=True)
    optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    best_log_lr = -3.0 if optimizer == "adam" else -1.0
    trial.set_user_attr("cost", width / 32)             # what the budget is about
    return 0.3 * (math.log10(lr) - best_log_lr) ** 2 + 2 / math.sqrt(width) + 0.05


# %%
# The hands-on sampler
# --------------------
#
# The kernels name the features that ``kd.default_feature_chain`` gives the study's
# parameters: ``log_lr`` for a log-scaled ``lr``, ``log_width``, and ``optimizer_adam``,
# ``optimizer_sgd`` for the categorical. Here: the learning rate matters per optimizer,
# the width on its own; the cost depends on the width alone. ``max_cost`` is the budget:
# every finished trial gets Optuna's constraint ``cost - max_cost``, so ``best_trial`` is
# the best trial within the budget.

LOSS_KERNEL = "matern52({log_lr}) * categorical({optimizer_adam, optimizer_sgd}) + matern52(log_width)"
COST_KERNEL = "matern52(log_width)"
sampler = HandsOnSampler(
    loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL, max_cost=4.0, n_startup_trials=6, seed=0,
    acquisition=kd.AcquisitionOptions(num_restarts=4, raw_samples=64))
study = optuna.create_study(sampler=sampler, study_name="hands-on")
study.optimize(objective, n_trials=14)
best = study.best_trial
print(f"best within the budget: trial {best.number}, loss {best.value:.4f}, cost {best.user_attrs['cost']:.2f}, "
      f"{best.params}")

# %%
# Each trial records what kerneldsl did, as user attributes (optuna-dashboard shows them):
# the phase (initial design, tick or tock), how the point was found, and the models'
# predictions there.

frame = study.trials_dataframe(attrs=("number", "value", "params", "user_attrs"))
frame[["number", "value", "params_optimizer", "params_lr", "params_width", "user_attrs_cost",
       "user_attrs_kerneldsl:phase", "user_attrs_kerneldsl:how"]].round(4)

# %%
# The same budget with Optuna's default sampler (TPE) for comparison, same number of
# trials. One seed of a toy problem, so read it as a demonstration, not a benchmark
# (``benchmarks/peers.py`` compares kerneldsl with Optuna's and Ax's samplers properly).

tpe = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0), study_name="tpe")
tpe.optimize(objective, n_trials=14)
feasible = [t for t in tpe.trials if t.user_attrs["cost"] <= 4.0]
best_tpe = min(feasible, key=lambda t: t.value)
print(f"TPE, best within the budget: trial {best_tpe.number}, loss {best_tpe.value:.4f}, "
      f"cost {best_tpe.user_attrs['cost']:.2f}")
print(f"trials over the budget: hands-on {sum(t.user_attrs['cost'] > 4.0 for t in study.trials)}, "
      f"TPE {sum(t.user_attrs['cost'] > 4.0 for t in tpe.trials)} of 14")

# %%
# Several processes on one study: give ``create_study`` a storage (``storage=
# "sqlite:///study.db"``, ``load_if_exists=True``) and run the same script in each. The
# sampler keeps nothing in its process that matters: phases follow trial numbers, and the
# running trials of other processes are pending points of every proposal.
#
# Stopping trials that will overrun: ``CostPruner``
# -------------------------------------------------
#
# The objective records its cost so far and its progress while it trains and asks Optuna
# as usual; ``CostPruner`` applies kerneldsl's :class:`~kerneldsl.CostStopping` rule (from
# the cost so far, the progress and the cost model's prediction for the trial). Any Optuna
# pruner can be asked first (``pruner=``) on the losses ``trial.report`` gives.


def objective_with_epochs(trial):
    lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
    width = trial.suggest_int("width", 8, 256, log=True)
    optimizer = trial.suggest_categorical("optimizer", ["adam", "sgd"])
    best_log_lr = -3.0 if optimizer == "adam" else -1.0
    epochs, cost = 10, width / 32
    for epoch in range(1, epochs + 1):
        trial.set_user_attr("cost", cost * epoch / epochs)
        trial.set_user_attr("progress", epoch / epochs)
        if trial.should_prune():
            raise optuna.TrialPruned()
    return 0.3 * (math.log10(lr) - best_log_lr) ** 2 + 2 / math.sqrt(width) + 0.05


pruned_study = optuna.create_study(
    sampler=HandsOnSampler(loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL, max_cost=4.0,
                           n_startup_trials=6, seed=1,
                           acquisition=kd.AcquisitionOptions(num_restarts=4, raw_samples=64)),
    pruner=CostPruner(max_cost=4.0), study_name="pruned")
pruned_study.optimize(objective_with_epochs, n_trials=12)
for t in pruned_study.trials:
    if t.state == optuna.trial.TrialState.PRUNED:
        print(f"trial {t.number} pruned at cost {t.user_attrs['cost']:.2f}: {t.user_attrs.get('kerneldsl:stopped')}")

# %%
# From Ax
# -------
#
# ``configure_kernel(client, source)`` checks the kernel against the experiment's search
# space at once and sets Ax's generation strategy: the center of the space, Sobol points,
# then botorch's ``SingleTaskGP`` with your kernel. The kernel names the columns of Ax's
# model: a range parameter keeps its name (``scaling="log"``: log10 of the value), an
# unordered choice of three or more values is a group of one-hot columns under its name.

import logging  # noqa: E402

from ax.api.client import Client  # noqa: E402
from ax.api.configs import ChoiceParameterConfig, RangeParameterConfig  # noqa: E402

from kerneldsl.integrations.ax import configure_kernel, fitted_kernel  # noqa: E402

client = Client(random_seed=0)
for name in list(logging.root.manager.loggerDict):    # Ax logs every trial at INFO level
    if name == "ax" or name.startswith("ax."):
        logging.getLogger(name).setLevel(logging.WARNING)
client.configure_experiment(parameters=[
    RangeParameterConfig(name="lr", parameter_type="float", bounds=(1e-4, 1.0), scaling="log"),
    RangeParameterConfig(name="wd", parameter_type="float", bounds=(0.0, 0.1)),
    ChoiceParameterConfig(name="optimizer", parameter_type="str", values=["adam", "sgd", "rmsprop"],
                          is_ordered=False),
])
client.configure_optimization(objective="-loss")
strategy = configure_kernel(client, "matern52({lr, wd}) * categorical(optimizer)")

for _ in range(7):        # the center, 4 Sobol points, then 2 trials from the model with this kernel
    for index, params in client.get_next_trials(max_trials=1).items():
        loss = (math.log10(params["lr"]) + 2) ** 2 + 10 * params["wd"] + 0.5 * (params["optimizer"] == "sgd")
        client.complete_trial(index, raw_data={"loss": loss})
print(fitted_kernel(strategy).describe())

# %%
# ``fitted_kernel`` is the kernel of the model Ax fitted last, so everything of this site
# works on it, the structure picture too:

fig = kd.plot_structure(fitted_kernel(strategy), title="the kernel inside Ax's model")

# %%
# Which to use: ``kd.tick_tock`` / ``kd.Study`` for kerneldsl's own loop (journal,
# process pools and Dask, partial results through ``report``); ``HandsOnSampler`` when
# your trials already live in an Optuna study (or in Ray Tune, through its
# ``OptunaSearch``); ``configure_kernel`` when they live in an Ax experiment.
