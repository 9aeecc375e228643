"""What the daemon knows of each municipality, for `/status`: seeded from the ledger at start,
kept current by the syncs themselves."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from syncd.config import Config
from syncd.engine.results import Progress, SourceResult
from syncd.ledger import DatasetStatus, Status


@dataclass(slots=True)
class DatasetView:
    status: Status | None = None
    last_success: datetime | None = None
    rows: int | None = None
    error: str | None = None


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


def _iso(when: datetime | None) -> str | None:
    return when.isoformat() if when is not None else None


def _run(run: RunView | None) -> dict[str, str | None] | None:
    if run is None:
        return None
    return {"started": _iso(run.started), "ended": _iso(run.ended), "status": run.status}


class StatusBoard(Progress):
    def __init__(self) -> None:
        self.sources: dict[str, SourceView] = {}

    def configure(self, config: Config) -> None:
        """Follow the config: new sources pending, removed ones gone, datasets per config."""
        names = [d.name for d in config.datasets]
        current = {}
        for source in config.sources:
            view = self.sources.get(source.id) or SourceView(source.name)
            view.name = source.name
            view.datasets = {n: view.datasets.get(n) or DatasetView() for n in names}
            current[source.id] = view
        self.sources = current

    def seed_durations(self, durations: dict[str, float]) -> None:
        for sid, seconds in durations.items():
            view = self.sources.get(sid)
            if view is not None and view.duration is None:
                view.duration = seconds

    def seed(self, entries: list[DatasetStatus]) -> None:
        """The ledger's view, at start."""
        for e in entries:
            view = self.sources.get(e.source_id)
            if view is None or e.dataset not in view.datasets or view.state == Status.RUNNING:
                continue
            view.datasets[e.dataset] = DatasetView(
                e.last_status,
                e.last_success,
                e.last_rows,
                e.last_error if e.last_status != Status.OK else None,
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
            view.state = Status.RUNNING

    def source_finished(self, result: SourceResult) -> None:
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
            else:
                dv.error = d.error
        self._derive(view)
        if result.error and result.status != Status.OK:
            view.last_error = result.error

    def snapshot(self, next_due: dict[str, datetime]) -> dict[str, Any]:
        return {
            "sources": {
                sid: {
                    "name": view.name,
                    "state": view.state,
                    "last_success": _iso(view.last_success),
                    "last_error": view.last_error,
                    "next_due": _iso(next_due.get(sid)),
                    "last_run": _run(view.last_run),
                    "datasets": {
                        name: {
                            "status": d.status,
                            "last_success": _iso(d.last_success),
                            "rows": d.rows,
                            "error": d.error,
                        }
                        for name, d in view.datasets.items()
                    },
                }
                for sid, view in self.sources.items()
            }
        }
