"""The ledger in schema `syncd`: one row per (pass, source, dataset), and its migrations.

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
from enum import StrEnum
from importlib import resources

import asyncpg

from syncd.config import Config


class Status(StrEnum):
    """Where a dataset or a municipality stands. The ledger stores running, ok, failed and
    aborted; the others live in memory only."""

    PENDING = "pending"  # not started in this pass (or started again after a lost pass)
    RUNNING = "running"  # the pass is under way
    LOADED = "loaded"  # its rows are in the landing transaction, visible once it commits
    OK = "ok"
    FAILED = "failed"
    ABORTED = "aborted"  # cut short: syncd stopped, or died and a later pass found its rows
    SKIPPED = "skipped"  # another instance held or had just synced the municipality


FINAL = frozenset({Status.OK, Status.FAILED, Status.ABORTED})


class Mode(StrEnum):
    """How a dataset's rows were landed."""

    SNAPSHOT = "snapshot"  # every row, replacing the municipality's rows
    FULL_REFRESH = "full_refresh"  # an incremental dataset reloaded whole, with its watermark
    INCREMENTAL = "incremental"  # the rows past the watermark, upserted by key


LOCK_NAMESPACE = 0x73796E63  # 'sync': first key of every syncd advisory lock


def _migrations() -> list[str]:
    """syncd/sql/migrations/NNNN_*.sql, in order: a DBA reads the schema there."""
    folder = resources.files("syncd.sql").joinpath("migrations")
    return [
        f.read_text(encoding="utf-8")
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".sql")
    ]


MIGRATIONS: list[str] = _migrations()


def instance_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def migrate(conn: asyncpg.Connection) -> None:
    """Bring schema `syncd` to the current version; safe with several instances starting."""
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 0)", LOCK_NAMESPACE)
        await conn.execute(
            "CREATE SCHEMA IF NOT EXISTS syncd;"
            "CREATE TABLE IF NOT EXISTS syncd.schema_version (version integer NOT NULL)"
        )
        version = await conn.fetchval("SELECT max(version) FROM syncd.schema_version") or 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the destination's syncd schema is version {version}, newer than this syncd "
                f"({len(MIGRATIONS)}): upgrade syncd"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(script)
            await conn.execute("INSERT INTO syncd.schema_version VALUES ($1)", number)


async def begin_pass(
    conn: asyncpg.Connection, source_id: str, datasets: Sequence[str], instance: str
) -> int:
    """Allocate a pass id and write its `running` rows."""
    async with conn.transaction():
        pass_id: int = await conn.fetchval("SELECT nextval('syncd.pass_id_seq')")
        await conn.execute(
            """
            INSERT INTO syncd.ledger (pass_id, source_id, dataset, started_at, status, instance)
            SELECT $1, $2, d, clock_timestamp(), 'running', $4 FROM unnest($3::text[]) AS d
            """,
            pass_id,
            source_id,
            list(datasets),
            instance,
        )
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
        await _update_ledger(conn, pass_id, source_id, entries)
        await _update_latest(conn, pass_id, source_id, entries)


