"""The vacuum lane (engine/vacuum.py) on a real database: a bucket a landing deleted from is
vacuumed once no landing that began before the delete may still see the deleted rows."""

from __future__ import annotations

import asyncpg

from syncd.engine.destination import Destination
from syncd.engine.landing import Write
from syncd.engine.vacuum import Vacuum

from tests.unit import test_destination
from tests.unit.test_destination import SCHEMA, THINGS, rows_from

# test_destination's fixtures: a Destination on a scratch database, and another session on it
destination = test_destination.destination
reader = test_destination.reader


async def landed(
    destination: Destination,
    reader: asyncpg.Connection,
    source_id: str,
    rows: list[tuple[int, str]],
) -> str:
    """One committed pass of the municipality with these rows; the bucket of its rows."""
    async with destination.landing(source_id) as landing:
        target = await destination.prepare(THINGS, source_id)
        await landing.land(target, rows_from(reader, *rows), write=Write.DIFF, idle_timeout=30)
        buckets = await landing.buckets()
        await landing.commit()
    landing.settled(buckets)
    return buckets["things"]


async def test_vacuum_waits_for_older_landings_then_reclaims_the_bucket(
    destination: Destination, reader: asyncpg.Connection
):
    vacuum = destination.vacuum

    async def pass_of(source_id: str, *rows: tuple[int, str]) -> str:
        return await landed(destination, reader, source_id, list(rows))

    bucket = await pass_of("a", (1, "x"), (2, "y"))
    assert vacuum.due() == []  # nothing deleted yet
    async with destination.landing("b"):
        # a landing that began before the next pass deleted: its snapshot may still see the rows
        await pass_of("a", (3, "z"))
        assert vacuum.due() == []
    assert vacuum.due() == [bucket]
    counted = "SELECT reltuples FROM pg_class WHERE oid = $1::regclass"
    assert await reader.fetchval(counted, f"{SCHEMA}.{bucket}") == -1  # never vacuumed
    await vacuum.run_due()
    assert vacuum.due() == []
    # VACUUM ran: it counted the live rows of the bucket
    assert await reader.fetchval(counted, f"{SCHEMA}.{bucket}") == 1


async def test_a_new_process_sizes_a_bucket_before_vacuuming_it(
    destination: Destination, reader: asyncpg.Connection
):
    """A process that has not vacuumed a bucket yet knows only the rows it wrote there: one row
    changed in a 200-row bucket must not read as a fifth dead (every `once` pass would vacuum
    its whole bucket); a hundred must."""

    async def pass_of(source_id: str, rows: list[tuple[int, str]]) -> str:
        return await landed(destination, reader, source_id, rows)

    async def vacuums(bucket: str) -> int:
        await reader.execute("SELECT pg_stat_clear_snapshot()")
        return await reader.fetchval(
            "SELECT vacuum_count FROM pg_stat_user_tables WHERE relid = $1::regclass",
            f"{SCHEMA}.{bucket}",
        )

    rows = [(i, f"row {i}") for i in range(200)]
    bucket = await pass_of("a", rows)
    await reader.execute(f"VACUUM {SCHEMA}.{bucket}")  # as any earlier vacuum leaves it
    before = await vacuums(bucket)
    assert before >= 1
    # a new process: it has seen no landing yet
    destination.vacuum = Vacuum(
        destination.acquire, destination.vacuum.schema, destination.timeouts
    )
    await pass_of("a", [*rows[1:], (1000, "new")])
    await destination.vacuum.run_due()
    assert await vacuums(bucket) == before  # 1 dead of 200: autovacuum's
    await pass_of("a", [*rows[1:100], (1000, "new")])
    await destination.vacuum.run_due()
    assert await vacuums(bucket) == before + 1  # 101 dead of 200: the lane's
