"""Acquisition over mixed spaces: choices and integers are optimised as discrete values.

The loop's proposals enumerate the active combinations of choices when there are at most
`MAX_ENUMERATED_COMBINATIONS` (each branch optimised with its choices fixed, integers
moved as integers by botorch's alternating optimiser) and run botorch's
``optimize_acqf_mixed_alternating`` over the whole space otherwise. Small optimiser
settings (`SETTINGS`) keep the file fast on two shared cores; runs are deterministic
(seeded designs, QMC samplers and restarts, one torch thread).
"""

from __future__ import annotations

import math
import os
from collections import Counter

import pytest

import kerneldsl as kd
from kerneldsl.loop import proposals
from kerneldsl.space import choice_combinations
from kerneldsl.space.sampling import sample


SETTINGS = dict(num_restarts=2, raw_samples=32, mc_samples=16, acq_options={"maxiter": 30},
                fit_options={"maxiter": 30})

# --------------------------------------------------------------------------- the issue's synthetic space
# loss(opt, lr, width, epochs) = 1.0 + 0.3 [opt == "sgd"] + 0.2 (log10 lr + 2.5)^2
#                                + 0.3 (ln width - ln 24)^2 + 0.6 exp(-epochs / 6)
# cost(opt, width, epochs)     = 0.01 width epochs (x 0.8 for sgd), max_cost = 4
# "adam" lowers the loss by 0.3 everywhere (and costs a little more); the best feasible loss
# trades width against epochs within the budget.
CHOICE_GAP, MAX_COST, N_INIT, N_TRIALS, TOLERANCE = 0.3, 4.0, 8, 20, 0.1


def issue_space() -> kd.Space:
    return kd.Space([kd.Scalar("lr", 1e-4, 1.0, log=True), kd.Int("width", 8, 64, log=True),
                     kd.Int("epochs", 2, 40, log=True), kd.Choice("opt", ["sgd", "adam"])])


def issue_loss(c: dict) -> float:
    return (1.0 + CHOICE_GAP * (c["opt"] == "sgd") + 0.2 * (math.log10(c["lr"]) + 2.5) ** 2
            + 0.3 * (math.log(c["width"]) - math.log(24)) ** 2 + 0.6 * math.exp(-c["epochs"] / 6))


def issue_cost(c: dict) -> float:
    return 0.01 * c["width"] * c["epochs"] * (0.8 if c["opt"] == "sgd" else 1.0)


def issue_objective(c: dict) -> dict:
    return {"loss": issue_loss(c), "cost": issue_cost(c)}


def issue_best_feasible() -> float:
    """Exact: lr at its optimum 10^-2.5 (in bounds), every (opt, width, epochs) enumerated."""
    return min(issue_loss({"opt": opt, "lr": 10 ** -2.5, "width": w, "epochs": e})
               for opt in ("sgd", "adam") for w in range(8, 65) for e in range(2, 41)
               if issue_cost({"opt": opt, "width": w, "epochs": e}) <= MAX_COST)


def best_within(configs: list[dict]) -> float:
    return min((issue_loss(c) for c in configs if issue_cost(c) <= MAX_COST), default=math.inf)


def run_issue_seed(seed: int) -> tuple[float, bool, float]:
    """(gap of the loop's best feasible loss, whether it is on the better choice, gap of 20 Sobol points)."""
    study = kd.Study(issue_space(), MAX_COST, n_init=N_INIT, seed=seed, **SETTINGS)
    study.optimize(issue_objective, N_TRIALS, progress=False)
    best = study.best
    sobol = best_within(issue_space().to_configs(sample(issue_space(), N_TRIALS, seed=seed)))
    return best.loss - issue_best_feasible(), best.config["opt"] == "adam", sobol - issue_best_feasible()


