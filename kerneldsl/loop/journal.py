"""Append-only JSON-lines journal of a study, safe against crashes.

The first line is a header (format version and the settings that decide what the
trials mean); then every ask and every tell is one line, flushed and fsynced before
the study moves on, so killing the process at any moment loses nothing that was
told. A crash in the middle of a write leaves a torn last line (no trailing
newline); reading drops it and the next append truncates it away. A damaged line
anywhere else is a clear `JournalError` naming the file and line, never silently
skipped. Journals of format 1 (one line per finished trial, written by kerneldsl
0.1) are read as they are and converted to format 2 when opened for writing.

Many drivers may share one journal (several terminals, a SLURM array, a restarted job
whose old process still lives), each a `Study` in its own process, on one machine or on
several that mount the same file system:

* every append happens under a lock (``<journal>.lock``: `filelock`, an ``flock`` that the
  operating system releases when the process ends, however it ends), and before it the
  driver reads the lines the other drivers appended since its last look, so the file is
  one sequence of whole lines and trial ids are unique: an ask takes the next id under the
  lock (`Journal.transaction`);
* each driver has an id and a lease: a heartbeat file ``<journal>.drivers/<id>`` (its host
  and pid) whose modification time a daemon thread refreshes every ``LEASE / 5`` seconds.
  Every ask record names its driver. Running trials are marked lost only when their
  driver's lease is over: its heartbeat file is gone (closed), older than `LEASE` seconds
  (the file system's clock against itself: the reader's own heartbeat file is touched to
  read "now"), or it is on this host and its process no longer exists. Trials asked by a
  journal without driver ids (older versions) count as over.
* settings are checked at open under the lock (the header is written by the first driver).

The lock is as reliable as ``flock`` on the file system: local disks, and NFS mounts with
locking (Linux clients map ``flock`` onto NFS byte-range locks); a mount with ``nolock`` or
``local_lock=all`` locks only within one machine: run every driver of a journal on that
machine then. Files are reopened for each look and append (NFS close-to-open consistency).
A journal replaced or shortened under a driver is a `JournalError`, and converting a
format-1 journal while other drivers are live is refused (`JournalBusy`).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import os
import socket
import threading
import time
import uuid
import weakref
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

from filelock import FileLock, Timeout

from .trial import Report, Trial, TrialState

__all__ = ["Journal", "JournalError", "JournalBusy", "read_journal", "LEASE", "LOCK_TIMEOUT"]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
LEASE = 30.0
"""Seconds without a heartbeat after which a driver's running trials may be marked lost by another driver."""
LOCK_TIMEOUT = 120.0
"""Seconds a driver waits for the journal's lock before it gives up with a `JournalError`."""


class JournalError(ValueError):
    """A journal file that cannot be read or does not match the current study."""


class JournalBusy(JournalError):
    """The journal cannot be changed that way while other drivers have it open (a format conversion)."""


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


def _parse_lines(path: Path, data: bytes, line_no: int = 0) -> tuple[list[tuple[int, dict]], int]:
    """Parse journal bytes (whose first line is line ``line_no + 1``); return the (line number, record) pairs and
    the byte length of the intact prefix."""
    records: list[tuple[int, dict]] = []
    good_end = 0
    pos = 0
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
    replay = _Replay(path)
    replay.apply(records)
    return replay.header, list(replay.trials.values())


class _Replay:
    """Journal records applied in order (all at once, or as other drivers append them), each one checked."""

    def __init__(self, path: Path):
        self.path, self.header, self.trials = path, None, {}

    def apply(self, records: list[tuple[int, dict]]) -> None:
        for number, record in records:
            if self.header is None:
                self._start(number, record)
            else:
                self.record(number, record)

    def _start(self, number: int, header: dict) -> None:
        if header.get("kind") != "header":
            raise JournalError(f"{self.path}:{number}: not a kerneldsl journal (the first line must be its header)")
        version = header.get("version")
        if version not in READABLE_VERSIONS:
            raise JournalError(f"{self.path}:{number}: journal format version {version!r} is not one of "
                               f"{READABLE_VERSIONS}")
        self.header = header

    def record(self, number: int | str, record: dict) -> None:
        """Apply one ask, report or tell record (``number``: its line, or where it comes from)."""
        trials, where = self.trials, f"{self.path}:{number}"
        kind = record.get("kind")
        expected = ("trial",) if self.header.get("version") == 1 else ("ask", "tell", "report")
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
            return
        if kind == "tell":
            if trial_id not in trials:
                raise JournalError(f"{where}: tell for trial {trial_id}, which was never asked")
            if trials[trial_id].state.finished and not late_tell(trials[trial_id], record):
                raise JournalError(f"{where}: trial {trial_id} is told a second time")
            trials[trial_id].apply_tell(record)
            return
        if trial_id != len(trials):
            raise JournalError(f"{where}: expected trial {len(trials)}, got trial {trial_id}; the journal is out of order")
        try:
            trials[trial_id] = Trial.from_v1(record) if kind == "trial" else Trial.from_ask(record)
        except (KeyError, ValueError, TypeError) as exc:
            raise JournalError(f"{where}: trial {trial_id} cannot be read ({type(exc).__name__}: {exc})") from None


