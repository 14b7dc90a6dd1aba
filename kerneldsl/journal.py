"""Append-only JSON-lines journal of finished trials, safe against crashes.

Every finished trial is written as one line, flushed and fsynced before the
loop moves on, so killing the process at any moment loses at most the trial
that was running. A crash in the middle of a write leaves a torn last line
(no trailing newline); reading drops it and the next append truncates it away.
A damaged line anywhere else is a clear `JournalError`, never silently skipped.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Iterable

__all__ = ["Journal", "JournalError", "read_journal"]

FORMAT_VERSION = 1


class JournalError(ValueError):
    """A journal file that cannot be read or does not match the current run."""


def _jsonable(value: Any, where: str) -> Any:
    """Convert a trial record to plain JSON values (non-finite floats become None)."""
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _jsonable(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            return _jsonable(value.item(), where)
        except (TypeError, ValueError, RuntimeError):
            pass
    raise JournalError(f"journal: {where} = {value!r} ({type(value).__name__}) is not JSON-serialisable")


def _parse_lines(path: Path, data: bytes) -> tuple[list[tuple[int, dict]], int]:
    """Parse journal bytes; return the (line number, record) pairs and the byte length of the intact prefix."""
    records: list[tuple[int, dict]] = []
    good_end = 0
    pos = 0
    line_no = 0
    while pos < len(data):
        newline = data.find(b"\n", pos)
        line_no += 1
        if newline < 0:  # torn last line from a crash mid-write: drop it
            break
        raw = data[pos:newline]
        pos = newline + 1
        if raw.strip():
            try:
                record = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise JournalError(f"{path}:{line_no}: damaged journal line ({exc})") from None
            if not isinstance(record, dict):
                raise JournalError(f"{path}:{line_no}: journal line is not a JSON object")
            records.append((line_no, record))
        good_end = pos
    return records, good_end


def read_journal(path: str | os.PathLike) -> tuple[dict | None, list[dict]]:
    """Read a journal: return its header (or None for an empty file) and its trial records."""
    path = Path(path)
    if not path.exists():
        return None, []
    records, _ = _parse_lines(path, path.read_bytes())
    return _split_header(path, records)


def _split_header(path: Path, records: list[tuple[int, dict]]) -> tuple[dict | None, list[dict]]:
    if not records:
        return None, []
    (first, header), trials = records[0], records[1:]
    if header.get("kind") != "header":
        raise JournalError(f"{path}:{first}: not a kerneldsl journal (the first line must be its header)")
    if header.get("version") != FORMAT_VERSION:
        raise JournalError(f"{path}:{first}: journal format version {header.get('version')!r} is not {FORMAT_VERSION}")
    for number, trial in trials:
        if trial.get("kind") != "trial" or "trial" not in trial:
            raise JournalError(f"{path}:{number}: expected a trial record, got {sorted(trial)}")
        _check_outputs(f"{path}:{number}: trial {trial['trial']!r}", trial)
    return header, [trial for _, trial in trials]


def _check_outputs(where: str, trial: dict) -> None:
    """A trial's loss and cost have the types the loop reads back (an edited journal may not):
    finite numbers, or null where the trial did not produce one (never for an 'ok' trial)."""
    for key in ("loss", "cost"):
        value = trial.get(key)
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if value is None and trial.get("status") == "ok" or not (value is None or number):
            raise JournalError(f"{where}: {key} is {value!r} ({type(value).__name__}), expected a finite number"
                               + (" (the trial is 'ok')" if value is None else " or null"))
    if trial.get("cost") is not None and trial["cost"] <= 0:
        raise JournalError(f"{where}: cost is {trial['cost']!r}, expected a positive number "
                           "(it is modelled in log space)")


class Journal:
    """An open journal: the trials already in it, and `append` for new ones.

    Opening an existing file checks that its header matches `header` on the keys
    that decide what the trials mean (see `check_keys`) and cuts off a torn last line.
    """

    def __init__(self, path: str | os.PathLike, header: dict, check_keys: Iterable[str] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = self.path.read_bytes() if self.path.exists() else b""
        records, good_end = _parse_lines(self.path, data)
        old_header, self.trials = _split_header(self.path, records)
        header = {"kind": "header", "version": FORMAT_VERSION, **_jsonable(header, "header")}
        if old_header is not None:
            for key in check_keys:
                if old_header.get(key) != header.get(key):
                    raise JournalError(
                        f"{self.path}: journal was written with {key}={old_header.get(key)!r}, "
                        f"this run has {key}={header.get(key)!r}; use a new journal path"
                    )
        self.header = old_header or header
        self._file = open(self.path, "r+b" if self.path.exists() else "w+b")
        self._file.truncate(good_end)  # drop a torn last line before appending
        self._file.seek(good_end)
        if old_header is None:
            self._write(self.header)

    def append(self, trial: dict) -> dict:
        """Write one finished trial durably (flush + fsync); return the record as stored."""
        record = {"kind": "trial", **_jsonable(trial, "trial")}
        self._write(record)
        self.trials.append(record)
        return record

    def _write(self, record: dict) -> None:
        line = json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n"
        self._file.write(line.encode())
        self._file.flush()
        os.fsync(self._file.fileno())

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
