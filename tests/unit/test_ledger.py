"""The ledger in schema `syncd`, on a fresh destination database per test: migrations, passes
from `running` to their outcome, `latest`, and the rows a crashed syncd leaves behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
import pytest

from syncd import ledger
from syncd.ledger import Entry, Mode, Status

from tests.conftest import DestDb

T0 = datetime(2024, 2, 11, 3, 0, tzinfo=UTC)
T1 = datetime(2024, 2, 11, 3, 5, tzinfo=UTC)


@pytest.fixture
async def conn(scratch_dest: DestDb) -> AsyncIterator[asyncpg.Connection]:
    conn = await scratch_dest.connect()
    try:
        await ledger.migrate(conn)
        yield conn
    finally:
        await conn.close()


def entry(dataset: str, status: Status, rows: int | None = None, **extra) -> Entry:
    return Entry(dataset, status, T0, T1, rows, rows and rows * 10, 1, None, **extra)


async def ledger_rows(conn: asyncpg.Connection, source_id: str) -> list[tuple]:
    rows = await conn.fetch(
        "SELECT pass_id, dataset, status, rows, error, mode, watermark FROM syncd.ledger "
        "WHERE source_id = $1 ORDER BY pass_id, dataset",
        source_id,
    )
    return [tuple(r) for r in rows]


async def test_migrate_twice_changes_nothing(conn: asyncpg.Connection):
    def schema_of(rows) -> list[tuple]:
        return [tuple(r) for r in rows]

    query = (
        "SELECT c.relname::text, c.relkind::text FROM pg_class c "
        "JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'syncd' ORDER BY 1"
    )
    before = schema_of(await conn.fetch(query))
    await ledger.migrate(conn)
    assert schema_of(await conn.fetch(query)) == before
    versions = [r[0] for r in await conn.fetch("SELECT version FROM syncd.schema_version")]
    assert sorted(versions) == list(range(1, len(ledger.MIGRATIONS) + 1))
    assert ("freshness", "v") in before and ("ledger", "r") in before


async def test_migrate_refuses_a_schema_newer_than_this_syncd(conn: asyncpg.Connection):
    await conn.execute("INSERT INTO syncd.schema_version VALUES ($1)", len(ledger.MIGRATIONS) + 1)
    with pytest.raises(RuntimeError, match="upgrade syncd"):
        await ledger.migrate(conn)


async def test_a_pass_runs_then_records_each_datasets_outcome(conn: asyncpg.Connection):
    pass_id = await ledger.begin_pass(conn, "1100015", ["cidadaos", "atendimentos"], "host:1")
    assert await ledger_rows(conn, "1100015") == [
        (pass_id, "atendimentos", "running", None, None, None, None),
        (pass_id, "cidadaos", "running", None, None, None, None),
    ]
    assert await ledger.running_sources(conn) == ["1100015"]

    failed = Entry("atendimentos", Status.FAILED, T0, T1, None, None, 3, "column x missing")
    ok = entry("cidadaos", Status.OK, 60, mode=Mode.INCREMENTAL, watermark="42")
    await ledger.finish_pass(conn, pass_id, "1100015", [failed, ok])

    assert await ledger_rows(conn, "1100015") == [
        (pass_id, "atendimentos", "failed", None, "column x missing", None, None),
        (pass_id, "cidadaos", "ok", 60, None, "incremental", "42"),
    ]
    assert await ledger.running_sources(conn) == []
    latest = {s.dataset: s for s in await ledger.latest(conn)}
    assert latest["cidadaos"].last_status == Status.OK
    assert latest["cidadaos"].last_success == T1
    assert latest["cidadaos"].last_rows == 60
    assert latest["atendimentos"].last_status == Status.FAILED
    assert latest["atendimentos"].last_success is None
    assert latest["atendimentos"].last_error == "column x missing"


async def test_a_failure_keeps_the_last_success_and_its_rows(conn: asyncpg.Connection):
    first = await ledger.begin_pass(conn, "a", ["cidadaos"], "host:1")
    await ledger.finish_pass(conn, first, "a", [entry("cidadaos", Status.OK, 60)])
    second = await ledger.begin_pass(conn, "a", ["cidadaos"], "host:1")
    failure = Entry("cidadaos", Status.FAILED, T1, None, None, None, 4, "connection refused")
    await ledger.finish_pass(conn, second, "a", [failure])

    [status] = await ledger.latest(conn)
    assert (status.last_status, status.last_error) == ("failed", "connection refused")
    assert (status.last_success, status.last_rows) == (T1, 60)
    assert status.last_ended is not None and status.last_ended > T1  # clock_timestamp()


async def test_the_ledger_refuses_statuses_that_live_in_memory_only(conn: asyncpg.Connection):
    pass_id = await ledger.begin_pass(conn, "a", ["cidadaos"], "host:1")
    with pytest.raises(asyncpg.CheckViolationError):
        await ledger.finish_pass(conn, pass_id, "a", [entry("cidadaos", Status.LOADED, 1)])
    # the transaction rolled back: nothing half-written in `latest`
    assert await ledger.latest(conn) == []
    assert await ledger.running_sources(conn) == ["a"]


async def test_abort_stale_marks_only_earlier_running_passes_of_that_source(
    conn: asyncpg.Connection,
):
    crashed = await ledger.begin_pass(conn, "a", ["cidadaos", "atendimentos"], "host:1")
    other = await ledger.begin_pass(conn, "b", ["cidadaos"], "host:1")
    done = await ledger.begin_pass(conn, "a", ["dim_tempo"], "host:1")
    await ledger.finish_pass(conn, done, "a", [entry("dim_tempo", Status.OK, 5)])
    current = await ledger.begin_pass(conn, "a", ["cidadaos", "atendimentos"], "host:2")

    assert await ledger.abort_stale(conn, "a", current) == 2
    rows = await conn.fetch(
        "SELECT pass_id, source_id, status, error, ended_at FROM syncd.ledger ORDER BY 1, 2"
    )
    status = {(r["pass_id"], r["source_id"]): r["status"] for r in rows}
    assert status == {
        (crashed, "a"): "aborted",
        (other, "b"): "running",
        (done, "a"): "ok",
        (current, "a"): "running",
    }
    started = await conn.fetchval(
        "SELECT min(started_at) FROM syncd.ledger WHERE pass_id = $1", current
    )
    for r in rows:
        if r["pass_id"] == crashed:
            assert r["ended_at"] == started  # at the latest when the next pass began
            assert "crash or kill" in r["error"]
    assert await ledger.abort_stale(conn, "a", current) == 0
    assert sorted(await ledger.running_sources(conn)) == ["a", "b"]


def test_statuses_and_modes_are_the_strings_the_ledger_stores():
    assert Status.OK == "ok" and f"{Status.ABORTED}" == "aborted"
    assert Mode.FULL_REFRESH == "full_refresh"
    assert ledger.FINAL == {Status.OK, Status.FAILED, Status.ABORTED}
    assert Status("failed") is Status.FAILED


async def test_a_status_this_version_does_not_know_reads_back_as_unknown(conn: asyncpg.Connection):
    """Instances sharing a destination are upgraded one at a time: a newer one may write a status
    this one has no name for. It must read as unknown, not take the daemon down."""
    pass_id = await ledger.begin_pass(conn, "351570", ["cidadaos", "vacinas"], "host:1")
    await ledger.finish_pass(
        conn, pass_id, "351570", [entry("cidadaos", Status.OK, 5), entry("vacinas", Status.OK, 2)]
    )
    await conn.execute("UPDATE syncd.latest SET last_status = 'paused' WHERE dataset = 'vacinas'")
    statuses = {s.dataset: s.last_status for s in await ledger.latest(conn)}
    assert statuses == {"cidadaos": Status.OK, "vacinas": None}