def late_tell(trial: Trial, record: dict) -> bool:
    """Whether ``record`` is the outcome of a trial that another driver marked lost while it still ran (its
    driver's lease ran out, and it came back): the outcome is kept, once."""
    return trial.state is TrialState.LOST and record.get("state") not in (None, TrialState.LOST.value)


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
    if not isinstance(record.get("driver"), (str, type(None))):
        raise JournalError(f"{where}: driver is {record['driver']!r}, expected a string or null")
    phase = record.get("phase")
    if phase is not None and phase not in ("init", "tick", "tock"):
        raise JournalError(f"{where}: unknown phase {phase!r}")


class Journal:
    """An open journal, shared with any other drivers: the header and trials in it at open, then `transaction`
    (the lock, and the records other drivers appended since the last look) and `append` for new records.

    Opening checks, under the lock, that an existing file's header matches ``header`` on the keys that
    decide what the trials mean (``check_keys``) and cuts off a torn last line; a format-1 journal is
    rewritten as format 2 first (atomically; refused while other drivers are live), a missing or empty
    one gets ``header``. Nothing is written to the journal itself until the first `append`.
    """

    def __init__(self, path: str | os.PathLike, header: dict, check_keys: Iterable[str] = (),
                 lease: float | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.lease = LEASE if lease is None else float(lease)
        self.driver = uuid.uuid4().hex[:16]
        self._mutex = threading.RLock()  # the driver's threads one at a time; the file lock between processes
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"), thread_local=False,
                              preserve_lock_file=True)
        self._held = 0
        self._closed = False
        self._offset, self._lines, self._inode = 0, 0, None
        self._heartbeat = _HeartbeatFile(self.path, self.driver)
        try:
            with self._locked():
                self._open(header, check_keys)
        except BaseException:
            self._heartbeat.remove()
            raise
        _HEARTBEATS.add(self)

    def _open(self, header: dict, check_keys: Iterable[str]) -> None:
        data = self.path.read_bytes() if self.path.exists() else b""
        records, good_end = _parse_lines(self.path, data)
        self._replay = _Replay(self.path)
        self._replay.apply(records)
        old_header = self._replay.header
        header = {"kind": "header", "version": FORMAT_VERSION, **_jsonable(header, "header")}
        if old_header is not None:
            for key in check_keys:
                if old_header.get(key) != header.get(key):
                    raise JournalError(
                        f"{self.path}: journal was written with {key}={old_header.get(key)!r}, "
                        f"this study has {key}={header.get(key)!r}; use a new journal path"
                    )
            if old_header.get("version") != FORMAT_VERSION:
                self._convert(old_header)
                data = self.path.read_bytes()
                records, good_end = _parse_lines(self.path, data)
                self._replay = _Replay(self.path)
                self._replay.apply(records)
        if good_end < len(data):  # a torn last line of a driver that died mid-write: cut it off
            with open(self.path, "r+b") as handle:
                handle.truncate(good_end)
                os.fsync(handle.fileno())
        if old_header is None:
            with open(self.path, "wb") as handle:  # missing or empty (or only a torn line): the header first
                _append(handle, [header])
            data = _encode(header)
            good_end = len(data)
            self._replay = _Replay(self.path)
            self._replay.apply([(1, header)])
        self.header = self._replay.header
        self.trials = copy.deepcopy(list(self._replay.trials.values()))  # the study's own; the replay keeps its
        self._offset, self._lines, self._inode = good_end, max(1, data[:good_end].count(b"\n")), self._stat().st_ino

    def _convert(self, old_header: dict) -> None:
        """Rewrite an older journal in the current format: same trials, one ask and one tell line each."""
        others = live_drivers(self.path, exclude=self.driver)
        if others:
            raise JournalBusy(f"{self.path}: a journal of format {old_header.get('version')} is converted to format "
                              f"{FORMAT_VERSION} when opened for writing, which cannot be done while other drivers "
                              f"have it open ({', '.join(others)}); stop them first")
        header = {**old_header, "version": FORMAT_VERSION, "converted_from": old_header.get("version")}
        lines = [header]
        for trial in self._replay.trials.values():
            lines.append(_jsonable(trial.ask_record(), "trial"))
            lines.extend(_jsonable(report.record(trial.id), "report") for report in trial.reports)
            if trial.state.finished:
                lines.append(_jsonable(trial.tell_record(), "trial"))
        temporary = self.path.with_name(self.path.name + ".converting")
        with open(temporary, "wb") as out:
            _append(out, lines)
        os.replace(temporary, self.path)

    def _stat(self) -> os.stat_result:
        return os.stat(self.path)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        """This driver's mutex and the journal's file lock (re-entrant within the driver)."""
        with self._mutex:
            if self._held == 0:
                try:
                    self._lock.acquire(timeout=LOCK_TIMEOUT)
                except Timeout:
                    raise JournalError(f"{self.path}: its lock {self._lock.lock_file} was held by another driver for "
                                       f"more than {LOCK_TIMEOUT:g} s") from None
            self._held += 1
            try:
                yield
            finally:
                self._held -= 1
                if self._held == 0:
                    self._lock.release()

    @contextmanager
    def transaction(self) -> Iterator[list[dict]]:
        """Hold the lock; yields the records the other drivers appended since the last look (checked, in order),
        which the caller applies before it decides anything (the next trial id) and `append` s its own."""
        if self._closed:
            raise JournalError(f"{self.path}: the journal is closed")
        with self._locked():
            yield self._read_new()

    def _read_new(self) -> list[dict]:
        stat = self._stat()
        if stat.st_ino != self._inode or stat.st_size < self._offset:
            raise JournalError(f"{self.path}: the journal was replaced or shortened while this driver had it open "
                               "(another program rewrote it); open the study again")
        if stat.st_size == self._offset:
            return []
        with open(self.path, "rb") as handle:  # opened anew: another machine's appends are visible (NFS)
            handle.seek(self._offset)
            data = handle.read()
        records, good_end = _parse_lines(self.path, data, self._lines)
        if good_end < len(data):  # a driver died mid-write (we hold the lock): cut its torn line off
            with open(self.path, "r+b") as handle:
                handle.truncate(self._offset + good_end)
                os.fsync(handle.fileno())
        self._offset += good_end
        self._lines += data[:good_end].count(b"\n")
        for number, record in records:
            self._replay.record(number, record)
        return [record for _, record in records]

    def append(self, *records: dict) -> list[dict]:
        """Write records durably (flush + fsync) inside a `transaction`; return them as stored."""
        if not self._held:
            raise RuntimeError("Journal.append outside Journal.transaction")
        stored = [_jsonable(record, "trial") for record in records]
        for record in stored:
            self._replay.record(f"new {record.get('kind')} record", record)
        with open(self.path, "ab") as handle:
            written = _append(handle, stored)
        self._offset += written
        self._lines += len(stored)
        return stored

    def expired(self, drivers: Iterable[str | None]) -> set[str | None]:
        """The drivers among ``drivers`` whose lease is over (None: trials asked without a driver id)."""
        now = self._heartbeat.touch()
        return {d for d in set(drivers) if d != self.driver and not _alive(self.path, d, now, self.lease)}

    def elsewhere(self, drivers: Iterable[str | None]) -> set[str | None]:
        """The drivers among ``drivers`` that are not in this process (a driver of this process, such as a second
        `Study` on the same journal, may be waiting on this thread: nobody waits for its trials)."""
        return {d for d in set(drivers) if d != self.driver and not _in_this_process(self.path, d)}

    @property
    def closed(self) -> bool:
        return self._closed

    def close(self) -> None:
        """Stop this driver's heartbeat: its running trials may be marked lost by the next driver at once."""
        if not self._closed:
            self._closed = True
            _HEARTBEATS.discard(self)
            self._heartbeat.remove()

    def __enter__(self) -> "Journal":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _append(handle, records: list[dict]) -> int:
    data = b"".join(_encode(record) for record in records)
    handle.write(data)
    handle.flush()
    os.fsync(handle.fileno())
    return len(data)


