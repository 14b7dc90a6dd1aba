"""Append-only JSON-lines journal of a study, safe against crashes.

The first line is a header (format version and the settings that decide what the
trials mean); then every ask and every tell is one line, flushed and fsynced before
the study moves on, so killing the process at any moment loses nothing that was
told. A crash in the middle of a write leaves a torn last line (no trailing
newline); reading drops it and the next append truncates it away. A damaged line
anywhere else is a clear `JournalError` naming the file and line, never silently
skipped. Journals of format 1 (one line per finished trial, written by kerneldsl
0.1) are read as they are and converted to format 2 when opened for writing.

One driver writes a journal at a time: opening it for writing takes an exclusive lock
(``<journal>.lock``, `filelock`, an ``flock`` that the operating system releases when the
process ends, however it ends) and records who holds it (``<journal>.driver``: host, pid,
since when). A second process that opens the journal for writing (a second terminal, a
SLURM array task, a restarted job whose old process still lives) gets a `JournalBusy`
error naming the holder, before it reads or writes anything, instead of interleaving its
lines with the first one's and marking its running trials lost. Reading (`read_journal`,
``kd.Study.load(path)`` before its first tell) takes no lock. The lock is as reliable as
``flock`` on the file system: local disks and NFSv4 yes; older NFS mounts may not
honour it.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import socket
import time
from pathlib import Path
from typing import Any, Iterable

from filelock import FileLock, Timeout

from .trial import Report, Trial, TrialState

__all__ = ["Journal", "JournalError", "JournalBusy", "read_journal"]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)


class JournalError(ValueError):
    """A journal file that cannot be read or does not match the current study."""


class JournalBusy(JournalError):
    """Another live process has the journal open for writing (one driver writes a journal at a time)."""


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


def read_journal(path: str | os.PathLike) -> tuple[dict | None, list[Trial]]:
    """Read a journal: its header (None for a missing or empty file) and its trials, in id order."""
    path = Path(path)
    if not path.exists():
        return None, []
    records, _ = _parse_lines(path, path.read_bytes())
    return _replay(path, records)


def _replay(path: Path, records: list[tuple[int, dict]]) -> tuple[dict | None, list[Trial]]:
    """Header and trials from parsed records (format 1 or 2), every field checked."""
    if not records:
        return None, []
    first, header = records[0]
    if header.get("kind") != "header":
        raise JournalError(f"{path}:{first}: not a kerneldsl journal (the first line must be its header)")
    version = header.get("version")
    if version not in READABLE_VERSIONS:
        raise JournalError(f"{path}:{first}: journal format version {version!r} is not one of {READABLE_VERSIONS}")
    trials: dict[int, Trial] = {}
    for number, record in records[1:]:
        where = f"{path}:{number}"
        kind = record.get("kind")
        expected = ("trial",) if version == 1 else ("ask", "tell", "report")
        if kind not in expected or not isinstance(record.get("trial"), int) or isinstance(record.get("trial"), bool):
            raise JournalError(f"{where}: expected a {' or '.join(expected)} record with an integer 'trial', "
                               f"got keys {sorted(record)}")
        _check_fields(record, where)
        trial_id = record["trial"]
        if kind == "report":
            if trial_id not in trials:
                raise JournalError(f"{where}: report for trial {trial_id}, which was never asked")
            if not isinstance(record.get("progress"), numbers.Real) or record.get("cost") is None:
                raise JournalError(f"{where}: a report needs a number 'cost' and 'progress', got {record}")
            trials[trial_id].reports.append(Report.from_record(record))
            continue
        if kind == "tell":
            if trial_id not in trials:
                raise JournalError(f"{where}: tell for trial {trial_id}, which was never asked")
            if trials[trial_id].state.finished:
                raise JournalError(f"{where}: trial {trial_id} is told a second time")
            trials[trial_id].apply_tell(record)
            continue
        if trial_id != len(trials):
            raise JournalError(f"{where}: expected trial {len(trials)}, got trial {trial_id}; the journal is out of order")
        try:
            trials[trial_id] = Trial.from_v1(record) if version == 1 else Trial.from_ask(record)
        except (KeyError, ValueError, TypeError) as exc:
            raise JournalError(f"{where}: trial {trial_id} cannot be read ({type(exc).__name__}: {exc})") from None
    return header, list(trials.values())


def _check_fields(record: dict, where: str) -> None:
    """Types of the fields a trial record may hold, checked before they are used (an edited journal may be off)."""
    where = f"{where}: trial {record.get('trial')!r}"
    if "config" in record and not isinstance(record["config"], dict):
        raise JournalError(f"{where}: config is {record['config']!r}, expected an object")
    state = record.get("state", record.get("status"))
    if state is not None and state not in {s.value for s in TrialState}:
        raise JournalError(f"{where}: unknown trial state {state!r} (one of {[s.value for s in TrialState]})")
    for key in ("loss", "cost", "estimated_cost", "budget"):
        value = record.get(key)
        number = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
        if value is None and key in ("loss", "cost") and state == TrialState.OK.value:
            raise JournalError(f"{where}: {key} is None (NoneType), expected a finite number (the trial is 'ok')")
        if not (value is None or number):
            raise JournalError(f"{where}: {key} is {value!r} ({type(value).__name__}), expected a finite number or null")
    if record.get("cost") is not None and record["cost"] <= 0 and record.get("kind") != "report":
        raise JournalError(f"{where}: cost is {record['cost']!r}, expected a positive number (it is modelled in log space)")
    phase = record.get("phase")
    if phase is not None and phase not in ("init", "tick", "tock"):
        raise JournalError(f"{where}: unknown phase {phase!r}")


class Journal:
    """An open journal: the header and trials already in it, and `write` for new ask and tell records.

    Opening an existing file checks that its header matches ``header`` on the keys
    that decide what the trials mean (see ``check_keys``) and cuts off a torn last
    line; a format-1 journal is rewritten as format 2 first (atomically).
    """

    def __init__(self, path: str | os.PathLike, header: dict, check_keys: Iterable[str] = ()):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock, self._released = _take_lock(self.path), False
        try:
            self._open(header, check_keys)
        except BaseException:
            self._lock.release()
            raise

    def _open(self, header: dict, check_keys: Iterable[str]) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        records, good_end = _parse_lines(self.path, data)
        old_header, self.trials = _replay(self.path, records)
        header = {"kind": "header", "version": FORMAT_VERSION, **_jsonable(header, "header")}
        if old_header is not None:
            for key in check_keys:
                if old_header.get(key) != header.get(key):
                    raise JournalError(
                        f"{self.path}: journal was written with {key}={old_header.get(key)!r}, "
                        f"this study has {key}={header.get(key)!r}; use a new journal path"
                    )
            if old_header.get("version") != FORMAT_VERSION:
                old_header = self._convert(old_header)
                good_end = self.path.stat().st_size
        self.header = old_header or header
        self._file = open(self.path, "r+b" if self.path.exists() else "w+b")
        self._file.truncate(good_end)  # drop a torn last line before appending
        self._file.seek(good_end)
        if old_header is None:
            self._write(self.header)

    def _convert(self, old_header: dict) -> dict:
        """Rewrite an older journal in the current format: same trials, one ask and one tell line each."""
        header = {**old_header, "version": FORMAT_VERSION, "converted_from": old_header.get("version")}
        lines = [header]
        for trial in self.trials:
            lines.append(_jsonable(trial.ask_record(), "trial"))
            lines.extend(_jsonable(report.record(trial.id), "report") for report in trial.reports)
            if trial.state.finished:
                lines.append(_jsonable(trial.tell_record(), "trial"))
        temporary = self.path.with_name(self.path.name + ".converting")
        with open(temporary, "wb") as out:
            out.write(b"".join(_encode(line) for line in lines))
            out.flush()
            os.fsync(out.fileno())
        os.replace(temporary, self.path)
        return header

    def write(self, record: dict) -> dict:
        """Write one ask or tell record durably (flush + fsync); return it as stored."""
        record = _jsonable(record, "trial")
        self._write(record)
        return record

    def _write(self, record: dict) -> None:
        self._file.write(_encode(record))
        self._file.flush()
        os.fsync(self._file.fileno())

    @property
    def closed(self) -> bool:
        return self._file.closed

    def close(self) -> None:
        """Close the file and let another driver open the journal."""
        if not self._file.closed:
            self._file.close()
        if self._lock.is_locked and not self._released:
            self._released = True
            if self._lock.lock_counter == 1:  # the last holder in this process: the next driver may come
                _driver_file(self.path).unlink(missing_ok=True)
            self._lock.release()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _driver_file(path: Path) -> Path:
    return path.with_name(path.name + ".driver")


def _take_lock(path: Path) -> FileLock:
    """The journal's writer lock, taken now or a `JournalBusy` naming the process that holds it."""
    # One lock object per path in this process (is_singleton): a study reopened in the same process shares it.
    lock = FileLock(path.with_name(path.name + ".lock"), is_singleton=True)
    try:
        lock.acquire(timeout=0)
    except Timeout:
        try:
            holder = json.loads(_driver_file(path).read_text())
            who = f"process {holder.get('pid')} on {holder.get('host')} since {holder.get('since')}"
        except (OSError, ValueError):
            who = "another process"
        raise JournalBusy(f"{path}: {who} has this journal open for writing; one driver writes a journal at a "
                          "time: wait for it to finish, stop it, or use another journal path (reading it with "
                          "kd.Study.load(path) is fine)") from None
    if lock.lock_counter > 1:  # this process holds it already
        return lock
    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())
    _driver_file(path).write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}))
    return lock


def _encode(record: dict) -> bytes:
    return (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
