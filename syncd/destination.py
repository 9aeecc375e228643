"""The analytical side: dataset tables, staging, the atomic swap, and cleanup.

Each dataset is one table in `destination.schema`, LIST-partitioned by `source_column`, with one
partition per municipality. A sync loads the municipality's rows into a fresh staging table (in
its own committed transaction, with COPY FREEZE), then swaps: in one short transaction, under a
lock_timeout, the old partition is dropped and the staging table is renamed and attached in its
place. A CHECK constraint on the staging table matches the partition bound, so ATTACH does not
scan it. Readers see the whole old snapshot or the whole new one, and wait at most a moment.
Dropping the old partition (not DELETE) means no dead rows: repeated passes do not bloat.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from datetime import datetime

import asyncpg

from . import config, ledger, sql
from .copy import CopyOut, Transfer, pipe
from .dsn import SERVER_KEEPALIVES, connect_password, enable_keepalive
from .errors import FinalError, classify
from .incremental import ALIAS, TEXT_SETTINGS
from .source import APPLICATION_NAME, Shape, copy_row_count

STAGING_SUFFIX = "__staging"
_TYPMOD = re.compile(r"\(\d+(?:\s*,\s*-?\d+)?\)")

_FIND_PARTITION_SQL = """
SELECT n.nspname::text AS schema, c.relname::text AS name
FROM pg_catalog.pg_inherits i
JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE i.inhparent = $1::text::regclass AND pg_catalog.pg_get_expr(c.relpartbound, c.oid) = $2
"""

_STAGING_SQL = r"""
SELECT c.relname::text AS name, pg_catalog.obj_description(c.oid, 'pg_class') AS comment
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relkind = 'r' AND NOT c.relispartition
  AND c.relname LIKE '%\_\_staging'
"""
_MARKER = re.compile(r"syncd staging: source=(\w+) dataset=(\w+)")

_MISSING_COLUMNS_SQL = """
SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = $1::text::regclass AND a.attnum > 0 AND NOT a.attisdropped
  AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute s
                  WHERE s.attrelid = $2::text::regclass AND s.attname = a.attname
                    AND s.attnum > 0 AND NOT s.attisdropped)
