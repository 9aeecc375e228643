"""The status page at GET /: every municipality at a glance, for people rather than scripts.

One self-contained HTML document (statuspage.html: inline CSS and JS, no CDN, no font, no
image), so it works on an isolated network and on a phone. The rows are rendered here, every
text through `html.escape`, and the script only swaps parsed parts of this same page (it never
builds markup from strings), so a hostile municipality name or error text stays text. A
per-response nonce in the Content-Security-Policy is the second guard: only this page's own
script and style may run.

At national scale (5,570 municipalities) the whole table is 3.6 MB, so the server filters
(`?q=` name or id, `?state=`), sorts (`?sort=`, `?dir=`) and pages (`?page=`, 100 rows) it, and
the counts on top are always of every municipality. Every view is a plain link, so it works
without JavaScript (reloading every 60 s); with it, the filter box applies as one types and the
page refreshes its current view every 30 s, one page of rows, not the whole country.

Municipalities reached through an SSH bastion are tagged `via <bastion>` and counted per bastion
on top (of every municipality, a link to that bastion's); `?q=` matches the bastion's name too,
and `?group=bastion` shows the rows under one heading per bastion (and one for the direct ones).
"""

from __future__ import annotations

import html
import math
import re
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from importlib import resources
from urllib.parse import urlencode

from syncd.engine import rowdiff
from syncd.ledger import Status
from syncd.observe.report import human_duration
from syncd.service.statusboard import SourceView
from syncd.service.statusquery import BadQuery, choices, integer, known_only, matches, norm

LATE = 48 * 3600.0  # seconds: the same threshold as syncd.freshness and the alert rules
REFRESH_S = 30
NEVER = 1e12  # sort key for an age that is infinite
PAGE_ROWS = 100  # rows a page shows: about 60 kB of HTML


class Shown(StrEnum):
    """How the page shows a municipality (its CSS class): worst first."""

    FAILING = "failing"
    LATE = "late"
    NEVER = "never"
    RUNNING = "running"
    OK = "ok"


# display state -> (rank: smaller first, label)
STATES = {
    Shown.FAILING: (0, "failing"),
    Shown.LATE: (1, "late"),
    Shown.NEVER: (2, "never synced"),
    Shown.RUNNING: (3, "running"),
    Shown.OK: (4, "ok"),
}
# `?state=` takes the page's words and /status's (failed, pending)
LABELS = [(key, label) for key, (_, label) in STATES.items()]
STATE_WORDS = {**{str(s): s for s in Shown}, "failed": Shown.FAILING, "pending": Shown.NEVER}


@dataclass(frozen=True, slots=True)
class Row:
    id: str
    name: str
    state: Shown
    last_success: datetime | None
    age: float | None  # seconds since last_success
    rows: int | None
    duration: float | None
    error: str | None
    next_due: datetime | None
    bastion: str | None = None  # reached through this SSH bastion


def rows_of(
    sources: dict[str, SourceView],
    next_due: dict[str, datetime],
    now: datetime,
    bastions: Mapping[str, str] | None = None,
) -> list[Row]:
    """One row per municipality, in the board's order (`select` sorts them); `bastions`:
    source id -> the bastion it is reached through (the others are direct)."""
    bastions = bastions or {}
    rows = []
    for sid, view in sources.items():
        age = (now - view.last_success).total_seconds() if view.last_success else None
        if view.state == Status.FAILED:
            state = Shown.FAILING
        elif age is not None and age > LATE:
            state = Shown.LATE
        elif view.state == Status.RUNNING:
            state = Shown.RUNNING
        elif view.last_success is None:
            state = Shown.NEVER
        else:
            state = Shown.OK
        counts = [d.rows for d in view.datasets.values() if d.rows is not None]
        error = view.last_error
        same = [name for name, d in view.datasets.items() if error and d.error == error]
        if len(same) == 1:  # one dataset's error; when all share it, it is the source's
            error = f"{same[0]}: {error}"
        rows.append(
            Row(
                sid,
                view.name or "",
                state,
                view.last_success,
                age,
                sum(counts) if counts else None,
                view.duration,
                error,
                next_due.get(sid),
                bastions.get(sid),
            )
        )
    return rows


