"""The vacuum lane (engine/vacuum.py) on a real database: a bucket a landing deleted from is
vacuumed once no landing that began before the delete may still see the deleted rows."""

from __future__ import annotations

import asyncpg

from syncd.engine.destination import Destination
from syncd.engine.landing import Write

from tests.unit import test_destination
from tests.unit.test_destination import SCHEMA, THINGS, rows_from

# test_destination's fixtures: a Destination on a scratch database, and another session on it
destination = test_destination.destination
reader = test_destination.reader


async def test_vacuum_waits_for_older_landings_then_reclaims_the_bucket(
    destination: Destination, reader: asyncpg.Connection
):
    vacuum = destination.vacuum

    async def pass_of(source_id: str, *rows: tuple[int, str]) -> str:
        async with destination.landing(source_id) as landing:
            target = await destination.prepare(THINGS, source_id)
            await landing.land(target, rows_from(reader, *rows), write=Write.DIFF, idle_timeout=30)
            buckets = await landing.buckets()
            await landing.commit()
        landing.settled(buckets)
        return buckets["things"]

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
