"""Peers: kerneldsl against Optuna and Ax on the same task, budget, number of trials and seeds.

Every method minimises the task's loss under the same fixed budget ``max_cost`` (a constraint for
every method), for the same number of trials, once per seed:

* ``kerneldsl-handson``  ``kd.Study`` (ask/tell, tick-tock) with the task's hands-on loss and cost kernels;
* ``kerneldsl-default``  ``kd.Study`` with its default kernels (one ``matern52`` over every feature);
* ``kerneldsl-tocks``    ``kd.Study`` with the hands-on kernels and ``tick_ratio=0``: every model-based trial a
                         tock (cost-constrained log EI of the loss), none spent making configs cheaper;
* ``optuna-tpe``         ``TPESampler(multivariate=True, group=True)``;
* ``optuna-gp``          ``GPSampler``;
* ``optuna-random``      ``RandomSampler``;
* ``ax``                 Ax's ``Client`` with its default generation strategy, objective ``-loss`` and the
                         outcome constraint ``cost <= max_cost``.

Optuna runs define-by-run on a translation of the task's `kerneldsl.Space` (conditional parameters are
suggested only where active); the cost is recorded in the user attribute ``cost`` and the constraint
``cost - max_cost`` is set with ``trial.set_constraint`` (Optuna 5's replacement for the deprecated
``constraints_func``; TPE and GP read it the same way). ``group=True`` is what Optuna recommends for
multivariate TPE on conditional spaces (without it every conditional parameter is sampled
independently). The Optuna samplers and kerneldsl start from ``n_init`` random / Sobol trials
(``n_startup_trials``); Ax chooses its own initialisation. A trial without a loss (the task failed) is a
failed trial for Optuna (``TrialState.FAIL``) and Ax (``mark_trial_failed``), and a failed trial that
keeps its cost for kerneldsl.

Tasks: ``surrogate`` (`kd.SurrogateTask` of the MNIST sweep, ``examples/mnist_surrogate.py``; budget the
sweep's median training time; default 10 seeds x 60 trials, 10 initial) and ``digits`` (the digits MLP
of ``examples/digits_task.py``, measured training seconds; budget 1.5x the reference config's time,
measured once and stored; default 5 seeds x 32 trials, 8 initial).

Reported per method (markdown): best in-budget loss (mean ± standard error over seeds), paired wins /
ties / losses against each peer (win: the mean paired difference is at least two standard errors
below zero), training seconds spent, wall seconds, seconds per proposal (the time of asking for a
config after the initial trials: model fitting and acquisition). One figure per task: best in-budget
loss against trials and against training seconds (``OUT/peers_TASK.png``). Raw results go to
``OUT/peers_TASK.jsonl``, one line per finished (task, method, seed); a rerun skips those
(``--fresh`` starts over); ``--report-only`` prints the tables from the file.

    python benchmarks/peers.py surrogate --seeds 10 --trials 60
    python benchmarks/peers.py digits --seeds 5 --trials 32
    python benchmarks/peers.py surrogate --report-only

A method whose package is missing is skipped with the reason. Adding a method is one entry in
``METHODS`` (e.g. an Optuna sampler: ``OptunaMethod("optuna-handson", "...", make_sampler)``).
Runs single-threaded (``OMP_NUM_THREADS=1``, ``torch.set_num_threads(1)``).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")  # before torch and numpy start their thread pools

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from abc import ABC, abstractmethod  # noqa: E402
from collections.abc import Callable, Mapping  # noqa: E402
from dataclasses import asdict, dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import torch  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO_ROOT / "examples"))

import kerneldsl as kd  # noqa: E402

TASKS = ("surrogate", "digits")
DEFAULTS = {"surrogate": {"seeds": 10, "trials": 60, "n_init": 10}, "digits": {"seeds": 5, "trials": 32, "n_init": 8}}
DEFAULT_SWEEP = REPO_ROOT.parent / "shared" / "data" / "mnist1_sweep.jsonl"


class BenchmarkError(ValueError):
    """Inconsistent options or raw results (e.g. resuming with another budget or number of trials)."""


# ---------------------------------------------------------------------- tasks


@dataclass(frozen=True)
class Task:
    """One benchmark task: space, objective per seed, budget, and the hands-on kernels of kerneldsl's study."""

    name: str
    space: kd.Space
    objective: Callable[[int], Callable[[dict], Mapping[str, Any]]]  # seed -> config -> {"loss", "cost"}
    max_cost: float
    n_init: int
    loss_kernel: str
    cost_kernel: str
    feature_chain: Any
    info: Mapping[str, Any]  # recorded with every run (budget source, sweep, noise)