# column -> (key, descending by default), the tie broken by age (oldest first), then id
SORTS: dict[str, tuple[Callable[[Row], str | float], bool]] = {
    "name": (lambda r: norm(r.name or r.id), False),
    "state": (lambda r: STATES[r.state][0], False),
    "success": (lambda r: r.last_success.timestamp() if r.last_success else 0.0, False),
    "age": (lambda r: r.age if r.age is not None else NEVER, True),
    "rows": (lambda r: r.rows if r.rows is not None else -1, True),
    "duration": (lambda r: r.duration if r.duration is not None else -1.0, True),
}
# `?group=` -> the heading of a row's group
GROUPS: dict[str, Callable[[Row], str]] = {
    "bastion": lambda r: f"via {r.bastion}" if r.bastion is not None else "direct",
}
HEADINGS = [
    ("name", "municipality"),
    ("state", "state"),
    ("success", "last success"),
    ("age", "age"),
    ("rows", "rows"),
    ("duration", "duration"),
]


def sort_rows(rows: list[Row], column: str, desc: bool) -> list[Row]:
    ordered = sorted(rows, key=lambda r: (-(r.age if r.age is not None else NEVER), r.id))
    return sorted(ordered, key=SORTS[column][0], reverse=desc)  # stable: ties keep that order


@dataclass(frozen=True, slots=True)
class PageQuery:
    """One view of the page: what `?state=&q=&sort=&dir=&page=&group=` ask for."""

    states: frozenset[Shown] = frozenset()  # empty: every state
    q: str = ""
    sort: str = "state"
    desc: bool = False
    page: int = 1
    group: str = ""  # a key of GROUPS, or none

    def params(self, **change: object) -> dict[str, str]:
        """This view's parameters, some changed, the defaults left out."""
        view = {
            "state": ",".join(s for s in Shown if s in self.states),
            "q": self.q,
            "sort": self.sort,
            "dir": "desc" if self.desc else "asc",
            "page": str(self.page),
            "group": self.group,
        } | {k: str(v) for k, v in change.items()}
        defaults = {
            "sort": "state",
            "page": "1",
            "dir": "desc" if SORTS[view["sort"]][1] else "asc",
        }
        return {k: v for k, v in view.items() if v and defaults.get(k) != v}

    def link(self, **change: object) -> str:
        """This view with some parameters changed, as a relative URL."""
        kept = self.params(**change)
        return "?" + urlencode(kept) if kept else "?"


def page_query(query: Mapping[str, str]) -> PageQuery:
    known_only(query, ("state", "q", "sort", "dir", "page", "group"))
    sort = query.get("sort", "state")
    if sort not in SORTS:
        raise BadQuery(f"sort: {sort[:40]!r} is none of {', '.join(SORTS)}")
    direction = query.get("dir", "desc" if SORTS[sort][1] else "asc")
    if direction not in ("asc", "desc"):
        raise BadQuery(f"dir: {direction[:40]!r} is neither asc nor desc")
    grouping = query.get("group", "")
    if grouping and grouping not in GROUPS:
        raise BadQuery(f"group: {grouping[:40]!r} is none of {', '.join(GROUPS)}")
    return PageQuery(
        choices(query, "state", STATE_WORDS),
        query.get("q", "").strip(),
        sort,
        direction == "desc",
        integer(query, "page", 1, 1, 10**6),
        grouping,
    )


@dataclass(frozen=True, slots=True)
class Selection:
    """What one view of the page shows: a page of the rows it selects, and the counts of all."""

    rows: list[Row]  # this page's
    matching: int  # rows the filter selects, on every page
    total: int  # every municipality
    counts: dict[Shown, int]  # of every municipality, per state
    page: int
    pages: int
    bastions: dict[str, tuple[int, int]]  # of every municipality: bastion -> (all, failing)


