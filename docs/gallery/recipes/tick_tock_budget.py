"""
Tuning a training script under a time budget
============================================

You want the best model whose training fits a budget, say at most 1.5 times the training
time of the config you use today, and every trial costs you that time. Tick-tock is
Bayesian optimisation for that problem: it models the loss *and* the cost of a config, and
alternates two kinds of steps:

* **tock**: lower loss within the budget (noisy expected improvement of the log loss,
  constrained by the cost model to log cost <= log ``max_cost``);
* **tick**: lower cost at no worse loss (expected log-cost reduction below the best
  feasible trial, counted only where the candidate's loss is no worse than that trial's in
  the same posterior sample).

If a fraction r of the trials go to ticks, the search pays for itself once it cuts the final
configuration's cost by r. This recipe runs it on a stand-in for a training script (a few
lines of arithmetic that behave like one, so the page builds in seconds), then adds partial
results and early stopping, and moves the budget.
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
# The training script
# -------------------
#
# An objective takes a config and returns at least ``{"loss": ..., "cost": ...}``. Written
# with a second argument, ``objective(config, report)``, it can report partial results while
# it trains, once per epoch here: the cost so far, the fraction done and the loss so far.
# When ``report`` returns True the study asks the trial to stop: return what there is.
#
# This one simulates training: an epoch takes longer for wider models and smaller
# batches; the best learning rate grows with the batch size; wider models reach a lower
# loss. The "seconds" are computed, not slept.


def train(config, report):
    """Train a pretend model; report once per epoch; return the validation loss and the seconds spent."""
    lr, batch, width, epochs = config["lr"], config["batch_size"], config["width"], config["epochs"]
    seconds_per_epoch = 0.05 * (width / 64) * (256 / batch) ** 0.3
    best_lr = 3e-3 * math.sqrt(batch / 64)
    rate = 0.3 * math.exp(-math.log10(lr / best_lr) ** 2) * (64 / batch) ** 0.2
    floor = 0.02 + 0.8 / math.sqrt(width)
    seconds, loss = 0.0, None
    for epoch in range(1, epochs + 1):
        seconds += seconds_per_epoch
        loss = floor + 2.3 * math.exp(-rate * epoch)
        if report(cost=seconds, progress=epoch / epochs, loss=loss):
            return {"loss": loss, "cost": seconds}   # stopped: the loss so far, the time spent
    return {"loss": loss, "cost": seconds}


space = kd.Space([
    kd.Scalar("lr", 1e-4, 1e-1, log=True),
    kd.Int("batch_size", 16, 1024, log=True),
    kd.Int("width", 16, 512, log=True),
    kd.Int("epochs", 2, 40, log=True),
])

# %%
# The budget: 1.5 times today's config. Outside a study, ``report`` can be any function;
# here one that never asks to stop.

today = {"lr": 1e-3, "batch_size": 128, "width": 64, "epochs": 10}
reference = train(today, lambda **report: False)
budget = 1.5 * reference["cost"]
print(f"today's config: loss {reference['loss']:.4f} in {reference['cost']:.3f} s; budget {budget:.3f} s")

# %%
# Tick-tock
# ---------
#
# Start from today's config (``initial_configs``), add a few space-filling Sobol points,
# then alternate tocks and ticks. The loss depends on the learning rate *relative to the
# batch size* and on the width; the cost on the width, the batch size and the epochs, not
# on the learning rate. Say so in the kernels (the default feature chain names log
# parameters ``log_<name>``).

LOSS_KERNEL = "fj({log_lr, log_batch_size}) * matern52({log_epochs}) + matern52({log_width})"
COST_KERNEL = "matern52({log_width, log_batch_size, log_epochs})"

result = kd.tick_tock(train, space, max_cost=budget, initial_configs=[today], n_init=5, n_iter=6, seed=0,
                      loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL, stopping=None,
                      journal="out/tick_tock.jsonl", num_restarts=4, raw_samples=64, progress=False)
print(result.summary())

# %%
# Every trial's cost against its loss, coloured by trial number (ticks point down, tocks
# up; the budget dashed, the best feasible trial starred), the best loss so far, and each
# trial's cost against the budget it was asked under:

fig = result.plot(title="tick-tock within 1.5x today's training time")

# %%
# The trials as a pandas table (one row per trial, as Optuna's ``trials_dataframe``):

result.trials_dataframe()[["number", "phase", "state", "loss", "cost", "feasible", "params_lr",
                           "params_batch_size", "params_width", "params_epochs"]].round(4)

# %%
# Stopping trials that will overrun the budget
# --------------------------------------------
#
# A trial whose cost will end far above the budget teaches the loss model little and
# wastes time. With reports, the study estimates each running trial's final cost and
# stops it when it will overrun. The rule, :class:`~kerneldsl.CostStopping` (on by
# default): from a report of ``cost`` at ``progress`` p, the final log cost is about
# ``log(cost / p)`` with standard deviation ``0.3 * sqrt((1 - p) / p)``, combined (by
# precision) with the cost model's prediction for the config; the trial is stopped when,
# with probability ``confidence``, the final cost exceeds ``max_cost * (1 + margin)``.
#
# A stopped trial keeps its reports, enters the cost model at its estimated final cost
# and the loss model below the last loss it reported (a bound: training had not ended; it
# enters at the loss model's prediction for it, truncated at that bound), and is never the
# best trial. Here with a stricter budget,
# so that some proposals overrun:

stopping = kd.CostStopping(margin=0.1, confidence=0.9)
for cost, progress in [(0.2, 0.25), (0.6, 0.75)]:   # 0.2 s after a quarter of the epochs, 0.6 s after 3/4
    estimate = stopping.estimate(cost=cost, progress=progress)
    print(f"{cost} s at progress {progress}: final cost about {estimate.cost:.2f} s "
          f"(log sd {estimate.log_sd:.2f}); stop under a budget of 0.5 s? {stopping.should_stop(estimate, max_cost=0.5)}")

stopped_run = kd.tick_tock(train, space, max_cost=0.5 * budget, initial_configs=[today], n_init=5, n_iter=6,
                           seed=1, loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL, stopping=stopping,
                           num_restarts=4, raw_samples=64, progress=False)
print(stopped_run.summary())

# %%
# The stopped trials: what they spent, and the final cost the study expected when it
# stopped them (the bars in the right-hand panel of the plot).

frame = stopped_run.trials_dataframe()
frame[frame.state == "stopped"][["number", "phase", "cost", "estimated_cost", "reports", "params_width",
                                 "params_epochs"]].round(3)

# %%
fig = stopped_run.plot(title="with stopping for cost")

# %%
# Moving the budget
# -----------------
#
# Budgets change: a deadline moves, a cheaper GPU arrives. ``max_cost`` may be a schedule,
# a list of ``(trial, budget)`` steps or a callable of the number of finished trials
# (:class:`~kerneldsl.Budget`). Each trial records the budget it was asked under;
# feasibility and the best trial are judged against the budget in force now.

schedule = kd.Budget.of([(0, budget), (9, 0.6 * budget)])
print([round(schedule.at(finished), 3) for finished in range(0, 13, 3)])

moved = kd.tick_tock(train, space, max_cost=[(0, budget), (9, 0.6 * budget)], initial_configs=[today],
                     n_init=5, n_iter=6, seed=2, loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL,
                     num_restarts=4, raw_samples=64, progress=False)
print(moved.summary())
fig = moved.plot(title="the budget tightened after 9 trials")

# %%
# A journal can also be reopened under another budget: the study keeps its trials and
# judges them against the new one (and would continue from there with ``optimize``).
# Reopening the first run's journal with half the budget:

reopened = kd.Study(space, max_cost=0.5 * budget, journal="out/tick_tock.jsonl", n_init=5, seed=0,
                    initial_configs=[today], loss_kernel=LOSS_KERNEL, cost_kernel=COST_KERNEL)
best = reopened.best
print(f"{len(reopened.trials)} trials; best within {0.5 * budget:.3f} s: trial {best.id}, "
      f"loss {best.loss:.4f}, cost {best.cost:.3f}" if best else "no trial within the new budget")
reopened.close()

# %%
# Next: the same loop with trials on many workers, timeouts and resuming
# (:doc:`many_workers`).
