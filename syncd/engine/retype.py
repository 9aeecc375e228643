"""Changing a dataset column's type online: however large the table, no statement of syncd
holds a lock a reader waits for longer than `timeouts.lock` (docs/design/landing.md, "Changing
a type online").

A column `c` whose change rewrites the table gets a hidden column (`syncd_retype_<hash>`, of the
new type, its COMMENT naming `c` and the municipality that caused the change) and, on each
bucket, a BEFORE INSERT OR UPDATE trigger filling it from `c` with the conversion a source would
use: one transaction of catalog-only DDL under timeouts.lock (`Retypes.start`). Then, outside
any landing (after a municipality's pass: `Retypes.run_due`):

1. backfill (engine/backfill.py): each municipality's rows, in batches, each a short transaction
   under that municipality's sync lock; a municipality syncing now is filled on a later run;
2. the indexes on `c` built on the hidden column (engine/reindex.py): concurrently, per bucket;
3. the swap, catalog only, under timeouts.lock: DROP COLUMN c (its old indexes with it), RENAME
   the hidden column to c, the new indexes take the old names, the trigger function and its
   triggers dropped. Never while a landing of this syncd is open: one that read the old type
   would send its bytes (`Destination.prepare` waits for a swap under way).

Every step is idempotent and found again in the catalog: a syncd killed mid-way, or another
instance, carries on where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from functools import partial

import anyio
import asyncpg

from syncd import config
from syncd.engine import backfill, quoting, reindex, widening
from syncd.engine.errors import FinalError, classify
from syncd.engine.layout import BUCKETS_SQL, COLUMNS_SQL, RETYPE_PREFIX, base_type
from syncd.engine.tables import Tables
from syncd.logevents import Event

log = logging.getLogger(__name__)

FUNCTION_SCHEMA = "syncd"  # the ledger's schema: syncd's own objects, not the analysts'
TRIGGER = "syncd_retype"

Connect = Callable[[], Awaitable[asyncpg.Connection]]
# DDL statements, or work to do in the DDL transaction (its locks taken)
Ddl = str | Callable[[], Awaitable[None]]
# DDL under timeouts.lock: True if done, False if readers held the table (Destination._try_ddl)
TryDdl = Callable[[asyncpg.Connection, str, Ddl], Awaitable[bool]]

_HIDDEN_SQL = """
SELECT a.attname::text AS hidden, pg_catalog.format_type(a.atttypid, a.atttypmod) AS type,
       pg_catalog.col_description(a.attrelid, a.attnum) AS note
FROM pg_catalog.pg_attribute a
WHERE a.attrelid = $1::oid AND a.attnum > 0 AND NOT a.attisdropped
  AND a.attname::text LIKE 'syncd!_retype!_%' ESCAPE '!'
