"""The status page at GET /: every municipality at a glance, for people rather than scripts.

One self-contained HTML document (inline CSS and JS, no CDN, no font, no image), so it works on
an isolated network and on a phone. The rows are rendered here, every text through
`html.escape`, and the script only moves, hides and replaces rows (it never builds markup from
strings), so a hostile municipality name or error text stays text. A per-response nonce in the
Content-Security-Policy is the second guard: only this page's own script and style may run.

Municipalities reached through an SSH bastion are counted per bastion in the summary and
tagged `via <bastion>` (the filter matches the bastion's name: one bastion's group at a time).

The script filters by name or id, sorts by any column, and refreshes the rows every 30 s
(fetching this same page); `?q=` and `?sort=` keep a filtered view bookmarkable. Without
JavaScript the page still shows everything, failing and late first, and reloads every 60 s.
"""

from __future__ import annotations

import html
import math
import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from syncd.ledger import Status
from syncd.service.status import SourceView

LATE = 48 * 3600.0  # seconds: the same threshold as syncd.freshness and the alert rules
REFRESH_S = 30
NEVER = 1e12  # sort key for an age that is infinite


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
    bastions: dict[str, str] | None = None,
) -> list[Row]:
    """`bastions`: source id -> the bastion it is reached through (the others are direct)."""
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
    rows.sort(key=lambda r: (STATES[r.state][0], -(r.age if r.age is not None else NEVER), r.id))
    return rows


def human_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    s = max(seconds, 0.0)
    if s < 60:
        return f"{s:.1f} s" if s < 10 else f"{s:.0f} s"
    minutes = int(s // 60)
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes:02d} min"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h"


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
        "connect-src 'self'; img-src 'none'; base-uri 'none'; form-action 'none'; "
        "frame-ancestors 'none'"
    )


def render(rows: list[Row], now: datetime, nonce: str, version: str) -> str:
    counts = {key: 0 for key in STATES}
    for r in rows:
        counts[r.state] += 1
    summary = "".join(
        f'<li class="{key}"><b>{counts[key]}</b> {_e(label)}</li>'
        for key, (_, label) in STATES.items()
    ) + _by_bastion(rows)
    body = "\n".join(_row(r) for r in rows) or (
        '<tr><td colspan="7" class="empty">no municipality configured</td></tr>'
    )
    return (
        PAGE.replace("{nonce}", nonce)
        .replace("{refresh_ms}", str(REFRESH_S * 1000))
        .replace("{total}", str(len(rows)))
        .replace("{summary}", summary)
        .replace("{now}", _e(_when(now)))
        .replace("{version}", _e(version))
        .replace("{rows}", body)
    )


def _by_bastion(rows: list[Row]) -> str:
    """One summary item per bastion: how many municipalities it serves, how many fail."""
    groups: dict[str, list[Row]] = {}
    for r in rows:
        if r.bastion is not None:
            groups.setdefault(r.bastion, []).append(r)
    items = []
    for name in sorted(groups):
        failing = sum(r.state == Shown.FAILING for r in groups[name])
        items.append(
            f'<li class="bastion" data-bastion="{_e(name)}"><b>{len(groups[name])}</b> '
            f"via {_e(name)}" + (f", {failing} failing" if failing else "") + "</li>"
        )
    return "".join(items)


def _row(r: Row) -> str:
    rank, label = STATES[r.state]
    age = r.age if r.age is not None else NEVER
    duration = r.duration if r.duration is not None else -1
    success = r.last_success.timestamp() if r.last_success is not None else 0
    rows = r.rows if r.rows is not None else -1
    due = f"next: {_when(r.next_due)}" if r.next_due is not None else ""
    return (
        f'<tr class="{r.state}" data-id="{_e(r.id)}" data-name="{_e(r.name)}" '
        f'data-state="{rank}" data-age="{age:.0f}" data-success="{success:.0f}" '
        f'data-rows="{rows}" data-bastion="{_e(r.bastion or "")}" '
        f'data-duration="{duration:.3f}">'
        f'<td data-label="municipality"><span class="name">{_e(r.name or r.id)}</span>'
        f' <span class="id">{_e(r.id)}</span>'
        + (f' <span class="via">via {_e(r.bastion)}</span>' if r.bastion else "")
        + "</td>"
        f'<td data-label="state"><span class="badge">{_e(label)}</span></td>'
        f'<td data-label="last success" class="when" title="{_e(due)}">'
        f"{_e(_when(r.last_success))}</td>"
        f'<td data-label="age" class="when">{_e(human_seconds(r.age))}</td>'
        f'<td data-label="rows" class="num">{_e(_count(r.rows))}</td>'
        f'<td data-label="duration" class="num">{_e(human_seconds(r.duration))}</td>'
        f'<td data-label="last error" class="error">{_e(r.error or "")}</td>'
        "</tr>"
    )


