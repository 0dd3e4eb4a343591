"""How a bad value is shown in an error line: its repr, cut to a readable length, with anything shaped
like an API key masked (a key pasted into the wrong file is not printed back, even cut short)."""
from __future__ import annotations

import re

SHOWN_CHARS = 80
KEY_SHAPE = re.compile(r"sk-ant-[A-Za-z0-9_\-]{4,}")   # an Anthropic API key, or the start of one


def masked(text: str) -> str:
    return KEY_SHAPE.sub("[redacted]", text)


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """repr(value), truncated so a 120 KB string or a deeply nested list still gives one short line."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply to show>"
    text = masked(text.replace("\n", "\\n"))
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