def select(rows: list[Row], query: PageQuery, per_page: int = PAGE_ROWS) -> Selection:
    counts = {key: 0 for key in STATES}
    bastions: dict[str, tuple[int, int]] = {}
    for r in rows:
        counts[r.state] += 1
        if r.bastion is not None:
            served, failing = bastions.get(r.bastion, (0, 0))
            bastions[r.bastion] = (served + 1, failing + (r.state == Shown.FAILING))
    needle = norm(query.q)
    chosen = [
        r
        for r in rows
        if (not query.states or r.state in query.states)
        and (not needle or matches(needle, r.id, r.name) or needle in norm(r.bastion))
    ]
    pages = max(1, math.ceil(len(chosen) / per_page))
    page = min(query.page, pages)
    ordered = sort_rows(chosen, query.sort, query.desc)
    if query.group:  # each group's rows together, across pages too (a stable sort)
        ordered.sort(key=GROUPS[query.group])
    shown = ordered[(page - 1) * per_page : page * per_page]
    per_bastion = dict(sorted(bastions.items()))
    return Selection(shown, len(chosen), len(rows), counts, page, pages, per_bastion)


def group(rows: list[Row], key: Callable[[Row], str] | None) -> list[tuple[str, list[Row]]]:
    """The rows under headings (`key` names each row's group), groups in order of their first
    row; without a key, one group without a heading."""
    if key is None:
        return [("", rows)]
    groups: dict[str, list[Row]] = {}
    for r in rows:
        groups.setdefault(key(r), []).append(r)
    return list(groups.items())


def _when(when: datetime | None) -> str:
    return when.strftime("%Y-%m-%d %H:%M UTC") if when is not None else "never"


def _e(text: object) -> str:
    return html.escape(str(text), quote=True)


def new_nonce() -> str:
    return secrets.token_urlsafe(16)


