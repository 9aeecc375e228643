"""Converting the dataset tables an older syncd made, on the first start that finds them
(`upgrade_tables`): tables of one LIST partition per municipality become tables of a fixed
number of HASH buckets (`upgrade_layout`), bucketed tables without row hashes gain them
(`add_row_hashes`), and tables without source fingerprints gain that column
(`add_source_fingerprints`).

Per partitioned dataset, with readers querying throughout:
1. the new table is built beside the old one (`<dataset>__v2`), its rows copied from the old in
   one statement (a consistent snapshot; no sync writes meanwhile: this runs at start, under the
   destination's setup lock), with the old one's own indexes and grants;
2. one short transaction under `timeouts.lock` renames the old table away and the new one into
   its place; readers wait at most the lock timeout, and it is retried until they let go;
3. the old table is dropped (retried the same way; left for the next start if readers keep it).
The staging tables a crashed sync of that layout may have left are dropped too.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

import anyio
import asyncpg

from syncd import config, ledger
from syncd.engine import quoting
from syncd.engine.errors import FinalError, Side
from syncd.engine.layout import (
    COLUMNS_SQL,
    ROW_HASH,
    SOURCE_SETTING,
    SRC_FP,
    base_type,
    bucket_names,
    index_name,
)
from syncd.engine.retry import Observer, RetryPolicy
from syncd.logevents import Event

log = logging.getLogger(__name__)


class UpgradeError(FinalError):
    """The layout cannot be converted as it is: the operator must act (one line, no retry)."""


async def upgrade_tables(
    conn: asyncpg.Connection,
    settings: config.DestinationSettings,
    timeouts: config.Timeouts,
    observe: Observer,
) -> None:
    """At start: every dataset table brought to this version's layout, oldest step first."""
    await upgrade_layout(conn, settings, timeouts, observe)
    await add_row_hashes(conn, settings, timeouts, observe)
    await add_source_fingerprints(conn, settings, timeouts, observe)


OLD_SUFFIX = "__v1"
NEW_SUFFIX = "__v2"
SWAP_DEADLINE = 600.0  # seconds of retrying the rename before giving up (readers never let go)

_PER_MUNICIPALITY_TABLES_SQL = r"""
SELECT c.oid::int AS oid, c.relname::text AS name
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'p' AND NOT c.relispartition
  AND pg_catalog.pg_get_partkeydef(c.oid) = 'LIST (' || pg_catalog.quote_ident($2) || ')'
  AND c.relname NOT LIKE '%\_\_%'  -- dataset names have no `__`; a retired `<d>__v1` has
ORDER BY c.relname
"""

_LEFTOVERS_SQL = r"""
SELECT c.relname::text AS name
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND (pg_catalog.obj_description(c.oid, 'pg_class') LIKE 'syncd staging: %'
       OR pg_catalog.obj_description(c.oid, 'pg_class') LIKE 'syncd layout v1, replaced: %')
"""

_DEPENDENT_VIEWS_SQL = """
SELECT DISTINCT v.oid::regclass::text AS name
FROM pg_catalog.pg_depend d
JOIN pg_catalog.pg_rewrite r ON r.oid = d.objid AND d.classid = 'pg_catalog.pg_rewrite'::regclass
JOIN pg_catalog.pg_class v ON v.oid = r.ev_class
WHERE d.refobjid = $1::oid AND v.oid <> $1::oid
"""

_INDEXES_SQL = """
SELECT pg_catalog.pg_get_indexdef(i.indexrelid) AS def
FROM pg_catalog.pg_index i WHERE i.indrelid = $1::oid
"""

_GRANTS_SQL = """
SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee) END AS grantee,
       a.privilege_type, a.is_grantable
FROM pg_catalog.pg_class c, LATERAL pg_catalog.aclexplode(c.relacl) AS a
WHERE c.oid = $1::oid AND a.grantee <> c.relowner
"""

_INDEX_HEAD = re.compile(r"^CREATE (UNIQUE )?INDEX \S+ ON (?:ONLY )?\S+ USING ")


@contextlib.asynccontextmanager
async def _upgrading(conn: asyncpg.Connection) -> AsyncIterator[None]:
    """One instance upgrades; another starting meanwhile waits here, then finds nothing to do."""
    await conn.execute("SELECT pg_advisory_lock($1, 2)", ledger.LOCK_NAMESPACE)
    try:
        yield
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1, 2)", ledger.LOCK_NAMESPACE)


