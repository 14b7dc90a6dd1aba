"""Load finished sweeps (JSON lines ``{"trial", "config", "result"}``) into search tensors and outputs."""

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
