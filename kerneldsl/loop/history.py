"""What proposals learn from: a study's trials as search points, with failed trials imputed.

`History` needs only the space, the trials (`Trial` objects in id order, running ones
included), the budget in force and the loss scale, so a proposer can be driven without a
`Study` (an Optuna sampler rebuilds the trials from its own storage). Its
`History.training_data` is what the models see:

* the loss model: trials with a loss (state ok), failed trials at an imputed bad
  loss (`impute_failed`: the worst modelled loss plus `FAILED_LOSS_MARGIN` of the
  observed range, at least `MIN_FAILED_GAP`), and stopped trials at the last loss they
  reported (`stopped_loss`). A partial loss is an upper bound of the loss the trial would
  have reached (training had not ended), and it says more than nothing: stopping mostly
  hits the initial design, whose trials are the models' foundation (on the digits task 4-6
  of 8 initial trials were stopped, and a loss model of the 2-4 left did worse than one
  that saw all 8; RESULTS.md). ``ModelData.stopped`` counts them (the last rows of the loss
  data), so a proposer can treat the value as a bound (`truncated_mean`);
* the cost model: the measured cost of ok and failed trials, and the estimated final
  cost of stopped trials;
* pending points (botorch's ``X_pending``): running trials;
* seen points (never proposed again): every trial.

Lost trials are seen and teach nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from ..space.space import Space
from .trial import Trial, TrialState

__all__ = ["History", "LossScale", "ModelData", "TrainingData", "impute_failed", "stopped_loss", "truncated_mean",
           "FAILED_LOSS_MARGIN",
           "MIN_FAILED_GAP"]

FAILED_LOSS_MARGIN = 0.5  # imputed log loss = worst + margin * (worst - best), at least MIN_FAILED_GAP above the worst
MIN_FAILED_GAP = 0.1


@dataclass(frozen=True)
class LossScale:
    """The scale the loss model works on: ``log`` (the default: losses are positive) or the loss itself."""

    log: bool = True

    def to_model(self, loss: float) -> float:
        """A loss on the model's scale."""
        return math.log(loss) if self.log else loss

    def from_model(self, y: float) -> float:
        """A value of the model's scale as a loss."""
        return math.exp(y) if self.log else y


@dataclass
class ModelData:
    """What the models learn from and what the acquisitions compare against (search-space points)."""

    X_loss: Tensor
    y_loss: Tensor
    """Modelled loss (log loss by default); failed trials at their imputed value."""
    X_cost: Tensor
    y_cost: Tensor
    """Log cost."""
    X_ok: Tensor
    """Points of finished trials with a loss (the tock's baseline)."""
    X_within: Tensor
    """Points of finished trials within the budget (the tick's reference; X_ok if none is)."""
    any_within: bool = True
    """Whether some finished trial is within the budget."""
    stopped: int = 0
    """The last ``stopped`` rows of ``X_loss`` / ``y_loss`` are stopped trials at their last reported loss: an upper
    bound of the loss they would have reached."""


@dataclass
class TrainingData:
    """The trials as proposals see them."""

    X_seen: Tensor | None
    """Every point asked so far, running trials included (never proposed again)."""
    X_pending: Tensor | None
    """Points of running trials."""
    models: ModelData | None = None
    """None while the models cannot be fitted yet (fewer than two trials with a loss or a cost)."""


def stopped_loss(trial: Trial, scale: LossScale) -> float | None:
    """The loss model's value for a stopped trial: its last reported loss on the model's scale (None: not stopped,
    or it reported no usable loss)."""
    if trial.state is not TrialState.STOPPED:
        return None
    for report in reversed(trial.reports):
        if report.loss is not None and math.isfinite(report.loss) and (report.loss > 0 or not scale.log):
            return scale.to_model(report.loss)
    return None


