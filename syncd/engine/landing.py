"""One municipality's landing: the open destination transaction its pass writes in.

For each dataset, inside a savepoint, `land` writes only what changed: the municipality's
stored row hashes are read from the rows index while the source stream starts, the stream goes
through the row differ (engine/rowdiff/pydiffer.py), only the rows the destination does not hold are
copied in, and the held rows no source row matched are deleted. A full refresh deletes and
rewrites everything instead; an incremental window is upserted by key. The watermark lands with
the rows. Only row locks and ROW EXCLUSIVE are taken, so readers never wait for a landing.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import uuid
from collections.abc import AsyncIterable, AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

import anyio
import asyncpg

from syncd import config
from syncd.engine import quoting, rowdiff
from syncd.engine.copy import CopyIn, CopyOut, Transfer, copy_row_count, first_failure, pipe
from syncd.engine.errors import Failure, FinalError, Kind, RetryableError, Side, TransferError
from syncd.engine.incremental import ALIAS
from syncd.engine.layout import ROW_HASH, SOURCE_SETTING
from syncd.engine.rowdiff.transform import DiffTransform
from syncd.engine.tables import Tables, Target
from syncd.engine.txn import Tx, rows_in_command_tag, transaction
from syncd.engine.vacuum import Vacuum

GONE = "pg_temp.syncd_gone_rows"  # one per connection: the rows to delete (places or hashes)


def located(only: str | None) -> bool:
    """Are the stored hashes read with their rows' places, so the rows that vanished are
    deleted where they are (a TID scan) rather than searched for by hash (a scan of every row
    of the municipality, after the stream)? For a delta part (`only`), yes: its stored rows are
    read from the heap anyway (the part's condition is on a heap column), so their places cost
    nothing, and a part is streamed because it changed. A whole stream reads the hashes alone,
    by an index-only scan of half the cost, as most whole streams of a day find nothing
    changed; once a changed row shows up, the places are read beside the rest of the stream
    (`Landing._locate`), before the destination's COPY starts on that connection. A pass that
    only lost rows (no new row ever shows up) deletes them by hash."""
    return only is not None


class Write(StrEnum):
    """How a dataset's rows are written."""

    DIFF = "diff"  # only what changed, by the stored row hashes
    REWRITE = "rewrite"  # everything, trusting nothing stored (full refresh, first load)
    WINDOW = "window"  # an incremental window, upserted by key


@dataclass(slots=True)
class Landed:
    transfer: Transfer = field(default_factory=Transfer)
    inserted: int = 0
    deleted: int = 0
    watermark: str | None = None  # a window's new watermark


class Landing:
    """The open transaction of one municipality's pass."""

    def __init__(
        self,
        conn: asyncpg.Connection,
        source_id: str,
        transaction: Tx,
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
        self._gone_table = False
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

    async def land(
        self,
        target: Target,
        copy_out: CopyOut,
        *,
        write: Write,
        cap: str | None = None,
        idle_timeout: float,
        on_bytes: Callable[[int], None] | None = None,
        only: str | None = None,
    ) -> Landed:
        """This municipality's rows of the dataset as the source has them now.

        DIFF: only the difference is written (rows whose hash the destination does not hold are
        copied in, held hashes no source row matched are deleted); REWRITE: every row deleted
        and copied in again, trusting nothing stored; WINDOW: the rows of an incremental
        window, upserted by key (rows whose hash is unchanged are not written again). A keyed
        dataset's new rows go through a temporary table when they may replace rows still there,
        so those are deleted before they arrive (the key is unique).

        `only` (delta transfer, engine/delta.py): a condition on the municipality's stored rows;
        the stream holds the source's rows of that part alone, so only the stored rows it
        admits are diffed against it (and may be deleted)."""
        d = self.tables
        parent = d.parent(target.dataset)
        landed = Landed()
        if write == Write.REWRITE:
            status = await self.conn.execute(
                f"DELETE FROM {parent} WHERE {quoting.ident(d.source_column)} = $1",  # noqa: S608
                self.source_id,
                timeout=self._long(),
            )
            landed.deleted += rows_in_command_tag(status)
        differ = rowdiff.differ(target.seed)
        # a whole stream reads the stored hashes alone, and where their rows are only once a
        # changed row shows up: the new rows wait for that read (see `located`)
        locate_later = write == Write.DIFF and not located(only)
        diff = DiffTransform(differ, hold_until_located=locate_later)
        # a keyed dataset's new rows wait in the delta table for the rows they replace to go
        # (the key is unique), unless every row went already (a rewrite)
        delta = await self._delta(target) if target.key and write != Write.REWRITE else None
        columns = (*target.columns, ROW_HASH)
        copy_in = (
            self._copy_in(delta, None, columns)  # a temp table: no schema
            if delta
            else self._copy_in(target.dataset, d.schema, columns, into_bucket=True)
        )

        async def existing() -> None:
            if write == Write.DIFF:
                landed.deleted += await self._load_hashes(differ, parent, only, located(only))
            else:
                differ.seal()
            diff.ready.set()
            if locate_later:
                await diff.changed.wait()
                await self._locate(differ, parent)
                diff.located.set()

        try:
            landed.transfer = await self._pipe(
                copy_out, copy_in, idle_timeout, on_bytes, diff, existing
            )
        finally:
            diff.release()
        landed.deleted += await self._delete_gone(parent, differ)
        if delta is None:
            landed.inserted = landed.transfer.written
        elif landed.transfer.written == 0:  # nothing came: nothing to upsert, the same watermark
            landed.watermark = target.watermark
        else:
            inserted, updated = await self._insert_delta(
                target, delta, unchanged_skipped=write == Write.WINDOW
            )
            landed.inserted, landed.deleted = inserted + updated, landed.deleted + updated
            if write == Write.WINDOW:
                top = await self.conn.fetchval(
                    f"SELECT max({ALIAS}.{quoting.ident(target.cursor or '')})::text "  # noqa: S608
                    f"FROM {delta} AS {ALIAS} WHERE {cap}"
                )
                landed.watermark = top or target.watermark
        self.landed[target.dataset] = landed.inserted
        self.deleted[target.dataset] = landed.deleted
        return landed

    async def _load_hashes(
        self,
        differ: rowdiff.RowDiffer,
        parent: str,
        only: str | None = None,
        located: bool = False,
    ) -> int:
        """The municipality's stored row hashes into the differ (`located`: each with its row's
        place, its ctid, so the rows that vanished are deleted where they are); then the rows
        that can never match (no hash yet, or a hash held twice) are deleted before anything is
        written. Returns the rows deleted."""
        d = self.tables
        mine = d.mine()
        if only is not None:
            mine = f"{mine} AND {only}"

        async def add(chunk: bytes) -> None:
            differ.add_stored(chunk)

        await self.conn.copy_from_query(
            f"SELECT {'ctid, ' if located else ''}{ROW_HASH} FROM {parent} "  # noqa: S608
            f"WHERE {mine}",
            output=add,
            format="binary",
            timeout=self._long(),
        )
        differ.seal()
        counts = differ.counts()
        if not counts["unhashed"] and not counts["duplicated"]:
            return 0
        twice = differ.duplicates()
        status = await self.conn.execute(
            f"DELETE FROM {parent} WHERE {mine} AND ({ROW_HASH} IS NULL "  # noqa: S608
            f"OR {ROW_HASH} = ANY($1::uuid[]))",
            [uuid.UUID(bytes=twice[i : i + 16]) for i in range(0, len(twice), 16)],
            timeout=self._long(),
        )
        return rows_in_command_tag(status)

    async def _locate(self, differ: rowdiff.RowDiffer, parent: str) -> None:
        """Where the municipality's stored rows are (their ctids, beside their hashes), read
        from the heap while the rest of the stream goes by."""

        async def add(chunk: bytes) -> None:
            differ.locate(chunk)

        await self.conn.copy_from_query(
            f"SELECT ctid, {ROW_HASH} FROM {parent} WHERE {self.tables.mine()}",  # noqa: S608
            output=add,
            format="binary",
            timeout=self._long(),
        )

    async def _delete_gone(self, parent: str, differ: rowdiff.RowDiffer) -> int:
        """Delete the municipality's held rows no source tuple matched (none of which a new row
        has): where they are (their places: a TID scan of the bucket), else by hash (a scan of
        the municipality's rows, once: the planner hashes the few gone hashes)."""
        places = differ.gone_places()
        keys = b"" if places else differ.gone()
        if not places and not keys:
            return 0
        d = self.tables
        if not self._gone_table:
            await self.conn.execute(
                f"CREATE TEMP TABLE IF NOT EXISTS {GONE} (t tid, h uuid) ON COMMIT DELETE ROWS"
            )
            self._gone_table = True
        await self.conn.copy_to_table(
            GONE.split(".")[1],
            schema_name="pg_temp",
            columns=["t" if places else "h"],
            source=io.BytesIO(rowdiff.places_copy(places) if places else rowdiff.keys_copy(keys)),
            format="binary",
            timeout=self._long(),
        )
        # the source column prunes the parent to the municipality's bucket, where ctids are
        # unique, and ctid = ANY(ARRAY(...)) is a TID scan there; by hash, IN (a semi-join), as
        # a plain join had the planner hash the 2 M rows instead (spilling, 1.7x slower)
        which = (
            f"t.ctid = ANY(ARRAY(SELECT g.t FROM {GONE} AS g))"  # noqa: S608
            if places
            else f"t.{ROW_HASH} IN (SELECT g.h FROM {GONE} AS g)"  # noqa: S608
        )
        deleted: int = await self.conn.fetchval(
            f"WITH d AS (DELETE FROM {parent} AS t "  # noqa: S608
            f"WHERE t.{quoting.ident(d.source_column)} = "
            f"pg_catalog.current_setting({quoting.literal(SOURCE_SETTING)}) AND {which} "
            f"RETURNING 1), e AS (DELETE FROM {GONE}) SELECT count(*) FROM d",
            timeout=self._long(),
        )
        expected = len(places) // rowdiff.PLACE if places else len(keys) // rowdiff.KEY
        if places and deleted != expected:
            raise RetryableError(
                f"{parent}: {deleted} of the {expected} vanished rows were where they had been "
                "read; its rows changed under the landing, which is undone"
            )
        return deleted

    async def _delta(self, target: Target) -> str:
        """The temporary table a keyed dataset's new rows wait in: one per connection and column
        set (names and types), emptied at every commit, so a steady-state pass creates none."""
        d = self.tables
        signature = "\x00".join(
            [
                target.dataset,
                *(f"{c}\x01{t}" for c, t in zip(target.columns, target.types, strict=True)),
            ]
        ).encode()
        delta = "syncd_delta_" + hashlib.sha256(signature).hexdigest()[:16]
        # empty already, unless this dataset was landed before in this same landing (a retry
        # after its savepoint was released): DELETE, as TRUNCATE writes the catalog
        await self.conn.execute(
            f"CREATE TEMP TABLE IF NOT EXISTS {delta} (LIKE {d.parent(target.dataset)} "  # noqa: S608
            f"INCLUDING DEFAULTS) ON COMMIT DELETE ROWS; DELETE FROM {delta}"
        )
        return delta

    async def _insert_delta(
        self, target: Target, delta: str, *, unchanged_skipped: bool
    ) -> tuple[int, int]:
        """The delta's rows into the dataset, by (source, key); returns (inserted, updated)."""
        d = self.tables
        columns = [*target.columns, ROW_HASH]
        names = ", ".join(quoting.ident(c) for c in (*columns, d.source_column))
        updates = ", ".join(
            f"{quoting.ident(c)} = excluded.{quoting.ident(c)}"
            for c in columns
            if c not in target.key
        )
        conflict = ", ".join(quoting.ident(k) for k in (d.source_column, *target.key))
        parent = d.parent(target.dataset)
        same = " AND ".join(
            f"o.{quoting.ident(k)} = n.{quoting.ident(k)}" for k in (d.source_column, *target.key)
        )
        # a window re-reads rows it landed before: those whose hash is the same are left be
        new = (
            f"NOT EXISTS (SELECT 1 FROM {parent} AS o WHERE {same} AND o.{ROW_HASH} = n.{ROW_HASH})"  # noqa: S608
            if unchanged_skipped
            else "TRUE"
        )
        try:
            # every part of one statement sees the rows as they were before it: `u` counts the
            # rows the insert replaces (left dead: the vacuum lane counts them)
            row = await self.conn.fetchrow(
                f"WITH u AS (SELECT count(*) AS n FROM {delta} AS n WHERE {new} "  # noqa: S608
                f"AND EXISTS (SELECT 1 FROM {parent} AS o WHERE {same})), "
                f"w AS (INSERT INTO {parent} ({names}) SELECT {names} FROM {delta} AS n "
                f"WHERE {new} ON CONFLICT ({conflict}) DO UPDATE SET {updates} RETURNING 1) "
                "SELECT count(*) - (SELECT n FROM u) AS inserted, (SELECT n FROM u) AS updated "
                "FROM w",
                timeout=self._long(),
            )
        except asyncpg.CardinalityViolationError:
            raise FinalError(
                f"key ({', '.join(target.key)}) is not unique among the new rows"
            ) from None
        assert row is not None
        return int(row["inserted"]), int(row["updated"])

    def _copy_in(
        self,
        table: str,
        schema: str | None,
        columns: tuple[str, ...],
        *,
        into_bucket: bool = False,
    ) -> CopyIn:
        """The destination end of the pipe: binary COPY of the chunks into `table`; a dataset
        table's straight into the bucket that holds the municipality's rows (`into_bucket`:
        PostgreSQL then routes no row, which was a tenth of a first load's COPY)."""

        async def copy_in(chunks: AsyncIterable[bytes]) -> int:
            bucket = await self._bucket(table) if into_bucket else None
            status = await self.conn.copy_to_table(
                bucket or table,
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
        diff: DiffTransform,
        beside: Callable[[], Coroutine[None, None, None]],
    ) -> Transfer:
        """The byte pipe through the differ, with `beside` (the stored hashes' read) running
        as the source stream starts, watching the destination connection: a backend killed
        mid-COPY is seen at once (asyncpg would otherwise wait for flow control that never
        resumes). The pool's proxy forwards the listener to the connection it holds."""
        lost = anyio.Event()

        def on_terminated(_conn: object) -> None:
            lost.set()

        self.conn.add_termination_listener(on_terminated)

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
                tg.start_soon(beside)
                transfer = await pipe(
                    copy_out,
                    copy_in,
                    idle_timeout=idle_timeout,
                    on_bytes=on_bytes,
                    transform=diff,
                )
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            raise first_failure(group) from None
        finally:
            with contextlib.suppress(asyncpg.InterfaceError):  # released: listeners went too
                self.conn.remove_termination_listener(on_terminated)
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
        found: dict[str, str] = {}
        # only what this pass wrote: a dataset that did not change has nothing to reclaim, and
        # looking up its bucket would cost a round trip per municipality for nothing
        written = {name for name, n in (*self.deleted.items(), *self.landed.items()) if n}
        for dataset in sorted(written):
            name = await self._bucket(dataset)
            if name is not None:
                found[dataset] = name
        return found

    async def _bucket(self, dataset: str) -> str | None:
        """The bucket holding this municipality's rows of the dataset: known from this or an
        earlier landing of the process, else asked (one query); None for a table without
        buckets."""
        d = self.tables
        table = d.get(dataset)
        if table is None or not table.buckets:
            return None
        name = self.vacuum.bucket_of(dataset, self.source_id)
        if name in table.buckets:
            return name
        remainder = await self.conn.fetchval(
            "SELECT r FROM generate_series(0, $2 - 1) AS r "
            "WHERE pg_catalog.satisfies_hash_partition($1::text::regclass::oid, $2, r, "
            "$3::text)",
            d.parent(dataset),
            len(table.buckets),
            self.source_id,
        )
        if remainder is None:
            return None
        bucket: str = table.buckets[remainder]
        self.vacuum.found_bucket(dataset, self.source_id, bucket)
        return bucket

    def settled(self, buckets: dict[str, str]) -> None:
        """The landing committed: what it deleted is the vacuum lane's to reclaim."""
        self.vacuum.committed(self.source_id, buckets, self.deleted, self.landed)
