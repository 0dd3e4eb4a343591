"""Row ids for what the agent makes: a readable prefix (what it is) and a random suffix."""
from __future__ import annotations

import uuid


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:12]}"