def truncated_mean(mean: Tensor, sd: Tensor, upper: Tensor) -> Tensor:
    """``E[y | y <= upper]`` for ``y ~ N(mean, sd^2)``: the mean of a normal truncated above,
    ``mean - sd * phi(a) / Phi(a)`` with ``a = (upper - mean) / sd``, computed in logs so that it stays finite far in
    the tail (where it approaches ``upper``)."""
    a = (upper - mean) / sd
    mills = torch.exp(-0.5 * a.square() - 0.5 * math.log(2 * math.pi) - torch.special.log_ndtr(a))
    return torch.minimum(mean - sd * mills, upper)


def impute_failed(trials: Sequence[Trial], scale: LossScale = LossScale()) -> float | None:
    """The loss model's target for failed trials (model scale), None before any trial has a loss; each failed
    trial records it, as a loss, in ``imputed_loss``."""
    y_ok = [scale.to_model(t.loss) for t in trials if t.state is TrialState.OK]
    if not y_ok:
        return None
    worst, best = max(y_ok), min(y_ok)
    imputed = worst + max(FAILED_LOSS_MARGIN * (worst - best), MIN_FAILED_GAP)
    for t in trials:
        if t.state is TrialState.FAILED:
            t.imputed_loss = scale.from_model(imputed)
    return imputed


class History:
    """The trials of a study (in id order, running ones included) as the proposals see them.

    ``max_cost`` is the budget in force, ``scale`` the loss model's scale. ``points`` may give the search
    point of each trial (a study keeps them); without it the configs are converted with ``space.to_search``.
    """

    def __init__(self, space: Space, trials: Sequence[Trial], max_cost: float, scale: LossScale = LossScale(),
                 points: Sequence[Tensor] | None = None):
        if points is not None and len(points) != len(trials):
            raise ValueError(f"History: {len(points)} points for {len(trials)} trials")
        self.space, self.trials, self.max_cost, self.scale = space, list(trials), float(max_cost), scale
        self._points = list(points) if points is not None else None

    def points(self, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> Tensor | None:
        """The search point of every trial ``[n, d]`` (None without trials)."""
        if not self.trials:
            return None
        if self._points is None:
            return self.space.to_search([t.config for t in self.trials], dtype=dtype, device=device)
        return torch.stack(self._points).to(dtype=dtype, device=device)

    def training_data(self, dtype: torch.dtype = torch.float64, device: torch.device | None = None) -> TrainingData:
        """Seen and pending points, and the models' data once two trials have a loss and two a cost (else None)."""
        X = self.points(dtype, device)
        trials = self.trials
        running = [i for i, t in enumerate(trials) if t.state is TrialState.RUNNING]
        data = TrainingData(X_seen=X, X_pending=X[running] if running else None)
        ok = [i for i, t in enumerate(trials) if t.state is TrialState.OK]
        cost_of = {i: t.cost for i, t in enumerate(trials)
                   if t.state in (TrialState.OK, TrialState.FAILED) and t.cost is not None}
        cost_of.update({i: t.estimated_cost for i, t in enumerate(trials)
                        if t.state is TrialState.STOPPED and t.estimated_cost is not None})
        cost_rows = sorted(cost_of)
        if len(ok) < 2 or len(cost_rows) < 2:
            return data
        imputed = impute_failed(trials, self.scale)
        failed = [i for i, t in enumerate(trials) if t.state is TrialState.FAILED]
        partial = {i: loss for i, t in enumerate(trials) if (loss := stopped_loss(t, self.scale)) is not None}
        y_loss = [self.scale.to_model(trials[i].loss) for i in ok] + [imputed] * len(failed) + list(partial.values())
        within = [i for i in ok if trials[i].cost <= self.max_cost]
        tensor = lambda values: torch.tensor(values, dtype=dtype, device=X.device)  # noqa: E731
        data.models = ModelData(
            X_loss=X[ok + failed + list(partial)], y_loss=tensor(y_loss),
            X_cost=X[cost_rows], y_cost=tensor([math.log(cost_of[i]) for i in cost_rows]),
            X_ok=X[ok], X_within=X[within] if within else X[ok], any_within=bool(within), stopped=len(partial),
        )
        return data