ORDER BY a.attnum
"""

_PARENT_SQL = """
SELECT c.oid::int AS oid, c.relkind::text AS relkind,
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END AS partkey
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
"""

_COLUMNS_SQL = """
SELECT a.attname::text AS name, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
ORDER BY a.attnum
"""


def base_type(type_sql: str) -> str:
    """A type without its modifier: varchar(15) and varchar(20) are one type to compare."""
    return _TYPMOD.sub("", type_sql)


def partition_name(dataset: str, source_id: str) -> str:
    """`<dataset>__<source id>`; the dataset part shortened (with a hash) so staging fits 63 bytes."""
    room = sql.MAX_IDENT_BYTES - len(STAGING_SUFFIX) - 2 - len(source_id)
    return f"{sql.shorten(dataset, room)}__{source_id}"


@dataclass(frozen=True, slots=True)
class Target:
    """Where one dataset of one source lands."""

    dataset: str
    source_id: str
    columns: tuple[str, ...]  # what the source sends, in order
    mode: str = "snapshot"  # snapshot | full_refresh | incremental
    key: tuple[str, ...] = ()  # incremental datasets: the row identity (a unique index)
    cursor: str | None = None
    watermark: str | None = None  # incremental datasets: stored with the rows

    @property
    def partition(self) -> str:
        return partition_name(self.dataset, self.source_id)

    @property
    def staging(self) -> str:
        return self.partition + STAGING_SUFFIX


class Destination:
    """The analytical database: a connection pool and the DDL syncd runs there."""

    def __init__(self, settings: config.Destination, timeouts: config.Timeouts, *, pool_size: int):
        self.settings = settings
        self.timeouts = timeouts
        self.schema = settings.schema
        self.source_column = settings.source_column
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        # parent columns seen, per dataset: lets most syncs skip the catalog round trips
        self._columns: dict[str, dict[str, str]] = {}

    async def open(self) -> None:
        self._pool = await asyncpg.create_pool(
            min_size=0,
            max_size=self.pool_size,
            max_inactive_connection_lifetime=60,
            init=_init_connection,
            **self._connect_kwargs(),
        )
        try:
            async with self._pool.acquire() as conn:
                await ledger.migrate(conn)
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1, 1)", ledger.LOCK_NAMESPACE)
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {sql.ident(self.schema)}")
        except BaseException:
            await self.close()
            raise

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own, outside the pool (for the session advisory locks)."""
        conn = await asyncpg.connect(**self._connect_kwargs())
        enable_keepalive(conn)
        return conn

    def _connect_kwargs(self) -> dict:
        missing = self.settings.dsn.missing_files()
        if missing:
            raise FinalError(f"cannot connect: {'; '.join(missing)}")
        return {
            "dsn": self.settings.dsn.raw,
            "password": connect_password(self.settings.password_file),
            "timeout": self.timeouts.connect,
            # no answer to a command for this long: the server or the link hangs; COPY and
            # ANALYZE of a load pass their own, longer, timeout
            "command_timeout": self.timeouts.idle_stream,
            "server_settings": {
                "application_name": APPLICATION_NAME,
                **SERVER_KEEPALIVES,
                **TEXT_SETTINGS,
            },
        }

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            try:
                await pool.close()
            except Exception:
                pool.terminate()

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[asyncpg.Connection]:
        if self._pool is None:
            raise RuntimeError("destination is not open")
        async with self._pool.acquire() as conn:
            try:
                yield conn
            except BaseException as exc:
                if classify(exc).code == "connection" and not conn.is_closed():
                    conn.terminate()  # never hand a half-broken connection to the next user
                raise

    def parent(self, dataset: str) -> str:
        return sql.qualified(self.schema, dataset)

    async def prepare(self, conn: asyncpg.Connection, shape: Shape, source_id: str) -> Target:
        """Make sure the dataset table can take this source's columns; returns where they go."""
        if self.source_column in shape.column_names:
            raise FinalError(
                f"the dataset has a column named {self.source_column!r}, which syncd fills with "
                "the source id (destination.source_column); rename it in the query"
            )
        known = self._columns.get(shape.dataset)
        if known is None or any(
            c.name not in known or base_type(known[c.name]) != base_type(c.type)
            for c in shape.columns
        ):
            self._columns.pop(shape.dataset, None)
            known = await self._ensure_parent(conn, shape)
            self._columns[shape.dataset] = known
        return Target(shape.dataset, source_id, tuple(shape.column_names))

    def forget(self, dataset: str) -> None:
        """Drop what we believe about a dataset table (after an error that may mean it changed)."""
        self._columns.pop(dataset, None)

    async def _ensure_parent(self, conn: asyncpg.Connection, shape: Shape) -> dict[str, str]:
        parent = self.parent(shape.dataset)
        key_column = sql.ident(self.source_column)
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(self.timeouts.lock * 1000)}")
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                ledger.LOCK_NAMESPACE,
                f"{self.schema}.{shape.dataset}",
            )
            rel = await conn.fetchrow(_PARENT_SQL, self.schema, shape.dataset)
            if rel is None:
                columns = ", ".join(f"{sql.ident(c.name)} {c.type}" for c in shape.columns)
                await conn.execute(
                    f"CREATE TABLE {parent} ({columns}, {key_column} text NOT NULL) "
                    f"PARTITION BY LIST ({key_column})"
                )
                await conn.execute(
                    f"COMMENT ON TABLE {parent} IS "
                    f"{sql.literal(f'syncd dataset {shape.dataset}: one partition per source, replaced atomically by syncd; read-only for everyone else')}"
                )
                rel = await conn.fetchrow(_PARENT_SQL, self.schema, shape.dataset)
            expected_key = f"LIST ({self.source_column})"
            if rel["relkind"] != "p" or rel["partkey"] != expected_key:
                raise FinalError(
                    f"{self.schema}.{shape.dataset} exists but is not a syncd dataset table "
                    f"(partitioned by {expected_key}); rename or drop it"
                )
            existing = {r["name"]: r["type"] for r in await conn.fetch(_COLUMNS_SQL, rel["oid"])}
            conflicts = [
                f"column {c.name!r} is {c.type} on the source but {existing[c.name]} in "
                f"{self.schema}.{shape.dataset}"
                for c in shape.columns
                if c.name in existing and base_type(existing[c.name]) != base_type(c.type)
            ]
            if conflicts:
                raise FinalError("; ".join(conflicts))
            for c in shape.columns:
                if c.name not in existing:
                    # a newer PEC version: the column appears for everyone, NULL where unknown
                    await conn.execute(
                        f"ALTER TABLE {parent} ADD COLUMN {sql.ident(c.name)} {c.type}"
                    )
                    existing[c.name] = c.type
        return existing

    async def load(
        self,
        conn: asyncpg.Connection,
        target: Target,
        copy_out: CopyOut,
        *,
        idle_timeout: float,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Transfer:
        """COPY the source's stream into a fresh staging table, committed but not yet visible."""
        staging = sql.qualified(self.schema, target.staging)
        key = sql.ident(self.source_column)
        value = sql.literal(target.source_id)

        # progress is watched by the pipe (idle_stream) and the source's statement timeout
        # fires first; this only bounds a COPY that nothing else would stop
        long = self.timeouts.statement + 2 * self.timeouts.idle_stream

        async def copy_in(chunks: AsyncIterable[bytes]) -> int:
            status = await conn.copy_to_table(
                target.staging,
                schema_name=self.schema,
                columns=list(target.columns),
                source=chunks,
                format="binary",
                freeze=True,
                timeout=long,
            )
            return copy_row_count(status)

        marker = sql.literal(f"syncd staging: source={target.source_id} dataset={target.dataset}")
        async with conn.transaction():
            await conn.execute(
                f"DROP TABLE IF EXISTS {staging};"
                f"CREATE TABLE {staging} (LIKE {self.parent(target.dataset)} INCLUDING DEFAULTS "
                f"INCLUDING INDEXES INCLUDING STORAGE, "
                f"CONSTRAINT syncd_partition CHECK ({key} = {value}));"
                f"ALTER TABLE {staging} ALTER COLUMN {key} SET DEFAULT {value};"
                f"COMMENT ON TABLE {staging} IS {marker}"
            )
            transfer = await pipe(copy_out, copy_in, idle_timeout=idle_timeout, on_bytes=on_bytes)
            if target.key:  # incremental datasets upsert by key into this partition later
                await self._unique_key(conn, staging, target, long)
            await conn.execute(f"ANALYZE {staging}", timeout=long)
        return transfer

    async def _unique_key(
        self, conn: asyncpg.Connection, table: str, target: Target, timeout: float
    ) -> None:
        columns = ", ".join(sql.ident(k) for k in target.key)
        try:
            await conn.execute(f"CREATE UNIQUE INDEX ON {table} ({columns})", timeout=timeout)
        except asyncpg.UniqueViolationError:
            raise FinalError(
                f"key ({', '.join(target.key)}) is not unique at the source; an incremental "
                "dataset needs a key that identifies each row"
            ) from None

    async def watermark(
        self, conn: asyncpg.Connection, target: Target
    ) -> tuple[str | None, datetime | None] | None:
        """(watermark, last full refresh) of an incremental dataset, if its partition is there."""
        row = await conn.fetchrow(
            """
            SELECT w.watermark, w.full_refresh_at FROM syncd.watermarks w
            WHERE w.source_id = $1 AND w.dataset = $2 AND to_regclass($3) IS NOT NULL
            """,
            target.source_id,
            target.dataset,
            sql.qualified(self.schema, target.partition),
        )
        return (row["watermark"], row["full_refresh_at"]) if row else None

    async def upsert(
        self,
        conn: asyncpg.Connection,
        target: Target,
        copy_out: CopyOut,
        *,
        cap: str,
        idle_timeout: float,
        on_bytes: Callable[[int], None] | None = None,
    ) -> tuple[Transfer, str | None]:
        """The rows of an incremental window: upserted by key into the municipality's partition,
        with the new watermark (the highest cursor among them that `cap` admits, else the old
        one), in one transaction. A crash leaves both as they were. Returns the watermark."""
        columns = list(self._columns.get(target.dataset) or target.columns)
        if self.source_column not in columns:
            columns.append(self.source_column)
        key = sql.ident(self.source_column)
        long = self.timeouts.statement + 2 * self.timeouts.idle_stream

        async def copy_in(chunks: AsyncIterable[bytes]) -> int:
            status = await conn.copy_to_table(
                "syncd_delta",
                columns=list(target.columns),
                source=chunks,
                format="binary",
                timeout=long,
            )
            return copy_row_count(status)

        names = ", ".join(sql.ident(c) for c in columns)
        updates = ", ".join(
            f"{sql.ident(c)} = excluded.{sql.ident(c)}"
            for c in columns
            if c not in target.key and c != self.source_column
        )
        conflict = ", ".join(sql.ident(k) for k in target.key)
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        async with conn.transaction():
            await conn.execute(
                f"SET LOCAL lock_timeout = {int(self.timeouts.lock * 1000)};"
                f"CREATE TEMP TABLE syncd_delta (LIKE {self.parent(target.dataset)} "
                f"INCLUDING DEFAULTS) ON COMMIT DROP;"
                f"ALTER TABLE syncd_delta ALTER COLUMN {key} SET DEFAULT "
                f"{sql.literal(target.source_id)}"
            )
            transfer = await pipe(copy_out, copy_in, idle_timeout=idle_timeout, on_bytes=on_bytes)
            try:
                partition = sql.qualified(self.schema, target.partition)
                insert = f"INSERT INTO {partition} ({names}) SELECT {names} FROM syncd_delta"  # noqa: S608
                await conn.execute(f"{insert} ON CONFLICT ({conflict}) {action}", timeout=long)
            except asyncpg.CardinalityViolationError:
                raise FinalError(
                    f"key ({', '.join(target.key)}) is not unique among the new rows"
                ) from None
            top = await conn.fetchval(
                f"SELECT max({ALIAS}.{sql.ident(target.cursor)})::text "  # noqa: S608
                f"FROM syncd_delta AS {ALIAS} WHERE {cap}"
            )
            target = replace(target, watermark=top or target.watermark)
            await self._store_watermark(conn, target, full=False)
        return transfer, target.watermark

    async def _store_watermark(
        self, conn: asyncpg.Connection, target: Target, *, full: bool
    ) -> None:
        await conn.execute(
            """
            INSERT INTO syncd.watermarks AS w (source_id, dataset, cursor, watermark,
                                               full_refresh_at, updated_at)
            VALUES ($1, $2, $3, $4, CASE WHEN $5 THEN now() END, now())
            ON CONFLICT (source_id, dataset) DO UPDATE
            SET cursor = excluded.cursor,
                watermark = coalesce(excluded.watermark, CASE WHEN NOT $5 THEN w.watermark END),
                full_refresh_at = CASE WHEN $5 THEN now() ELSE w.full_refresh_at END,
                updated_at = now()
            """,
            target.source_id,
            target.dataset,
            target.cursor,
            target.watermark,
            full,
        )

    async def swap(self, conn: asyncpg.Connection, targets: Sequence[Target]) -> None:
        """Replace each target's partition by its staging table, all in one short transaction."""
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(self.timeouts.lock * 1000)}")
            # one lock order for everyone: concurrent swaps of other sources cannot deadlock
            for target in sorted(targets, key=lambda t: t.dataset):
                parent = self.parent(target.dataset)
                bound = f"FOR VALUES IN ({sql.literal(target.source_id)})"
                old = await conn.fetchrow(_FIND_PARTITION_SQL, parent, bound)
                statements = []
                if old is not None:
                    statements.append(f"DROP TABLE {sql.qualified(old['schema'], old['name'])}")
                partition = sql.qualified(self.schema, target.partition)
                staging = sql.qualified(self.schema, target.staging)
                # columns another municipality (a newer PEC) added while this one was loading
                for row in await conn.fetch(_MISSING_COLUMNS_SQL, parent, staging):
                    statements.append(
                        f"ALTER TABLE {staging} ADD COLUMN {sql.ident(row['name'])} {row['type']}"
                    )
                statements += [
                    f"DROP TABLE IF EXISTS {partition}",
                    f"ALTER TABLE {sql.qualified(self.schema, target.staging)} "
                    f"RENAME TO {sql.ident(target.partition)}",
                    f"ALTER TABLE {parent} ATTACH PARTITION {partition} {bound}",
                ]
                await conn.execute(";".join(statements))
                if target.mode == "full_refresh":  # the rows and their watermark, together
                    await self._store_watermark(conn, target, full=True)

    async def leftovers(self, conn: asyncpg.Connection) -> dict[str, list[str]]:
        """Staging tables in the data schema, by the source that made them (crash leftovers)."""
        found: dict[str, list[str]] = {}
        for row in await conn.fetch(_STAGING_SQL, self.schema):
            match = _MARKER.fullmatch(row["comment"] or "")
            if match:
                found.setdefault(match.group(1), []).append(row["name"])
        return found

    async def drop_tables(self, conn: asyncpg.Connection, names: Sequence[str]) -> None:
        if names:
            await conn.execute(
                ";".join(f"DROP TABLE IF EXISTS {sql.qualified(self.schema, n)}" for n in names)
            )

    async def drop_staging(self, conn: asyncpg.Connection, targets: Sequence[Target]) -> None:
        """Remove the staging tables of these targets (after a cancel or a failed swap)."""
        await self.drop_tables(conn, [t.staging for t in targets])


async def _init_connection(conn: asyncpg.Connection) -> None:
    enable_keepalive(conn)
