"""How a bad value is shown in an error line: its repr, cut to a readable length."""
from __future__ import annotations

SHOWN_CHARS = 80


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """repr(value), truncated so a 120 KB string or a deeply nested list still gives one short line."""
    try:
        text = repr(value)
    except RecursionError:
        text = f"<{type(value).__name__} nested too deeply to show>"
    text = text.replace("\n", "\\n")
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} chars)"
