"""The analytical side: dataset tables, and the landing transactions that write in them.

Each dataset is one table in `destination.schema`, HASH-partitioned by `source_column` into a
fixed number of buckets (`destination.buckets`, default 16) however many municipalities there
are: the catalog does not grow with them, and a whole-country query locks a few dozen
relations, not thousands. Every row carries its hash (`syncd_row_hash`), and the rows index
(the source column, the hash included) serves both the readers' `WHERE municipio = ...` and the
landing's read of a municipality's hashes.

A municipality's pass is one destination transaction (`Landing`: only what changed is
written), its ledger rows and notification in it, then COMMIT: readers see all of its
previous rows or all of its new ones, and only row locks and ROW EXCLUSIVE are taken, so they
never wait. DDL is rare (a new dataset, a column a newer PEC added, a column retyped to the
common type of a mixed fleet: engine/widening.py, engine/typechange.py, online on a large table:
engine/retype.py), runs before the landing opens, on a connection of its own, under
`timeouts.lock`. Types are created without modifiers (`varchar`,
`numeric`), so a widened varchar needs no DDL. DDL readers hold off fails no sync: the rows land
without the new column, or converted to the current type, until the table is free. `Vacuum`
reclaims what landings deleted.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, cast

import asyncpg

from syncd import config, ledger
from syncd.engine import quoting, retype, typechange, widening
from syncd.engine.connect import connect_password, enable_keepalive
from syncd.engine.destsettings import pin_late, reset_pooled, server_settings
from syncd.engine.errors import FinalError, RetryableError, Side, classify
from syncd.engine.landing import Landing
from syncd.engine.layout import (
    COLUMNS_SQL,
    RETYPE_PREFIX,
    ROW_HASH,
    SOURCE_SETTING,
    SRC_FP,
    base_type,
    bucket_names,
    index_name,
)
from syncd.engine.retry import Observer, RetryPolicy, unobserved
from syncd.engine.shape import Shape
from syncd.engine.tables import Table, Tables, Target
from syncd.engine.txn import transaction
from syncd.engine.upgrade import upgrade_tables
from syncd.engine.vacuum import Vacuum
from syncd.logevents import Event

log = logging.getLogger(__name__)

DDL_RETRY_SECONDS = 30.0  # a column add that readers blocked is tried again this much later
DDL_TRIES, DDL_PAUSE = 3, 0.2  # tries of one DDL statement, and the pause after the first

_PARENT_SQL = """
SELECT c.oid::int AS oid, c.relkind::text AS relkind,
       c.relkind = 'p' AND pg_catalog.pg_get_partkeydef(c.oid)
           = 'HASH (' || pg_catalog.quote_ident($3) || ')' AS ours
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


