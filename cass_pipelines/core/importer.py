"""Streaming import of conversation messages (one JSON object per line).

The file is read line by line and written in batches, so memory stays flat for any file size.
A bad line is reported with its number and skipped; the rest goes in. Re-import adds nothing twice.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO, Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

BATCH_SIZE = 5000   # one short connection per batch; each close checkpoints, so not too small
MAX_LINE_BYTES = 16 * 1024 * 1024   # a longer "line" (e.g. a file without newlines) is skipped, never held whole
MAX_REPORTED_BAD_LINES = 1000


class MessageLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conversation_id: str = Field(min_length=1, max_length=200)
    message_id: str = Field(min_length=1, max_length=200)
    role: Literal["user", "assistant", "system"]
    content: str
    created_at: datetime
    title: str | None = Field(default=None, max_length=500)

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

    def as_dict(self) -> dict:
        return {"conversations_added": self.conversations_added, "messages_added": self.messages_added,
                "lines_read": self.lines_read, "bad_lines": self.bad_lines,
                "bad_line_count": self.bad_line_count}


def parse_line(text: str) -> MessageLine:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"invalid JSON at column {exc.colno}: {exc.msg}") from None
    if not isinstance(data, dict):
        raise ValueError("expected a JSON object")
    try:
        return MessageLine.model_validate(data)
    except ValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(line)"
        more = f" (+{len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
        raise ValueError(f"field '{where}': {err['msg']}{more}") from None


def read_batches(path: Path, report: ImportReport, shift: timedelta = timedelta(0),
                 batch_size: int = BATCH_SIZE) -> Iterator[list[MessageLine]]:
    """Yield validated messages in batches; bad lines go to `report.bad_lines` with their number."""
    batch: list[MessageLine] = []
    with path.open("rb") as handle:  # bytes, so one bad encoding spoils only its own line
        for lineno, raw_bytes in enumerate(_lines(handle), start=1):
            if raw_bytes is None:
                report.lines_read += 1
                report.bad(lineno, f"line longer than {MAX_LINE_BYTES} bytes")
                continue
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
            batch.append(msg)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch


def _lines(handle: BinaryIO) -> Iterator[bytes | None]:
    """The file's lines as bytes; None for a line longer than MAX_LINE_BYTES (read past in chunks)."""
    while True:
        line = handle.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = handle.readline(MAX_LINE_BYTES)
            yield None
            continue
        yield line
