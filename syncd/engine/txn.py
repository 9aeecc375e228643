"""Destination transactions as syncd runs them: the landing's own, and savepoints in it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import asyncpg


class Tx:
    """A transaction (or savepoint) and whether it ended: asyncpg keeps that state private, so
    syncd tracks the commits it makes itself (Landing.commit ends the landing's own)."""

    def __init__(self, tr: asyncpg.transaction.Transaction):
        self.tr = tr
        self.ended = False

    async def commit(self) -> None:
        await self.tr.commit()
        self.ended = True


@asynccontextmanager
async def transaction(conn: asyncpg.Connection) -> AsyncIterator[Tx]:
    """A transaction (or a savepoint inside one) whose rollback never hides why it failed: on a
    connection that died, or a savepoint an inner error already rolled back, the rollback's own
    error is dropped and the first one raised."""
    tx = Tx(conn.transaction())
    await tx.tr.start()
    try:
        yield tx
    except BaseException:
        if not tx.ended:
            with contextlib.suppress(Exception), anyio.CancelScope(shield=True):
                await tx.tr.rollback()
        raise
    if not tx.ended:
        await tx.commit()


def rows_in_command_tag(status: str | None) -> int:
    """The row count at the end of a command tag (`DELETE 12`, `COPY 3`); 0 when it has none."""
    try:
        return int((status or "").rsplit(" ", 1)[-1])
    except ValueError:
        return 0
