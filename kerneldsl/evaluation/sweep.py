"""Load finished trials into search tensors and outputs: sweep files (JSON lines ``{"trial", "config",
"result"}``) and the journals of ``kd.tick_tock`` (``load_trials`` reads either)."""

from __future__ import annotations

import json
import math
import numbers
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ..space.parameters import ConfigError
from ..space.space import Space


class SweepError(ConfigError):
    """A sweep file is malformed or does not fit the space."""


@dataclass
class Sweep:
    """Trials of a sweep: search points ``X [n, d]``, outputs ``Y [n, m]`` (NaN where missing)."""

    X: Tensor
    Y: Tensor
    output_names: tuple[str, ...]
    configs: list[dict[str, Any]]
    trials: list[Any]

    def output(self, name: str) -> Tensor:
        """Column ``[n]`` of one output."""
        if name not in self.output_names:
            raise SweepError(f"no output named {name!r}; outputs: {list(self.output_names)}")
        return self.Y[:, self.output_names.index(name)]

    def target(self, name: str, log: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """``(X [k, d], Y [k, 1], keep [n])`` of the ``k`` trials that have output ``name`` (its log with ``log``)."""
        y = self.output(name)
        keep = ~torch.isnan(y)
        if log:
            if (y[keep] <= 0).any():
                raise SweepError(f"output {name!r} has values <= 0, which have no log")
            y = y.log()
        return self.X[keep], y[keep].unsqueeze(-1), keep

    def __len__(self) -> int:
        return len(self.trials)


def _number(value: Any, where: str, name: str) -> float:
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise SweepError(f"{where}: output {name!r} = {value!r} is not a number")
    return float(value)


def load_sweep(
    path: str | os.PathLike,
    space: Space,
    outputs: Sequence[str] | None = None,
    clip: bool = False,
    dtype: torch.dtype = torch.float64,
) -> Sweep:
    """Read a sweep file; validate every config against ``space`` (errors name the line and trial).

    ``outputs``: result keys to return, in this order (default: every key seen, in order of
    first appearance); a missing or null output is NaN.
    """
    path = os.fspath(path)
    records = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = list(f)
    except OSError as exc:
        raise SweepError(f"cannot read sweep file {path!r}: {exc.strerror or exc}") from exc
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path} line {number}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SweepError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(record, dict) or not isinstance(record.get("config"), dict):
            raise SweepError(f"{where}: expected an object with a 'config' object, got {line.strip()[:80]!r}")
        result = record.get("result", {})
        if not isinstance(result, dict):
            raise SweepError(f"{where}: 'result' must be an object, got {result!r}")
        trial = record.get("trial", len(records))
        records.append((f"{where} (trial {trial})", trial, record["config"], result))

    if outputs is None:
        names: dict[str, None] = {}
        for *_, result in records:
            names.update(dict.fromkeys(result))
        outputs = tuple(names)
    else:
        outputs = tuple(outputs)
    rows = [space.encode(config, where, clip) for where, _, config, _ in records]
    values = [[_number(result.get(name), where, name) for name in outputs] for where, _, _, result in records]
    X = torch.tensor(rows, dtype=dtype).reshape(len(rows), space.dim)
    Y = torch.tensor(values, dtype=dtype).reshape(len(rows), len(outputs))
    return Sweep(X, Y, outputs, [dict(r[2]) for r in records], [r[1] for r in records])


def journal_outputs(path: str | os.PathLike) -> tuple[list[Any], list[dict[str, Any]], dict[str, list[float]]]:
    """``(trial ids, configs, outputs)`` of a journal of the optimisation loop: the one place that reads one.

    ``outputs`` holds ``loss`` (NaN for a trial that did not finish "ok": failed trials stay out of
    loss regression) and ``cost`` (the measured final cost of every finished or failed trial that
    recorded one; NaN for running, lost and stopped trials, whose final cost was never measured).
    """
    from ..loop.journal import JournalError, read_journal
    from ..loop.trial import TrialState

    try:
        _, records = read_journal(path)
    except JournalError as exc:
        raise SweepError(str(exc)) from None
    measured = (TrialState.OK, TrialState.FAILED)
    trials = [t.id for t in records]
    configs = [t.config for t in records]
    loss = [t.loss if t.state is TrialState.OK else math.nan for t in records]
    cost = [t.cost if t.state in measured and t.cost is not None else math.nan for t in records]
    return trials, configs, {"loss": loss, "cost": cost}


def is_journal(path: str | os.PathLike) -> bool:
    """Whether ``path`` starts with a kerneldsl journal header (else it is read as a sweep file)."""
    try:
        with open(path, encoding="utf-8") as f:
            first = f.readline()
    except OSError as exc:
        raise SweepError(f"cannot read {os.fspath(path)!r}: {exc.strerror or exc}") from exc
    try:
        head = json.loads(first)
    except json.JSONDecodeError:
        return False
    return isinstance(head, dict) and head.get("kind") == "header"


def load_trials(path: str | os.PathLike, space: Space, clip: bool = False, dtype: torch.dtype = torch.float64) -> Sweep:
    """A sweep file or a ``kd.tick_tock`` journal as a ``Sweep``.

    A journal gives the outputs ``loss`` and ``cost`` (``journal_outputs``); a sweep file gives
    every result key, plus ``cost`` as an alias of ``training_time`` when it has no ``cost``.
    """
    if not is_journal(path):
        sweep = load_sweep(path, space, clip=clip, dtype=dtype)
        if "cost" not in sweep.output_names and "training_time" in sweep.output_names:
            sweep.Y = torch.cat([sweep.Y, sweep.output("training_time").unsqueeze(-1)], dim=-1)
            sweep.output_names = (*sweep.output_names, "cost")
        return sweep
    trials, configs, outputs = journal_outputs(path)
    rows = [space.encode(config, f"{os.fspath(path)} (trial {trial})", clip) for trial, config in zip(trials, configs)]
    X = torch.tensor(rows, dtype=dtype).reshape(len(rows), space.dim)
    Y = torch.tensor(list(zip(*outputs.values())), dtype=dtype).reshape(len(rows), len(outputs))
    return Sweep(X, Y, tuple(outputs), [dict(c) for c in configs], trials)
