"""Shared CLI plumbing: JSON or text output, clean errors, the runtime."""
from __future__ import annotations

import json
import sys
from datetime import date, datetime
from decimal import Decimal
from typing import Any, Callable

from cass_pipelines.domain.errors import shown

EXIT_FAILED = 1    # a run or the machine failed: the database, the disk, an action
EXIT_USAGE = 2     # a bad argument, setting, registry or input file: fix the input and retry
EXIT_REFUSED = 3   # refused while paused (`trigger` without --force, `run-phase`)
MAX_TEXT_CHARS = 2000   # free text given on the command line (--focus, --reason)


class CliError(Exception):
    """An error the user can act on: one line without a traceback, exit code 2 (or `code`)."""

    def __init__(self, message: str, code: int = EXIT_USAGE):
        super().__init__(message)
        self.code = code


def _default(value: Any) -> Any:
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    return str(value)


def emit(data: Any, as_json: bool, render: Callable[[Any], str]) -> None:
    if as_json:
        try:   # Infinity and NaN are not JSON: refuse rather than print something no parser reads
            text = json.dumps(data, indent=2, default=_default, allow_nan=False)
        except ValueError as exc:
            raise CliError(f"--json: the output holds a number JSON cannot represent ({exc})", EXIT_FAILED) from None
        sys.stdout.write(text + "\n")
    else:
        sys.stdout.write(render(data).rstrip("\n") + "\n")


def table(rows: list[list[Any]], header: list[str]) -> str:
    cells = [header] + [["" if c is None else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parse_date(text: str | None, default: date) -> date:
    if text is None:
        return default
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise CliError(f"--date: expected YYYY-MM-DD, got {shown(text)}") from None


def bounded_text(option: str, text: str | None, limit: int = MAX_TEXT_CHARS) -> str | None:
    """Free text from the command line, refused (not cut) when longer than `limit` characters."""
    if text is not None and len(text) > limit:
        raise CliError(f"{option}: at most {limit} characters, got {len(text)} ({shown(text, 40)})")
    return text