def _count(n: int | None) -> str:
    return "—" if n is None or (isinstance(n, float) and math.isnan(n)) else f"{n:,}"


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>syncd status</title>
<noscript><meta http-equiv="refresh" content="60"></noscript>
<style nonce="{nonce}">
:root { --fg:#1d232a; --bg:#fff; --muted:#5d6670; --line:#dde1e5; --head:#f4f6f8;
  --failing:#b42318; --late:#b54708; --never:#6941c6; --running:#175cd3; --ok:#067647; }
@media (prefers-color-scheme: dark) { :root { --fg:#e6e8ea; --bg:#15181b; --muted:#9aa3ad;
  --line:#2c3237; --head:#1d2125; --failing:#f97066; --late:#fdb022; --never:#b692f6;
  --running:#84adff; --ok:#47cd89; } }
* { box-sizing: border-box; }
body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  color: var(--fg); background: var(--bg); }
header { padding: 12px 16px; border-bottom: 1px solid var(--line); display: flex;
  flex-wrap: wrap; gap: 8px 16px; align-items: baseline; }
h1 { font-size: 18px; margin: 0; }
.meta { color: var(--muted); font-size: 12px; }
#summary { list-style: none; display: flex; flex-wrap: wrap; gap: 8px; margin: 0;
  padding: 12px 16px 0; }
#summary li { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
#summary b { font-size: 18px; margin-right: 4px; }
#summary .failing b { color: var(--failing); } #summary .late b { color: var(--late); }
#summary .never b { color: var(--never); } #summary .running b { color: var(--running); }
#summary .ok b { color: var(--ok); }
.controls { padding: 12px 16px; }
#q { width: 100%; max-width: 420px; font: inherit; padding: 8px 10px;
  border: 1px solid var(--line); border-radius: 6px; background: var(--bg); color: var(--fg); }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: 6px 10px; border-bottom: 1px solid var(--line);
  vertical-align: top; }
th { background: var(--head); position: sticky; top: 0; white-space: nowrap; }
th button { all: unset; cursor: pointer; font-weight: 600; }
th button::after { content: ""; margin-left: 4px; color: var(--muted); }
th[aria-sort=ascending] button::after { content: "\\25B2"; }
th[aria-sort=descending] button::after { content: "\\25BC"; }
td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
td.when { white-space: nowrap; }
.id, .via { color: var(--muted); font-size: 12px; }
.badge { display: inline-block; padding: 1px 8px; border-radius: 10px; font-size: 12px;
  font-weight: 600; color: var(--bg); white-space: nowrap; }
tr.failing .badge { background: var(--failing); } tr.late .badge { background: var(--late); }
tr.never .badge { background: var(--never); } tr.running .badge { background: var(--running); }
tr.ok .badge { background: var(--ok); }
td.error { color: var(--failing); max-width: 48ch; overflow-wrap: anywhere; }
.empty { color: var(--muted); text-align: center; }
body.stale #asof::after { content: " (syncd is not answering)"; color: var(--failing); }
@media (max-width: 700px) {
  thead { display: none; }
  table, tbody, tr, td { display: block; width: 100%; }
  tr { border-bottom: 2px solid var(--line); padding: 6px 0; }
  td { border: 0; padding: 2px 16px; }
  td[data-label]::before { content: attr(data-label) ": "; color: var(--muted); }
  td:first-child::before { content: none; }
  td:first-child { font-size: 16px; font-weight: 600; overflow-wrap: anywhere; }
  td.num { text-align: left; }
  td.error { max-width: none; }
}
</style>
</head>
<body>
<header><h1>syncd</h1><span class="meta">{total} municipalities &middot; as of
<span id="asof">{now}</span> &middot; refreshes every 30 s &middot; syncd {version}</span></header>
<ul id="summary">{summary}</ul>
<div class="controls"><input id="q" type="search" placeholder="filter by name or id"
 aria-label="filter by name or id" autocomplete="off"> <span id="shown" class="meta"></span></div>
