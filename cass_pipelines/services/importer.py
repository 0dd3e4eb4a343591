"""Streaming import of conversation messages (one JSON object per line).

The file is read line by line and written in batches, so memory stays flat for any file size.
A bad line is reported with its number and skipped; the rest goes in. Re-import adds nothing twice.
"""
from __future__ import annotations

import codecs
import json
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator

from cass_pipelines.domain.errors import shown

BATCH_SIZE = 5000   # one short connection per batch; each close checkpoints, so not too small
MAX_LINE_BYTES = 16 * 1024 * 1024   # a longer "line" (e.g. a file without newlines) is skipped, never held whole
MAX_REPORTED_BAD_LINES = 1000
# Message times outside [EARLIEST, import time + FUTURE_SLACK] are typos or broken exports (year 1, 9999).
EARLIEST = datetime(2000, 1, 1, tzinfo=timezone.utc)
FUTURE_SLACK = timedelta(days=1)


class ImportRefused(ValueError):
    """The input cannot be imported at all (not just one bad line), e.g. a device without newlines."""


class MessageLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conversation_id: str = Field(min_length=1, max_length=200)
    message_id: str = Field(min_length=1, max_length=200)
    role: Literal["user", "assistant", "system"]
    content: str
    created_at: datetime
    title: str | None = Field(default=None, max_length=500)
    _line: int = PrivateAttr(default=0)   # where it came from, for reports about it

    @field_validator("conversation_id", "message_id")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError(f"must not be blank (got {shown(v)})")
        if not v.isprintable():   # an id is shown in reports and used in keys: no NUL, newline or tab
            raise ValueError(f"must not contain control characters (got {shown(v)})")
        return v

    @field_validator("created_at", mode="before")
    @classmethod
    def _iso_text(cls, v: object) -> object:
        # Not a number: pydantic would read 1700000000 as Unix seconds (and guess ms vs s).
        if not isinstance(v, str):
            raise ValueError("must be an ISO-8601 string with a UTC offset")
        return v

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must be ISO-8601 with a UTC offset")
        return v

    @field_validator("conversation_id", "message_id", "content", "title")
    @classmethod
    def _encodable(cls, v: str | None) -> str | None:
        # JSON escapes can produce lone surrogates ("\ud800") that no UTF-8 store accepts.
        try:
            if v is not None:
                v.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("contains an unpaired surrogate (not valid Unicode text)") from None
        return v


@dataclass
class ImportReport:
    conversations_added: int = 0
    messages_added: int = 0
    lines_read: int = 0
    bad_lines: list[dict] = field(default_factory=list)   # the first MAX_REPORTED_BAD_LINES of them
    bad_line_count: int = 0

    def bad(self, line: int, error: str) -> None:
        self.bad_line_count += 1
        if len(self.bad_lines) < MAX_REPORTED_BAD_LINES:   # a garbage file must not fill memory with reports
            self.bad_lines.append({"line": line, "error": error})

    def duplicate(self, msg: MessageLine, earlier_line: int | None) -> None:
        """A (conversation_id, message_id) seen before with a different role, content or time: not imported."""
        key = f"({shown(msg.conversation_id, 40)}, {shown(msg.message_id, 40)})"
        where = (f"line {earlier_line} has the same message id" if earlier_line
                 else "a message with this id is already stored")
        self.bad(msg._line, f"duplicate message {key} with different content: {where}; this line was not imported")

    def as_dict(self) -> dict:
        return {"conversations_added": self.conversations_added, "messages_added": self.messages_added,
                "lines_read": self.lines_read, "bad_lines": self.bad_lines,
                "bad_line_count": self.bad_line_count}


def parse_line(text: str) -> MessageLine:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    except RecursionError:
        raise ValueError("invalid message: JSON nested too deeply (a message is one flat object)") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    try:
        return MessageLine.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(line)"
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ValueError(f"field '{where}': {err['msg']}{more}") from None


def time_problem(created_at: datetime, now: datetime | None) -> str | None:
    if created_at < EARLIEST:
        return f"field 'created_at': {created_at.isoformat()} is before {EARLIEST.date()}"
    if now is not None and created_at > now + FUTURE_SLACK:
        return (f"field 'created_at': {created_at.isoformat()} is more than a day after the import "
                f"({now.isoformat(timespec='seconds')})")
    return None


def read_batches(path: Path, report: ImportReport, shift: timedelta = timedelta(0),
                 batch_size: int = BATCH_SIZE, now: datetime | None = None) -> Iterator[list[MessageLine]]:
    """Yield validated messages in batches; bad lines go to `report.bad_lines` with their number.
    With `now`, a message time more than a day after it is a bad line."""
    batch: list[MessageLine] = []
    with path.open("rb") as handle:  # bytes, so one bad encoding spoils only its own line
        regular = stat.S_ISREG(path.stat().st_mode)
        for lineno, raw_bytes in enumerate(_lines(handle), start=1):
            if raw_bytes is None:
                if not regular:   # /dev/zero and the like: there is no next line to go on with
                    raise ImportRefused(f"{path}: not a regular file, and line {lineno} has no newline within "
                                        f"{MAX_LINE_BYTES} bytes; refusing to read on")
                report.lines_read += 1
                report.bad(lineno, f"line longer than {MAX_LINE_BYTES} bytes")
                continue
            if lineno == 1:   # a file saved as "UTF-8 with BOM" (Notepad, PowerShell) starts with one
                raw_bytes = raw_bytes.removeprefix(codecs.BOM_UTF8)
            if not raw_bytes.strip():
                continue
            report.lines_read += 1
            try:
                msg = parse_line(raw_bytes.decode("utf-8"))
            except UnicodeDecodeError as exc:
                report.bad(lineno, f"not UTF-8: {exc.reason}")
                continue
            except ValueError as exc:
                report.bad(lineno, str(exc))
                continue
            if shift:
                msg = msg.model_copy(update={"created_at": msg.created_at + shift})
            problem = time_problem(msg.created_at, now)
            if problem:
                report.bad(lineno, problem)
                continue
            msg._line = lineno
            batch.append(msg)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def first_lines(path: Path, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The first line of `path` holding each (conversation_id, message_id), found by reading it again
    (only when duplicates were met); {} for an input that cannot be read twice (a pipe, a device)."""
    wanted, found = set(keys), dict[tuple[str, str], int]()
    if not wanted or not stat.S_ISREG(path.stat().st_mode):
        return found
    with path.open("rb") as handle:
        for lineno, raw in enumerate(_lines(handle), start=1):
            try:
                data = json.loads(raw) if raw and raw.strip() else None
            except (ValueError, RecursionError):
                continue
            if not isinstance(data, dict):
                continue
            key = (data.get("conversation_id"), data.get("message_id"))
            if all(isinstance(k, str) for k in key) and key in wanted and key not in found:
                found[key] = lineno
                if len(found) == len(wanted):
                    break
    return found


def _lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines as bytes; None for a line longer than MAX_LINE_BYTES (read past in chunks)."""
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            yield None   # first, so a reader of an endless device can stop here
            while line and not line.endswith(b"\n"):
                line = handle.readline(MAX_LINE_BYTES)
            continue
        yield line
