"""The destination side on a real database (engine/destination.py, landing.py, tables.py):
`Destination` makes the dataset tables, a `Landing` replaces or upserts one municipality's rows
in one transaction. The vacuum lane's test (test_vacuum.py) takes this module's fixtures.

The rows come as binary COPY from a real PostgreSQL query (a VALUES list), so the bytes are what
a municipal server would send. A second connection reads what other sessions would see.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace

import anyio
import asyncpg
import pytest

from syncd.config import DestinationSettings, Timeouts
from syncd.config.dsn import Dsn
from syncd.engine import quoting
from syncd.engine.copy import CopyOut, Sink, Transfer, copy_row_count
from syncd.engine.destination import Destination
from syncd.engine.errors import FinalError, Side, TransferError
from syncd.engine.landing import Landing, Write
from syncd.engine.shape import Column, Shape
from syncd.engine.tables import Target
from syncd.ledger import Mode

from tests.conftest import DestDb

SCHEMA = "syncd_data"
SOURCE_COLUMN = "municipio_id_sus"
BUCKETS = 4
THINGS = Shape(
    "things", (Column("id", "integer"), Column("name", "text")), None, "SELECT id, name FROM t"
)
OTHERS = replace(THINGS, dataset="others")


@pytest.fixture
async def destination(scratch_dest: DestDb) -> AsyncIterator[Destination]:
    settings = DestinationSettings(Dsn.parse(scratch_dest.dsn), buckets=BUCKETS)
    destination = Destination(settings, Timeouts(), pool_size=3)
    await destination.open()
    try:
        yield destination
    finally:
        await destination.close()


@pytest.fixture
async def reader(scratch_dest: DestDb) -> AsyncIterator[asyncpg.Connection]:
    """Another session: an analyst, and the municipal server the rows are copied from."""
    conn = await scratch_dest.connect()
    try:
        yield conn
    finally:
        await conn.close()


def rows_from(conn: asyncpg.Connection, *rows: tuple[int, str]) -> CopyOut:
    """A source COPY of (id integer, name text) rows, in PostgreSQL's binary format."""
    values = ", ".join(f"({i}, {quoting.literal(name)})" for i, name in rows) or "(0, '')"
    where = "" if rows else " WHERE false"
    query = f"SELECT id::integer, name::text FROM (VALUES {values}) AS v(id, name){where}"

    async def copy_out(sink: Sink) -> int:
        return copy_row_count(await conn.copy_from_query(query, output=sink, format="binary"))

    return copy_out


def failing_after_header(error: Exception) -> CopyOut:
    async def copy_out(sink: Sink) -> int:
        await sink(b"PGCOPY\n\xff\r\n\x00" + bytes(8))
        raise error

    return copy_out


async def contents(conn: asyncpg.Connection, dataset: str, source_id: str) -> list[tuple]:
    rows = await conn.fetch(
        f"SELECT id, name FROM {SCHEMA}.{dataset} WHERE {SOURCE_COLUMN} = $1 ORDER BY id",
        source_id,
    )
    return [tuple(r) for r in rows]


async def land(destination: Destination, source_id: str, **datasets: CopyOut) -> None:
    """One committed pass of a source: each dataset replaced in its savepoint."""
    async with destination.landing(source_id) as landing:
        for name, copy_out in datasets.items():
            target = await destination.prepare(replace(THINGS, dataset=name), source_id)
            async with landing.savepoint():
                await landing.land(target, copy_out, write=Write.DIFF, idle_timeout=30)
        await landing.commit()


async def test_prepare_makes_a_table_hash_partitioned_by_source(
    destination: Destination, reader: asyncpg.Connection
):
    target = await destination.prepare(THINGS, "a")
    assert target == Target("things", "a", ("id", "name"), ("integer", "text"))
    partkey = await reader.fetchval("SELECT pg_get_partkeydef($1::regclass)", f"{SCHEMA}.things")
    assert partkey == f"HASH ({SOURCE_COLUMN})"
    buckets = await reader.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = $1::regclass", f"{SCHEMA}.things"
    )
    assert buckets == BUCKETS
    assert destination.tables.get("things").columns == {
        "id": "integer",
        "name": "text",
        SOURCE_COLUMN: "text",
        "syncd_row_hash": "uuid",
        "syncd_src_fp": "bigint",
    }


async def test_prepare_runs_no_sql_for_a_known_table_until_it_is_forgotten(
    destination: Destination, reader: asyncpg.Connection
):
    await destination.prepare(THINGS, "a")
    await reader.execute(f"DROP TABLE {SCHEMA}.things")
    # what syncd believes is not checked against the catalog on every pass...
    await destination.prepare(THINGS, "a")
    assert await reader.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.things") is None
    # ...only after an error makes it forget
    destination.forget("things")
    await destination.prepare(THINGS, "a")
    assert await reader.fetchval("SELECT to_regclass($1)", f"{SCHEMA}.things") is not None


