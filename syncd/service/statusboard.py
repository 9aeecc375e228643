"""What the daemon knows of each municipality, for `/status`: seeded from the ledger at start,
kept current by the syncs themselves.

Every change to a source's view bumps the board's version and stamps the view with it, so
`/status?since=<cursor>` can answer only what changed (5,570 municipalities are 2.5 MB of
JSON; a minute's changes are a few kB)."""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.config import Config
from syncd.engine.diskbudget import DiskReport
from syncd.engine.progress import Progress
from syncd.engine.results import SourceResult
from syncd.ledger import DatasetStatus, Status
from syncd.observe.report import cap_text, iso
from syncd.service.statusquery import StatusQuery, matches, norm


@dataclass(slots=True)
class DatasetView:
    status: Status | None = None
    last_success: datetime | None = None
    rows: int | None = None
    error: str | None = None
    # a mixed fleet: column -> (the type this source sends, the type it lands as), from this
    # daemon's last sync of it (engine/widening.py)
    converted: dict[str, tuple[str, str]] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class RunView:
    """The last sync of a source this daemon ran to its end: what an orchestrator that asked
    for one (`POST /sources/{id}/sync` answers `requested_at`) waits to see."""

    started: datetime
    ended: datetime | None
    status: Status  # ok | failed | aborted


@dataclass(slots=True)
class SourceView:
    name: str | None
    state: Status = Status.PENDING  # pending | running | ok | failed
    last_success: datetime | None = None
    last_error: str | None = None
    duration: float | None = None  # seconds, the last finished sync
    datasets: dict[str, DatasetView] = field(default_factory=dict)
    last_run: RunView | None = None
    changed: int = 0  # the board's version at this view's last change
    max_rate: str | None = None  # its bandwidth cap as shown (observe.report.cap_text)


def _fingerprint(view: SourceView) -> tuple[object, ...]:
    """Everything /status shows of a view, to tell whether a mutation changed it."""
    datasets = tuple(
        (n, d.status, d.last_success, d.rows, d.error, tuple(d.converted.items()))
        for n, d in view.datasets.items()
    )
    return (view.name, view.max_rate, view.state, view.last_success, view.last_error,
            view.duration, view.last_run, datasets)  # fmt: skip


def _run(run: RunView | None) -> dict[str, str | None] | None:
    if run is None:
        return None
    return {"started": iso(run.started), "ended": iso(run.ended), "status": run.status}