class Destination:
    """The analytical database: a connection pool and the DDL syncd runs there."""

    def __init__(
        self,
        settings: config.DestinationSettings,
        timeouts: config.Timeouts,
        *,
        pool_size: int,
        observe: Observer = unobserved,
    ):
        self.settings = settings
        self.timeouts = timeouts
        self.schema = settings.schema
        self.source_column = settings.source_column
        self.pool_size = pool_size
        # DDL waits for readers a few times, a moment apart (see _try_ddl)
        self._ddl_retry = RetryPolicy(
            DDL_TRIES, DDL_PAUSE, DDL_PAUSE * DDL_TRIES, jitter=False, observe=observe
        )
        self._observe = observe
        self._pool: asyncpg.Pool | None = None
        self.tables = Tables(settings.schema, settings.source_column)
        self.vacuum = Vacuum(self.acquire, settings.schema, timeouts)
        self._landings = 0  # landings of this syncd open now
        self.retypes = retype.Retypes(
            self.connect,
            self.tables,
            settings,
            timeouts,
            lambda conn, dataset, ddl: self._try_ddl(conn, dataset, ddl),
            lambda: self._landings,
        )

    async def open(self, *, setup: bool = True) -> None:
        """The pool; with `setup`, the ledger migrated and the dataset tables upgraded too
        (`syncd verify` and `syncd status` only read, and change nothing)."""
        self._pool = await asyncpg.create_pool(
            min_size=0,
            max_size=self.pool_size,
            max_inactive_connection_lifetime=60,
            init=_init_connection,
            reset=reset_pooled,
            **self._connect_kwargs(),
        )
        if not setup:
            return
        try:
            async with self.acquire() as conn:
                await ledger.migrate(conn)
                async with conn.transaction():
                    await conn.execute("SELECT pg_advisory_xact_lock($1, 1)", ledger.LOCK_NAMESPACE)
                    await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {quoting.ident(self.schema)}")
                await upgrade_tables(conn, self.settings, self.timeouts, self._observe)
        except BaseException:
            await self.close()
            raise

    async def connect(self) -> asyncpg.Connection:
        """A connection of its own, outside the pool (session locks, VACUUM)."""
        conn: asyncpg.Connection = await asyncpg.connect(**self._connect_kwargs())
        try:
            await _init_connection(conn)
        except BaseException:
            conn.terminate()
            raise
        return conn

    def _connect_kwargs(self) -> dict[str, Any]:
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
            # whatever the DBA's defaults for the analysts say (syncd.engine.destsettings)
            "server_settings": server_settings(self.timeouts),
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
        async with self._pool.acquire() as proxy:
            # the pool's proxy forwards every method of the connection it holds
            conn = cast(asyncpg.Connection, proxy)
            try:
                yield conn
            except BaseException as exc:
                if classify(exc).lost_connection:
                    _drop(conn)  # never hand a half-broken connection to the next user
                raise

    def parent(self, dataset: str) -> str:
        return self.tables.parent(dataset)

    def forget(self, dataset: str) -> None:
        self.tables.forget(dataset)

    # -- DDL: rare, on a connection of its own, under timeouts.lock ---------------------------

    async def prepare(self, shape: Shape, source_id: str, key: tuple[str, ...] = ()) -> Target:
        """Make sure the dataset table can take this source's columns; returns where they go.

        Runs no SQL at all when the table is known to fit (every steady-state pass)."""
        if self.source_column in shape.column_names:
            raise FinalError(
                f"the dataset has a column named {self.source_column!r}, which syncd fills with "
                "the source id (destination.source_column); rename it in the query"
            )
        if reserved := {ROW_HASH, SRC_FP} & set(shape.column_names):
            raise FinalError(
                f"the dataset has a column named {min(reserved)!r}, which syncd keeps for each "
                "row (its hash, its source fingerprint); rename it in the query"
            )
        if hidden := [c for c in shape.column_names if c.startswith(RETYPE_PREFIX)]:
            raise FinalError(
                f"the dataset has a column named {hidden[0]!r}: names starting with "
                f"{RETYPE_PREFIX} are syncd's (a column type changing online); rename it in "
                "the query"
            )
        await self.retypes.settled(shape.dataset)
        table = self.tables.get(shape.dataset)
        if table is None or not self._fits(table, shape, key):
            # a connection of its own, not the pool's: the caller holds a pooled one in its
            # landing transaction, and DDL must never wait for the pool that landings fill
            conn = await self.connect()
            try:
                table = await self._ensure_table(conn, shape, key, source_id)
            finally:
                await _close(conn)
            self.tables.known[shape.dataset] = table
        missing = tuple(c.name for c in shape.columns if c.name not in table.columns)
        landed = [c for c in shape.columns if c.name in table.columns]
        where, pairs = f"{self.schema}.{shape.dataset}", widening.pairs(landed, table.columns)
        why = (
            "its change is being made online"
            if self.retypes.pending(shape.dataset)
            else f"readers held the table past timeouts.lock ({self.timeouts.lock:g}s)"
        )
        conversions = widening.conversions(pairs, where, why, DDL_RETRY_SECONDS)
        return Target(
            shape.dataset,
            source_id,
            tuple(c.name for c in landed),
            tuple(base_type(table.columns[c.name]) for c in landed),
            key=key,
            missing=missing,
            conversions=conversions,
        )

    def _fits(self, table: Table, shape: Shape, key: tuple[str, ...]) -> bool:
        if key and key not in table.keys:
            return False
        retry_ddl = time.monotonic() >= table.ddl_blocked_until
        if retry_ddl and any(c.name not in table.columns for c in shape.columns):
            return False  # a column to add, and it is time to try again
        return widening.fits(widening.pairs(shape.columns, table.columns), retry_ddl=retry_ddl)

    async def _ensure_table(
        self, conn: asyncpg.Connection, shape: Shape, key: tuple[str, ...], source_id: str
    ) -> Table:
        rel = await conn.fetchrow(_PARENT_SQL, self.schema, shape.dataset, self.source_column)
        if rel is None:
            rel = await self._create(conn, shape)
        if not rel["ours"]:
            raise FinalError(
                f"{self.schema}.{shape.dataset} exists but is not a syncd dataset table "
                f"(partitioned by HASH ({self.source_column})); rename or drop it"
            )
        existing = {r["name"]: r["type"] for r in await conn.fetch(COLUMNS_SQL, rel["oid"])}
        if lacking := {ROW_HASH, SRC_FP} - set(existing):
            raise FinalError(
                f"{self.schema}.{shape.dataset} has no {min(lacking)} column (landed by an older "
                "syncd that is still running?); restart this syncd to upgrade it"
            )
        changes = widening.changes(
            widening.pairs(shape.columns, existing), self.tables, shape.dataset
        )
        table = Table(existing, await self._buckets(conn, rel["oid"]))
        # a change made online (by us, a syncd that died, another instance) is carried on
        ongoing = await self.retypes.find(conn, shape.dataset, rel["oid"], existing)
        # under timeouts.lock; while readers hold the table, or while the change is made
        # online, the rows that fit land (prepare)
        if changes and (
            ongoing is not None
            or not await typechange.make(
                conn,
                self.retypes,
                partial(self._try_ddl, conn),
                self.timeouts,
                rel["oid"],
                table,
                source_id,
                changes,
            )
        ):
            table.ddl_blocked_until = time.monotonic() + DDL_RETRY_SECONDS
        adds = [c for c in shape.columns if c.name not in existing]
        if adds:
            # a newer PEC version: the column appears for everyone, NULL where unknown
            parent = self.parent(shape.dataset)
            statements = [
                f"ALTER TABLE {parent} ADD COLUMN IF NOT EXISTS {quoting.ident(c.name)} "
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
                    extra={"event": Event.COLUMNS_DEFERRED, "dataset": shape.dataset},
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
        column = quoting.ident(self.source_column)
        columns = ", ".join(f"{quoting.ident(c.name)} {base_type(c.type)}" for c in shape.columns)
        buckets = self.settings.buckets
        statements = [
            f"CREATE TABLE {parent} ({columns}, {column} text NOT NULL "
            f"DEFAULT pg_catalog.current_setting({quoting.literal(SOURCE_SETTING)}), "
            f"{ROW_HASH} uuid, {SRC_FP} bigint) PARTITION BY HASH ({column})",
            *(
                f"CREATE TABLE {quoting.qualified(self.schema, name)} PARTITION OF {parent} "
                f"FOR VALUES WITH (MODULUS {buckets}, REMAINDER {n})"
                for n, name in enumerate(bucket_names(shape.dataset, buckets))
            ),
            f"CREATE INDEX {quoting.ident(index_name(shape.dataset, 'rows'))} ON {parent} "
            f"({column}) INCLUDE ({ROW_HASH})",
            f"COMMENT ON TABLE {parent} IS "
            + quoting.literal(
                f"syncd dataset {shape.dataset}: each municipality's rows are replaced "
                "atomically by syncd; read-only for everyone else"
            ),
        ]
        async with conn.transaction():
            await self._ddl_locks(conn, shape.dataset)
            rel = await conn.fetchrow(_PARENT_SQL, self.schema, shape.dataset, self.source_column)
            if rel is None:  # nobody made it while we waited for the lock
                await conn.execute(";".join(statements))
                rel = await conn.fetchrow(
                    _PARENT_SQL, self.schema, shape.dataset, self.source_column
                )
        if rel is None:
            raise FinalError(f"{self.schema}.{shape.dataset} vanished as it was created")
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
        name = index_name(dataset, "key")
        statement = (
            f"DROP INDEX IF EXISTS {quoting.qualified(self.schema, name)};"
            f"CREATE UNIQUE INDEX {quoting.ident(name)} ON {self.parent(dataset)} "
            f"({', '.join(quoting.ident(c) for c in columns)})"
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

    async def _ddl_locks(self, conn: asyncpg.Connection, dataset: str) -> None:
        """In a DDL transaction: readers wait at most `timeouts.lock` for it, and syncd's own DDL
        on this dataset (another instance's, say) runs one at a time."""
        await conn.execute(f"SET LOCAL lock_timeout = {int(self.timeouts.lock * 1000)}")
        await conn.execute(
            "SELECT pg_advisory_xact_lock($1, hashtext($2))",
            ledger.LOCK_NAMESPACE,
            f"{self.schema}.{dataset}",
        )

    async def _try_ddl(
        self,
        conn: asyncpg.Connection,
        dataset: str,
        statements: str | Callable[[], Awaitable[None]],
        timeout: float | None = None,
    ) -> bool:
        """DDL under lock_timeout: True if done, False if others held the table meanwhile.

        A few tries, a moment apart: small municipalities' landings commit within a moment,
        but a large one holds ROW EXCLUSIVE until its whole pass commits, and a reader's report
        may hold the table for long; then the caller degrades (a column add lands the rows
        without it) and tries again later. Each try makes a reader wait at most
        `timeouts.lock`."""

        async def attempt() -> None:
            async with conn.transaction():
                await self._ddl_locks(conn, dataset)
                if isinstance(statements, str):
                    await conn.execute(statements, timeout=timeout)
                else:
                    await statements()

        try:
            await self._ddl_retry.call(
                attempt,
                f"dataset {dataset}: DDL waiting for readers",
                side=Side.DESTINATION,
                retry_on=lambda exc: isinstance(exc, asyncpg.LockNotAvailableError),
            )
        except asyncpg.LockNotAvailableError:
            return False
        return True

    # -- the landing transaction ----------------------------------------------------------------

    @asynccontextmanager
    async def landing(self, source_id: str) -> AsyncIterator[Landing]:
        """One municipality's transaction: everything it lands commits together, or nothing."""
        seq = self.vacuum.opened()
        self._landings += 1
        try:
            async with self.acquire() as conn, transaction(conn) as tr:
                await conn.execute(
                    "SELECT pg_catalog.set_config($1, $2, true), pg_catalog.set_config("
                    "'lock_timeout', $3, true)",
                    SOURCE_SETTING,
                    source_id,
                    f"{int(self.timeouts.lock * 1000)}ms",
                )
                yield Landing(
                    conn,
                    source_id,
                    tr,
                    tables=self.tables,
                    timeouts=self.timeouts,
                    vacuum=self.vacuum,
                )
        finally:
            self._landings -= 1
            self.vacuum.closed(seq)


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
    await pin_late(conn)
