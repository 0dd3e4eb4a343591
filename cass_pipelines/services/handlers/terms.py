"""Cheap term matching, used where no model call is warranted: which edge or question a focus names,
which notes share a subject."""
from __future__ import annotations

import re
from typing import Callable, Sequence, TypeVar

R = TypeVar("R")
_WORD = re.compile(r"[a-z][a-z'-]{3,}")
STOPWORDS = frozenset("""about above after again against also among because been before being below between both
could does doing down during each every from further have having here into itself just more most much must
only other over same should some such than that their them then there these they this those through under
until very were what when where which while whom will with would your yours myself what's it's i'm""".split())


def terms(text: str) -> set[str]:
    """Content words of four letters or more, lower-cased, with a plural 's' dropped."""
    words = (w.strip("'-") for w in _WORD.findall(text.lower()))
    return {w[:-1] if w.endswith("s") and not w.endswith("ss") else w for w in words if w not in STOPWORDS}


def ranked(focus: str, rows: Sequence[R], text_of: Callable[[R], str]) -> list[R]:
    """Rows by how many terms they share with `focus` (most first); ties keep their order."""
    wanted = terms(focus)
    scored = [(-len(wanted & terms(text_of(r))), i, r) for i, r in enumerate(rows)]
    return [r for _, _, r in sorted(scored, key=lambda s: s[:2])]


def best_match(focus: str, rows: Sequence[R], text_of: Callable[[R], str]) -> R | None:
    """The row sharing most terms with `focus`, or None when none shares any."""
    wanted = terms(focus)
    best = max(rows, key=lambda r: len(wanted & terms(text_of(r))), default=None)
    return best if best is not None and wanted & terms(text_of(best)) else None