class StatusBoard(Progress):
    def __init__(self) -> None:
        self.sources: dict[str, SourceView] = {}
        self.version = 0
        self.removed: dict[str, int] = {}  # id -> the version that removed it
        # a cursor names its board: one from an earlier daemon (or instance) gets a full answer
        self._boot = secrets.token_hex(4)
        self.disk_report: DiskReport | None = None  # the destination's disk, as last heard

    @contextmanager
    def _changes(self, ids: Iterable[str]) -> Iterator[None]:
        """Stamp those of these views that the block changed with a new version."""
        before = {sid: _fingerprint(v) for sid in ids if (v := self.sources.get(sid))}
        yield
        for sid, was in before.items():
            view = self.sources.get(sid)
            if view is not None and _fingerprint(view) != was:
                self.version += 1
                view.changed = self.version

    def disk(self, report: DiskReport) -> None:
        self.disk_report = report

    def configure(self, config: Config) -> None:
        """Follow the config: new sources pending, removed ones gone, datasets per config."""
        names = [d.name for d in config.datasets]
        with self._changes(list(self.sources)):
            current = {}
            for source in config.sources:
                view = self.sources.get(source.id)
                if view is None:
                    self.version += 1
                    view = SourceView(source.name, changed=self.version)
                    self.removed.pop(source.id, None)
                view.name = source.name
                view.max_rate = cap_text(source)
                view.datasets = {n: view.datasets.get(n) or DatasetView() for n in names}
                current[source.id] = view
            for sid in self.sources.keys() - current.keys():
                self.version += 1
                self.removed[sid] = self.version
            self.sources = current

    def seed_durations(self, durations: dict[str, float]) -> None:
        with self._changes(durations):
            for sid, seconds in durations.items():
                view = self.sources.get(sid)
                if view is not None and view.duration is None:
                    view.duration = seconds

    def seed(self, entries: list[DatasetStatus]) -> None:
        """The ledger's view: at start, then every minute (what other instances did)."""
        with self._changes(list(self.sources)):
            for e in entries:
                view = self.sources.get(e.source_id)
                if view is None or e.dataset not in view.datasets or view.state == Status.RUNNING:
                    continue
                view.datasets[e.dataset] = DatasetView(
                    e.last_status,
                    e.last_success,
                    e.last_rows,
                    e.last_error if e.last_status != Status.OK else None,
                    view.datasets[e.dataset].converted,
                )
            for view in self.sources.values():
                if view.state != Status.RUNNING:
                    self._derive(view)

    @staticmethod
    def _derive(view: SourceView) -> None:
        datasets = view.datasets.values()
        successes = [d.last_success for d in datasets if d.last_success is not None]
        everyone = bool(successes) and len(successes) == len(datasets)
        view.last_success = min(successes) if everyone else None
        errors = [d.error for d in datasets if d.error]
        view.last_error = errors[0] if errors else None
        statuses = {d.status for d in datasets}
        if None in statuses or not statuses:
            view.state = Status.PENDING
        else:
            view.state = Status.OK if statuses <= {Status.OK} else Status.FAILED

    def source_started(self, source_id: str) -> None:
        view = self.sources.get(source_id)
        if view is not None:
            with self._changes([source_id]):
                view.state = Status.RUNNING

    def source_finished(self, result: SourceResult) -> None:
        with self._changes([result.source_id]):
            self._finished(result)

    def _finished(self, result: SourceResult) -> None:
        view = self.sources.get(result.source_id)
        if view is None:
            return
        if result.status == Status.SKIPPED:
            if result.synced_elsewhere is not None:  # another instance did it: it succeeded
                for name in result.datasets:
                    dv = view.datasets.setdefault(name, DatasetView())
                    if dv.last_success is None or dv.last_success < result.synced_elsewhere:
                        dv.status, dv.error = Status.OK, None
                        dv.last_success = result.synced_elsewhere
            self._derive(view)
            return
        if result.ended_at is not None:
            view.duration = (result.ended_at - result.started_at).total_seconds()
        view.last_run = RunView(result.started_at, result.ended_at, result.status)
        for name, d in result.datasets.items():
            dv = view.datasets.setdefault(name, DatasetView())
            dv.status = d.status
            if d.status == Status.OK:
                dv.last_success, dv.rows, dv.error = d.ended_at, d.rows, None
                dv.converted = {name: (sent, to) for name, sent, to in d.conversions}
            else:
                dv.error = d.error
        self._derive(view)
        if result.error and result.status != Status.OK:
            view.last_error = result.error

    @property
    def cursor(self) -> str:
        return f"{self._boot}.{self.version}"

    def _since(self, cursor: str) -> int | None:
        """The version a cursor of this board names; None for another board's or a future one."""
        boot, _, version = cursor.partition(".")
        if boot != self._boot or not version.isdigit() or int(version) > self.version:
            return None
        return int(version)

    def snapshot(
        self, next_due: dict[str, datetime], query: StatusQuery | None = None
    ) -> dict[str, Any]:
        """`/status`: every source in the documented shape; with a query, the sources it
        selects (in config order) and, around them, what a client needs to page or to follow
        changes: `total` selected, `counts` of every state, the `cursor` for `since`, and with
        `since`, `removed` ids and `full` (true: the cursor was not this board's, so this is
        everything and the client starts over)."""
        if query is None:
            return {"sources": {sid: _source(sid, v, next_due) for sid, v in self.sources.items()}}
        since = self._since(query.since) if query.since is not None else None
        needle = norm(query.q)
        selected = [
            (sid, view)
            for sid, view in self.sources.items()
            if (query.ids is None or sid in query.ids)
            and (query.states is None or view.state in query.states)
            and (not needle or matches(needle, sid, view.name))
            and (since is None or view.changed > since)
        ]
        end = None if query.limit is None else query.offset + query.limit
        counts = {str(s): 0 for s in (Status.OK, Status.FAILED, Status.RUNNING, Status.PENDING)}
        for view in self.sources.values():
            counts[view.state] = counts.get(view.state, 0) + 1
        answer: dict[str, Any] = {
            "sources": {sid: _source(sid, v, next_due) for sid, v in selected[query.offset : end]},
            "total": len(selected),
            "counts": counts,
            "cursor": self.cursor,
        }
        if query.since is not None:
            answer["full"] = since is None
            answer["removed"] = sorted(
                sid for sid, at in self.removed.items() if since is not None and at > since
            )
        return answer


def _source(sid: str, view: SourceView, next_due: dict[str, datetime]) -> dict[str, Any]:
    return {
        "name": view.name,
        "max_rate": view.max_rate,
        "state": view.state,
        "last_success": iso(view.last_success),
        "last_error": view.last_error,
        "next_due": iso(next_due.get(sid)),
        "last_run": _run(view.last_run),
        "datasets": {name: _dataset(d) for name, d in view.datasets.items()},
    }


def _dataset(d: DatasetView) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "status": d.status,
        "last_success": iso(d.last_success),
        "rows": d.rows,
        "error": d.error,
    }
    if d.converted:  # only for columns this municipality sends in another type
        entry["converted"] = {
            column: {"sent": sent, "lands_as": to} for column, (sent, to) in d.converted.items()
        }
    return entry