@dataclass(frozen=True, slots=True)
class _Upgrade:
    schema: str
    column: str  # up.column
    buckets: int
    timeouts: config.Timeouts
    # DDL waits for readers: again and again, a little longer each time, until a deadline
    retry: RetryPolicy


async def upgrade_layout(
    conn: asyncpg.Connection,
    settings: config.DestinationSettings,
    timeouts: config.Timeouts,
    observe: Observer,
) -> int:
    """Convert every partition-per-municipality dataset table of the data schema to hash
    buckets; returns how many were converted."""
    retry = RetryPolicy(None, 0.05, 2.0, jitter=False, observe=observe, level=logging.INFO)
    up = _Upgrade(settings.schema, settings.source_column, settings.buckets, timeouts, retry)
    converted = 0
    key = up.column
    partitioned = await conn.fetchval(
        f"SELECT EXISTS ({_PER_MUNICIPALITY_TABLES_SQL})", up.schema, key
    )
    # or what an earlier conversion could not drop yet, readers holding it
    left = await conn.fetchval(f"SELECT EXISTS ({_LEFTOVERS_SQL})", up.schema)
    if not partitioned and not left:
        return 0  # the common case: one cheap look, no lock
    async with _upgrading(conn):
        for name in [r["name"] for r in await conn.fetch(_LEFTOVERS_SQL, up.schema)]:
            await _drop_when_free(up, conn, name)
        for row in await conn.fetch(_PER_MUNICIPALITY_TABLES_SQL, up.schema, key):
            await _convert(up, conn, row["name"], row["oid"])
            converted += 1
    return converted


async def _convert(up: _Upgrade, conn: asyncpg.Connection, name: str, oid: int) -> None:
    schema, column = up.schema, up.column
    old = quoting.qualified(schema, name)
    staged = quoting.shorten(name, quoting.MAX_IDENT_BYTES - len(NEW_SUFFIX)) + NEW_SUFFIX
    new = quoting.qualified(schema, staged)
    columns = [(r["name"], r["type"]) for r in await conn.fetch(COLUMNS_SQL, oid)]
    names = [quoting.ident(c) for c, _ in columns]
    buckets = up.buckets
    # what a conversion that died before its rename left (its buckets carry the final names)
    await conn.execute(f"DROP TABLE IF EXISTS {new}")
    views = await conn.fetch(_DEPENDENT_VIEWS_SQL, oid)
    if views:
        raise UpgradeError(
            f"cannot convert {schema}.{name} to hash buckets: views depend on it "
            f"({', '.join(r['name'] for r in views)}), and they would stay on the old table; "
            "drop them, start syncd once, then create them again"
        )
    clash = await conn.fetch(
        "SELECT relname::text FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
        "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND relname = ANY($2::text[])",
        schema,
        bucket_names(name, buckets),
    )
    if clash:
        raise UpgradeError(
            f"cannot convert {schema}.{name} to hash buckets: {clash[0][0]} already exists "
            "(a source id that looks like a bucket name); rename that relation first"
        )
    definitions = ", ".join(
        f"{quoting.ident(c)} {base_type(t)}"
        + (
            f" NOT NULL DEFAULT pg_catalog.current_setting({quoting.literal(SOURCE_SETTING)})"
            if c == column
            else ""
        )
        for c, t in columns
    )
    statements = [
        f"DROP TABLE IF EXISTS {new}",
        f"CREATE TABLE {new} ({definitions}) PARTITION BY HASH ({quoting.ident(column)})",
        *(
            f"CREATE TABLE {quoting.qualified(schema, bucket)} PARTITION OF {new} "
            f"FOR VALUES WITH (MODULUS {buckets}, REMAINDER {n})"
            for n, bucket in enumerate(bucket_names(name, buckets))
        ),
        f"CREATE INDEX {quoting.ident(index_name(name, 'source'))} ON {new} ({quoting.ident(column)})",
    ]
    for row in await conn.fetch(_INDEXES_SQL, oid):  # the operators' own indexes
        head = _INDEX_HEAD.match(row["def"])
        if head:
            unique = head.group(1) or ""
            statements.append(f"CREATE {unique}INDEX ON {new} USING {row['def'][head.end() :]}")
    for row in await conn.fetch(_GRANTS_SQL, oid):
        grantee = "PUBLIC" if row["grantee"] is None else quoting.ident(row["grantee"])
        option = " WITH GRANT OPTION" if row["is_grantable"] else ""
        statements.append(f"GRANT {row['privilege_type']} ON {new} TO {grantee}{option}")
    log.warning(
        "converting %s.%s from one partition per municipality to hash buckets",
        schema,
        name,
        extra={"event": Event.TABLE_CONVERTING},
    )
    async with conn.transaction():
        await conn.execute(";".join(statements))
        copied = await conn.execute(
            f"INSERT INTO {new} ({', '.join(names)}) SELECT {', '.join(names)} FROM {old}",  # noqa: S608
            timeout=up.timeouts.statement,
        )
    rows = int(copied.rsplit(" ", 1)[-1])
    retired = quoting.shorten(name, quoting.MAX_IDENT_BYTES - len(OLD_SUFFIX)) + OLD_SUFFIX
    marker = quoting.literal(f"syncd layout v1, replaced: {name}")
    await _when_free(
        up,
        conn,
        f"ALTER TABLE {old} RENAME TO {quoting.ident(retired)};"
        f"COMMENT ON TABLE {quoting.qualified(schema, retired)} IS {marker};"
        f"ALTER TABLE {new} RENAME TO {quoting.ident(name)};"
        f"COMMENT ON TABLE {old} IS "
        + quoting.literal(
            f"syncd dataset {name}: each municipality's rows are replaced atomically by syncd; "
            "read-only for everyone else"
        ),
        record=(
            "INSERT INTO syncd.layout_upgrades (schema_name, dataset, rows) VALUES ($1, $2, $3) "
            "ON CONFLICT (schema_name, dataset) DO UPDATE "
            "SET rows = excluded.rows, upgraded_at = now()",
            schema,
            name,
            rows,
        ),
        what=f"renaming {schema}.{name}",
    )
    log.warning(
        "converted %s.%s: %d rows", schema, name, rows, extra={"event": Event.TABLE_CONVERTED}
    )
    await _drop_when_free(up, conn, retired)


