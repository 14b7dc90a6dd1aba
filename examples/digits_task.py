"""A real, small tuning task: a PyTorch MLP on scikit-learn's bundled digits data.

`train(config)` trains a MLP with two hidden layers on a fixed 70/30 split of the
8x8 digits (1797 images, no download) and returns the validation
cross-entropy as ``loss`` and the measured training seconds as ``cost`` (plus
``accuracy``). Seeds for the split, the initialisation and the batch order are
fixed, so two runs of one config differ only by timing noise. One trial takes
about 0.05 - 2 s on one CPU core.

`make_feature_chain`, `LOSS_KERNEL` and `COST_KERNEL` are the hands-on GP
features and kernel-language kernels that `examples/demo.py` uses.

`make_space()` declares its conditional search space: the optimizer choice,
with Nesterov and momentum (as a log-scaled damping factor 1 - momentum) only
for SGD and Adam's beta1 / beta2 damping factors only for Adam; learning
rate, batch size, epochs, hidden width and weight decay.
"""

from __future__ import annotations

import functools
import time

import torch

__all__ = ["train", "make_space", "make_feature_chain", "reference_seconds", "LOSS_KERNEL", "COST_KERNEL",
           "DEFAULT_CONFIG"]

SPLIT_SEED = 0  # train / validation split
INIT_SEED = 0  # network initialisation and batch order

DEFAULT_CONFIG = {"optimizer": "adam", "beta1_damping": 0.1, "beta2_damping": 0.001, "lr": 3e-3,
                  "batch_size": 64, "epochs": 10, "width": 128, "weight_decay": 1e-5}


def make_space():
    """The conditional search space of `train` (a `kerneldsl.Space`)."""
    import kerneldsl as kd

    sgd = lambda c: c["optimizer"] == "sgd"  # noqa: E731
    adam = lambda c: c["optimizer"] == "adam"  # noqa: E731
    return kd.Space([
        kd.Choice("optimizer", ["adam", "sgd"]),
        kd.Choice("nesterov", [True, False], condition=sgd),
        kd.Scalar("momentum_damping", 1e-3, 0.5, log=True, condition=sgd),
        kd.Scalar("beta1_damping", 1e-3, 0.5, log=True, condition=adam),
        kd.Scalar("beta2_damping", 1e-4, 0.1, log=True, condition=adam),
        kd.Scalar("lr", 1e-4, 1.0, log=True),
        kd.Int("batch_size", 16, 512, log=True),
        kd.Int("epochs", 4, 64, log=True),
        kd.Int("width", 32, 512, log=True),
        kd.Scalar("weight_decay", 1e-7, 1e-1, log=True),
    ])


def make_feature_chain(space):
    """GP features: every log coordinate, ``log_steps = log_epochs - log_batch_size`` (what the cost
    scales with), and one-hot optimizer / nesterov choices (all zeros while inactive)."""
    import kerneldsl as kd

    logs = [name for name in space.coordinate_names if name.startswith("log_")]
    return kd.Chain(space, [kd.PassThrough(*logs), kd.Subtract("log_steps", "log_epochs", "log_batch_size"),
                            kd.OneHot("optimizer", "nesterov")])


LOSS_KERNEL = """
# the training regime interacts with the optimizer and its momentum settings
regime = matern52({log_epochs, log_batch_size, log_lr, log_weight_decay})
momentum = fj({log_momentum_damping, log_beta1_damping, log_beta2_damping})
optim = categorical({optimizer_adam, optimizer_sgd, nesterov_true, nesterov_false}) * momentum
arch = matern52({log_width})
kernel = regime * optim + arch + regime * arch
"""

COST_KERNEL = """
# training time grows with the number of steps and the width; Adam and SGD differ by a factor
work = matern52({log_steps, log_width})
kernel = work + work * categorical({optimizer_adam, optimizer_sgd})
"""


def reference_seconds(repeats: int = 3) -> float:
    """Median training seconds of `DEFAULT_CONFIG` on this machine (to set budgets relative to it)."""
    times = sorted(train(DEFAULT_CONFIG)["cost"] for _ in range(repeats))
    return times[len(times) // 2]


def default_max_cost() -> float:
    """The budget of the demo and the benchmark: 1.5x `reference_seconds`, in ms (says so, as it depends on the machine)."""
    reference = reference_seconds()
    max_cost = round(1.5 * reference, 3)
    print(f"reference config trains in {reference:.3f} s here; max_cost = 1.5x = {max_cost:.3f} s")
    return max_cost


@functools.lru_cache(maxsize=1)
def _data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_val, y_train, y_val = train_test_split(X, y, test_size=0.3, random_state=SPLIT_SEED, stratify=y)
    as_x = lambda a: torch.tensor(a / 16.0, dtype=torch.float32)  # noqa: E731 - pixels are 0..16
    return as_x(X_train), torch.tensor(y_train), as_x(X_val), torch.tensor(y_val)


def _optimizer(config: dict, params) -> torch.optim.Optimizer:
    if config["optimizer"] == "sgd":
        return torch.optim.SGD(params, lr=config["lr"], momentum=1.0 - config["momentum_damping"],
                               nesterov=bool(config["nesterov"]), weight_decay=config["weight_decay"])
    betas = (1.0 - config["beta1_damping"], 1.0 - config["beta2_damping"])
    return torch.optim.AdamW(params, lr=config["lr"], betas=betas, weight_decay=config["weight_decay"])


def train(config: dict, report=None) -> dict:
    """Train on the digits with `config`; return validation loss, training seconds and accuracy.

    With ``report`` (the study's reporter), after every epoch it reports the training seconds so far, the
    fraction of epochs done and the validation loss (measured outside the training clock), and stops early
    when the study asks: it then returns ``{"loss": None, "cost": seconds so far}``.
    """
    torch.set_num_threads(1)  # one core per trial: timings are comparable and the demo fits 2 cores
    X_train, y_train, X_val, y_val = _data()
    torch.manual_seed(INIT_SEED)
    width = int(config["width"])
    net = torch.nn.Sequential(torch.nn.Linear(64, width), torch.nn.ReLU(), torch.nn.Linear(width, width), torch.nn.ReLU(),
                              torch.nn.Linear(width, 10))
    optimizer = _optimizer(config, net.parameters())
    order = torch.Generator().manual_seed(INIT_SEED)
    batch_size, n = int(config["batch_size"]), len(X_train)
    epochs, seconds = int(config["epochs"]), 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        permutation = torch.randperm(n, generator=order)
        for i in range(0, n, batch_size):
            batch = permutation[i:i + batch_size]
            optimizer.zero_grad(set_to_none=True)
            torch.nn.functional.cross_entropy(net(X_train[batch]), y_train[batch]).backward()
            optimizer.step()
        seconds += time.perf_counter() - start
        if report is not None and epoch < epochs:
            with torch.no_grad():
                partial = torch.nn.functional.cross_entropy(net(X_val), y_val).item()
            if report(cost=seconds, progress=epoch / epochs, loss=partial):
                return {"loss": None, "cost": seconds}
    with torch.no_grad():
        logits = net(X_val)
        loss = torch.nn.functional.cross_entropy(logits, y_val).item()
        accuracy = (logits.argmax(-1) == y_val).double().mean().item()
    return {"loss": loss, "cost": seconds, "accuracy": accuracy}


if __name__ == "__main__":
    print(DEFAULT_CONFIG, train(DEFAULT_CONFIG))
