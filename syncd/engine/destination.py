"""The analytical side: dataset tables, and replacing one municipality's rows in them.

Landing v2. Each dataset is one table in `destination.schema`, HASH-partitioned by
`source_column` into a fixed number of buckets (`destination.buckets`, default 16), however many
municipalities there are: the catalog does not grow with them, and a whole-country query locks a
few dozen relations, not thousands.

A municipality's pass is one destination transaction (`Landing`): for each dataset, DELETE its
rows and COPY the new ones in (the source column is filled by a column default that reads the
transaction-local `syncd.source_id`), incremental windows upserted by key; then its ledger rows
and its notification; then COMMIT. Readers see all of its previous rows or all of its new ones,
for every dataset of the pass together. Only row locks and ROW EXCLUSIVE are taken on the way,
so readers never wait and are never waited for: no steady-state pass runs any DDL.

DDL is rare (a new dataset, a column a newer PEC added) and runs on a connection of its own under
`timeouts.lock`. Column types are created without modifiers (`varchar`, `numeric`, `bpchar`), so a
municipality whose PEC widened a column needs no DDL at all. A column that cannot be added because
readers hold the table does not fail the sync: the rows land without it, and it is added when the
table is free.

What a pass deleted is dead space until VACUUM; `Vacuum` tracks it per bucket and vacuums a bucket
once enough of it is dead, and everything dirty at the end of a `once` pass, so repeated passes
reuse the space instead of growing.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime

import anyio
import asyncpg

from syncd import config, ledger
from syncd.engine import sql
from syncd.engine.connect import (
    APPLICATION_NAME,
    SERVER_KEEPALIVES,
    connect_password,
    enable_keepalive,
)
from syncd.engine.copy import CopyOut, Transfer, copy_row_count, first_failure, pipe
from syncd.engine.errors import Failure, FinalError, RetryableError, TransferError, classify
from syncd.engine.incremental import ALIAS, TEXT_SETTINGS
from syncd.engine.layout import COLUMNS_SQL, SOURCE_SETTING, base_type, bucket_names, relation_names
from syncd.engine.shape import Shape
from syncd.engine.upgrade import upgrade_layout

log = logging.getLogger("syncd.destination")

DDL_RETRY_SECONDS = 30.0  # a column add that readers blocked is tried again this much later
DDL_TRIES, DDL_PAUSE = 3, 0.2  # tries of one DDL statement, and the pause after the first

_PARENT_SQL = """
SELECT c.oid::int AS oid, c.relkind::text AS relkind,
       CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END AS partkey
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = $1 AND c.relname = $2
"""

_BUCKETS_SQL = """
SELECT c.relname::text AS name, pg_catalog.pg_get_expr(c.relpartbound, c.oid) AS bound
FROM pg_catalog.pg_inherits i JOIN pg_catalog.pg_class c ON c.oid = i.inhrelid
WHERE i.inhparent = $1::oid
"""
_BOUND = re.compile(r"modulus (\d+), remainder (\d+)", re.IGNORECASE)

_UNIQUE_KEY_SQL = """
SELECT EXISTS (
    SELECT 1 FROM pg_catalog.pg_index i
    WHERE i.indrelid = $1::oid AND i.indisunique
      AND ARRAY(SELECT a.attname::text FROM unnest(i.indkey) WITH ORDINALITY AS k(attnum, n)
                JOIN pg_catalog.pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                ORDER BY k.n) = $2::text[])
