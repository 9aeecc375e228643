"""The analytical database's disk: a budget (`destination.max_size`) and a full disk as a state.

The budget. Before a dataset's landing starts, its size is estimated as what the source sent
the last time that dataset succeeded (the ledger's `bytes`) or, when more, what an earlier try
in this process streamed before it was stopped; the landing starts only if the database's size
(`pg_database_size`, measured at most every `SIZE_TTL` seconds), plus what the landings already
under way have reserved, plus this estimate stays within `max_size`. While it streams, a landing
that passes its estimate reserves what it has streamed, and is stopped (its savepoint rolled
back, nothing of it left visible) when that would cross the budget. Bytes are the binary COPY's,
as the source sends them: an overestimate for a landing that writes only what changed, never an
underestimate for a first one, which is the landing that fills a disk.

A full disk (SQLSTATE 53100, or a server saying "No space left on device") is a state, not an
error to retry: no landing starts on the destination while it lasts (each would fill the disk
again), the operator is told once in plain words, and every `timeouts.disk_probe` the next
landing to be due first tries a probe write: a temporary table of about `PROBE_BYTES` in the
tablespace that filled. When it succeeds, what the failed landings left behind (the dead tuples
of a rolled-back COPY) has already been given back to the filesystem by a VACUUM of their
tables, and landing resumes by itself.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime

import anyio
import asyncpg

from syncd import ledger
from syncd.config.values import format_size, human_size
from syncd.engine import quoting
from syncd.engine.errors import OUT_OF_DISK, Failure, FinalError, Kind, Side, classify
from syncd.logevents import Event

log = logging.getLogger(__name__)

RECLAIM_SECONDS = 60.0  # the VACUUM after a full disk may take this long, even when cancelled
SIZE_TTL = 10.0  # seconds a measured database size is trusted
PROBE_BYTES = 1024 * 1024  # about what the probe write puts on disk
_PROBE_ROWS = PROBE_BYTES // 36  # an int row takes about 36 bytes of heap

# a connection of its own (VACUUM runs outside any transaction; the probe rolls back its own)
Connect = Callable[[], Awaitable[asyncpg.Connection]]


@asynccontextmanager
async def _own(connect: Connect) -> AsyncIterator[asyncpg.Connection]:
    conn = await connect()
    try:
        yield conn
    finally:
        try:
            await conn.close(timeout=5)
        except Exception:
            conn.terminate()


class OverBudget(FinalError):
    """A landing that would take the analytical database past `destination.max_size`."""

    kind = Kind.DISK_BUDGET
    side = Side.DESTINATION


class OutOfDisk(FinalError):
    """A landing not started while the analytical database is out of disk space."""

    kind = Kind.DISK_FULL
    side = Side.DESTINATION


@dataclass(frozen=True, slots=True)
class DiskReport:
    """What the status page, the metrics and `once --json` show of the destination's disk."""

    size: int | None  # bytes, as last measured; None before the first measure
    max_size: int | None  # destination.max_size; None: no budget
    full_since: datetime | None = None  # out of disk space since then; None: not full
    reason: str | None = None  # the server's words when it filled

    @property
    def full(self) -> bool:
        return self.full_since is not None

    @property
    def used(self) -> float | None:
        """The size as a fraction of the budget."""
        if self.size is None or not self.max_size:
            return None
        return self.size / self.max_size


def _ignore(report: DiskReport) -> None:
    pass


@dataclass(eq=False)
class Share:
    """One dataset landing's share of the budget: its estimate, then what it streamed."""

    disk: Disk
    what: str  # "source 351570 dataset cidadaos"
    key: tuple[str, str]
    estimate: int
    streamed: int = 0

    @property
    def held(self) -> int:
        return max(self.estimate, self.streamed)

    def counting(self, on_bytes: Callable[[int], None]) -> Callable[[int], None]:
        """`on_bytes` that also grows this share (and stops the pipe past the budget)."""

        def counted(count: int) -> None:
            on_bytes(count)
            self.grow(count)

        return counted

    def grow(self, count: int) -> None:
        """`count` more bytes streamed; raises OverBudget when they cross the budget (the pipe
        stops, the dataset's savepoint rolls back)."""
        self.streamed += count
        if self.streamed > self.estimate:
            self.disk.crossing(self)

    def release(self) -> None:
        self.disk.released(self)


@dataclass(eq=False)
class Shares:
    """One municipality's landing: the last bytes of each dataset, and the shares it holds
    until its transaction ends."""

    last: dict[str, int] = field(default_factory=dict)
    held: list[Share | None] = field(default_factory=list)

    def release(self) -> None:
        for share in self.held:
            if share is not None:
                share.release()
        self.held.clear()


