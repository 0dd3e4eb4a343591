"""Pauses: a person stops new work, everywhere or in one category (control_flags)."""
from __future__ import annotations

from typing import Mapping


def pause_reason(scopes: Mapping[str | None, str], category: str | None) -> str | None:
    """Why new work (of `category`, or any work when None) must not start, or None. `scopes` maps None
    (a global pause) or a category to its reason."""
    if None in scopes:
        return scopes[None]
    if category is not None and category in scopes:
        return f"{scopes[category]} (category {category} paused)"
    return None