def csp(nonce: str) -> str:
    return (
        "default-src 'none'; "
        f"script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; "
        "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


def page(
    sources: dict[str, SourceView],
    next_due: dict[str, datetime],
    now: datetime,
    nonce: str,
    version: str,
    query: Mapping[str, str],
    bastions: Mapping[str, str] | None = None,
    group_by: Callable[[Row], str] | None = None,
) -> str:
    """GET / with these parameters (BadQuery when they cannot be read)."""
    wanted = page_query(query)
    chosen = select(rows_of(sources, next_due, now, bastions), wanted)
    return render(chosen, wanted, now, nonce, version, group_by)


def render(
    chosen: Selection,
    query: PageQuery,
    now: datetime,
    nonce: str,
    version: str,
    group_by: Callable[[Row], str] | None = None,
) -> str:
    summary = "".join(_count_item(key, label, chosen.counts[key], query) for key, label in LABELS)
    summary += "".join(_bastion_item(name, *n, query) for name, n in chosen.bastions.items())
    if chosen.bastions or query.group:
        grouped = ' aria-current="true"' if query.group else ""
        href = _e(query.link(group="" if query.group else "bastion", page=1))
        summary += f'<li class="grouping"><a href="{href}"{grouped}>by bastion</a></li>'
    group_by = group_by or GROUPS.get(query.group)
    body = "\n".join(
        (
            f'<tr class="group"><th colspan="7" scope="rowgroup">{_e(name)}</th></tr>\n'
            if name
            else ""
        )
        + "\n".join(_row(r) for r in rows)
        for name, rows in group(chosen.rows, group_by)
    )
    if not chosen.rows:
        empty = "no municipality matches" if chosen.total else "no municipality configured"
        body = f'<tr><td colspan="7" class="empty">{empty}</td></tr>'
    filtered = bool(query.q or query.states)
    shown = f"{chosen.matching} of {chosen.total} shown" if filtered else ""
    hidden = "".join(  # the view the filter box keeps while it changes q (back to page 1)
        f'<input type="hidden" name="{k}" value="{_e(v)}">'
        for k, v in query.params().items()
        if k in ("state", "sort", "dir", "group")
    )
    values = {
        "nonce": nonce,
        "refresh_ms": str(REFRESH_S * 1000),
        "total": str(chosen.total),
        "summary": summary,
        "now": _e(_when(now)),
        "version": _e(version),
        "differ": _differ(rowdiff.current()),
        "hidden": hidden,
        "q": _e(query.q),
        "shown": _e(shown),
        "head": _head(query),
        "rows": body,
        "pager": _pager(chosen, query),
    }
    # one pass, so nothing inserted is read again as a placeholder
    return re.sub(r"\{(\w+)\}", lambda m: values.get(m.group(1), m.group(0)), PAGE)


def _differ(choice: rowdiff.DifferChoice) -> str:
    """Which row differ runs: never silently the slow one."""
    if choice.compiled:
        return '<span id="differ">compiled row differ</span>'
    return (
        '<span id="differ" class="slow">pure-Python row differ, several times slower: '
        f"{_e(choice.reason)}</span>"
    )


def _count_item(key: Shown, label: str, count: int, query: PageQuery) -> str:
    """A count on top, a link to the view of that state alone (or back to all, if it is)."""
    current = query.states == {key}
    href = _e(query.link(state="" if current else key, page=1))
    mark = ' aria-current="true"' if current else ""
    return f'<li class="{key}"><a href="{href}"{mark}><b>{count}</b> {_e(label)}</a></li>'


def _bastion_item(name: str, served: int, failing: int, query: PageQuery) -> str:
    """A bastion's count on top, a link to its municipalities (or back to all, if it is)."""
    current = query.q == name
    href = _e(query.link(q="" if current else name, page=1))
    mark = ' aria-current="true"' if current else ""
    text = f"via {name}" + (f", {failing} failing" if failing else "")
    return (
        f'<li class="bastion" data-bastion="{_e(name)}"><a href="{href}"{mark}>'
        f"<b>{served}</b> {_e(text)}</a></li>"
    )


def _head(query: PageQuery) -> str:
    cells = []
    for key, label in HEADINGS:
        if key == query.sort:
            desc = not query.desc
            order = f' aria-sort="{"descending" if query.desc else "ascending"}"'
        else:
            desc, order = SORTS[key][1], ""
        href = query.link(sort=key, dir="desc" if desc else "asc", page=1)
        cells.append(f'<th data-key="{key}"{order}><a href="{_e(href)}">{_e(label)}</a></th>')
    return "<tr>" + "".join(cells) + "<th><span>last error</span></th></tr>"


def _pager(chosen: Selection, query: PageQuery) -> str:
    if chosen.pages == 1:
        return ""
    first = (chosen.page - 1) * PAGE_ROWS + 1
    parts = [f"<span>rows {first}&ndash;{first + len(chosen.rows) - 1} of {chosen.matching}"]
    parts[0] += f" &middot; page {chosen.page} of {chosen.pages}</span>"
    if chosen.page > 1:
        parts.append(f'<a rel="prev" href="{_e(query.link(page=chosen.page - 1))}">previous</a>')
    if chosen.page < chosen.pages:
        parts.append(f'<a rel="next" href="{_e(query.link(page=chosen.page + 1))}">next</a>')
    return "".join(parts)


def _row(r: Row) -> str:
    rank, label = STATES[r.state]
    age = r.age if r.age is not None else NEVER
    duration = r.duration if r.duration is not None else -1
    success = r.last_success.timestamp() if r.last_success is not None else 0
    rows = r.rows if r.rows is not None else -1
    due = f"next: {_when(r.next_due)}" if r.next_due is not None else ""
    bastion = f'data-bastion="{_e(r.bastion)}" ' if r.bastion is not None else ""
    via = f' <span class="via">via {_e(r.bastion)}</span>' if r.bastion is not None else ""
    return (
        f'<tr class="{r.state}" data-id="{_e(r.id)}" data-name="{_e(r.name)}" '
        f'data-state="{rank}" data-age="{age:.0f}" data-success="{success:.0f}" '
        f'data-rows="{rows}" {bastion}'
        f'data-duration="{duration:.3f}">'
        f'<td data-label="municipality"><span class="name">{_e(r.name or r.id)}</span>'
        f' <span class="id">{_e(r.id)}</span>{via}</td>'
        f'<td data-label="state"><span class="badge">{_e(label)}</span></td>'
        f'<td data-label="last success" class="when" title="{_e(due)}">'
        f"{_e(_when(r.last_success))}</td>"
        f'<td data-label="age" class="when">{_e(human_duration(r.age, "—"))}</td>'
        f'<td data-label="rows" class="num">{_e(_count(r.rows))}</td>'
        f'<td data-label="duration" class="num">{_e(human_duration(r.duration, "—"))}</td>'
        f'<td data-label="last error" class="error">{_e(r.error or "")}</td>'
        "</tr>"
    )


def _count(n: int | None) -> str:
    return "—" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{n:,}"


PAGE = resources.files("syncd.service").joinpath("statuspage.html").read_text(encoding="utf-8")