async def test_a_new_source_column_is_added_and_null_for_the_other_sources(
    destination: Destination, reader: asyncpg.Connection
):
    await land(destination, "a", things=rows_from(reader, (1, "old")))
    wider = replace(THINGS, columns=(*THINGS.columns, Column("weight", "numeric(5,2)")))
    target = await destination.prepare(wider, "b")
    assert target.columns == ("id", "name", "weight") and target.missing == ()
    assert destination.tables.get("things").columns["weight"] == "numeric"
    assert await reader.fetchval(f"SELECT weight FROM {SCHEMA}.things") is None


async def test_prepare_refuses_a_column_named_like_the_source_column(destination: Destination):
    shape = replace(THINGS, columns=(*THINGS.columns, Column(SOURCE_COLUMN, "text")))
    with pytest.raises(FinalError, match=r"destination\.source_column"):
        await destination.prepare(shape, "a")


async def test_replacing_a_sources_rows_leaves_the_other_sources_rows(
    destination: Destination, reader: asyncpg.Connection
):
    await land(destination, "a", things=rows_from(reader, (1, "a1"), (2, "a2"), (3, "a3")))
    await land(destination, "b", things=rows_from(reader, (1, "b1"), (2, "b2")))
    async with destination.landing("a") as landing:
        target = await destination.prepare(THINGS, "a")
        transfer = (
            await landing.land(
                target, rows_from(reader, (7, "new")), write=Write.DIFF, idle_timeout=30
            )
        ).transfer
        await landing.commit()
    assert transfer.rows == 1
    assert (landing.deleted, landing.landed) == ({"things": 3}, {"things": 1})
    assert await contents(reader, "things", "a") == [(7, "new")]
    assert await contents(reader, "things", "b") == [(1, "b1"), (2, "b2")]


async def test_a_failed_dataset_rolls_back_to_its_savepoint_and_the_others_land(
    destination: Destination, reader: asyncpg.Connection
):
    await land(
        destination, "a", things=rows_from(reader, (1, "t")), others=rows_from(reader, (1, "o"))
    )
    lost = ConnectionResetError("municipal server went away")
    async with destination.landing("a") as landing:
        things = await destination.prepare(THINGS, "a")
        others = await destination.prepare(OTHERS, "a")
        async with landing.savepoint():
            await landing.land(
                things, rows_from(reader, (2, "t2")), write=Write.DIFF, idle_timeout=30
            )
        with pytest.raises(TransferError) as caught:
            async with landing.savepoint():
                await landing.land(
                    others, failing_after_header(lost), write=Write.DIFF, idle_timeout=30
                )
        assert caught.value.side is Side.SOURCE and caught.value.cause is lost
        # the failed dataset's DELETE and counts are gone with its savepoint
        assert (landing.deleted, landing.landed) == ({"things": 1}, {"things": 1})
        await landing.commit()
    assert await contents(reader, "things", "a") == [(2, "t2")]
    assert await contents(reader, "others", "a") == [(1, "o")]


async def test_commit_shows_every_dataset_at_once(
    destination: Destination, reader: asyncpg.Connection
):
    await land(
        destination, "a", things=rows_from(reader, (1, "t")), others=rows_from(reader, (1, "o"))
    )
    async with destination.landing("a") as landing:
        for shape, name in ((THINGS, "t2"), (OTHERS, "o2")):
            target = await destination.prepare(shape, "a")
            await landing.land(
                target, rows_from(reader, (2, name)), write=Write.DIFF, idle_timeout=30
            )
        # readers see all of the previous rows, and are not kept waiting for them
        await reader.execute("SET lock_timeout = '100ms'")
        assert await contents(reader, "things", "a") == [(1, "t")]
        assert await contents(reader, "others", "a") == [(1, "o")]
        await landing.commit()
        assert await contents(reader, "things", "a") == [(2, "t2")]
        assert await contents(reader, "others", "a") == [(2, "o2")]


async def test_an_exception_in_the_landing_rolls_back_everything(
    destination: Destination, reader: asyncpg.Connection
):
    await land(destination, "a", things=rows_from(reader, (1, "t")))
    with pytest.raises(RuntimeError, match="ledger write failed"):
        async with destination.landing("a") as landing:
            target = await destination.prepare(THINGS, "a")
            await landing.land(
                target, rows_from(reader, (2, "t2")), write=Write.DIFF, idle_timeout=30
            )
            raise RuntimeError("ledger write failed")
    assert await contents(reader, "things", "a") == [(1, "t")]
    # and the connection went back to the pool clean: the next landing works
    await land(destination, "a", things=rows_from(reader, (3, "t3")))
    assert await contents(reader, "things", "a") == [(3, "t3")]


async def upsert(
    landing: Landing, target: Target, copy_out: CopyOut, *, cap: str, idle_timeout: float
) -> tuple[Transfer, str | None]:
    landed = await landing.land(
        target, copy_out, write=Write.WINDOW, cap=cap, idle_timeout=idle_timeout
    )
    return landed.transfer, landed.watermark


async def incremental_target(destination: Destination, source_id: str) -> Target:
    target = await destination.prepare(THINGS, source_id, key=("id",))
    return replace(target, cursor="id", mode=Mode.INCREMENTAL)


