"""The ledger's rows: one per (pass, source, dataset) in `syncd.ledger`, and per (source,
dataset) the last outcome in `syncd.latest`. Written as passes start and end, read back by the
daemon, `syncd status` and the status page.

A pass is one sync of one municipality: every dataset of it shares the pass id, which is also the
`syncd.pass.id` of its trace. Rows are written `running` when the pass starts and completed when
it ends, so a crash leaves `running` rows that the next sync of that source marks `aborted`.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from syncd.ledger.states import Mode, Status
from syncd.sql import load

SQL = load("ledger")


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def begin_pass(
    conn: asyncpg.Connection, source_id: str, datasets: Sequence[str], instance: str
) -> int:
    """Allocate a pass id and write its `running` rows."""
    async with conn.transaction():
        pass_id: int = await conn.fetchval(SQL["next_pass_id"])
        await conn.execute(SQL["begin_pass"], pass_id, source_id, list(datasets), instance)
    return pass_id


@dataclass(slots=True)
class Entry:
    dataset: str
    status: Status
    started_at: datetime | None
    ended_at: datetime | None
    rows: int | None
    bytes: int | None
    attempts: int
    error: str | None
    mode: Mode | None = None
    watermark: str | None = None
    inserted: int | None = None
    deleted: int | None = None


async def finish_pass(
    conn: asyncpg.Connection, pass_id: int, source_id: str, entries: Sequence[Entry]
) -> None:
    async with conn.transaction():
        await conn.execute(
            SQL["finish_ledger"],
            pass_id,
            source_id,
            [e.dataset for e in entries],
            [e.status for e in entries],
            [e.started_at for e in entries],
            [e.ended_at for e in entries],
            [e.rows for e in entries],
            [e.bytes for e in entries],
            [e.attempts for e in entries],
            [e.error for e in entries],
            [e.mode for e in entries],
            [e.watermark for e in entries],
            [e.inserted for e in entries],
            [e.deleted for e in entries],
        )
        await conn.execute(
            SQL["finish_latest"],
            pass_id,
            source_id,
            [e.dataset for e in entries],
            [e.status for e in entries],
            [e.ended_at for e in entries],
            [e.rows for e in entries],
            [e.error for e in entries],
        )


async def abort_stale(conn: asyncpg.Connection, source_id: str, current_pass: int) -> int:
    """Mark `running` rows of earlier passes of this source `aborted` (their syncd died).

    Called while holding the source's sync lock, so no live instance owns those rows.
    """
    status = await conn.execute(SQL["abort_stale"], source_id, current_pass)
    return int(status.split()[-1])


async def abort_orphans(conn: asyncpg.Connection, source_id: str) -> int:
    """Mark every `running` row of the source `aborted`: called holding its lock, at start."""
    status = await conn.execute(SQL["abort_orphans"], source_id)
    return int(status.split()[-1])


async def running_sources(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch(SQL["running_sources"])
    return [r[0] for r in rows]


@dataclass(frozen=True, slots=True)
class DatasetStatus:
    source_id: str
    dataset: str
    last_success: datetime | None
    last_rows: int | None
    last_status: Status | None  # None too for a status this version does not know
    last_ended: datetime | None
    last_error: str | None


async def latest(conn: asyncpg.Connection) -> list[DatasetStatus]:
    """Per (source, dataset): the last success and the last outcome."""
    rows = await conn.fetch(SQL["latest"])
    return [DatasetStatus(**{**dict(r), "last_status": _status(r["last_status"])}) for r in rows]


def _status(text: str | None) -> Status | None:
    """A status read back; one written by another syncd version that this one does not know
    (instances sharing a destination are upgraded one at a time) is shown as unknown."""
    try:
        return Status(text) if text is not None else None
    except ValueError:
        return None


async def oldest_success(
    conn: asyncpg.Connection, source_id: str, datasets: Sequence[str]
) -> datetime | None:
    """The oldest last success among these datasets of the source; None if one never succeeded."""
    row = await conn.fetchrow(SQL["oldest_success"], source_id, list(datasets))
    if row is None or row["n"] != len(set(datasets)):
        return None
    oldest: datetime | None = row["oldest"]
    return oldest


async def last_successes(conn: asyncpg.Connection, datasets: Sequence[str]) -> dict[str, datetime]:
    """Per source: when all these datasets last succeeded (the oldest of their last successes)."""
    rows = await conn.fetch(SQL["last_successes"], list(datasets))
    wanted = len(set(datasets))
    return {r["source_id"]: r["oldest"] for r in rows if r["n"] == wanted}


async def last_durations(conn: asyncpg.Connection) -> dict[str, float]:
    """Per source: how long its last pass took, in seconds (for the status page)."""
    rows = await conn.fetch(SQL["last_durations"])
    return {r["source_id"]: r["seconds"] for r in rows if r["seconds"] is not None}


async def last_bytes(
    conn: asyncpg.Connection, source_id: str, datasets: Sequence[str]
) -> dict[str, int]:
    """Per dataset: the bytes the source sent the last time it landed (or was stopped at the
    disk budget)."""
    rows = await conn.fetch(SQL["last_bytes"], source_id, list(datasets))
    return {r["dataset"]: r["bytes"] for r in rows}


async def consecutive_failures(conn: asyncpg.Connection) -> dict[str, int]:
    """Per source: its failed (or aborted) passes since its last complete one, so that the
    failures-in-a-row gauge survives a restart."""
    rows = await conn.fetch(SQL["consecutive_failures"])
    return {r["source_id"]: r["n"] for r in rows}
