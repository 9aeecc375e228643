"""One syncd at a time per municipality: session advisory locks on the destination."""

from __future__ import annotations

import logging

import anyio
import asyncpg

from syncd.engine.destination import Destination
from syncd.ledger.lockkeys import source_key
from syncd.logevents import Event

log = logging.getLogger(__name__)


class SourceLocks:
    """Session advisory locks on the destination: one syncd at a time per municipality.

    Held on one dedicated connection, so they vanish with it when a syncd dies. If that
    connection drops while syncd lives, the locks are taken again on a new one; a source that
    another instance grabbed in between is reported lost, and its sync does not commit.
    """

    def __init__(self, destination: Destination):
        self.destination = destination
        self._conn: asyncpg.Connection | None = None
        self._lock = anyio.Lock()
        self._held: set[str] = set()

    @staticmethod
    def key(source_id: str) -> int:
        return source_key(source_id)

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            reconnecting = self._conn is not None
            self._conn = conn = await self.destination.connect()
            if reconnecting:
                for source_id in sorted(self._held):
                    if not await self._take(conn, source_id):
                        self._held.discard(source_id)
                        log.error(
                            "source %s: lost its lock while the destination connection was down",
                            source_id,
                            extra={"event": Event.LOCK_LOST, "source": source_id},
                        )
        return self._conn

    async def _take(self, conn: asyncpg.Connection, source_id: str) -> bool:
        return bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key(source_id)))

    async def try_lock(self, source_id: str) -> bool:
        async with self._lock:
            conn = await self._connection()
            if await self._take(conn, source_id):
                self._held.add(source_id)
                return True
            return False

    async def confirm(self, source_id: str) -> bool:
        """Still ours? (Reconnects and re-takes the locks if their connection dropped.)"""
        async with self._lock:
            await self._connection()
            return source_id in self._held

    async def unlock(self, source_id: str) -> None:
        async with self._lock:
            self._held.discard(source_id)
            if self._conn is None or self._conn.is_closed():
                return
            try:
                await self._conn.execute("SELECT pg_advisory_unlock($1)", self.key(source_id))
            except (asyncpg.InterfaceError, asyncpg.ConnectionDoesNotExistError, OSError):
                # the connection died under us: its locks died with it, nothing to release;
                # the next lock taken reconnects (and takes the others' locks again)
                self._conn.terminate()

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._held.clear()
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()