<table>
<thead><tr>
<th data-key="name"><button type="button">municipality</button></th>
<th data-key="state" aria-sort="ascending"><button type="button">state</button></th>
<th data-key="success"><button type="button">last success</button></th>
<th data-key="age" data-desc="1"><button type="button">age</button></th>
<th data-key="rows" data-desc="1"><button type="button">rows</button></th>
<th data-key="duration" data-desc="1"><button type="button">duration</button></th>
<th><span>last error</span></th>
</tr></thead>
<tbody id="rows">
{rows}
</tbody>
</table>
<script nonce="{nonce}">
(function () {
  "use strict";
  var tbody = document.getElementById("rows");
  var q = document.getElementById("q");
  var params = new URLSearchParams(location.search);
  var sortKey = params.get("sort") || "state";
  var desc = params.get("dir") === "desc";
  q.value = params.get("q") || "";

  function norm(s) {
    return (s || "").normalize("NFD").replace(/[\\u0300-\\u036f]/g, "").toLowerCase();
  }
  function value(tr, key) {
    if (key === "name") return norm(tr.dataset.name || tr.dataset.id);
    return parseFloat(tr.dataset[key]);
  }
  function rows() {
    return Array.prototype.slice.call(tbody.querySelectorAll("tr[data-id]"));
  }
  function apply() {
    var needle = norm(q.value.trim());
    var list = rows();
    list.sort(function (a, b) {
      var x = value(a, sortKey), y = value(b, sortKey);
      var c = x < y ? -1 : x > y ? 1 : 0;
      if (desc) c = -c;
      if (c === 0) c = parseFloat(b.dataset.age) - parseFloat(a.dataset.age);
      return c;
    });
    var shown = 0;
    list.forEach(function (tr) {
      var hit = !needle || norm(tr.dataset.name).indexOf(needle) >= 0 ||
        norm(tr.dataset.id).indexOf(needle) >= 0 ||
        norm(tr.dataset.bastion || "").indexOf(needle) >= 0;
      tr.hidden = !hit;
      if (hit) shown++;
      tbody.appendChild(tr);
    });
    document.getElementById("shown").textContent =
      needle ? shown + " of " + list.length + " shown" : "";
    document.querySelectorAll("th[data-key]").forEach(function (th) {
      th.removeAttribute("aria-sort");
      if (th.dataset.key === sortKey) {
        th.setAttribute("aria-sort", desc ? "descending" : "ascending");
      }
    });
  }
  function remember() {
    var p = new URLSearchParams();
    if (q.value) p.set("q", q.value);
    if (sortKey !== "state") p.set("sort", sortKey);
    if (desc) p.set("dir", "desc");
    var s = p.toString();
    history.replaceState(null, "", location.pathname + (s ? "?" + s : ""));
  }
  document.querySelectorAll("th[data-key] button").forEach(function (button) {
    button.addEventListener("click", function () {
      var th = button.parentNode;
      if (th.dataset.key === sortKey) { desc = !desc; }
      else { sortKey = th.dataset.key; desc = th.dataset.desc === "1"; }
      apply(); remember();
    });
  });
  q.addEventListener("input", function () { apply(); remember(); });

  function refresh() {
    fetch(location.pathname, { cache: "no-store", credentials: "same-origin" })
      .then(function (r) { if (!r.ok) throw new Error(r.status); return r.text(); })
      .then(function (text) {
        // parsed, never executed: DOMParser runs no script; nodes move as nodes
        var doc = new DOMParser().parseFromString(text, "text/html");
        tbody.replaceChildren.apply(tbody, Array.prototype.slice.call(
          doc.getElementById("rows").childNodes));
        var summary = document.getElementById("summary");
        summary.replaceChildren.apply(summary, Array.prototype.slice.call(
          doc.getElementById("summary").childNodes));
        document.getElementById("asof").textContent =
          doc.getElementById("asof").textContent;
        document.body.classList.remove("stale");
        document.body.dataset.refreshed = (parseInt(document.body.dataset.refreshed, 10) || 0) + 1;
        apply();
      })
      .catch(function () { document.body.classList.add("stale"); });
  }
  setInterval(refresh, {refresh_ms});
  apply();
  document.body.classList.add("ready");
})();
</script>
</body>
</html>
"""