def check_issue_seeds(seeds: list[int], required: int) -> None:
    results = {seed: run_issue_seed(seed) for seed in seeds}
    wins = sum(gap <= TOLERANCE and better for gap, better, _ in results.values())
    table = "; ".join(f"seed {s}: loop gap {g:.3f} ({'adam' if b else 'sgd'}), sobol gap {sg:.3f}"
                      for s, (g, b, sg) in results.items())
    assert wins >= required, f"only {wins} of {len(seeds)} seeds within {TOLERANCE} on the better choice: {table}"
    print(table)


def test_issue_space_finds_the_better_choice():
    """Seed 0 of the 5-seed test below (the default run keeps one seed for time)."""
    check_issue_seeds([0], required=1)


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("KERNELDSL_SLOW") != "1", reason="5 seeds x 20 trials: set KERNELDSL_SLOW=1")
def test_issue_space_finds_the_better_choice_in_4_of_5_seeds():
    """Measured on this machine (fifth session): the loop's gap 0.008 / 0.012 / 0.021 / 0.013 / 0.005 for seeds 0-4
    (when this test was written: 0.014 / 0.005 / 0.306, stayed on sgd / 0.064 / 0.016), 20 Sobol points' gap
    0.393 / 0.205 / 0.362 / 0.159 / 0.320 (about 15 seconds)."""
    check_issue_seeds([0, 1, 2, 3, 4], required=4)


# --------------------------------------------------------------------------- conditions, constraints, both paths


def assert_valid(space: kd.Space, trials: list[kd.Trial]) -> None:
    """Each config is exactly what the space allows: conditions, ints, choices, bounds, linear constraints."""
    for trial in trials:
        X = space.to_search([trial.config])  # raises on inactive-but-given, active-but-missing, out of bounds
        assert bool(space.feasible(X)[0]), f"trial {trial.id}: {trial.config} violates {space.violated_constraints(X[0])}"
        assert space.to_configs(X)[0] == trial.config, f"trial {trial.id}: {trial.config} is not its own rounding"
        for p in space.parameters:
            if isinstance(p, kd.Int) and p.name in trial.config:
                assert type(trial.config[p.name]) is int, f"trial {trial.id}: {p.name}={trial.config[p.name]!r}"


def run_batches(study: kd.Study, objective, batches: list[int]) -> list[kd.Trial]:
    """Ask each batch at once (a q-batch, earlier points pending), then tell it; return the asked trials."""
    asked = []
    for n in batches:
        trials = study.ask(n)
        asked += trials
        for trial in trials:
            study.tell(trial, objective(trial.config))
    return asked


def test_condition_and_constraint_every_candidate_valid_both_branches_proposed():
    """`kd.SyntheticTask`: ``z`` only for the large model, ``shift - effort <= 0.8``, an Int ``depth``.

    Monte-Carlo acquisitions throughout (``analytic=False``): with pending points they spread a batch over both
    branches, which shows that both are optimised. (The closed forms, for proposals without pending points,
    stay on the large model's branch here, where the optimum is.)"""
    task = kd.SyntheticTask()
    space = task.space()
    assert len(choice_combinations(space)) == 2
    study = kd.Study(space, task.max_cost, n_init=6, seed=0, **SETTINGS, analytic=False)
    initial = run_batches(study, task, [6])
    assert {t.config["model"] for t in initial} == {"small", "large"}, "the initial design must see both branches"
    proposed = run_batches(study, task, [3, 2])
    assert_valid(space, initial + proposed)
    assert all(t.proposal.startswith("acquisition (branch model=") for t in proposed), [t.proposal for t in proposed]
    models = Counter(t.config["model"] for t in proposed)
    assert set(models) == {"small", "large"}, f"model-based proposals stayed on one branch: {models}"
    assert len({tuple(sorted(t.config.items())) for t in initial + proposed}) == len(initial + proposed)


