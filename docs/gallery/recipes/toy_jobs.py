"""Objectives of the recipe "Running on many workers".

Worker processes import the objective by name, so it lives in a module (not in the script
or notebook that runs the study). ``train`` stands in for a training run that takes real
time (a sleep of 0.1-0.6 s); ``flaky_train`` is the same run with two ways real jobs fail.
"""

import math
import os
import signal
import time


def train(config):
    """Return ``{"loss", "cost"}`` for ``config`` after sleeping ``cost`` seconds."""
    lr, batch, width = config["lr"], config["batch_size"], config["width"]
    cost = 0.1 + 0.5 * (width / 512) ** 0.5 * (64 / batch) ** 0.2
    time.sleep(cost)
    best_lr = 3e-3 * math.sqrt(batch / 64)
    loss = 0.05 + 1.0 / math.sqrt(width) + 0.3 * math.log10(lr / best_lr) ** 2
    return {"loss": loss, "cost": cost}


def flaky_train(config):
    """``train``, except that ``width >= 500`` runs out of memory (the worker process is killed, as by
    the kernel's OOM killer) and ``batch_size <= 17`` deadlocks in data loading (it never returns)."""
    if config["width"] >= 500:
        os.kill(os.getpid(), signal.SIGKILL)
    if config["batch_size"] <= 17:
        time.sleep(3600)
    return train(config)