"""


@dataclass(frozen=True, slots=True)
class Target:
    """Where one dataset of one source lands."""

    dataset: str
    source_id: str
    columns: tuple[str, ...]  # what the source sends, in order
    mode: str = "snapshot"  # snapshot | full_refresh | incremental
    key: tuple[str, ...] = ()  # incremental datasets: the row identity
    cursor: str | None = None
    watermark: str | None = None  # incremental datasets: stored with the rows
    missing: tuple[str, ...] = ()  # source columns the table could not take yet (readers held it)


@dataclass(slots=True)
class _Table:
    """What we believe about one dataset table (refreshed after any error)."""

    columns: dict[str, str]
    buckets: list[str] = field(default_factory=list)  # partition names, by remainder
    keys: set[tuple[str, ...]] = field(default_factory=set)
    ddl_blocked_until: float = 0.0


class Destination:
    """The analytical database: a connection pool and the DDL syncd runs there."""

    def __init__(
        self, settings: config.DestinationSettings, timeouts: config.Timeouts, *, pool_size: int
    ):
        self.settings = settings
        self.timeouts = timeouts
        self.schema = settings.schema
        self.source_column = settings.source_column
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self._tables: dict[str, _Table] = {}
        self.vacuum = Vacuum(self)

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
            await upgrade_layout(self)
        except BaseException:
            await self.close()
            raise

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own, outside the pool (session locks, VACUUM)."""
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
            # no answer to a command for this long: the server or the link hangs; COPY passes
            # its own, longer, timeout
            "command_timeout": self.timeouts.idle_stream,
            "server_settings": {
                "application_name": APPLICATION_NAME,
                **SERVER_KEEPALIVES,
                **TEXT_SETTINGS,
                # a landing may wait, idle in its transaction, for a writer slot or a slow
                # source: a DBA's default must not kill it (idle_stream bounds it instead)
                "idle_in_transaction_session_timeout": "0",
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
                if classify(exc).code == "connection":
                    _drop(conn)  # never hand a half-broken connection to the next user
                raise

    def parent(self, dataset: str) -> str:
        return sql.qualified(self.schema, dataset)

    def forget(self, dataset: str) -> None:
        """Drop what we believe about a dataset table (after an error that may mean it changed)."""
        self._tables.pop(dataset, None)

    # -- DDL: rare, on a connection of its own, under timeouts.lock ---------------------------

    async def prepare(self, shape: Shape, source_id: str, key: tuple[str, ...] = ()) -> Target:
        """Make sure the dataset table can take this source's columns; returns where they go.

        Runs no SQL at all when the table is known to fit (every steady-state pass)."""
        if self.source_column in shape.column_names:
            raise FinalError(
                f"the dataset has a column named {self.source_column!r}, which syncd fills with "
                "the source id (destination.source_column); rename it in the query"
            )
        table = self._tables.get(shape.dataset)
        if table is None or not self._fits(table, shape, key):
            # a connection of its own, not the pool's: the caller holds a pooled one in its
            # landing transaction, and DDL must never wait for the pool that landings fill
            conn = await self.connect()
            try:
                table = await self._ensure_table(conn, shape, key)
            finally:
                await _close(conn)
            self._tables[shape.dataset] = table
        missing = tuple(c.name for c in shape.columns if c.name not in table.columns)
        return Target(
            shape.dataset,
            source_id,
            tuple(c.name for c in shape.columns if c.name in table.columns),
            key=key,
            missing=missing,
        )

    def _fits(self, table: _Table, shape: Shape, key: tuple[str, ...]) -> bool:
        if key and key not in table.keys:
            return False
        for c in shape.columns:
            have = table.columns.get(c.name)
            if have is None and time.monotonic() >= table.ddl_blocked_until:
                return False  # a column to add, and it is time to try again
            if have is not None and base_type(have) != base_type(c.type):
                return False  # a conflict: look again (maybe someone fixed it) and say so
        return True

    async def _ensure_table(
        self, conn: asyncpg.Connection, shape: Shape, key: tuple[str, ...]
    ) -> _Table:
        rel = await conn.fetchrow(_PARENT_SQL, self.schema, shape.dataset)
        if rel is None:
            rel = await self._create(conn, shape)
        expected = f"HASH ({self.source_column})"
        if rel["relkind"] != "p" or rel["partkey"] != expected:
            raise FinalError(
                f"{self.schema}.{shape.dataset} exists but is not a syncd dataset table "
                f"(partitioned by {expected}); rename or drop it"
            )
        existing = {r["name"]: r["type"] for r in await conn.fetch(COLUMNS_SQL, rel["oid"])}
        conflicts = [
            f"column {c.name!r} is {c.type} on the source but {existing[c.name]} in "
            f"{self.schema}.{shape.dataset}"
            for c in shape.columns
            if c.name in existing and base_type(existing[c.name]) != base_type(c.type)
        ]
        if conflicts:
            raise FinalError("; ".join(conflicts))
        table = _Table(existing, await self._buckets(conn, rel["oid"]))
        adds = [c for c in shape.columns if c.name not in existing]
        if adds:
            # a newer PEC version: the column appears for everyone, NULL where unknown
            parent = self.parent(shape.dataset)
            statements = [
                f"ALTER TABLE {parent} ADD COLUMN IF NOT EXISTS {sql.ident(c.name)} "
                f"{base_type(c.type)}"
                for c in adds
            ]
            if await self._try_ddl(conn, shape.dataset, ";".join(statements)):
                existing.update({c.name: base_type(c.type) for c in adds})
            else:
                table.ddl_blocked_until = time.monotonic() + DDL_RETRY_SECONDS
                log.warning(
                    "dataset %s: readers hold the table, so column(s) %s are not added yet; "
                    "rows land without them until then",
                    shape.dataset,
                    ", ".join(c.name for c in adds),
                    extra={"dataset": shape.dataset},
                )
        if key:
            await self._ensure_key(conn, shape.dataset, rel["oid"], key, existing)
            table.keys.add(key)
        return table

    async def _buckets(self, conn: asyncpg.Connection, oid: int) -> list[str]:
        rows = await conn.fetch(_BUCKETS_SQL, oid)
        found: dict[int, str] = {}
        for row in rows:
            match = _BOUND.search(row["bound"] or "")
            if match:
                found[int(match.group(2))] = row["name"]
        return [found[n] for n in sorted(found)] if len(found) == len(rows) else []

    async def _create(self, conn: asyncpg.Connection, shape: Shape) -> asyncpg.Record:
        parent = self.parent(shape.dataset)
        column = sql.ident(self.source_column)
        columns = ", ".join(f"{sql.ident(c.name)} {base_type(c.type)}" for c in shape.columns)
        names = relation_names(shape.dataset, self.settings.buckets)
        buckets = self.settings.buckets
        statements = [
            f"CREATE TABLE {parent} ({columns}, {column} text NOT NULL "
            f"DEFAULT pg_catalog.current_setting({sql.literal(SOURCE_SETTING)})) "
            f"PARTITION BY HASH ({column})",
            *(
                f"CREATE TABLE {sql.qualified(self.schema, name)} PARTITION OF {parent} "
                f"FOR VALUES WITH (MODULUS {buckets}, REMAINDER {n})"
                for n, name in enumerate(bucket_names(shape.dataset, buckets))
            ),
            f"CREATE INDEX {sql.ident(names[-2])} ON {parent} ({column})",
            f"COMMENT ON TABLE {parent} IS "
            + sql.literal(
                f"syncd dataset {shape.dataset}: each municipality's rows are replaced "
                "atomically by syncd; read-only for everyone else"
            ),
        ]
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = {int(self.timeouts.lock * 1000)}")
            await conn.execute(
                "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                ledger.LOCK_NAMESPACE,
                f"{self.schema}.{shape.dataset}",
            )
            rel = await conn.fetchrow(_PARENT_SQL, self.schema, shape.dataset)
            if rel is None:  # nobody made it while we waited for the lock
                await conn.execute(";".join(statements))
                rel = await conn.fetchrow(_PARENT_SQL, self.schema, shape.dataset)
        return rel

    async def _ensure_key(
        self,
        conn: asyncpg.Connection,
        dataset: str,
        oid: int,
        key: tuple[str, ...],
        existing: dict[str, str],
    ) -> None:
        """An incremental dataset upserts on (source column, key): that needs a unique index."""
        columns = [self.source_column, *key]
        if await conn.fetchval(_UNIQUE_KEY_SQL, oid, columns):
            return
        unknown = [k for k in key if k not in existing]
        if unknown:
            raise FinalError(f"key column(s) {', '.join(unknown)} are not in the dataset")
        name = relation_names(dataset, self.settings.buckets)[-1]
        statement = (
            f"DROP INDEX IF EXISTS {sql.qualified(self.schema, name)};"
            f"CREATE UNIQUE INDEX {sql.ident(name)} ON {self.parent(dataset)} "
            f"({', '.join(sql.ident(c) for c in columns)})"
        )
        try:
            built = await self._try_ddl(conn, dataset, statement, timeout=self.timeouts.statement)
        except asyncpg.UniqueViolationError:
            raise FinalError(
                f"key ({', '.join(key)}) is not unique in {self.schema}.{dataset}; an "
                "incremental dataset needs a key that identifies each row"
            ) from None
        if not built:
            raise RetryableError(
                f"readers or writers held {self.schema}.{dataset} for longer than "
                f"timeouts.lock ({self.timeouts.lock:g}s) while its key index was built"
            )

    async def _try_ddl(
        self, conn: asyncpg.Connection, dataset: str, statements: str, timeout: float | None = None
    ) -> bool:
        """DDL under lock_timeout: True if done, False if others held the table meanwhile.

        A few tries, a moment apart: small municipalities' landings commit within a moment,
        but a large one holds ROW EXCLUSIVE until its whole pass commits, and a reader's report
        may hold the table for long; then the caller degrades (a column add lands the rows
        without it) and tries again later. Each try makes a reader wait at most
        `timeouts.lock`."""
        for attempt in range(DDL_TRIES):
            try:
                async with conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = {int(self.timeouts.lock * 1000)}")
                    await conn.execute(
                        "SELECT pg_advisory_xact_lock($1, hashtext($2))",
                        ledger.LOCK_NAMESPACE,
                        f"{self.schema}.{dataset}",
                    )
                    await conn.execute(statements, timeout=timeout)
                return True
            except asyncpg.LockNotAvailableError:
                if attempt + 1 < DDL_TRIES:
                    await anyio.sleep(DDL_PAUSE * (attempt + 1))
        return False

    # -- the landing transaction ----------------------------------------------------------------

    @asynccontextmanager
    async def landing(self, source_id: str) -> AsyncIterator[Landing]:
        """One municipality's transaction: everything it lands commits together, or nothing."""
        seq = self.vacuum.opened()
        try:
            async with self.acquire() as conn, _transaction(conn) as tr:
                await conn.execute(
                    "SELECT pg_catalog.set_config($1, $2, true), pg_catalog.set_config("
                    "'lock_timeout', $3, true)",
                    SOURCE_SETTING,
                    source_id,
                    f"{int(self.timeouts.lock * 1000)}ms",
                )
                yield Landing(self, conn, source_id, tr)
        finally:
            self.vacuum.closed(seq)


class Landing:
    """The open transaction of one municipality's pass."""

    def __init__(
        self,
        destination: Destination,
        conn: asyncpg.Connection,
        source_id: str,
        transaction: asyncpg.transaction.Transaction,
    ):
        self.destination = destination
        self.conn = conn
        self.source_id = source_id
        self._transaction = transaction
        self.deleted: dict[str, int] = {}  # dataset -> rows this pass removed
        self.landed: dict[str, int] = {}  # dataset -> rows this pass wrote

    async def commit(self) -> None:
        """Make everything of the pass visible at once (otherwise done when the landing ends).

        Without lock_timeout: a commit that sends a notification queues for PostgreSQL's notify
        lock behind other committers, which is no reader's wait and no reason to fail."""
        await self.conn.execute("SELECT pg_catalog.set_config('lock_timeout', '0', true)")
        await self._transaction.commit()

    @property
    def lost(self) -> Failure | None:
        """Why the transaction is gone, if its connection is (then everything must be redone)."""
        try:
            closed = self.conn.is_closed()
        except asyncpg.InterfaceError:  # asyncpg hands a lost connection back to the pool
            closed = True
        if not closed:
            return None
        return Failure(True, "the destination connection was lost", "connection", "destination")

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A dataset that fails rolls back to here; the others of the pass stay."""
        counts = dict(self.deleted), dict(self.landed)
        try:
            async with _transaction(self.conn):
                yield
        except BaseException:
            self.deleted, self.landed = counts  # what rolled back deleted and wrote nothing
            raise

    def _long(self) -> float:
        # progress is watched by the pipe (idle_stream) and the source's statement timeout
        # fires first; this only bounds a statement that nothing else would stop
        t = self.destination.timeouts
        return t.statement + 2 * t.idle_stream

    async def replace(
        self,
        target: Target,
        copy_out: CopyOut,
        *,
        idle_timeout: float,
        on_bytes: Callable[[int], None] | None = None,
    ) -> Transfer:
        """This municipality's rows of the dataset: the old ones deleted, the new ones copied in."""
        d = self.destination
        status = await self.conn.execute(
            f"DELETE FROM {d.parent(target.dataset)} WHERE {sql.ident(d.source_column)} = $1",  # noqa: S608
            self.source_id,
            timeout=self._long(),
        )
        self.deleted[target.dataset] = _count(status)

        async def copy_in(chunks: AsyncIterable[bytes]) -> int:
            status = await self.conn.copy_to_table(
                target.dataset,
                schema_name=d.schema,
                columns=list(target.columns),
                source=chunks,
                format="binary",
                timeout=self._long(),
            )
            return copy_row_count(status)

        transfer = await self._pipe(copy_out, copy_in, idle_timeout, on_bytes)
        self.landed[target.dataset] = transfer.rows
        return transfer

    async def upsert(
        self,
        target: Target,
        copy_out: CopyOut,
        *,
        cap: str,
        idle_timeout: float,
        on_bytes: Callable[[int], None] | None = None,
    ) -> tuple[Transfer, str | None]:
        """The rows of an incremental window, upserted by (source, key); returns the new
        watermark: the highest cursor among them that `cap` admits, else the old one."""
        d = self.destination
        column = d.source_column
        columns = [*target.columns, column]
        # one temporary table per connection and column set, emptied at every commit: the
        # pool's connections are reused, so a steady-state pass creates no table
        signature = "\x00".join([target.dataset, *target.columns]).encode()
        delta = "syncd_delta_" + hashlib.sha256(signature).hexdigest()[:16]
        await self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {delta} (LIKE {d.parent(target.dataset)} "
            "INCLUDING DEFAULTS) ON COMMIT DELETE ROWS"
        )

        async def copy_in(chunks: AsyncIterable[bytes]) -> int:
            status = await self.conn.copy_to_table(
                delta,
                columns=list(target.columns),
                source=chunks,
                format="binary",
                timeout=self._long(),
            )
            return copy_row_count(status)

        transfer = await self._pipe(copy_out, copy_in, idle_timeout, on_bytes)
        names = ", ".join(sql.ident(c) for c in columns)
        updates = ", ".join(
            f"{sql.ident(c)} = excluded.{sql.ident(c)}"
            for c in target.columns
            if c not in target.key
        )
        conflict = ", ".join(sql.ident(k) for k in (column, *target.key))
        action = f"DO UPDATE SET {updates}" if updates else "DO NOTHING"
        insert = f"INSERT INTO {d.parent(target.dataset)} ({names}) SELECT {names} FROM {delta}"  # noqa: S608
        # the rows that replace an older version leave it dead: the vacuum lane counts them
        same = " AND ".join(f"o.{sql.ident(k)} = n.{sql.ident(k)}" for k in (column, *target.key))
        updated = await self.conn.fetchval(
            f"SELECT count(*) FROM {delta} AS n WHERE EXISTS "  # noqa: S608
            f"(SELECT 1 FROM {d.parent(target.dataset)} AS o WHERE {same})",
            timeout=self._long(),
        )
        try:
            await self.conn.execute(
                f"{insert} ON CONFLICT ({conflict}) {action}", timeout=self._long()
            )
        except asyncpg.CardinalityViolationError:
            raise FinalError(
                f"key ({', '.join(target.key)}) is not unique among the new rows"
            ) from None
        top = await self.conn.fetchval(
            f"SELECT max({ALIAS}.{sql.ident(target.cursor or '')})::text "  # noqa: S608
            f"FROM {delta} AS {ALIAS} WHERE {cap}"
        )
        self.landed[target.dataset] = transfer.rows
        self.deleted[target.dataset] = int(updated or 0)
        return transfer, top or target.watermark

    async def _pipe(
        self,
        copy_out: CopyOut,
        copy_in: Callable[[AsyncIterable[bytes]], object],
        idle_timeout: float,
        on_bytes: Callable[[int], None] | None,
    ) -> Transfer:
        """The byte pipe, watching the destination connection: a backend killed mid-COPY is seen
        at once (asyncpg would otherwise wait for flow control that never resumes)."""
        lost = anyio.Event()

        def on_terminated(_conn: object) -> None:
            lost.set()

        raw = _raw(self.conn)
        raw.add_termination_listener(on_terminated)

        async def watch() -> None:
            await lost.wait()
            raise TransferError(
                "destination",
                asyncpg.ConnectionDoesNotExistError(
                    "the destination connection was closed in the middle of the COPY"
                ),
            )

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(watch)
                transfer = await pipe(
                    copy_out, copy_in, idle_timeout=idle_timeout, on_bytes=on_bytes
                )
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise first_failure(group) from None
        finally:
            raw.remove_termination_listener(on_terminated)
        return transfer

    async def watermark(self, target: Target) -> tuple[str | None, datetime | None] | None:
        """(watermark, last full refresh) of an incremental dataset, if any."""
        row = await self.conn.fetchrow(
            "SELECT watermark, full_refresh_at FROM syncd.watermarks "
            "WHERE source_id = $1 AND dataset = $2",
            target.source_id,
            target.dataset,
        )
        return (row["watermark"], row["full_refresh_at"]) if row else None

    async def store_watermark(self, target: Target, *, full: bool) -> None:
        await self.conn.execute(
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

    async def buckets(self) -> dict[str, str]:
        """dataset -> the bucket this municipality's rows live in (for the vacuum lane)."""
        d = self.destination
        found: dict[str, str] = {}
        for dataset in sorted(set(self.deleted) | set(self.landed)):
            name = d.vacuum.bucket_of(dataset, self.source_id)
            table = d._tables.get(dataset)
            if name is None and table is not None and table.buckets:
                remainder = await self.conn.fetchval(
                    "SELECT r FROM generate_series(0, $2 - 1) AS r "
                    "WHERE pg_catalog.satisfies_hash_partition($1::text::regclass::oid, $2, r, "
                    "$3::text)",
                    d.parent(dataset),
                    len(table.buckets),
                    self.source_id,
                )
                if remainder is not None:
                    name = table.buckets[remainder]
            if name is not None:
                found[dataset] = name
        return found


class Vacuum:
    """Dead rows per bucket, and VACUUM once enough of a bucket is dead and removable.

    A pass deletes each municipality's previous rows; until VACUUM marks that space free, the next
    pass can only grow the table. A bucket is vacuumed once a fifth of its rows are dead, counting
    only rows deleted by landings that committed before every landing of ours still open began:
    VACUUM cannot remove what an open snapshot may still see, and trying would only cost. At the
    end of a `once` pass (or when the daemon goes idle) every bucket written is vacuumed. That
    keeps each dataset within about twice a fresh load: a municipality's new rows are written
    before its old ones die, so its bucket briefly holds both."""

    THRESHOLD = 0.2
    MIN_INTERVAL = 10.0  # seconds between two vacuums of one bucket (others' snapshots hold it)

    def __init__(self, destination: Destination):
        self.destination = destination
        self._seq = itertools.count()
        self._open: set[int] = set()  # when each open landing began (a sequence number)
        self._bucket: dict[tuple[str, str], str] = {}
        self._dead: dict[str, list[tuple[int, int]]] = {}  # bucket -> (committed at, rows)
        self._size: dict[str, int] = {}  # bucket -> its rows at its last vacuum, then written
        self._last: dict[str, float] = {}  # bucket -> when it was last vacuumed
        self._running: set[str] = set()

    def bucket_of(self, dataset: str, source_id: str) -> str | None:
        return self._bucket.get((dataset, source_id))

    def opened(self) -> int:
        seq = next(self._seq)
        self._open.add(seq)
        return seq

    def closed(self, seq: int) -> None:
        self._open.discard(seq)

    def committed(self, landing: Landing, buckets: dict[str, str]) -> None:
        seq = next(self._seq)
        for dataset, bucket in buckets.items():
            self._bucket[(dataset, landing.source_id)] = bucket
            deleted = landing.deleted.get(dataset, 0)
            if deleted:
                self._dead.setdefault(bucket, []).append((seq, deleted))
            self._size[bucket] = self._size.get(bucket, 0) + landing.landed.get(dataset, 0)

    def _removable(self, bucket: str) -> int:
        horizon = min(self._open, default=math.inf)
        return sum(rows for seq, rows in self._dead.get(bucket, ()) if seq < horizon)

    def due(self) -> list[str]:
        now = time.monotonic()
        return [
            b
            for b in self._dead
            if b not in self._running
            and now - self._last.get(b, -math.inf) >= self.MIN_INTERVAL
            and self._removable(b) >= max(1, self.THRESHOLD * self._size.get(b, 0))
        ]

    async def run_due(self) -> None:
        await self._vacuum(self.due())

    async def flush(self) -> None:
        """Every bucket with dead rows: at the end of a `once` pass, or when the daemon is idle,
        no landing of ours holds back what VACUUM may remove."""
        await self._vacuum(sorted(b for b in self._dead if b not in self._running))

    async def _vacuum(self, buckets: Sequence[str]) -> None:
        todo = [b for b in buckets if b not in self._running]
        if not todo:
            return
        self._running.update(todo)
        d = self.destination
        try:
            async with d.acquire() as conn:
                for bucket in todo:
                    horizon = min(self._open, default=math.inf)
                    name = sql.qualified(d.schema, bucket)
                    self._last[bucket] = time.monotonic()
                    try:
                        # TRUNCATE false: truncating the file end needs a lock readers would
                        # queue behind; the space is reused by the next pass anyway
                        # no ANALYZE: sampling a bucket costs more than vacuuming it, and
                        # autovacuum keeps the statistics as rows change
                        await conn.execute(
                            f"VACUUM (TRUNCATE false) {name}", timeout=d.timeouts.statement
                        )
                        size = await conn.fetchval(
                            "SELECT reltuples::bigint FROM pg_catalog.pg_class "
                            "WHERE oid = $1::text::regclass",
                            name,
                        )
                    except asyncpg.UndefinedTableError:  # dropped (or made anew) meanwhile
                        self._dead.pop(bucket, None)
                        self._size.pop(bucket, None)
                        continue
                    except Exception as exc:
                        log.warning("vacuum of %s failed: %s", bucket, classify(exc).reason)
                        continue
                    self._size[bucket] = max(int(size or 0), 0)
                    kept = [
                        (seq, rows) for seq, rows in self._dead.get(bucket, ()) if seq >= horizon
                    ]
                    if kept:
                        self._dead[bucket] = kept
                    else:
                        self._dead.pop(bucket, None)
        finally:
            self._running.difference_update(todo)


@asynccontextmanager
async def _transaction(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.transaction.Transaction]:
    """A transaction (or a savepoint inside one) whose rollback never hides why it failed: on a
    connection that died, there is nothing to roll back."""
    tr = conn.transaction()
    await tr.start()
    try:
        yield tr
    except BaseException:
        with contextlib.suppress(Exception), anyio.CancelScope(shield=True):
            if not _raw(conn).is_closed() and not _done(tr):
                await tr.rollback()
        raise
    if not _done(tr):
        await tr.commit()


def _done(tr: asyncpg.transaction.Transaction) -> bool:
    return tr._state.name in ("COMMITTED", "ROLLEDBACK")


def _count(status: str | None) -> int:
    try:
        return int((status or "").rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def _raw(conn: asyncpg.Connection) -> asyncpg.Connection:
    """The connection under a pool's proxy (termination listeners live there)."""
    return getattr(conn, "_con", None) or conn


async def _close(conn: asyncpg.Connection) -> None:
    try:
        await conn.close(timeout=5)
    except Exception:
        conn.terminate()


def _drop(conn: asyncpg.Connection) -> None:
    """Terminate a connection that may already be gone (or released by asyncpg on its loss)."""
    try:
        if not conn.is_closed():
            conn.terminate()
    except asyncpg.InterfaceError:
        pass


async def _init_connection(conn: asyncpg.Connection) -> None:
    enable_keepalive(conn)