def surrogate_task(sweep: Path, noise: float, n_init: int) -> Task:
    """The MNIST surrogate (`kd.SurrogateTask`); with ``noise`` each seed draws its own noise."""
    import mnist_surrogate

    if not sweep.exists():
        raise BenchmarkError(f"no sweep file at {sweep}: pass --sweep PATH (see ../shared/data/README.md)")
    task = mnist_surrogate.make_task(sweep)
    return Task("surrogate", task.space(), lambda seed: task.with_noise(noise, seed=seed), task.max_cost, n_init,
                mnist_surrogate.LOSS_KERNEL, mnist_surrogate.COST_KERNEL, mnist_surrogate.feature_chain,
                {"sweep": str(sweep), "noise": noise, "budget": "the sweep's median training time"})


def digits_task(max_cost: float, n_init: int) -> Task:
    """The digits MLP (`examples/digits_task.py`): measured training seconds, the same for every seed."""
    import digits_task as digits

    space = digits.make_space()
    return Task("digits", space, lambda seed: digits.train, max_cost, n_init, digits.LOSS_KERNEL, digits.COST_KERNEL,
                digits.make_feature_chain(space), {"budget": "1.5x the reference config's training seconds"})


# ---------------------------------------------------------------------- methods


@dataclass(frozen=True)
class TrialRecord:
    """One trial of a run: its outcome (loss None when it failed) and how long asking for it took."""

    loss: float | None
    cost: float | None
    propose_seconds: float


def _outcome(result: Mapping[str, Any]) -> tuple[float | None, float | None]:
    """(loss or None when the trial failed, cost) of an objective's result."""
    loss, cost = result.get("loss"), result.get("cost")
    loss = None if loss is None or not math.isfinite(float(loss)) else float(loss)
    cost = None if cost is None or not math.isfinite(float(cost)) else float(cost)
    return loss, cost


class Method(ABC):
    """A benchmarked optimiser: runs ``n_trials`` trials of a task for one seed."""

    name: str
    label: str

    def unavailable(self) -> str | None:
        """Why this method cannot run here (a missing package), or None."""
        return None

    @abstractmethod
    def run(self, task: Task, seed: int, n_trials: int) -> list[TrialRecord]:
        """The run's trials in order."""


class KerneldslMethod(Method):
    """``kd.Study`` ask/tell, one trial at a time, with the task's hands-on kernels or the default ones."""

    def __init__(self, name: str, label: str, hands_on: bool, tick_ratio: float = 0.5):
        self.name, self.label, self.hands_on, self.tick_ratio = name, label, hands_on, tick_ratio

    def run(self, task: Task, seed: int, n_trials: int) -> list[TrialRecord]:
        kernels = (dict(loss_kernel=task.loss_kernel, cost_kernel=task.cost_kernel, feature_chain=task.feature_chain)
                   if self.hands_on else {})
        objective, records = task.objective(seed), []
        study = kd.Study(task.space, task.max_cost, n_init=task.n_init, n_trials=n_trials, seed=seed,
                         tick_ratio=self.tick_ratio, **kernels)
        with study:
            for _ in range(n_trials):
                start = time.perf_counter()
                trial = study.ask()
                seconds = time.perf_counter() - start
                study.tell(trial, objective(trial.config))
                records.append(TrialRecord(trial.loss, trial.cost, seconds))
        return records


