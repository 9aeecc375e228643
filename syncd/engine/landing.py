"""One municipality's landing: the open destination transaction its pass writes in.

For each dataset, inside a savepoint: DELETE the municipality's rows and COPY the new ones
(`replace`), or upsert an incremental window by key (`upsert`); the watermark with the rows.
Only row locks and ROW EXCLUSIVE are taken, so readers never wait for a landing.
"""

from __future__ import annotations

import contextlib
import enum
import hashlib
from collections.abc import AsyncIterable, AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime

import anyio
import asyncpg

from syncd import config
from syncd.engine import sql
from syncd.engine.copy import CopyIn, CopyOut, Transfer, copy_row_count, first_failure, pipe
from syncd.engine.errors import Failure, FinalError, Kind, Side, TransferError
from syncd.engine.incremental import ALIAS
from syncd.engine.tables import Tables, Target
from syncd.engine.vacuum import Vacuum


class Landing:
    """The open transaction of one municipality's pass."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        source_id: str,
        transaction: asyncpg.transaction.Transaction,
        *,
        tables: Tables,
        timeouts: config.Timeouts,
        vacuum: Vacuum,
    ):
        self.tables = tables
        self.timeouts = timeouts
        self.vacuum = vacuum
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
        return Failure(
            True, "the destination connection was lost", Kind.CONNECTION, Side.DESTINATION
        )

    @asynccontextmanager
    async def savepoint(self) -> AsyncIterator[None]:
        """A dataset that fails rolls back to here; the others of the pass stay."""
        counts = dict(self.deleted), dict(self.landed)
        try:
            async with transaction(self.conn):
                yield
        except BaseException:
            self.deleted, self.landed = counts  # what rolled back deleted and wrote nothing
            raise

    def _long(self) -> float:
        # progress is watched by the pipe (idle_stream) and the source's statement timeout
        # fires first; this only bounds a statement that nothing else would stop
        t = self.timeouts
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
        d = self.tables
        status = await self.conn.execute(
            f"DELETE FROM {d.parent(target.dataset)} WHERE {sql.ident(d.source_column)} = $1",  # noqa: S608
            self.source_id,
            timeout=self._long(),
        )
        self.deleted[target.dataset] = count(status)
        copy_in = self._copy_in(target.dataset, d.schema, target.columns)
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
        d = self.tables
        column = d.source_column
        columns = [*target.columns, column]
        # one temporary table per connection and column set, emptied at every commit: the
        # pool's connections are reused, so a steady-state pass creates no table
        signature = "\x00".join([target.dataset, *target.columns]).encode()
        delta = "syncd_delta_" + hashlib.sha256(signature).hexdigest()[:16]
        # the table is empty already, unless this dataset was upserted before in this same
        # landing (a retry after its savepoint was released): DELETE, as TRUNCATE writes the
        # catalog; one round trip for both
        await self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {delta} (LIKE {d.parent(target.dataset)} "  # noqa: S608
            f"INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; DELETE FROM {delta}"
        )
        copy_in = self._copy_in(delta, None, target.columns)  # a temp table: no schema
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

    def _copy_in(self, table: str, schema: str | None, columns: tuple[str, ...]) -> CopyIn:
        """The destination end of the pipe: binary COPY of the chunks into `table`."""

        async def copy_in(chunks: AsyncIterable[bytes]) -> int:
            status = await self.conn.copy_to_table(
                table,
                schema_name=schema,
                columns=list(columns),
                source=chunks,
                format="binary",
                timeout=self._long(),
            )
            return copy_row_count(status)

        return copy_in

    async def _pipe(
        self,
        copy_out: CopyOut,
        copy_in: CopyIn,
        idle_timeout: float,
        on_bytes: Callable[[int], None] | None,
    ) -> Transfer:
        """The byte pipe, watching the destination connection: a backend killed mid-COPY is seen
        at once (asyncpg would otherwise wait for flow control that never resumes)."""
        lost = anyio.Event()

        def on_terminated(_conn: object) -> None:
            lost.set()

        under = raw(self.conn)
        under.add_termination_listener(on_terminated)

        async def watch() -> None:
            await lost.wait()
            raise TransferError(
                Side.DESTINATION,
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
            under.remove_termination_listener(on_terminated)
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
        d = self.tables
        found: dict[str, str] = {}
        for dataset in sorted(set(self.deleted) | set(self.landed)):
            name = self.vacuum.bucket_of(dataset, self.source_id)
            table = d.get(dataset)
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

    def settled(self, buckets: dict[str, str]) -> None:
        """The landing committed: what it deleted is the vacuum lane's to reclaim."""
        self.vacuum.committed(self.source_id, buckets, self.deleted, self.landed)


@asynccontextmanager
async def transaction(conn: asyncpg.Connection) -> AsyncIterator[asyncpg.transaction.Transaction]:
    """A transaction (or a savepoint inside one) whose rollback never hides why it failed: on a
    connection that died, there is nothing to roll back."""
    tr = conn.transaction()
    await tr.start()
    try:
        yield tr
    except BaseException:
        with contextlib.suppress(Exception), anyio.CancelScope(shield=True):
            if not raw(conn).is_closed() and not _done(tr):
                await tr.rollback()
        raise
    if not _done(tr):
        await tr.commit()


def _done(tr: asyncpg.transaction.Transaction) -> bool:
    # asyncpg keeps a transaction's state private; a savepoint that an inner error already
    # rolled back (or a commit that went through) must not be ended twice
    state: enum.Enum = getattr(tr, "_state")  # noqa: B009
    return state.name in ("COMMITTED", "ROLLEDBACK")


def count(status: str | None) -> int:
    try:
        return int((status or "").rsplit(" ", 1)[-1])
    except ValueError:
        return 0


def raw(conn: asyncpg.Connection) -> asyncpg.Connection:
    """The connection under a pool's proxy (termination listeners live there)."""
    return getattr(conn, "_con", None) or conn