# ---------------------------------------------------------------------------------------------------- leases
def _drivers_dir(path: Path) -> Path:
    return path.with_name(path.name + ".drivers")


class _HeartbeatFile:
    """``<journal>.drivers/<driver>``: the driver's host and pid; its modification time is the heartbeat."""

    def __init__(self, path: Path, driver: str):
        self.file = _drivers_dir(path) / driver
        self.holder = {"host": socket.gethostname(), "pid": os.getpid(),
                       "since": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime())}
        self._write()

    def _write(self) -> None:
        self.file.parent.mkdir(exist_ok=True)
        self.file.write_text(json.dumps(self.holder))

    def touch(self) -> float:
        """Refresh the heartbeat; returns the file system's time now (the file's new modification time)."""
        try:
            os.utime(self.file)
        except FileNotFoundError:  # removed under us (a cleanup): write it again
            self._write()
        return os.stat(self.file).st_mtime

    def remove(self) -> None:
        self.file.unlink(missing_ok=True)


def _holder(path: Path, driver: str | None) -> tuple[dict, float] | None:
    """What ``driver``'s heartbeat file says (host, pid) and its last beat, or None (no driver id, gone,
    unreadable)."""
    if driver is None:
        return None
    file = _drivers_dir(path) / driver
    try:
        beat = os.stat(file).st_mtime
        holder = json.loads(file.read_text())
    except (OSError, ValueError):
        return None
    return (holder, beat) if isinstance(holder, dict) else None