class OptunaMethod(Method):
    """An Optuna sampler, ask/tell, define-by-run over the task's space; the budget as a constraint."""

    def __init__(self, name: str, label: str, make_sampler: Callable[[Task, int], Any]):
        self.name, self.label, self.make_sampler = name, label, make_sampler

    def unavailable(self) -> str | None:
        try:
            import optuna  # noqa: F401
        except ImportError:
            return "Optuna is not installed (pip install -e '.[benchmarks]' in a clone of kerneldsl)"
        return None

    def run(self, task: Task, seed: int, n_trials: int) -> list[TrialRecord]:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        objective, records = task.objective(seed), []
        study = optuna.create_study(direction="minimize", sampler=self.make_sampler(task, seed))
        for _ in range(n_trials):
            start = time.perf_counter()
            trial = study.ask()
            config = suggest_config(trial, task.space)
            seconds = time.perf_counter() - start
            loss, cost = _outcome(objective(config))
            if cost is not None:
                trial.set_user_attr("cost", cost)
                trial.set_constraint("cost", cost - task.max_cost)
            if loss is None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
            else:
                study.tell(trial, loss)
            records.append(TrialRecord(loss, cost, seconds))
        return records


def suggest_config(trial, space: kd.Space) -> dict[str, Any]:
    """Define-by-run: suggest every active parameter of ``space`` on the Optuna ``trial`` (in declaration order,
    so a parameter's condition sees the values chosen before it); returns the config."""
    config: dict[str, Any] = {}
    for index, p in enumerate(space.parameters):
        if not space.parameter_active(index, config, set(space.names[:index]), where="Optuna trial"):
            continue
        if isinstance(p, kd.Choice):
            config[p.name] = trial.suggest_categorical(p.name, list(p.choices))
        elif isinstance(p, kd.Int):
            config[p.name] = trial.suggest_int(p.name, int(p.lower), int(p.upper), log=p.log)
        else:
            config[p.name] = trial.suggest_float(p.name, p.lower, p.upper, log=p.log)
    return config


def check_optuna_space(space: kd.Space) -> None:
    """Optuna's distributions express bounds, log scales, integers and choices, not linear constraints."""
    if space.constraints:
        raise BenchmarkError(f"the task's space has linear constraints {list(space.constraints)}, which Optuna's "
                             "distributions cannot express")
    for p in space.parameters:
        if isinstance(p, kd.Choice) and not all(c is None or isinstance(c, (bool, int, float, str)) for c in p.choices):
            raise BenchmarkError(f"parameter {p.name!r}: Optuna's categorical choices must be None, bool, int, float "
                                 f"or str, got {list(p.choices)!r}")


def tpe_sampler(task: Task, seed: int):
    import optuna

    return optuna.samplers.TPESampler(multivariate=True, group=True, n_startup_trials=task.n_init, seed=seed,
                                      warn_independent_sampling=False)


def gp_sampler(task: Task, seed: int):
    import optuna

    return optuna.samplers.GPSampler(n_startup_trials=task.n_init, seed=seed, warn_independent_sampling=False)


def random_sampler(task: Task, seed: int):
    import optuna

    return optuna.samplers.RandomSampler(seed=seed)