async def _drop_when_free(up: _Upgrade, conn: asyncpg.Connection, name: str) -> None:
    try:
        await _when_free(
            up,
            conn,
            f"DROP TABLE IF EXISTS {quoting.qualified(up.schema, name)}",
            what=f"dropping {up.schema}.{name}",
            deadline=30.0,
        )
    except TimeoutError:
        log.warning(
            "%s.%s is still read; it is dropped at a later start",
            up.schema,
            name,
            extra={"event": Event.RETIRED_TABLE_IN_USE},
        )
    except asyncpg.DependentObjectsStillExistError:
        log.warning(
            "%s.%s was kept: something depends on it (a view created meanwhile); drop it by hand",
            up.schema,
            name,
            extra={"event": Event.RETIRED_TABLE_KEPT},
        )


async def _when_free(
    up: _Upgrade,
    conn: asyncpg.Connection,
    statements: str,
    *,
    what: str,
    deadline: float = SWAP_DEADLINE,
    record: tuple[str, *tuple[object, ...]] | None = None,
    timeout: float | None = None,
) -> None:
    """Run DDL in one transaction under lock_timeout, again and again until readers let it in."""
    lock_ms = int(up.timeouts.lock * 1000)

    async def attempt() -> None:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {lock_ms}")
            await conn.execute(statements, timeout=timeout)
            if record is not None:
                query, *args = record
                await conn.execute(query, *args)

    with anyio.fail_after(deadline):
        await up.retry.call(
            attempt,
            f"{what}: readers hold the table",
            side=Side.DESTINATION,
            retry_on=lambda exc: isinstance(exc, asyncpg.LockNotAvailableError),
        )


_UNHASHED_TABLES_SQL = r"""
SELECT c.relname::text AS name,
       EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
               WHERE a.attrelid = c.oid AND a.attname = $3 AND NOT a.attisdropped) AS hashed,
       ARRAY(SELECT i.relname::text FROM pg_catalog.pg_index x
             JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid
             WHERE x.indrelid = c.oid) AS indexes
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'p' AND NOT c.relispartition
  AND pg_catalog.pg_get_partkeydef(c.oid) = 'HASH (' || pg_catalog.quote_ident($2) || ')'
  AND c.relname NOT LIKE '%\_\_%'
ORDER BY c.relname
"""


