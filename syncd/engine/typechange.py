"""How a dataset column's type change is made (the common type of a mixed fleet,
engine/widening.py): one ALTER, readers queued behind it for at most `timeouts.lock` in all, or
online (engine/retype.py) when the table is large or that ALTER's rewrite outlasted it."""

from __future__ import annotations

import enum
import time
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from syncd import config
from syncd.engine import widening
from syncd.engine.retype import Ddl, Retypes
from syncd.engine.tables import Table


class Outcome(enum.Enum):
    DONE = "done"
    HELD = "held"  # readers held the table past timeouts.lock
    SLOW = "slow"  # the rewrite would have held it longer: cancelled, rolled back


async def make(
    conn: asyncpg.Connection,
    retypes: Retypes,
    try_ddl: Callable[[str, Ddl], Awaitable[bool]],
    timeouts: config.Timeouts,
    oid: int,
    table: Table,
    source_id: str,
    changes: Sequence[widening.Change],
) -> bool:
    """The columns changed to their common types now (True, and `table` knows it), or not
    yet: readers hold the table, or the change goes online because the table is larger than
    `destination.retype_online_above` or the ALTER's rewrite took longer than timeouts.lock
    (cancelled, no harm done). Logged either way."""
    dataset = changes[0].dataset
    if not await retypes.online(conn, oid, changes):
        statement = widening.alter(retypes.tables, changes)
        parent = retypes.tables.parent(dataset)
        outcome = await alter(conn, try_ddl, timeouts, dataset, parent, statement)
        if outcome is not Outcome.SLOW:
            done = outcome is Outcome.DONE
            if done:
                table.columns.update({change.column: change.to for change in changes})
            widening.log_changes(dataset, source_id, changes, done=done)
            return done
    if not await retypes.start(conn, dataset, oid, changes, source_id):
        widening.log_changes(dataset, source_id, changes, done=False)
    return False


async def alter(
    conn: asyncpg.Connection,
    try_ddl: Callable[[str, Ddl], Awaitable[bool]],
    timeouts: config.Timeouts,
    dataset: str,
    parent: str,
    statement: str,
) -> Outcome:
    """One ALTER TABLE of a dataset table (`statement`) that may rewrite it: `parent` locked
    first (lock_timeout: timeouts.lock), then the rewrite bounded by what is left of it
    (statement_timeout), so a reader queued behind it waits at most timeouts.lock in all."""

    async def work() -> None:
        asked = time.monotonic()
        await conn.execute(f"LOCK TABLE {parent} IN ACCESS EXCLUSIVE MODE")
        left = timeouts.lock - (time.monotonic() - asked)
        await conn.execute(f"SET LOCAL statement_timeout = {max(1, int(left * 1000))}")
        await conn.execute(statement, timeout=timeouts.destination_statement)

    try:
        done = await try_ddl(dataset, work)
    except asyncpg.QueryCanceledError:
        return Outcome.SLOW
    return Outcome.DONE if done else Outcome.HELD
