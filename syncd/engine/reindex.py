"""The indexes using a column, built again on the column that replaces it (engine/retype.py):
CREATE INDEX CONCURRENTLY on each bucket (readers and writers go on; it waits, within
`timeouts.lock`, for the writers already there), then attached to an index ON ONLY the parent.
Until the swap they carry a name of their own (`renamed`); the swap gives them the old ones.

Plain column indexes only (syncd's own: the rows index, an incremental dataset's key); one
with an expression or a predicate on the column stops the change, named, for a DBA to drop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import asyncpg

from syncd import config
from syncd.engine import quoting
from syncd.engine.errors import FinalError
from syncd.engine.layout import BUCKETS_SQL
from syncd.engine.tables import Tables
from syncd.logevents import Event

log = logging.getLogger(__name__)

# the parent's indexes that depend on any of the columns: theirs, in order, when plain
_USING_SQL = """
SELECT c.relname::text AS name, i.indisunique AS is_unique, i.indnkeyatts::int AS nkey,
       i.indexprs IS NOT NULL OR i.indpred IS NOT NULL AS special,
       ARRAY(SELECT a.attname::text
             FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
             JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
             ORDER BY k.n) AS columns
FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = $1::oid
  AND EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
              WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = i.indexrelid
                AND d.refclassid = 'pg_catalog.pg_class'::regclass AND d.refobjid = i.indrelid
                AND d.refobjsubid = ANY(
                    SELECT a.attnum FROM pg_catalog.pg_attribute a
                    WHERE a.attrelid = i.indrelid AND a.attname = ANY($2::text[])))
ORDER BY c.relname
"""

_STATE_SQL = """
SELECT c.relname::text AS name, i.indisvalid AS valid
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_index i ON i.indexrelid = c.oid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = ANY($2::text[])
"""


def renamed(name: str) -> str:
    """The name an index built on the replacing columns has until the swap."""
    return quoting.shorten(f"{name}_rt")


async def using(conn: asyncpg.Connection, oid: int, columns: Sequence[str]) -> list[asyncpg.Record]:
    """The parent table's indexes that use any of these columns."""
    return list(await conn.fetch(_USING_SQL, oid, list(columns)))


async def rebuild(
    conn: asyncpg.Connection,
    tables: Tables,
    dataset: str,
    oid: int,
    replaced: dict[str, str],
    try_ddl: Callable[[str], Awaitable[bool]],
    timeouts: config.Timeouts,
) -> bool:
    """Each index using a column of `replaced` (column -> the one replacing it) built again
    on the replacing ones, valid; False when writers held a bucket (or readers the parent)
    past timeouts.lock: tried again later. Whatever is built already is kept."""
    schema = tables.schema
    buckets = [r["name"] for r in await conn.fetch(BUCKETS_SQL, oid)]
    for index in await using(conn, oid, list(replaced)):
        if index["special"]:
            raise FinalError(
                f"index {index['name']} uses column(s) {', '.join(replaced)} in an expression "
                "or a predicate: drop it (and build it again after the change) to let it happen"
            )
        new = [replaced.get(c, c) for c in index["columns"]]
        keys = ", ".join(quoting.ident(c) for c in new[: index["nkey"]])
        include = ", ".join(quoting.ident(c) for c in new[index["nkey"] :])
        spec = f"({keys})" + (f" INCLUDE ({include})" if include else "")
        unique = "UNIQUE " if index["is_unique"] else ""
        on_parent = renamed(index["name"])
        parts = {b: renamed(f"{b}_{index['name']}") for b in buckets}
        valid = {
            r["name"]: r["valid"]
            for r in await conn.fetch(_STATE_SQL, schema, [on_parent, *parts.values()])
        }
        for bucket, name in parts.items():
            if valid.get(name):
                continue
            try:
                if name in valid:  # an interrupted or failed build: invalid, of no use
                    await conn.execute(
                        f"DROP INDEX CONCURRENTLY IF EXISTS {quoting.qualified(schema, name)}"
                    )
                await conn.execute(
                    f"CREATE {unique}INDEX CONCURRENTLY {quoting.ident(name)} ON "
                    f"{quoting.qualified(schema, bucket)} {spec}",
                    timeout=timeouts.destination_statement,
                )
            except asyncpg.LockNotAvailableError:
                log.info(
                    "dataset %s: landings held bucket %s, its index is built after a pass",
                    dataset,
                    bucket,
                    extra={
                        "event": Event.COLUMN_TYPE_DEFERRED,
                        "dataset": dataset,
                        "stage": "index",
                    },
                )
                return False
        attach = [
            f"CREATE {unique}INDEX IF NOT EXISTS {quoting.ident(on_parent)} ON ONLY "
            f"{tables.parent(dataset)} {spec}",
            *(
                f"ALTER INDEX {quoting.qualified(schema, on_parent)} ATTACH PARTITION "
                f"{quoting.qualified(schema, name)}"
                for name in parts.values()
            ),
        ]
        if not await try_ddl(";".join(attach)):
            return False
    return True