async def add_row_hashes(
    conn: asyncpg.Connection,
    settings: config.DestinationSettings,
    timeouts: config.Timeouts,
    observe: Observer,
) -> int:
    """Row hashes for the bucketed dataset tables that have none, with readers querying
    throughout: each gains the `syncd_row_hash` column (NULL for its rows: their
    municipality's next pass rewrites them) and the rows index (the source column with the hash
    included, built under SHARE, which readers do not wait for), and loses the source column's
    own index (`<dataset>__source`). Returns how many tables changed."""
    retry = RetryPolicy(None, 0.05, 2.0, jitter=False, observe=observe, level=logging.INFO)
    up = _Upgrade(settings.schema, settings.source_column, settings.buckets, timeouts, retry)
    column = quoting.ident(up.column)
    rows = await conn.fetch(_UNHASHED_TABLES_SQL, up.schema, up.column, ROW_HASH)
    todo = [
        r
        for r in rows
        if not r["hashed"]
        or index_name(r["name"], "rows") not in r["indexes"]
        or index_name(r["name"], "source") in r["indexes"]
    ]
    if not todo:
        return 0  # the common case: one cheap look, no lock
    async with _upgrading(conn):
        for row in todo:
            name = row["name"]
            table = quoting.qualified(up.schema, name)
            log.warning(
                "adding row hashes to %s",
                table,
                extra={"event": Event.ROW_HASHES_ADDING},
            )
            await _when_free(
                up,
                conn,
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {ROW_HASH} uuid",
                what=f"adding {ROW_HASH} to {table}",
            )
            await _when_free(
                up,
                conn,
                f"CREATE INDEX IF NOT EXISTS {quoting.ident(index_name(name, 'rows'))} "
                f"ON {table} ({column}) INCLUDE ({ROW_HASH})",
                what=f"indexing {table}",
                timeout=up.timeouts.statement,  # builds the index: as long as a big table takes
            )
            await _when_free(
                up,
                conn,
                f"DROP INDEX IF EXISTS {quoting.qualified(up.schema, index_name(name, 'source'))}",
                what=f"dropping the source index of {table}",
            )
    return len(todo)


_UNFINGERPRINTED_SQL = r"""
SELECT c.relname::text AS name
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'p' AND NOT c.relispartition
  AND pg_catalog.pg_get_partkeydef(c.oid) = 'HASH (' || pg_catalog.quote_ident($2) || ')'
  AND c.relname NOT LIKE '%\_\_%'
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a
                  WHERE a.attrelid = c.oid AND a.attname = $3 AND NOT a.attisdropped)
ORDER BY c.relname
"""


async def add_source_fingerprints(
    conn: asyncpg.Connection,
    settings: config.DestinationSettings,
    timeouts: config.Timeouts,
    observe: Observer,
) -> int:
    """Delta transfer on dataset tables landed by an earlier version, on the first start of
    this one, with readers querying throughout: each gains the `syncd_src_fp` column, NULL for
    its rows (a nullable column without a default: a catalog change, no rewrite, a moment of
    ACCESS EXCLUSIVE under `timeouts.lock`, retried until readers let it in). Nothing is
    stored about those rows' fingerprints, so each municipality's next pass streams them whole
    once, with fingerprints. Returns how many tables changed."""
    retry = RetryPolicy(None, 0.05, 2.0, jitter=False, observe=observe, level=logging.INFO)
    up = _Upgrade(settings.schema, settings.source_column, settings.buckets, timeouts, retry)
    rows = await conn.fetch(_UNFINGERPRINTED_SQL, up.schema, up.column, SRC_FP)
    if not rows:
        return 0  # the common case: one cheap look, no lock
    async with _upgrading(conn):
        for row in rows:
            table = quoting.qualified(up.schema, row["name"])
            log.warning(
                "adding source fingerprints to %s (delta transfer)",
                table,
                extra={"event": Event.SOURCE_FINGERPRINTS_ADDING},
            )
            await _when_free(
                up,
                conn,
                f"ALTER TABLE {table} ADD COLUMN IF NOT EXISTS {SRC_FP} bigint",
                what=f"adding {SRC_FP} to {table}",
            )
    return len(rows)