def many_choices_space() -> kd.Space:
    """3^5 = 243 choice combinations (forces the alternating optimiser), a condition and a constraint."""
    return kd.Space(
        [kd.Choice(f"c{i}", ["a", "b", "c"]) for i in range(5)]
        + [kd.Scalar("x", 0.0, 1.0), kd.Int("k", 1, 6),
           kd.Scalar("y", 0.0, 1.0, condition=lambda c: c["c0"] == "b")],
        constraints=[kd.LinearConstraint({"x": 1.0, "k": 0.1}, 1.0)],
    )


def many_choices_objective(c: dict) -> dict:
    """Best: every choice "b", x = 0.3, k = 3, y = 0.6 (the constraint allows it: 0.3 + 0.3 <= 1)."""
    loss = (1.0 + 0.2 * sum(c[f"c{i}"] != "b" for i in range(5)) + (c["x"] - 0.3) ** 2 + 0.05 * (c["k"] - 3) ** 2
            + ((c["y"] - 0.6) ** 2 if "y" in c else 0.1))
    return {"loss": loss, "cost": 1.0 + c["x"] + 0.1 * c["k"]}


def test_many_choices_use_the_alternating_optimiser_and_stay_valid():
    space = many_choices_space()
    assert choice_combinations(space, limit=proposals.MAX_ENUMERATED_COMBINATIONS) is None
    study = kd.Study(space, 3.0, n_init=8, seed=0, **SETTINGS)
    initial = run_batches(study, many_choices_objective, [8])
    for i in range(5):
        assert {t.config[f"c{i}"] for t in initial} == {"a", "b", "c"}, f"the initial design misses a value of c{i}"
    proposed = run_batches(study, many_choices_objective, [2, 2])
    assert_valid(space, initial + proposed)
    assert all(t.proposal.startswith("acquisition (alternating optimiser") for t in proposed), \
        [t.proposal for t in proposed]


def test_few_branches_without_integers_are_optimised_one_by_one():
    """A choice and scalars only: each branch gets its own gradient ascent with its choice fixed, and a batch with
    pending points (Monte-Carlo acquisitions) reaches both branches."""
    space = kd.Space([kd.Choice("opt", ["a", "b"]), kd.Scalar("x", 0.0, 1.0),
                      kd.Scalar("y", 0.0, 1.0, condition=lambda c: c["opt"] == "b")])

    def objective(c: dict) -> dict:
        return {"loss": 1.0 + (c["x"] - 0.3) ** 2 + ((c["y"] - 0.6) ** 2 if c["opt"] == "b" else 0.05),
                "cost": 1.0 + c["x"]}

    study = kd.Study(space, 3.0, n_init=6, seed=0, **SETTINGS, analytic=False)
    initial = run_batches(study, objective, [6])
    proposed = run_batches(study, objective, [3])
    assert_valid(space, initial + proposed)
    assert all(t.proposal.startswith("acquisition (branch opt=") for t in proposed), [t.proposal for t in proposed]
    assert {t.config["opt"] for t in proposed} == {"a", "b"}, [t.config for t in proposed]


def test_an_abnormal_restart_warning_is_recognised():
    """The proposer silences botorch's warning about a restart whose line search ended abnormally (the restart keeps
    its point); the pattern matches the message botorch 0.18 gives (seen in the 5-seed run above) and nothing else
    of ``gen_candidates_scipy``."""
    import re

    from kerneldsl.loop.proposals import STOPPED_RESTARTS

    abnormal = ("Optimization failed in `gen_candidates_scipy` with the following warning(s):\n"
                "[OptimizationWarning('Optimization failed within `scipy.optimize.minimize` with status 2 and message "
                "ABNORMAL: .')]\nBecause you specified `batch_initial_conditions` larger than required `num_restarts`, "
                "optimization will not be retried with new initial conditions and will proceed with the current solution.")
    assert re.match(STOPPED_RESTARTS, abnormal, re.I)
    other = abnormal.replace("status 2 and message ABNORMAL", "status 1 and message STOP: TOTAL NO. OF ITERATIONS")
    assert not re.match(STOPPED_RESTARTS, other, re.I)
