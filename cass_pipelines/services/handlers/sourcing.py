"""Saying where knowledge came from: research and world actions use the server-side web search tool
only when settings.web_search is on, and otherwise say plainly that no live source was consulted."""
from __future__ import annotations

NO_LIVE_SOURCE = ("No live source was consulted: web search is turned off, so this draws only on what I "
                  "already knew, which may be out of date.")


def source_line(web_search: bool, sources: list[str]) -> str:
    if not web_search:
        return NO_LIVE_SOURCE
    cited = [s.strip() for s in sources if s.strip()]
    if not cited:
        return "Web search was available, but I cited no source for this."
    return "Sources consulted (web search): " + "; ".join(cited[:8])


def search_instruction(web_search: bool) -> str:
    if web_search:
        return "I may search the web for current sources, and I list the ones I actually used."
    return "I have no web access for this; I use only what I already know and say how dated it may be."
