"""The write-ahead log of paid answers: a response's ledger row is appended (and fsynced) to a file
of the process the moment it arrives, before the database is opened to settle it. An open of the
DuckDB file can take tens of milliseconds under load and a process can die in between; recovery
replays the rows the ledger lacks, so no billed answer is lost or released as $0.

One file per process (`<host>-<pid>.jsonl` under CASS_HOME/paid); a file is deleted once its process
is gone and every row in it is in the ledger.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict
from datetime import date, datetime
from pathlib import Path
from typing import Callable, Iterator, Sequence

from cass_pipelines.store.claims import HOST
from cass_pipelines.store.ledger import LedgerRow


def log_dir(home: Path) -> Path:
    return home / "paid"


def _file(home: Path) -> Path:
    return log_dir(home) / f"{HOST}-{os.getpid()}.jsonl"


def append(home: Path, rows: Sequence[LedgerRow]) -> None:
    """The rows at the end of this process's file, fsynced once (a batch's answers: one sync, not one each)."""
    path = _file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = "".join(json.dumps(asdict(row), default=str, separators=(",", ":")) + "\n" for row in rows)
    data = memoryview(lines.encode("utf-8"))
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        while data:   # a short write (a full disk raises; a signal may cut one) goes on where it stopped
            data = data[os.write(fd, data):]
        os.fsync(fd)
    finally:
        os.close(fd)


def _row(data: dict) -> LedgerRow:
    data["ts"] = datetime.fromisoformat(data["ts"])
    data["date"] = date.fromisoformat(data["date"])
    return LedgerRow(**data)


def read(path: Path) -> Iterator[LedgerRow]:
    """The rows of one file; a line cut short by a crash mid-write is skipped (it was never settled
    either, and its answer is what the process died receiving)."""
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                yield _row(json.loads(line))
            except (ValueError, TypeError, KeyError):
                continue


def files(home: Path) -> list[tuple[Path, str, int]]:
    """(path, host, pid) of every log file."""
    out = []
    for path in sorted(log_dir(home).glob("*.jsonl")):
        host, _, pid = path.stem.rpartition("-")
        if pid.isdigit():
            out.append((path, host, int(pid)))
    return out


def dead_files(home: Path, alive: Callable[[int], bool]) -> list[Path]:
    """Files of this host's processes that are gone: nothing will be appended to them again."""
    return [path for path, host, pid in files(home) if host == HOST and not alive(pid)]
