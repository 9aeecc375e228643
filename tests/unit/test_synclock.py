"""Per-municipality locks on a real destination (engine/synclock.py), through the fault proxy."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from syncd.config import DestinationSettings, Timeouts
from syncd.config.dsn import Dsn
from syncd.engine.destination import Destination
from syncd.engine.synclock import SourceLocks

from tests.conftest import DestDb
from tests.support.faultproxy import FaultProxy


@pytest.fixture
async def proxy(scratch_dest: DestDb) -> AsyncIterator[FaultProxy]:
    proxy = await FaultProxy("127.0.0.1", scratch_dest.cluster.port).start()
    try:
        yield proxy
    finally:
        await proxy.stop()


async def test_unlock_on_a_connection_cut_under_it_does_not_raise(
    proxy: FaultProxy, scratch_dest: DestDb
) -> None:
    """Found by the soak: the fault proxy reset the locks' connection while the unlock at the end
    of a municipality's sync was on the wire; it raised, and the daemon's task group took the
    whole daemon down. The locks die with their connection: there is nothing to release."""
    dsn = Dsn.parse(proxy.dsn(scratch_dest.dbname))
    locks = SourceLocks(Destination(DestinationSettings(dsn), Timeouts(), pool_size=1))
    try:
        assert await locks.try_lock("351570")
        (conn,) = proxy.conns
        proxy.cut_next(conn.sent["up"], direction="up")  # the next query never arrives
        await locks.unlock("351570")  # must not raise
        assert proxy.cut_count == 1
        # and the next sync of it takes the lock on a new connection
        assert await locks.try_lock("351570")
        other = await scratch_dest.connect()
        try:
            held = await other.fetchval(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND granted"
            )
        finally:
            await other.close()
        assert held == 1
    finally:
        await locks.close()
