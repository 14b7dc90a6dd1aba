"""Local searches over mixed spaces from starting points the caller chooses, batched over all of them.

botorch's ``optimize_acqf_mixed_alternating`` picks its own starting points (the best of Sobol points by
acquisition value, over the whole space). `alternate` takes them from the caller, so the proposer can give
every branch of a space (each active combination of its choices) its share of the starts and still run one
local search for all of them: each round is botorch's ``discrete_step`` (every neighbouring integer value and
every other value of each choice, the best improvement kept) and then its ``continuous_step`` (L-BFGS-B over
the continuous coordinates, integers and choices held at each start's current values), for all starts at
once, until a round improves no start by more than ``tol`` or after ``maxiter_alternating`` rounds.

One search per branch, each with its share of the starts, cost a run of small batches per branch (each
acquisition evaluation costs about the same for 3 points as for 9); the batched search makes the same
number of evaluations as one branch alone.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from botorch.acquisition import AcquisitionFunction
from botorch.generation.gen import gen_candidates_scipy
from botorch.optim.optimize import OptimizeAcqfInputs
from botorch.optim.optimize_mixed import CONVERGENCE_TOL, MAX_ITER_ALTER, continuous_step, discrete_step
from botorch.optim.optimize_mixed import round_discrete_dims
from torch import Tensor

__all__ = ["alternate"]


def alternate(acquisition: AcquisitionFunction, starts: Tensor, bounds: Tensor, discrete_dims: Mapping[int, list[float]],
              cat_dims: Mapping[int, list[float]], inequality_constraints: list | None = None,
              options: Mapping[str, Any] | None = None) -> tuple[Tensor, Tensor]:
    """The end points ``[b, d]`` and acquisition values ``[b]`` of local searches from ``starts [b, d]``.

    ``discrete_dims`` and ``cat_dims`` map columns to their allowed values (botorch's convention; the starts
    are rounded to them first); the other columns are continuous within ``bounds [2, d]``. ``options`` are
    those of ``optimize_acqf_mixed_alternating`` that its steps read (``maxiter_alternating``, ``tol``,
    ``maxiter_discrete``, ``maxiter_continuous``, ``batch_limit``, ``init_batch_limit``)."""
    options = dict(options or {})
    discrete = {column: sorted(values) for column, values in discrete_dims.items()}
    categories = {column: sorted(values) for column, values in cat_dims.items()}
    X = round_discrete_dims(round_discrete_dims(starts, discrete), categories)
    inputs = OptimizeAcqfInputs(
        acq_function=acquisition, bounds=bounds, q=1, num_restarts=len(X), raw_samples=None, options=options,
        inequality_constraints=inequality_constraints, equality_constraints=None,
        nonlinear_inequality_constraints=None, fixed_features=None, post_processing_func=None,
        batch_initial_conditions=X.unsqueeze(-2), return_best_only=False, gen_candidates=gen_candidates_scipy,
        sequential=True, ic_gen_kwargs={},
    )
    with torch.no_grad():
        values = acquisition(X.unsqueeze(-2))
    columns = {name: torch.tensor(list(dims), dtype=torch.long, device=X.device)
               for name, dims in (("discrete", discrete), ("cat", categories))}
    searching = torch.ones(len(X), dtype=torch.bool, device=X.device)
    for _ in range(options.get("maxiter_alternating", MAX_ITER_ALTER)):
        before = values.clone()
        X[searching], values[searching] = discrete_step(inputs, discrete, categories, X[searching])
        X[searching], values[searching] = continuous_step(inputs, columns["discrete"], columns["cat"], X[searching])
        searching &= values - before >= options.get("tol", CONVERGENCE_TOL)
        if not searching.any():
            break
    return X, values