async def test_upsert_updates_by_key_and_returns_the_highest_cursor(
    destination: Destination, reader: asyncpg.Connection
):
    await land(destination, "b", things=rows_from(reader, (3, "other source")))
    target = await incremental_target(destination, "a")
    async with destination.landing("a") as landing:
        full = replace(target, mode=Mode.FULL_REFRESH, watermark="3")
        await landing.land(
            full,
            rows_from(reader, (1, "v1"), (2, "v1"), (3, "v1")),
            write=Write.DIFF,
            idle_timeout=30,
        )
        await landing.store_watermark(full, full=True)
        await landing.commit()

    window = replace(target, watermark="3")
    async with destination.landing("a") as landing:
        transfer, watermark = await upsert(
            landing,
            window,
            rows_from(reader, (3, "v2"), (4, "v2"), (6, "v2")),
            cap="TRUE",
            idle_timeout=30,
        )
        await landing.store_watermark(replace(window, watermark=watermark), full=False)
        await landing.commit()
    assert (transfer.rows, watermark) == (3, "6")
    assert (landing.deleted, landing.landed) == ({"things": 1}, {"things": 3})
    assert await contents(reader, "things", "a") == [
        (1, "v1"),
        (2, "v1"),
        (3, "v2"),
        (4, "v2"),
        (6, "v2"),
    ]
    assert await contents(reader, "things", "b") == [(3, "other source")]
    async with destination.landing("a") as landing:
        stored, full_refresh_at = await landing.watermark(target)
    assert stored == "6"
    assert full_refresh_at is not None  # an incremental pass keeps the last full refresh's time


async def test_upsert_watermark_obeys_the_cap_and_stays_put_without_rows(
    destination: Destination, reader: asyncpg.Connection
):
    target = replace(await incremental_target(destination, "a"), watermark="10")
    async with destination.landing("a") as landing:
        _, capped = await upsert(
            landing,
            target,
            rows_from(reader, (11, "x"), (30001231, "not informed")),
            cap="syncd_q.id < 20000000",
            idle_timeout=30,
        )
    async with destination.landing("a") as landing:
        _, empty = await upsert(landing, target, rows_from(reader), cap="TRUE", idle_timeout=30)
    assert (capped, empty) == ("11", "10")


async def test_a_window_upserted_again_in_the_same_landing_gives_the_same_result(
    destination: Destination, reader: asyncpg.Connection
):
    """A dataset retried after its landing savepoint was released (the source's own RELEASE
    timed out) upserts its window again in the same transaction: the delta table is emptied for
    each upsert, not only at commit, or every key would come twice and the dataset fail as not
    unique."""
    target = replace(await incremental_target(destination, "a"), watermark="0")
    async with destination.landing("a") as landing:
        for _ in range(2):
            async with landing.savepoint():
                _, watermark = await upsert(
                    landing,
                    target,
                    rows_from(reader, (1, "x"), (2, "y")),
                    cap="TRUE",
                    idle_timeout=30,
                )
        await landing.commit()
    assert watermark == "2"
    assert await contents(reader, "things", "a") == [(1, "x"), (2, "y")]


async def test_upsert_refuses_a_window_with_a_key_twice(
    destination: Destination, reader: asyncpg.Connection
):
    target = replace(await incremental_target(destination, "a"), watermark="0")
    async with destination.landing("a") as landing:
        with pytest.raises(FinalError, match=r"key \(id\) is not unique"):
            async with landing.savepoint():
                await upsert(
                    landing,
                    target,
                    rows_from(reader, (1, "x"), (1, "y")),
                    cap="TRUE",
                    idle_timeout=30,
                )
        await landing.commit()
    assert await contents(reader, "things", "a") == []


class Stop(Exception):
    """What the caller raises on seeing the landing lost (its pass starts again)."""


async def test_a_landing_is_not_lost_while_its_connection_lives(
    destination: Destination, reader: asyncpg.Connection
):
    with pytest.raises(Stop):  # not hidden by a rollback on a connection that is gone
        async with destination.landing("a") as landing:
            assert landing.lost is None
            pid = await landing.conn.fetchval("SELECT pg_backend_pid()")
            assert landing.lost is None
            await reader.execute("SELECT pg_terminate_backend($1)", pid)
            with anyio.fail_after(30):  # a bound, not a measure: asyncpg sees the EOF at once
                while landing.lost is None:
                    await anyio.sleep(0.01)
            failure = landing.lost
            assert failure.lost_connection and failure.retryable
            assert failure.side is Side.DESTINATION
            raise Stop


async def test_buckets_name_the_partition_that_holds_the_sources_rows(
    destination: Destination, reader: asyncpg.Connection
):
    async with destination.landing("1100015") as landing:
        target = await destination.prepare(THINGS, "1100015")
        await landing.land(
            target, rows_from(reader, (1, "x"), (2, "y")), write=Write.DIFF, idle_timeout=30
        )
        buckets = await landing.buckets()
        await landing.commit()
    held = await reader.fetch(
        f"SELECT DISTINCT tableoid::regclass::text FROM {SCHEMA}.things WHERE {SOURCE_COLUMN} = $1",
        "1100015",
    )
    assert [r[0] for r in held] == [f"{SCHEMA}.{buckets['things']}"]
