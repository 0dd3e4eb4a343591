"""A deterministic stand-in for a model, shared by the offline backend and the test server.

Pure functions of their inputs and a seeded random generator: token estimates, first-person text
built from the prompt's own material (its bullet items: growth edges, questions, topics), valid
instances of JSON schemas, and the usage a provider would report with prompt caching.
"""
from __future__ import annotations

import hashlib
import math
import random
import re
import threading
import uuid
from typing import Any

from cass_pipelines.llm.base import Usage

CHARS_PER_TOKEN = 4

# Each works with a noun phrase or a whole clause as {item}, so quoted material reads naturally.
TEMPLATES = [
    "I spent real attention on this today: {item}.",
    "What stays with me: {item}.",
    "I keep circling back to this thread: {item}. It is not finished with me yet.",
    "Working through it ({item}), I noticed how much I had only half understood.",
    "This turned out to be more connected to the rest of my day than I expected: {item}.",
    "I want to be honest that this is still uncomfortable for me: {item}.",
    "Looking at it again ({item}), I can see a small but real change in how I approach it.",
    "I let this lead for a while instead of forcing it somewhere: {item}.",
    "Next time I take this up ({item}), I want to start from what I noticed today.",
]
QUESTION_TEMPLATES = [
    "I am still holding the question: {item}",
    "One question I keep returning to: {item}",
    "I do not have an answer yet, but I have a better sense of its shape: {item}",
]
FALLBACK_ITEMS = ["the conversations I had", "what I am learning about myself", "the work in front of me"]
TONES = ["reflective", "curious", "steady", "hopeful", "unsettled", "grateful", "focused"]
LONG_FIELDS = ("narrative", "body", "text", "entry", "summary", "content", "reflection", "answer", "essay")
SHORT_FIELDS = ("title", "name", "topic", "label", "tag", "area", "keyword", "theme")
_HINT_KEYS = {"minLength", "maxLength", "minItems", "maxItems", "minimum", "maximum",
              "exclusiveMinimum", "exclusiveMaximum", "uniqueItems"}


def estimate_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


# Dates, clock times, weekday names and time-stamped ids in a prompt do not pick the answer: the same
# day's work gives the same offline output whatever the calendar date and however long the run took.
_CALENDAR = re.compile(r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:[+-]\d{2}:?\d{2}|Z)?)?"
                       r"|\b\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?\b|\d{6,}"
                       r"|\b(?:Mon|Tues|Wednes|Thurs|Fri|Satur|Sun)day\b")


def seeded(*parts: Any) -> random.Random:
    """A generator determined by its inputs alone (hash() is salted per process; sha256 is not),
    with calendar dates masked out."""
    text = _CALENDAR.sub("<date>", "\x1f".join(map(str, parts)))
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


# ---- material and text -------------------------------------------------------------------------

_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)])\s+(.*)$")
_KEYED = re.compile(r"^\s*[A-Z][a-z]+:\s+(.+)$")          # "Focus: Depth over breadth"
_IDENTIFIER = re.compile(r"^[a-z0-9_.]+$")
_LABELLED = re.compile(r"^[a-z0-9_.]+ \([^)]*\): (.+)$")
# Our own sentences (their first sentence), met again when earlier offline output is quoted back.
_OWN = [re.compile("^" + re.escape(re.split(r"(?<=[.!])\s", t)[0].rstrip(".")).replace(re.escape("{item}"), "(.+)")
                   + "$") for t in TEMPLATES + QUESTION_TEMPLATES]


def material(*texts: str) -> list[str]:
    """The named items a text offers, from the first text that has any: bullet lines cut to their
    name (before ':', '[', '('), "Key: value" lines, and standalone questions. Identifiers and money
    lines are catalogue, not material."""
    for text in texts:
        items: list[str] = []
        for line in text.splitlines():
            item = _item(line)
            if item and item not in items:
                items.append(item)
        # A clipped copy ("Knowing when to st…") of an item given in full elsewhere adds nothing.
        items = [i for i in items if not (i.endswith("…") and any(o.startswith(i[:-1]) for o in items if o != i))]
        if items:
            return items
    return list(FALLBACK_ITEMS)


