"""The query parameters of `GET /status` and `GET /`, read and checked.

Without any parameter `/status` answers the documented shape, every source; its parameters
select (`id`, `state`, `q`), page (`limit`, `offset`) or follow changes (`since`). A parameter that
cannot be read answers 400 with one line saying why, never a silently wider answer (a typo in
`?sate=failed` returning 5,570 sources would look like a result).
"""

from __future__ import annotations

import unicodedata
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TypeVar

from syncd.ledger import Status

MAX_LIMIT = 10_000
T = TypeVar("T")
STATES = (Status.OK, Status.RUNNING, Status.FAILED, Status.PENDING)  # what /status says


class BadQuery(ValueError):
    """A query parameter that cannot be read: answered 400 with this reason."""


def norm(text: str | None) -> str:
    """For matching as people type: accents and case ignored ("sao jose" finds São José)."""
    decomposed = unicodedata.normalize("NFD", text or "")
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def matches(needle: str, source_id: str, name: str | None) -> bool:
    """`needle` (already `norm`ed) in the id or the name."""
    return needle in norm(source_id) or needle in norm(name)


def known_only(query: Mapping[str, str], known: Iterable[str]) -> None:
    allowed = sorted(known)
    for key in query:
        if key not in allowed:
            raise BadQuery(f"unknown parameter {key!r} (known: {', '.join(allowed)})")


def integer(query: Mapping[str, str], key: str, default: int, low: int, high: int) -> int:
    text = query.get(key)
    if text is None:
        return default
    digits = text.isascii() and text.isdigit() and len(text) <= 12  # "²" and 10**5000 too
    if not digits or not low <= int(text) <= high:
        raise BadQuery(f"{key}: {text[:40]!r} is not a whole number from {low} to {high}")
    return int(text)


def choices(query: Mapping[str, str], key: str, allowed: Mapping[str, T]) -> frozenset[T]:
    """A comma-separated list of allowed values; empty when the parameter is absent."""
    text = query.get(key)
    if text is None:
        return frozenset()
    found = set()
    for word in text.split(","):
        value = allowed.get(word.strip().lower())
        if value is None:
            raise BadQuery(f"{key}: {word[:40]!r} is none of {', '.join(allowed)}")
        found.add(value)
    return frozenset(found)


@dataclass(frozen=True, slots=True)
class StatusQuery:
    ids: frozenset[str] | None = None  # None: every source
    states: frozenset[Status] | None = None  # None: every state
    q: str = ""  # in the id or name, accents and case ignored
    limit: int | None = None
    offset: int = 0
    since: str | None = None  # a cursor from an earlier answer


def status_query(query: Mapping[str, str]) -> StatusQuery | None:
    """None without parameters: the documented default answer."""
    if not query:
        return None
    known_only(query, ("id", "state", "q", "limit", "offset", "since"))
    states = choices(query, "state", {str(s): s for s in STATES})
    ids = query.get("id")
    limit = query.get("limit")
    return StatusQuery(
        None if ids is None else frozenset(i.strip() for i in ids.split(",")),
        states or None,
        query.get("q", "").strip(),
        None if limit is None else integer(query, "limit", 0, 1, MAX_LIMIT),
        integer(query, "offset", 0, 0, 10**9),
        query.get("since"),
    )