def _alive(path: Path, driver: str | None, now: float, lease: float) -> bool:
    """Whether ``driver`` still holds its lease on the journal at ``path``."""
    found = _holder(path, driver)
    return found is not None and _holds_lease(*found, now, lease)


def _holds_lease(holder: dict, beat: float, now: float, lease: float) -> bool:
    """Whether a heartbeat file that says ``holder`` and last beat at ``beat`` still holds its lease at ``now``:
    beaten within ``lease`` seconds, and its process alive when it is on this host."""
    if now - beat > lease:
        return False
    if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
        try:
            os.kill(holder["pid"], 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass
    return True


def _in_this_process(path: Path, driver: str | None) -> bool:
    """Whether ``driver``'s heartbeat file names this process (False when it is gone or unreadable)."""
    found = _holder(path, driver)
    return found is not None and found[0].get("host") == socket.gethostname() and found[0].get("pid") == os.getpid()


def live_drivers(path: str | os.PathLike, exclude: str | None = None, lease: float | None = None) -> list[str]:
    """The drivers that hold a lease on the journal at ``path`` now, as ``pid <pid> on <host>``."""
    path = Path(path)
    folder = _drivers_dir(path)
    if not folder.is_dir():
        return []
    now, out = time.time(), []
    for file in sorted(folder.iterdir()):
        found = _holder(path, file.name) if file.name != exclude else None
        if found is not None and _holds_lease(*found, now, LEASE if lease is None else lease):
            out.append(f"pid {found[0].get('pid')} on {found[0].get('host')}")
    return out


class _Heartbeats:
    """One daemon thread per process that refreshes the heartbeat of every open journal."""

    def __init__(self):
        self._journals: "weakref.WeakSet[Journal]" = weakref.WeakSet()
        self._guard = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, journal: Journal) -> None:
        weakref.finalize(journal, journal._heartbeat.remove)
        with self._guard:
            self._journals.add(journal)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="kerneldsl-journal-heartbeat", daemon=True)
                self._thread.start()

    def discard(self, journal: Journal) -> None:
        with self._guard:
            self._journals.discard(journal)

    def _run(self) -> None:
        while True:
            with self._guard:
                journals = list(self._journals)
            for journal in journals:
                try:
                    journal._heartbeat.touch()
                except OSError:
                    pass
            period = min((j.lease for j in journals), default=LEASE) / 5
            del journals
            time.sleep(period)


_HEARTBEATS = _Heartbeats()


def _encode(record: dict) -> bytes:
    return (json.dumps(record, allow_nan=False, separators=(",", ":")) + "\n").encode()