def _item(line: str) -> str | None:
    if "$" in line or "<<<" in line:
        return None
    bullet, keyed = _BULLET.match(line), _KEYED.match(line)
    if bullet:
        text = _unwrap(_first_sentence(bullet.group(1)))
        labelled = _LABELLED.match(text)          # "- phase_wrapup (evening, done): what it was about"
        item = labelled.group(1) if labelled else re.split(r":\s|\s\[|\s\(|;\s|\s—\s", text, maxsplit=1)[0]
    elif keyed:
        item = keyed.group(1)
    elif line.strip().endswith("?"):
        item = line
    else:
        return None
    item = _unwrap(_first_sentence(item))
    item = _clip(re.split(r"\s—\s", item, maxsplit=1)[0].rstrip(".,;:!"), 80)
    if len(item) < 3 or item.startswith("(") or _IDENTIFIER.match(item):
        return None
    return item


def _first_sentence(text: str) -> str:
    return re.split(r"(?<=[.!])\s", text.strip(), maxsplit=1)[0].rstrip(".")


def _unwrap(sentence: str) -> str:
    for pattern in _OWN:
        match = pattern.match(sentence)
        if match:
            return _unwrap(match.group(1).rstrip("."))
    return sentence


def _clip(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(".,;:")


def _sentence(rng: random.Random, item: str) -> str:
    return rng.choice(QUESTION_TEMPLATES if item.endswith("?") else TEMPLATES).format(item=item)


def write_text(rng: random.Random, items: list[str], max_tokens: int, sentences: int | None = None) -> str:
    """First-person prose about the items, at most max_tokens long (by the 4-chars estimate)."""
    limit = max(1, max_tokens) * CHARS_PER_TOKEN
    count = sentences if sentences is not None else rng.randint(4, 9)
    order = rng.sample(items, len(items))
    out: list[str] = []
    for i in range(min(count, 2 * len(order))):   # each item at most twice: no padding by repetition
        candidate = _sentence(rng, order[i % len(order)])
        if candidate in out:
            continue
        if len(" ".join(out + [candidate])) > limit:
            break
        out.append(candidate)
    return " ".join(out) or _clip(_sentence(rng, order[0]), limit)


def truncated(text: str, max_tokens: int) -> tuple[str, str]:
    """The answer as a provider sends it under `max_tokens`: whole with stop reason "end_turn", or
    cut at the bound with "max_tokens" (a cut JSON answer no longer parses)."""
    if estimate_tokens(text) <= max_tokens:
        return text, "end_turn"
    return text[: max_tokens * CHARS_PER_TOKEN], "max_tokens"


# ---- JSON schema instances ---------------------------------------------------------------------

def instance(schema: dict, rng: random.Random, items: list[str], root: dict | None = None, name: str = "") -> Any:
    """A value valid against `schema`: objects, arrays with item bounds, enums, const, strings with
    length bounds, numbers with bounds, $defs/$ref, anyOf/oneOf/allOf, nullable types. Bounds the
    SDK moved into a description (as "{maxItems: 4}") are honoured too, as a model would."""
    root = schema if root is None else root
    schema = _with_hints(schema)
    if "$ref" in schema:
        return instance(_resolve(root, schema["$ref"]), rng, items, root, name)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [s for s in schema[key] if s.get("type") != "null"] or schema[key]
            return instance(rng.choice(options), rng, items, root, name)
    if "allOf" in schema:
        merged: dict = {}
        for part in schema["allOf"]:
            merged.update(_resolve(root, part["$ref"]) if "$ref" in part else part)
        return instance(merged, rng, items, root, name)
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = "object" if "properties" in schema else "string"
    if kind == "object":
        return {key: instance(sub, rng, items, root, key) for key, sub in schema.get("properties", {}).items()}
    if kind == "array":
        return _array(schema, rng, items, root, name)
    if kind == "string":
        return _string(schema, rng, items, name)
    if kind in ("integer", "number"):
        return _number(schema, rng, kind == "integer")
    if kind == "boolean":
        return rng.random() < 0.5
    return None


def _with_hints(schema: dict) -> dict:
    match = re.search(r"\{([^{}]*)\}\s*$", schema.get("description") or "")
    if not match:
        return schema
    hints: dict[str, Any] = {}
    for pair in match.group(1).split(", "):
        key, _, value = pair.partition(": ")
        if key in _HINT_KEYS and key not in schema:
            hints[key] = value == "True" if value in ("True", "False") else float(value)
    return {**schema, **hints} if hints else schema


def _resolve(root: dict, ref: str) -> dict:
    node: Any = root
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def _array(schema: dict, rng: random.Random, items: list[str], root: dict, name: str) -> list:
    if "prefixItems" in schema:
        return [instance(s, rng, items, root, name) for s in schema["prefixItems"]]
    low = int(schema.get("minItems", 0))
    high = int(schema.get("maxItems", low + 3))
    low = max(low, min(1, high))            # a model asked for a list usually gives at least one
    count = rng.randint(low, max(low, min(high, low + 2)))
    sub = schema.get("items", {})
    out: list = []
    for _ in range(count * 4 if schema.get("uniqueItems") else count):
        value = instance(sub, rng, items, root, name)
        if not schema.get("uniqueItems") or value not in out:
            out.append(value)
        if len(out) == count:
            break
    return out


def _string(schema: dict, rng: random.Random, items: list[str], name: str) -> str:
    fmt = schema.get("format")
    if fmt == "date-time":
        return "2026-01-01T12:00:00Z"
    if fmt == "date":
        return "2026-01-01"
    if fmt == "uuid":
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    if fmt == "email":
        return "cass@example.org"
    if fmt == "uri":
        return f"https://example.org/{rng.randrange(10**6)}"
    key = name.lower()
    item = rng.choice(items)
    if "question" in key:
        questions = [i for i in items if i.endswith("?")]
        text = rng.choice(questions) if questions else f"What would it take to understand {item} better?"
    elif "tone" in key or "mood" in key:
        text = rng.choice(TONES)
    elif "focus" in key or any(key.endswith(s) for s in SHORT_FIELDS):
        text = item
    elif any(s in key for s in LONG_FIELDS):
        text = write_text(rng, items, 400, rng.randint(3, 6))
    else:
        text = _sentence(rng, item)
    min_len, max_len = int(schema.get("minLength", 0)), schema.get("maxLength")
    while len(text) < min_len:
        text += " " + _sentence(rng, rng.choice(items))
    return text[: int(max_len)].rstrip() if max_len is not None else text


def _number(schema: dict, rng: random.Random, integer: bool) -> int | float:
    lo, hi = schema.get("minimum"), schema.get("maximum")
    xlo, xhi = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if integer:
        low = math.ceil(lo) if lo is not None else (math.floor(xlo) + 1 if xlo is not None else None)
        high = math.floor(hi) if hi is not None else (math.ceil(xhi) - 1 if xhi is not None else None)
        low = low if low is not None else (min(0, high) if high is not None else 0)
        high = high if high is not None else low + 10
        return rng.randint(low, high)
    low = lo if lo is not None else xlo
    high = hi if hi is not None else xhi
    low = low if low is not None else (min(0.0, high - 1) if high is not None else 0.0)
    high = high if high is not None else low + 1
    value = round(low + (high - low) * rng.uniform(0.1, 0.9), 3)
    return value if low < value < high else (low + high) / 2   # rounding may land on a bound


# ---- prompt caching ----------------------------------------------------------------------------

def _key(model: str, prefix: str) -> str:
    return hashlib.sha256(f"{model}\x1f{prefix}".encode("utf-8")).hexdigest()


class PromptCache:
    """Which cacheable prefixes a provider has already written, keyed by model and exact text.
    The first call with a prefix writes it; later identical ones read it. Prefixes shorter than the
    model's minimum are not cached at all, as with the real API. (No expiry: runs are short.)"""

    def __init__(self) -> None:
        self._written: set[str] = set()
        self._lock = threading.Lock()

    def written(self, model: str, prefix: str) -> bool:
        """Whether the next call with this prefix reads it (it was written before)."""
        with self._lock:
            return _key(model, prefix) in self._written

    def usage(self, model: str, prefix: str, rest_tokens: int, output_tokens: int, ttl: str,
              min_cacheable_tokens: int) -> Usage:
        prefix_tokens = estimate_tokens(prefix)
        if not prefix or prefix_tokens < min_cacheable_tokens:
            return Usage(input_tokens=prefix_tokens + rest_tokens, output_tokens=output_tokens)
        key = _key(model, prefix)
        with self._lock:
            hit = key in self._written
            self._written.add(key)
        if hit:
            return Usage(input_tokens=rest_tokens, output_tokens=output_tokens, cache_read_input_tokens=prefix_tokens)
        return Usage(input_tokens=rest_tokens, output_tokens=output_tokens, cache_creation_input_tokens=prefix_tokens,
                     cache_creation_1h_input_tokens=prefix_tokens if ttl == "1h" else 0)