async def _update_ledger(
    conn: asyncpg.Connection, pass_id: int, source_id: str, entries: Sequence[Entry]
) -> None:
    await conn.execute(
        """
        UPDATE syncd.ledger AS l
        SET status = e.status, started_at = coalesce(e.started_at, l.started_at),
            ended_at = coalesce(e.ended_at, clock_timestamp()), rows = e.rows, bytes = e.bytes,
            attempts = e.attempts, error = e.error, mode = e.mode, watermark = e.watermark,
            inserted = e.inserted, deleted = e.deleted
        FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::timestamptz[], $7::bigint[],
                    $8::bigint[], $9::integer[], $10::text[], $11::text[], $12::text[],
                    $13::bigint[], $14::bigint[])
             AS e(dataset, status, started_at, ended_at, rows, bytes, attempts, error, mode,
                  watermark, inserted, deleted)
        WHERE l.pass_id = $1 AND l.source_id = $2 AND l.dataset = e.dataset
        """,
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


async def _update_latest(
    conn: asyncpg.Connection, pass_id: int, source_id: str, entries: Sequence[Entry]
) -> None:
    await conn.execute(
        """
        INSERT INTO syncd.latest AS t (source_id, dataset, last_pass_id, last_status, last_ended,
                                      last_error, last_success, last_rows)
        SELECT $2, e.dataset, $1, e.status, coalesce(e.ended_at, clock_timestamp()), e.error,
               CASE WHEN e.status = 'ok' THEN coalesce(e.ended_at, clock_timestamp()) END,
               CASE WHEN e.status = 'ok' THEN e.rows END
        FROM unnest($3::text[], $4::text[], $5::timestamptz[], $6::bigint[], $7::text[])
             AS e(dataset, status, ended_at, rows, error)
        ON CONFLICT (source_id, dataset) DO UPDATE
        SET last_pass_id = excluded.last_pass_id, last_status = excluded.last_status,
            last_ended = excluded.last_ended, last_error = excluded.last_error,
            last_success = coalesce(excluded.last_success, t.last_success),
            last_rows = CASE WHEN excluded.last_status = 'ok' THEN excluded.last_rows
                             ELSE t.last_rows END
        """,
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
    status = await conn.execute(
        """
        UPDATE syncd.ledger SET status = 'aborted',
               -- it ended, at the latest, when this pass of the same source began
               ended_at = (SELECT min(started_at) FROM syncd.ledger WHERE pass_id = $2),
               error = coalesce(error, 'syncd stopped before this pass ended (crash or kill)')
        WHERE source_id = $1 AND status = 'running' AND pass_id <> $2
        """,
        source_id,
        current_pass,
    )
    return int(status.split()[-1])


async def abort_orphans(conn: asyncpg.Connection, source_id: str) -> int:
    """Mark every `running` row of the source `aborted`: called holding its lock, at start."""
    status = await conn.execute(
        """
        UPDATE syncd.ledger SET status = 'aborted', ended_at = clock_timestamp(),
               error = coalesce(error, 'syncd stopped before this pass ended (crash or kill)')
        WHERE source_id = $1 AND status = 'running'
        """,
        source_id,
    )
    return int(status.split()[-1])


async def running_sources(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT DISTINCT source_id FROM syncd.ledger WHERE status = 'running'")
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
    rows = await conn.fetch(
        """
        SELECT source_id, dataset, last_success, last_rows, last_status, last_ended, last_error
        FROM syncd.latest ORDER BY source_id, dataset
        """
    )
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
    row = await conn.fetchrow(
        """
        SELECT min(last_success) AS oldest, count(last_success) AS n FROM syncd.latest
        WHERE source_id = $1 AND dataset = ANY($2::text[])
        """,
        source_id,
        list(datasets),
    )
    if row is None or row["n"] != len(set(datasets)):
        return None
    oldest: datetime | None = row["oldest"]
    return oldest


async def last_successes(conn: asyncpg.Connection, datasets: Sequence[str]) -> dict[str, datetime]:
    """Per source: when all these datasets last succeeded (the oldest of their last successes)."""
    rows = await conn.fetch(
        """
        SELECT source_id, min(last_success) AS oldest, count(last_success) AS n FROM syncd.latest
        WHERE dataset = ANY($1::text[]) GROUP BY source_id
        """,
        list(datasets),
    )
    wanted = len(set(datasets))
    return {r["source_id"]: r["oldest"] for r in rows if r["n"] == wanted}


async def last_durations(conn: asyncpg.Connection) -> dict[str, float]:
    """Per source: how long its last pass took, in seconds (for the status page)."""
    rows = await conn.fetch(
        """
        SELECT l.source_id,
               extract(epoch FROM max(l.ended_at) - min(l.started_at))::float8 AS seconds
        FROM syncd.ledger l
        JOIN (SELECT source_id, max(last_pass_id) AS pass_id FROM syncd.latest
              GROUP BY source_id) p USING (pass_id, source_id)
        GROUP BY l.source_id
        """
    )
    return {r["source_id"]: r["seconds"] for r in rows if r["seconds"] is not None}


async def consecutive_failures(conn: asyncpg.Connection) -> dict[str, int]:
    """Per source: its failed (or aborted) passes since its last complete one, so that the
    failures-in-a-row gauge survives a restart."""
    rows = await conn.fetch(
        """
        WITH passes AS (
            SELECT source_id, pass_id, bool_and(status = 'ok') AS ok
            FROM syncd.ledger WHERE status <> 'running' GROUP BY source_id, pass_id)
        SELECT p.source_id, count(*)::int AS n FROM passes p
        LEFT JOIN (SELECT source_id, max(pass_id) AS last_ok FROM passes WHERE ok
                   GROUP BY source_id) o USING (source_id)
        WHERE NOT p.ok AND p.pass_id > coalesce(o.last_ok, 0)
        GROUP BY p.source_id
        """
    )
    return {r["source_id"]: r["n"] for r in rows}


async def pending_since(conn: asyncpg.Connection) -> dict[str, datetime]:
    """Per configured source with a dataset that never succeeded: since when that dataset is
    configured (the oldest such), for freshness to count from."""
    rows = await conn.fetch(
        """
        SELECT c.source_id, min(c.added_at) AS since
        FROM syncd.catalog c LEFT JOIN syncd.latest l USING (source_id, dataset)
        WHERE l.last_success IS NULL GROUP BY c.source_id
        """
    )
    return {r["source_id"]: r["since"] for r in rows}


async def register(
    conn: asyncpg.Connection, pairs: Sequence[tuple[str, str, str | None]], *, replace: bool
) -> None:
    """Record the configured (source, dataset, source name) triples in syncd.catalog.

    The daemon replaces the catalog with its config; `syncd once` only adds what it syncs.
    """
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1, 2)", LOCK_NAMESPACE)
        await conn.execute(
            """
            INSERT INTO syncd.catalog (source_id, dataset, source_name)
            SELECT * FROM unnest($1::text[], $2::text[], $3::text[])
            ON CONFLICT (source_id, dataset) DO UPDATE SET source_name = excluded.source_name
            """,
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            [p[2] for p in pairs],
        )
        if replace:
            await conn.execute(
                """
                DELETE FROM syncd.catalog c WHERE NOT EXISTS (
                    SELECT 1 FROM unnest($1::text[], $2::text[]) AS k(source_id, dataset)
                    WHERE k.source_id = c.source_id AND k.dataset = c.dataset)
                """,
                [p[0] for p in pairs],
                [p[1] for p in pairs],
            )


def pairs(config: Config) -> list[tuple[str, str, str | None]]:
    return [(s.id, d.name, s.name) for s in config.sources for d in config.datasets]
