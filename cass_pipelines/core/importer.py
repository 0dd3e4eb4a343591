"""Streaming import of conversation messages (one JSON object per line).

The file is read line by line and written in batches, so memory stays flat for any file size.
A bad line is reported with its number and skipped; the rest goes in. Re-import adds nothing twice.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

BATCH_SIZE = 2000


class MessageLine(BaseModel):
    model_config = ConfigDict(extra="forbid")
    conversation_id: str = Field(min_length=1, max_length=200)
    message_id: str = Field(min_length=1, max_length=200)
    role: Literal["user", "assistant", "system"]
    content: str
    created_at: datetime
    title: str | None = Field(default=None, max_length=500)

    @field_validator("created_at")
    @classmethod
    def _aware(cls, v: datetime) -> datetime:
        if v.tzinfo is None:
            raise ValueError("must be ISO-8601 with a UTC offset")
        return v


@dataclass
class ImportReport:
    conversations_added: int = 0
    messages_added: int = 0
    lines_read: int = 0
    bad_lines: list[dict] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"conversations_added": self.conversations_added, "messages_added": self.messages_added,
                "lines_read": self.lines_read, "bad_lines": self.bad_lines}


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
        for lineno, raw_bytes in enumerate(handle, start=1):
            if not raw_bytes.strip():
                continue
            report.lines_read += 1
            try:
                msg = parse_line(raw_bytes.decode("utf-8"))
            except UnicodeDecodeError as exc:
                report.bad_lines.append({"line": lineno, "error": f"not UTF-8: {exc.reason}"})
                continue
            except ValueError as exc:
                report.bad_lines.append({"line": lineno, "error": str(exc)})
                continue
            if shift:
                msg = msg.model_copy(update={"created_at": msg.created_at + shift})
            batch.append(msg)
            if len(batch) >= batch_size:
                yield batch
                batch = []
    if batch:
        yield batch