ORDER BY a.attnum
"""

_SIZE_SQL = """
SELECT coalesce(sum(pg_catalog.pg_total_relation_size(i.inhrelid)), 0)::bigint
FROM pg_catalog.pg_inherits i WHERE i.inhparent = $1::oid
"""


def hidden_name(column: str) -> str:
    """The hidden column a change of `column` fills (the same name on every instance)."""
    return RETYPE_PREFIX + hashlib.sha256(column.encode()).hexdigest()[:16]


def function_name(schema: str, dataset: str) -> str:
    digest = hashlib.sha256(f"{schema}.{dataset}".encode()).hexdigest()[:16]
    return quoting.qualified(FUNCTION_SCHEMA, f"retype_{digest}")


def rewrites(change: widening.Change) -> bool:
    """Does ALTER TABLE rewrite every row for this change? Not varchar into text (the same
    bytes, and the catalog says so); every other change converts each value."""
    name = quoting.ident(change.column)
    return not (
        widening.same_bytes(change.table, change.to)
        and widening.convert(name, change.table, change.to) == name
    )


@dataclass(frozen=True, slots=True)
class Column:
    """One column being changed: its hidden column, its types, and who caused it."""

    name: str
    old: str  # its type in the table now
    new: str  # the type it takes
    source: str  # the municipality that caused the change
    sent: str  # what that municipality sends

    @property
    def hidden(self) -> str:
        return hidden_name(self.name)

    def note(self) -> str:
        return json.dumps({"column": self.name, "source": self.source, "sent": self.sent})


@dataclass(slots=True)
class Job:
    """A dataset table whose columns are being changed online."""

    dataset: str
    oid: int
    columns: tuple[Column, ...]
    orphans: tuple[str, ...] = ()  # hidden columns whose column is gone: dropped at the swap
    done: set[str] = field(default_factory=set)  # municipalities filled (the trigger keeps them)
    filled: bool = False  # every row checked filled

    def unfilled(self) -> str:
        """SQL: the row has a value not yet in its hidden column."""
        return " OR ".join(
            f"({quoting.ident(c.hidden)} IS NULL AND {quoting.ident(c.name)} IS NOT NULL)"
            for c in self.columns
        )

    def sets(self) -> str:
        return ", ".join(
            f"{quoting.ident(c.hidden)} = {widening.convert(quoting.ident(c.name), c.old, c.new)}"
            for c in self.columns
        )


class Retypes:
    """The online type changes of one destination: started by `Destination.prepare`, carried on
    by `run_due` after each municipality's pass (and `flush` at the end of a `once` pass)."""

    def __init__(
        self,
        connect: Connect,
        tables: Tables,
        settings: config.DestinationSettings,
        timeouts: config.Timeouts,
        try_ddl: TryDdl,
        landings_open: Callable[[], int],
    ):
        self._connect = connect
        self.tables = tables
        self.settings = settings
        self.timeouts = timeouts
        self._try_ddl = try_ddl
        self._landings_open = landings_open
        self._jobs: dict[str, Job] = {}
        self._lock = anyio.Lock()
        self._swapping: dict[str, anyio.Event] = {}

    def pending(self, dataset: str) -> bool:
        return dataset in self._jobs

    async def settled(self, dataset: str) -> None:
        """Wait for a swap of this dataset's columns under way (a landing must not read the
        old types while it happens)."""
        event = self._swapping.get(dataset)
        if event is not None:
            await event.wait()

    async def online(
        self, conn: asyncpg.Connection, oid: int, changes: Sequence[widening.Change]
    ) -> bool:
        """Should these changes be made online rather than by one ALTER? Those that rewrite
        the table, on a table larger than `destination.retype_online_above` (0: any table)."""
        if not any(rewrites(c) for c in changes):
            return False
        above = self.settings.retype_online_above
        return above == 0 or int(await conn.fetchval(_SIZE_SQL, oid)) > above

    async def find(
        self, conn: asyncpg.Connection, dataset: str, oid: int, existing: dict[str, str]
    ) -> Job | None:
        """A change under way on this table (started by us, by a syncd that died, by another
        instance): known from the catalog, and carried on by `run_due` from now on."""
        rows = await conn.fetch(_HIDDEN_SQL, oid)
        if not rows:
            self._jobs.pop(dataset, None)
            return None
        known = self._jobs.get(dataset)
        if known is not None and known.oid == oid:
            return known
        columns, orphans = [], []
        for row in rows:
            try:
                note = json.loads(row["note"] or "")
                column = Column(
                    note["column"],
                    base_type(existing[note["column"]]),
                    base_type(row["type"]),
                    str(note.get("source", "")),
                    str(note.get("sent", "")),
                )
            except (ValueError, KeyError, TypeError):
                orphans.append(row["hidden"])
                continue
            if column.hidden == row["hidden"]:
                columns.append(column)
            else:
                orphans.append(row["hidden"])
        job = Job(dataset, oid, tuple(columns), tuple(orphans))
        self._jobs[dataset] = job
        return job

    async def start(
        self,
        conn: asyncpg.Connection,
        dataset: str,
        oid: int,
        changes: Sequence[widening.Change],
        source_id: str,
    ) -> bool:
        """The hidden columns and their triggers, in one transaction under timeouts.lock;
        False when readers held the table (tried again later)."""
        columns = tuple(Column(c.column, c.table, c.to, source_id, c.sent) for c in changes)
        job = Job(dataset, oid, columns)
        parent = self.tables.parent(dataset)
        function = function_name(self.tables.schema, dataset)
        body = (
            "BEGIN "
            + " ".join(
                f"NEW.{quoting.ident(c.hidden)} := "
                f"{widening.convert('NEW.' + quoting.ident(c.name), c.old, c.new)};"
                for c in columns
            )
            + " RETURN NEW; END"
        )
        buckets = [r["name"] for r in await conn.fetch(BUCKETS_SQL, oid)]
        statements = [
            f"ALTER TABLE {parent} "
            + ", ".join(
                f"ADD COLUMN IF NOT EXISTS {quoting.ident(c.hidden)} {c.new}" for c in columns
            ),
            *(
                f"COMMENT ON COLUMN {parent}.{quoting.ident(c.hidden)} IS "
                + quoting.literal(c.note())
                for c in columns
            ),
            # float -> numeric reads the float's exact text (widening.FLOAT_TEXT_SETTINGS)
            f"CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql "
            f"SET extra_float_digits = 3 AS {quoting.literal(body)}",
            # on each bucket: PostgreSQL 12 has no BEFORE row triggers on a partitioned table
            *(
                f"DROP TRIGGER IF EXISTS {TRIGGER} ON {quoting.qualified(self.tables.schema, b)}; "
                f"CREATE TRIGGER {TRIGGER} BEFORE INSERT OR UPDATE ON "
                f"{quoting.qualified(self.tables.schema, b)} FOR EACH ROW EXECUTE PROCEDURE {function}()"
                for b in buckets
            ),
        ]
        ours = {c.hidden for c in columns}

        async def work() -> None:
            # another instance's change of other columns, started meanwhile: this one waits
            # (the trigger function would no longer fill theirs)
            present = {r["hidden"] for r in await conn.fetch(_HIDDEN_SQL, oid)}
            if present - ours:
                raise _Busy
            await conn.execute(";".join(statements))

        try:
            if not await self._try_ddl(conn, dataset, work):
                return False
        except _Busy:
            return False
        self._jobs[dataset] = job
        for c in columns:
            log.warning(
                "dataset %s: column %s changes from %s to %s online (source %s sends %s): a "
                "hidden column is filled meanwhile, and rows that fit land as before",
                *_args(dataset, c),
                extra={"event": Event.COLUMN_RETYPE_STARTED, **_fields(dataset, c, "started")},
            )
        return True

    async def run_due(self) -> None:
        """Carry on every change under way, unless a run is under way already. Never raises: a
        step that failed is tried again after the next pass."""
        if self._jobs and not self._lock.locked():
            await self.flush()

    async def flush(self) -> None:
        """Carry on every change under way (waiting for a run under way to end first)."""
        async with self._lock:
            for job in list(self._jobs.values()):
                try:
                    await self._advance(job)
                except Exception as exc:
                    failure = classify(exc)
                    log.warning(
                        "dataset %s: changing column(s) %s online: %s (tried again after the "
                        "next pass)",
                        job.dataset,
                        ", ".join(c.name for c in job.columns),
                        failure.reason,
                        extra={"event": Event.COLUMN_RETYPE_FAILED, "dataset": job.dataset},
                    )

    async def _advance(self, job: Job) -> None:
        conn = await self._connect()
        try:
            # each wait for a lock (a bucket's index build waits for its writers) is bounded
            await conn.execute(f"SET lock_timeout = {int(self.timeouts.lock * 1000)}")
            if not await conn.fetch(_HIDDEN_SQL, job.oid):
                self._finished(job)  # another instance swapped it
                return
            if job.columns and not job.filled and not await self._backfill(conn, job):
                return
            hidden = {c.name: c.hidden for c in job.columns}
            ddl = partial(self._try_ddl, conn, job.dataset)
            if job.columns and not await reindex.rebuild(
                conn, self.tables, job.dataset, job.oid, hidden, ddl, self.timeouts
            ):
                return
            await self._swap(conn, job)
        finally:
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()

    def _finished(self, job: Job) -> None:
        self._jobs.pop(job.dataset, None)
        self.tables.forget(job.dataset)

    async def _backfill(self, conn: asyncpg.Connection, job: Job) -> bool:
        """Every municipality's rows filled; False when some syncing now wait for a later run."""
        busy = await backfill.fill_all(
            conn, self.tables, job.dataset, job.oid, job.sets(), job.unfilled(), job.done
        )
        if busy:
            log.info(
                "dataset %s: %d municipalities syncing now are filled after their pass (%s)",
                job.dataset,
                len(busy),
                ", ".join(busy[:5]),
                extra={
                    "event": Event.COLUMN_TYPE_DEFERRED,
                    "dataset": job.dataset,
                    "stage": "backfill",
                },
            )
            return False
        job.filled = True
        for c in job.columns:
            log.warning(
                "dataset %s: column %s: every stored value is filled in from %s to %s (source "
                "%s sends %s); the swap is next",
                *_args(job.dataset, c),
                extra={
                    "event": Event.COLUMN_RETYPE_BACKFILLED,
                    **_fields(job.dataset, c, "backfilled"),
                },
            )
        return True

    # -- 3. the swap ----------------------------------------------------------------------

    async def _swap(self, conn: asyncpg.Connection, job: Job) -> None:
        if self._landings_open():
            return  # after the last landing of this pass: none may hold the old types
        self._swapping[job.dataset] = event = anyio.Event()
        try:
            swapped = await self._try_ddl(conn, job.dataset, lambda: self._swap_in(conn, job))
        finally:
            del self._swapping[job.dataset]
            event.set()
        if not swapped:
            for c in job.columns:
                log.warning(
                    "dataset %s: readers hold the table, so column %s stays %s a while longer "
                    "(its values are ready in %s; source %s sends %s); tried again after a pass",
                    *_args(job.dataset, c),
                    extra={"event": Event.COLUMN_TYPE_DEFERRED, **_fields(job.dataset, c, "swap")},
                )
            return
        self._finished(job)
        for c in job.columns:
            log.warning(
                "dataset %s: column %s changed from %s to %s online: source %s sends %s",
                *_args(job.dataset, c),
                extra={"event": Event.COLUMN_TYPE_CHANGED, **_fields(job.dataset, c, "swapped")},
            )

    async def _swap_in(self, conn: asyncpg.Connection, job: Job) -> None:
        """In the DDL transaction (its locks taken): catalog only."""
        parent = self.tables.parent(job.dataset)
        hidden = {r["hidden"] for r in await conn.fetch(_HIDDEN_SQL, job.oid)}
        columns = [c for c in job.columns if c.hidden in hidden]
        indexes = await reindex.using(conn, job.oid, [c.name for c in columns])
        statements = []
        drops = [f"DROP COLUMN {quoting.ident(c.name)}" for c in columns]
        drops += [f"DROP COLUMN {quoting.ident(h)}" for h in job.orphans if h in hidden]
        if drops:
            statements.append(f"ALTER TABLE {parent} {', '.join(drops)}")
        for c in columns:
            statements.append(
                f"ALTER TABLE {parent} RENAME COLUMN {quoting.ident(c.hidden)} TO "
                f"{quoting.ident(c.name)}"
            )
            statements.append(f"COMMENT ON COLUMN {parent}.{quoting.ident(c.name)} IS NULL")
        for index in indexes:
            statements.append(
                f"ALTER INDEX {quoting.qualified(self.tables.schema, reindex.renamed(index['name']))} "
                f"RENAME TO {quoting.ident(index['name'])}"
            )
        statements.append(
            f"DROP FUNCTION IF EXISTS {function_name(self.tables.schema, job.dataset)}() CASCADE"
        )
        await conn.execute(";".join(statements))
        # what the table is now, as a check: the columns are there, in their new types
        now = {r["name"]: base_type(r["type"]) for r in await conn.fetch(COLUMNS_SQL, job.oid)}
        wrong = [c.name for c in columns if now.get(c.name) != c.new]
        if wrong:
            raise FinalError(f"after the swap, column(s) {', '.join(wrong)} are not as planned")


class _Busy(Exception):
    """Another change of this table is under way."""


def _args(dataset: str, c: Column) -> tuple[str, ...]:
    """A log line's arguments: dataset, column, both types, the municipality, what it sends."""
    return dataset, c.name, c.old, c.new, c.source, c.sent


def _fields(dataset: str, c: Column, stage: str) -> dict[str, str]:
    return {
        "dataset": dataset,
        "column": c.name,
        "source": c.source,
        "from_type": c.old,
        "to_type": c.new,
        "source_type": c.sent,
        "stage": stage,
    }