class AxMethod(Method):
    """Ax's ``Client``: default generation strategy, objective ``-loss``, outcome constraint ``cost <= max_cost``."""

    name, label = "ax", "Ax (default generation strategy)"

    def unavailable(self) -> str | None:
        try:
            from ax import Client  # noqa: F401
        except ImportError as exc:
            return f"Ax is not importable here ({exc}); pip install -e '.[benchmarks]' in a clone of kerneldsl"
        return None

    def run(self, task: Task, seed: int, n_trials: int) -> list[TrialRecord]:
        from ax import Client

        for name, logger in list(logging.Logger.manager.loggerDict.items()):  # Ax sets a level on each of its loggers
            if isinstance(logger, logging.Logger) and name.split(".")[0] == "ax":
                logger.setLevel(logging.WARNING)
        objective, records = task.objective(seed), []
        client = Client(random_seed=seed)
        client.configure_experiment(parameters=ax_parameters(task.space), name=f"{task.name}_seed{seed}")
        client.configure_optimization(objective="-loss", outcome_constraints=[f"cost <= {task.max_cost!r}"])
        for _ in range(n_trials):
            start = time.perf_counter()
            ((index, parameters),) = client.get_next_trials(max_trials=1).items()
            seconds = time.perf_counter() - start
            config = active_config(task.space, parameters)
            loss, cost = _outcome(objective(config))
            if loss is None or cost is None:
                client.mark_trial_failed(index, failed_reason="the task returned no loss")
            else:
                client.complete_trial(index, raw_data={"loss": loss, "cost": cost})
            records.append(TrialRecord(loss, cost, seconds))
        return records


def ax_parameters(space: kd.Space) -> list:
    """Ax parameter configs for ``space``: ranges (log scaling where the space searches logs), choices, and each
    conditional parameter as a dependent of the choice value that switches it on (Ax's hierarchical space)."""
    from ax import ChoiceParameterConfig, RangeParameterConfig

    if space.constraints:
        raise BenchmarkError(f"the task's space has linear constraints {list(space.constraints)}; translate them "
                             "to Ax parameter constraints first")
    dependents = _dependents(space)
    configs = []
    for p in space.parameters:
        if isinstance(p, kd.Choice):
            kinds = {type(c) for c in p.choices}
            kind = {bool: "bool", int: "int", float: "float", str: "str"}.get(kinds.pop()) if len(kinds) == 1 else None
            if kind is None:
                raise BenchmarkError(f"parameter {p.name!r}: Ax choices must all be bool, int, float or str, "
                                     f"got {list(p.choices)!r}")
            configs.append(ChoiceParameterConfig(p.name, list(p.choices), kind, is_ordered=False if kind in (
                "str", "bool") else None, dependent_parameters=dependents.get(p.name)))
        else:
            configs.append(RangeParameterConfig(p.name, (p.lower, p.upper), "int" if isinstance(p, kd.Int) else "float",
                                                scaling="log" if p.log else "linear"))
    return configs


def _dependents(space: kd.Space) -> dict[str, dict[Any, list[str]]]:
    """Choice name -> {value: parameters active only for that value}, for conditions that read one choice."""
    dependents: dict[str, dict[Any, list[str]]] = {}
    for index, p in enumerate(space.parameters):
        if p.condition is None:
            continue
        owners = []
        for c in space.parameters[:index]:
            if not isinstance(c, kd.Choice):
                continue
            active = [space.parameter_active(index, {c.name: v}, {c.name}, where="Ax translation") for v in c.choices]
            if None not in active:
                owners.append((c, active))
        if len(owners) != 1:
            raise BenchmarkError(f"parameter {p.name!r}: its condition must read exactly one earlier choice for Ax's "
                                 "hierarchical search space")
        choice, active = owners[0]
        for value, on in zip(choice.choices, active):
            if on:
                dependents.setdefault(choice.name, {}).setdefault(value, []).append(p.name)
    return dependents


def active_config(space: kd.Space, parameters: Mapping[str, Any]) -> dict[str, Any]:
    """The active part of a parameterization (Ax may send values of inactive parameters), as plain Python values."""
    config: dict[str, Any] = {}
    for index, p in enumerate(space.parameters):
        if not space.parameter_active(index, config, set(space.names[:index]), where="Ax trial"):
            continue
        value = parameters[p.name]
        config[p.name] = int(value) if isinstance(p, kd.Int) else value
    return config


