"""What a pass produces: a result per municipality and per dataset (`progress` reports them as the
pass goes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from syncd.ledger import FINAL, Entry, Mode, Status


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class DatasetResult:
    name: str
    status: Status = Status.PENDING  # pending -> loaded -> ok | failed | aborted | skipped
    rows: int = 0
    bytes: int = 0
    attempts: int = 0
    error: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    mode: Mode | None = None
    watermark: str | None = None
    inserted: int = 0  # rows written (only what changed is written)
    deleted: int = 0

    def fail(self, reason: str, status: Status = Status.FAILED) -> None:
        self.status, self.error, self.ended_at = status, reason, now()

    def entry(self, *, landing: bool = False) -> Entry:
        """The ledger row; with `landing`, as the landing's commit will make it (loaded: ok)."""
        status = Status.OK if landing and self.status == Status.LOADED else self.status
        return Entry(
            self.name,
            status if status in FINAL else Status.ABORTED,
            self.started_at,
            self.ended_at,
            self.rows if status == Status.OK else None,
            self.bytes if status == Status.OK else None,
            self.attempts,
            self.error,
            self.mode,
            self.watermark if status == Status.OK else None,
            self.inserted if status == Status.OK else None,
            self.deleted if status == Status.OK else None,
        )


@dataclass(slots=True)
class SourceResult:
    source_id: str
    datasets: dict[str, DatasetResult]
    pass_id: int | None = None
    status: Status = Status.RUNNING  # then ok | failed | aborted | skipped
    error: str | None = None  # why the whole source failed, when it did
    started_at: datetime = field(default_factory=now)
    ended_at: datetime | None = None
    synced_elsewhere: datetime | None = None  # skipped: another instance synced it then
    recorded: bool = False  # the ledger rows were committed with the rows themselves

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.datasets.values() if d.status == Status.OK)

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.datasets.values() if d.status == Status.OK)

    def settle(self) -> None:
        statuses = {d.status for d in self.datasets.values()}
        if self.status != Status.SKIPPED:
            if statuses <= {Status.OK}:
                self.status = Status.OK
            else:
                self.status = Status.ABORTED if Status.ABORTED in statuses else Status.FAILED
        self.ended_at = now()
