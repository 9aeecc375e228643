"""Filling a column beside a dataset column, for every row stored: one municipality at a time,
a batch per transaction, each under that municipality's sync lock (engine/retype.py).

Holding the lock, no landing of that municipality runs meanwhile (on any syncd): a batch waits
for no row lock and deadlocks with nothing. A municipality syncing now is left for a later run.
Its rows' addresses are listed once (a WITH HOLD cursor, kept by the server) and each batch
updates by address: the rows index is keyed on the source column alone (the hash is only
INCLUDEd), so paging by hash would read every row of a large municipality per batch. A row
that moved since was written by a landing, and the trigger filled it.
"""

from __future__ import annotations

import asyncpg

from syncd.engine import quoting
from syncd.engine.errors import RetryableError
from syncd.engine.layout import BUCKETS_SQL
from syncd.engine.tables import Tables
from syncd.ledger.lockkeys import source_key

BATCH = 5000  # rows per transaction
_CURSOR = "syncd_retype_rows"
_LOCK = "SELECT pg_catalog.pg_try_advisory_xact_lock($1)"


async def fill_all(
    conn: asyncpg.Connection,
    tables: Tables,
    dataset: str,
    oid: int,
    sets: str,
    unfilled: str,
    done: set[str],
) -> list[str]:
    """Every municipality's rows where `unfilled` (SQL) holds get `sets` (SQL), but those in
    `done` (filled before, by this syncd: the trigger keeps them so); returns the
    municipalities syncing now, left for a later run. `done` grows with those filled; a last
    check finding a row left empties it and raises (every row is looked at again later)."""
    parent, src = tables.parent(dataset), quoting.ident(tables.source_column)
    # each municipality once, from the rows index (a skip scan, not the whole table)
    municipalities = [
        r["id"]
        for r in await conn.fetch(
            f"WITH RECURSIVE m(id) AS ((SELECT {src} FROM {parent} ORDER BY 1 LIMIT 1) "  # noqa: S608
            f"UNION ALL SELECT (SELECT {src} FROM {parent} WHERE {src} > m.id ORDER BY 1 "
            "LIMIT 1) FROM m WHERE m.id IS NOT NULL) SELECT id FROM m WHERE id IS NOT NULL"
        )
    ]
    buckets = {r["oid"]: r["name"] for r in await conn.fetch(BUCKETS_SQL, oid)}
    busy = []
    for municipality in municipalities:
        if municipality in done:
            continue
        if await _fill(conn, tables, parent, municipality, buckets, sets, unfilled):
            done.add(municipality)
        else:
            busy.append(municipality)
    if busy:
        return busy
    # a municipality that appeared since the list was taken landed under the trigger; every
    # row is checked all the same (a scan, which readers never wait for)
    if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {parent} WHERE {unfilled})"):  # noqa: S608
        done.clear()
        raise RetryableError("rows were left unfilled; every municipality is looked at again")
    return []


async def _fill(
    conn: asyncpg.Connection,
    tables: Tables,
    parent: str,
    municipality: str,
    buckets: dict[int, str],
    sets: str,
    unfilled: str,
) -> bool:
    """One municipality's rows; False when it is syncing now."""
    key = source_key(municipality)
    src = quoting.ident(tables.source_column)
    async with conn.transaction():
        if not await conn.fetchval(_LOCK, key):
            return False
        found = await conn.fetchval(
            f"SELECT tableoid::int FROM {parent} WHERE {src} = $1 LIMIT 1",  # noqa: S608
            municipality,
        )
        if found not in buckets:
            return True  # its rows are gone meanwhile
        bucket = quoting.qualified(tables.schema, buckets[found])
        await conn.execute(
            f"DECLARE {_CURSOR} NO SCROLL CURSOR WITH HOLD FOR SELECT ctid FROM {bucket} "  # noqa: S608
            f"WHERE {src} = {quoting.literal(municipality)} AND ({unfilled})"
        )
    update = (
        f"UPDATE {bucket} SET {sets} WHERE ctid = ANY($1::tid[]) AND {src} = $2 "  # noqa: S608
        f"AND ({unfilled})"
    )
    try:
        while True:
            rows = await conn.fetch(f"FETCH {BATCH} FROM {_CURSOR}")
            if not rows:
                return True
            async with conn.transaction():
                if not await conn.fetchval(_LOCK, key):
                    return False
                # a float -> numeric conversion reads the float's exact text
                await conn.execute("SET LOCAL extra_float_digits = 3")
                await conn.execute(update, [r["ctid"] for r in rows], municipality)
    finally:
        if not conn.is_closed():
            await conn.execute(f"CLOSE {_CURSOR}")