# One entry per method; a new method (e.g. Optuna with kerneldsl's HandsOnSampler) is one more entry:
#   OptunaMethod("optuna-handson", "Optuna HandsOnSampler", lambda task, seed: HandsOnSampler(...)),
METHODS: tuple[Method, ...] = (
    KerneldslMethod("kerneldsl-handson", "kerneldsl, hands-on kernels", hands_on=True),
    KerneldslMethod("kerneldsl-default", "kerneldsl, default kernels", hands_on=False),
    KerneldslMethod("kerneldsl-tocks", "kerneldsl, hands-on kernels, tocks only (tick_ratio=0)", hands_on=True,
                    tick_ratio=0.0),
    OptunaMethod("optuna-tpe", "Optuna TPE (multivariate, group)", tpe_sampler),
    OptunaMethod("optuna-gp", "Optuna GPSampler", gp_sampler),
    OptunaMethod("optuna-random", "Optuna RandomSampler", random_sampler),
    AxMethod(),
)
BY_NAME = {m.name: m for m in METHODS}
COLORS = dict(zip(BY_NAME, ["tab:red", "tab:orange", "tab:brown", "tab:blue", "tab:purple", "tab:grey", "tab:green",
                            "tab:pink", "tab:olive", "tab:cyan"]))


# ---------------------------------------------------------------------- running


def read_raw(path: Path) -> list[dict]:
    """The finished runs in ``path`` (none when it does not exist)."""
    if not path.exists():
        return []
    records = []
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise BenchmarkError(f"{path}:{number}: damaged raw result line ({exc}); remove it to go on") from None
    return records


def check_compatible(records: list[dict], path: Path, n_trials: int, n_init: int, max_cost: float | None) -> None:
    """Resuming needs the same number of trials, initial trials and budget as the runs already there."""
    for r in records:
        if (r["n_trials"], r["n_init"]) != (n_trials, n_init):
            raise BenchmarkError(f"{path}: run ({r['method']}, seed {r['seed']}) has {r['n_trials']} trials "
                                 f"({r['n_init']} initial), not {n_trials} ({n_init}); use --fresh or another --out")
        if max_cost is not None and not math.isclose(r["max_cost"], max_cost):
            raise BenchmarkError(f"{path}: run ({r['method']}, seed {r['seed']}) had max_cost {r['max_cost']}, not "
                                 f"{max_cost}; use --fresh or another --out")


def make_task(args: argparse.Namespace, records: list[dict]) -> Task:
    if args.task == "surrogate":
        return surrogate_task(Path(args.sweep), args.noise, args.n_init)
    import digits_task as digits

    budgets = {r["max_cost"] for r in records}
    if budgets:  # resuming: the budget measured for the first runs
        (max_cost,) = budgets if len(budgets) == 1 else (None,)
        if max_cost is None:
            raise BenchmarkError(f"the raw results mix budgets {sorted(budgets)}; use --fresh or another --out")
        print(f"max_cost = {max_cost:.3f} s (from the runs already done)")
    elif args.max_cost is not None:
        max_cost = args.max_cost
    else:
        digits.train(digits.DEFAULT_CONFIG)  # warm-up: a process's first training runs slow
        max_cost = digits.default_max_cost()
    return digits_task(max_cost, args.n_init)