@dataclass(eq=False)
class Disk:
    """The destination's disk as syncd sees it."""

    max_size: int | None
    probe_interval: float
    on_change: Callable[[DiskReport], None] = _ignore
    clock: Callable[[], float] = time.monotonic
    size: int | None = None
    _measured_at: float = -float("inf")
    _held: dict[int, Share] = field(default_factory=dict)
    _cut: dict[tuple[str, str], int] = field(default_factory=dict)  # stopped: streamed so far
    full_since: datetime | None = None
    full_reason: str | None = None
    _probed_at: float = -float("inf")
    _filled: set[str] = field(default_factory=set)  # tables a landing failed to write in
    _probing: anyio.Lock = field(default_factory=anyio.Lock)  # one probe at a time
    _reclaim: set[str] = field(default_factory=set)  # qualified tables a failure left dead rows in

    def report(self) -> DiskReport:
        return DiskReport(self.size, self.max_size, self.full_since, self.full_reason)

    # -- the budget ------------------------------------------------------------------------------

    async def measure(self, conn: asyncpg.Connection, *, fresh: bool = False) -> int:
        """The database's size, measured again when older than SIZE_TTL."""
        if fresh or self.size is None or self.clock() - self._measured_at >= SIZE_TTL:
            size = await conn.fetchval(
                "SELECT pg_catalog.pg_database_size(pg_catalog.current_database())"
            )
            self.size, self._measured_at = int(size), self.clock()
            self.on_change(self.report())
        assert self.size is not None
        return self.size

    async def estimates(
        self, conn: asyncpg.Connection, source_id: str, datasets: list[str]
    ) -> dict[str, int]:
        """What the source sent the last time each dataset succeeded (only under a budget)."""
        if self.max_size is None or not datasets:
            return {}
        return await ledger.last_bytes(conn, source_id, datasets)

    async def admit(
        self, conn: asyncpg.Connection, source_id: str, dataset: str, last_bytes: int | None
    ) -> Share | None:
        """A dataset landing's share of the budget; None without a budget. Raises OutOfDisk
        while the disk is full, OverBudget when the landing would not fit."""
        if self.full:
            raise self._out_of_disk()
        if self.max_size is None:
            return None
        key = (source_id, dataset)
        estimate = max(last_bytes or 0, self._cut.get(key, 0))
        share = Share(self, f"source {source_id} dataset {dataset}", key, estimate)
        size = await self.measure(conn)
        others = sum(r.held for r in self._held.values())
        if size + others + estimate > self.max_size:
            raise OverBudget(
                f"not started: landing it (about {human_size(estimate)}, what the source sent "
                f"last time) would take the analytical database past destination.max_size "
                f"({format_size(self.max_size)}): {human_size(size)} used"
                + (f", {human_size(others)} reserved by landings under way" if others else "")
            )
        self._held[id(share)] = share
        return share

    def crossing(self, share: Share) -> None:
        """A landing streamed past its estimate: does it still fit?"""
        assert self.max_size is not None
        others = sum(r.held for k, r in self._held.items() if k != id(share))
        size = self.size or 0
        if size + others + share.streamed > self.max_size:
            self._cut[share.key] = share.streamed
            raise OverBudget(
                f"stopped and rolled back: after {human_size(share.streamed)} streamed it "
                f"would take the analytical database past destination.max_size "
                f"({format_size(self.max_size)}): {human_size(size)} used"
            )

    def released(self, share: Share) -> None:
        self._held.pop(id(share), None)
        self._measured_at = -float("inf")  # what it wrote (or gave back) is measured anew

    def landed(self, source_id: str, dataset: str) -> None:
        """A landing committed: what stopped it before is history (the ledger has its bytes)."""
        self._cut.pop((source_id, dataset), None)

    # -- a full disk -----------------------------------------------------------------------------

    @property
    def full(self) -> bool:
        return self.full_since is not None

    async def ended(self, shares: Shares, connect: Connect) -> None:
        """A municipality's landing ended: its shares go back, and what a landing the disk could
        not take left behind is reclaimed now that the landing's own lock no longer keeps VACUUM
        from giving the pages back (even when the pass is being cancelled)."""
        shares.release()
        if self._reclaim:
            with anyio.CancelScope(shield=True), anyio.move_on_after(RECLAIM_SECONDS):
                await self.reclaim(connect)

    def left_dead(self, table: str) -> None:
        """A landing stopped at the budget left its rolled-back rows in `table`: VACUUM gives
        their pages back once the landing has ended, before the size is measured again."""
        self._reclaim.add(table)

    def filled(self, failure: Failure, table: str | None = None) -> None:
        """A landing failed for want of disk space: landing pauses. Said once, in plain words.

        `table` (schema-qualified, quoted): where the failed landing left dead rows, given back
        by `reclaim` before anything lands again; the probe writes in its tablespaces."""
        if table is not None:
            self._reclaim.add(table)
            self._filled.add(table)
        if self.full:
            return
        self.full_since = datetime.now(UTC)
        self.full_reason = failure.reason
        self._probed_at = self.clock()
        log.error(
            "%s: no landing starts until a probe write succeeds (every %gs); free space on its "
            "disk or tablespace",
            OUT_OF_DISK,
            self.probe_interval,
            extra={"event": Event.DISK_FULL, "reason": failure.reason},
        )
        self.on_change(self.report())

    async def reclaim(self, connect: Connect) -> bool:
        """VACUUM (with truncation: the rolled-back COPY's pages go back to the filesystem) of
        every table a failed landing left dead rows in; True when all of them were."""
        done = True
        for table in sorted(self._reclaim):
            try:
                async with _own(connect) as conn:
                    await conn.execute(f"VACUUM (TRUNCATE true) {table}")
            except asyncpg.UndefinedTableError:
                pass
            except Exception as exc:
                done = False
                log.warning(
                    "reclaiming %s after the disk filled: %s",
                    table,
                    classify(exc, Side.DESTINATION).reason,
                    extra={"event": Event.VACUUM_FAILED},
                )
                continue
            self._reclaim.discard(table)
        self._measured_at = -float("inf")
        return done

    async def guard(self, connect: Connect) -> None:
        """Before a landing: raises OutOfDisk while the disk is full. Every probe_interval the
        first one due probes (those due meanwhile wait for its outcome); once its write
        succeeds (and what failed landings left is reclaimed), landing resumes."""
        if not self.full:
            if self._reclaim:
                await self.reclaim(connect)
            return
        async with self._probing:
            if not self.full:
                return  # the probe another landing waited for found room
            if self.clock() - self._probed_at >= self.probe_interval:
                self._probed_at = self.clock()
                if await self.reclaim(connect) and await self._probe(connect):
                    self._resumed()
                    return
        raise self._out_of_disk()

    def _resumed(self) -> None:
        since = self.full_since
        self.full_since, self.full_reason = None, None
        self._filled.clear()
        log.warning(
            "the analytical database has disk space again (out of it since %s): landing resumes",
            f"{since:%Y-%m-%d %H:%M:%S}Z" if since else "?",
            extra={"event": Event.DISK_RESUMED},
        )
        self.on_change(self.report())

    def _out_of_disk(self) -> OutOfDisk:
        since = f"{self.full_since:%Y-%m-%d %H:%M:%S}Z" if self.full_since else "now"
        return OutOfDisk(
            f"not started: {OUT_OF_DISK} (since {since}); landing resumes once a probe write "
            f"succeeds, tried every timeouts.disk_probe ({self.probe_interval:g}s)"
        )

    async def _probe(self, connect: Connect) -> bool:
        """A write of about PROBE_BYTES where the disk filled, rolled back: does it fit now?
        Extending a relation's file writes its new pages at once (temporary ones too), so the
        write meets a full disk without waiting for a checkpoint."""
        try:
            async with _own(connect) as conn:
                for tablespace in await _tablespaces(conn, self._filled):
                    where = f" TABLESPACE {quoting.ident(tablespace)}" if tablespace else ""
                    try:
                        async with conn.transaction():
                            await conn.execute(f"CREATE TEMP TABLE syncd_disk_probe (n int){where}")
                            await conn.execute(
                                "INSERT INTO syncd_disk_probe "
                                "SELECT g FROM pg_catalog.generate_series(1, $1::int) g",
                                _PROBE_ROWS,
                            )
                            raise _RollBack
                    except _RollBack:
                        pass
        except Exception as exc:
            failure = classify(exc, Side.DESTINATION)
            if failure.kind == Kind.DISK_FULL:
                return False
            log.warning(
                "the disk probe could not tell (%s); landing resumes, and will tell",
                failure.reason,
                extra={"event": Event.DISK_RESUMED},
            )
        return True


_TABLESPACES_SQL = """
WITH named AS (SELECT pg_catalog.to_regclass(x) AS oid FROM unnest($1::text[]) AS x)
SELECT DISTINCT coalesce(t.spcname, '')::text AS name
FROM pg_catalog.pg_class c
LEFT JOIN pg_catalog.pg_tablespace t ON t.oid = c.reltablespace
WHERE c.relkind = 'r'
  AND (c.oid IN (SELECT oid FROM named)
       OR c.oid IN (SELECT inhrelid FROM pg_catalog.pg_inherits
                    WHERE inhparent IN (SELECT oid FROM named)))
ORDER BY 1
"""


async def _tablespaces(conn: asyncpg.Connection, tables: set[str]) -> list[str]:
    """Where these tables (or their partitions) keep their files; "" the database's own."""
    rows = await conn.fetch(_TABLESPACES_SQL, sorted(tables)) if tables else []
    return [r["name"] for r in rows] or [""]


class _RollBack(Exception):
    """Ends the probe's transaction: nothing of it stays."""