def run_all(args: argparse.Namespace, raw_path: Path) -> list[dict]:
    if args.fresh:
        raw_path.unlink(missing_ok=True)
    records = read_raw(raw_path)
    task = make_task(args, records)
    check_compatible(records, raw_path, args.trials, args.n_init, task.max_cost)
    methods = []
    for name in args.methods:
        reason = BY_NAME[name].unavailable()
        if reason:
            print(f"skipping {name}: {reason}")
        else:
            methods.append(BY_NAME[name])
    if any(isinstance(m, OptunaMethod) for m in methods):
        check_optuna_space(task.space)
    done = {(r["method"], r["seed"]) for r in records}
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    print(f"task {task.name}: max_cost = {task.max_cost:.4g} s, {args.seeds} seeds x {args.trials} trials "
          f"({args.n_init} initial), methods {[m.name for m in methods]}", flush=True)
    for seed in range(args.seeds):
        for method in methods:
            if (method.name, seed) in done:
                continue
            start = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # model-fitting notes (jitter, convergence) of every method: many
                trials = method.run(task, seed, args.trials)
            record = {"task": task.name, "method": method.name, "seed": seed, "n_trials": args.trials,
                      "n_init": args.n_init, "max_cost": task.max_cost, "info": dict(task.info),
                      "wall_seconds": time.perf_counter() - start, "trials": [asdict(t) for t in trials]}
            with raw_path.open("a") as f:
                f.write(json.dumps(record) + "\n")
            records.append(record)
            m = metrics(record)
            print(f"{method.name:18s} seed {seed}: best in-budget loss {m['best_loss']:.4f}, training "
                  f"{m['training_seconds']:.0f} s, wall {m['wall_seconds']:.0f} s, "
                  f"{m['propose_seconds']:.2f} s / proposal", flush=True)
    return records


# ---------------------------------------------------------------------- reporting


def best_so_far(record: dict) -> list[float]:
    """Best in-budget loss after each trial (NaN until the first in-budget trial with a loss)."""
    best, curve = math.inf, []
    for t in record["trials"]:
        if t["loss"] is not None and t["cost"] is not None and t["cost"] <= record["max_cost"]:
            best = min(best, t["loss"])
        curve.append(best if math.isfinite(best) else math.nan)
    return curve


def metrics(record: dict) -> dict[str, float]:
    """The reported numbers of one run."""
    trials, n_init = record["trials"], record["n_init"]
    proposals = [t["propose_seconds"] for t in trials[n_init:]] or [math.nan]
    return {"best_loss": best_so_far(record)[-1],
            "training_seconds": sum(t["cost"] or 0.0 for t in trials),
            "wall_seconds": record["wall_seconds"],
            "propose_seconds": statistics.fmean(proposals),
            "failed": sum(t["loss"] is None for t in trials),
            "over_budget": sum(t["cost"] is not None and t["cost"] > record["max_cost"] for t in trials) / len(trials)}


def mean_se(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return math.nan, math.nan
    se = statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else math.nan
    return statistics.fmean(values), se


def by_method(records: list[dict]) -> dict[str, dict[int, dict]]:
    """Method -> seed -> record, methods in the order of ``METHODS`` (unknown names last)."""
    order = {name: i for i, name in enumerate(BY_NAME)}
    groups: dict[str, dict[int, dict]] = {}
    for r in sorted(records, key=lambda r: (order.get(r["method"], len(order)), r["method"], r["seed"])):
        groups.setdefault(r["method"], {})[r["seed"]] = r
    return groups


def paired(a: dict[int, dict], b: dict[int, dict]) -> tuple[str, float, float, int]:
    """Verdict of ``a`` against ``b`` on best in-budget loss over their common seeds: (win/tie/loss, mean
    difference a - b, its standard error, seeds). A run without any in-budget trial counts as the worst loss."""
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        return "-", math.nan, math.nan, len(seeds)
    worst = max([v for r in (*a.values(), *b.values()) if not math.isnan(v := metrics(r)["best_loss"])] or [0.0])
    value = lambda r: metrics(r)["best_loss"] if not math.isnan(metrics(r)["best_loss"]) else worst  # noqa: E731
    diffs = [value(a[s]) - value(b[s]) for s in seeds]
    mean, se = statistics.fmean(diffs), statistics.stdev(diffs) / math.sqrt(len(diffs))
    verdict = "win" if mean < 0 and mean <= -2 * se else "loss" if mean > 0 and mean >= 2 * se else "tie"
    return verdict, mean, se, len(seeds)


def markdown_table(records: list[dict]) -> str:
    """Per method: best in-budget loss, paired record against the peers, seconds."""
    groups = by_method(records)
    columns = [("best_loss", "best in-budget loss", "{:.4f}"), ("training_seconds", "training s / run", "{:.0f}"),
               ("wall_seconds", "wall s / run", "{:.0f}"), ("propose_seconds", "s / proposal", "{:.2f}"),
               ("failed", "failed trials", "{:.1f}"), ("over_budget", "over budget", "{:.0%}")]
    lines = ["| method | seeds | " + " | ".join(label for _, label, _ in columns) + " | paired wins / ties / losses |",
             "|---|---:|" + "---:|" * len(columns) + "---:|"]
    for name, runs in groups.items():
        rows = [metrics(r) for r in runs.values()]
        cells = []
        for key, _, fmt in columns:
            mean, se = mean_se([row[key] for row in rows])
            cells.append(fmt.format(mean) + ("" if math.isnan(se) else " ± " + fmt.format(se)))
        verdicts = [paired(runs, other)[0] for peer, other in groups.items() if peer != name]
        record = f"{verdicts.count('win')} / {verdicts.count('tie')} / {verdicts.count('loss')}"
        no_feasible = sum(math.isnan(row["best_loss"]) for row in rows)
        note = f" ({no_feasible} runs without an in-budget trial)" if no_feasible else ""
        lines.append(f"| {name}{note} | {len(runs)} | " + " | ".join(cells) + f" | {record} |")
    return "\n".join(lines)


def paired_table(records: list[dict]) -> str:
    """Row method against column method: mean paired difference of best in-budget loss ± se, and the verdict."""
    groups = by_method(records)
    names = list(groups)
    lines = ["| row vs column (Δ best loss, row − column) | " + " | ".join(names) + " |",
             "|---|" + "---:|" * len(names)]
    for a in names:
        cells = []
        for b in names:
            if a == b:
                cells.append("")
                continue
            verdict, mean, se, _ = paired(groups[a], groups[b])
            cells.append("-" if verdict == "-" else
                         f"{'**win**' if verdict == 'win' else verdict} {mean:+.4f} ± {se:.4f}")
        lines.append(f"| {a} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def per_seed_table(records: list[dict]) -> str:
    groups = by_method(records)
    seeds = sorted({r["seed"] for r in records})
    lines = ["| best in-budget loss | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---|" + "---:|" * len(seeds)]
    for name, runs in groups.items():
        cells = [f"{metrics(runs[s])['best_loss']:.4f}" if s in runs else "-" for s in seeds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def report(records: list[dict]) -> str:
    first = records[0]
    head = (f"task {first['task']}: max_cost = {first['max_cost']:.4g} s ({first['info'].get('budget', '')}), "
            f"{first['n_trials']} trials per run ({first['n_init']} initial)")
    return "\n\n".join([head, markdown_table(records), paired_table(records), per_seed_table(records)])


def figure(records: list[dict]):
    """Best in-budget loss against trials and against cumulative training seconds: mean ± se over seeds
    (a matplotlib ``Figure``; drawn where every seed has an in-budget trial)."""
    import numpy as np
    from matplotlib.figure import Figure

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    ax_trials, ax_seconds = fig.subplots(1, 2)
    groups = by_method(records)
    spent = [np.cumsum([t["cost"] or 0.0 for t in r["trials"]]) for r in records]
    grid = np.geomspace(max(min(s[0] for s in spent), 1e-3), max(s[-1] for s in spent), 200)
    for name, runs in groups.items():
        curves = np.array([best_so_far(r) for r in runs.values()], dtype=float)
        by_seconds = []
        for r in runs.values():
            seconds, best = np.cumsum([t["cost"] or 0.0 for t in r["trials"]]), np.array(best_so_far(r), dtype=float)
            at = np.searchsorted(seconds, grid, side="right") - 1  # the last trial finished by then
            by_seconds.append(np.where(at >= 0, best[np.clip(at, 0, None)], np.nan))
        for ax, x, values in ((ax_trials, np.arange(1, curves.shape[1] + 1), curves),
                              (ax_seconds, grid, np.array(by_seconds))):
            mean = values.mean(0)
            se = values.std(0, ddof=1) / math.sqrt(len(values)) if len(values) > 1 else np.zeros_like(mean)
            color = COLORS.get(name, "k")
            ax.plot(x, mean, color=color, lw=1.8, drawstyle="steps-post", label=f"{name} ({len(values)} seeds)")
            ax.fill_between(x, mean - se, mean + se, color=color, alpha=0.15, lw=0, step="post")
    first = records[0]
    ax_trials.axvline(first["n_init"] + 0.5, color="k", ls=":", lw=1, label="end of the initial trials")
    ax_trials.set_xlabel("trial")
    ax_seconds.set_xlabel("training seconds spent (cumulative)")
    for ax in (ax_trials, ax_seconds):
        ax.set_yscale("log")
        ax.set_ylabel("best in-budget loss")
        ax.legend(fontsize=8)
    fig.suptitle(f"{first['task']}: best loss within max_cost = {first['max_cost']:.3g} s (mean ± se over seeds)")
    return fig


# ---------------------------------------------------------------------- command line


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     epilog="See the module docstring for the methods and metrics.")
    parser.add_argument("task", choices=TASKS, help="the benchmark task")
    parser.add_argument("--seeds", type=int, help="seeds 0..S-1 (default: 10 surrogate, 5 digits)")
    parser.add_argument("--trials", type=int, help="trials per run (default: 60 surrogate, 32 digits)")
    parser.add_argument("--n-init", type=int, help="initial random / Sobol trials (default: 10 surrogate, 8 digits)")
    parser.add_argument("--methods", default=",".join(BY_NAME), help="comma-separated methods (default: all)")
    parser.add_argument("--sweep", default=str(DEFAULT_SWEEP), help="the MNIST sweep file (default: %(default)s)")
    parser.add_argument("--noise", type=float, default=0.0,
                        help="surrogate noise as a multiple of the sweep's measured level (default: 0, deterministic)")
    parser.add_argument("--max-cost", type=float, help="digits budget in seconds (default: 1.5x the reference "
                                                       "config's time, measured once)")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks"),
                        help="folder of peers_TASK.jsonl and peers_TASK.png (default: %(default)s)")
    parser.add_argument("--fresh", action="store_true", help="discard the runs already in the raw file")
    parser.add_argument("--report-only", action="store_true",
                        help="print the tables and draw the plot from the raw file")
    args = parser.parse_args(argv)
    for key, value in DEFAULTS[args.task].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in BY_NAME]
    if unknown:
        parser.error(f"unknown method(s) {unknown}; choose from {list(BY_NAME)}")
    if args.seeds < 1 or args.n_init < 2 or args.trials <= args.n_init:
        parser.error("--seeds must be >= 1, --n-init >= 2 (the models need two trials) and --trials > --n-init")
    if args.max_cost is not None and not args.max_cost > 0:
        parser.error(f"--max-cost must be positive, got {args.max_cost}")
    if not args.noise >= 0:
        parser.error(f"--noise must be >= 0, got {args.noise}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(1)
    out = Path(args.out)
    raw_path, plot_path = out / f"peers_{args.task}.jsonl", out / f"peers_{args.task}.png"
    try:
        records = read_raw(raw_path) if args.report_only else run_all(args, raw_path)
    except BenchmarkError as exc:
        sys.exit(f"peers.py: {exc}")
    if not records:
        sys.exit(f"peers.py: no results in {raw_path}")
    print()
    print(report(records))
    figure(records).savefig(plot_path, dpi=110)
    print(f"\nraw results: {raw_path}; plot: {plot_path}")


if __name__ == "__main__":
    main()
