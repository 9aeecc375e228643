"""The vacuum lane: what the landings deleted becomes free space for the next pass."""

from __future__ import annotations

import itertools
import logging
import math
import time
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager

import asyncpg

from syncd import config
from syncd.engine import quoting
from syncd.engine.errors import classify
from syncd.logevents import Event

log = logging.getLogger(__name__)

Acquire = Callable[[], AbstractAsyncContextManager[asyncpg.Connection]]


class Vacuum:
    """Dead rows per bucket, and VACUUM once enough of a bucket is dead and removable.

    A pass deletes each municipality's previous rows; until VACUUM marks that space free, the next
    pass can only grow the table. A bucket is vacuumed once a fifth of its rows are dead, counting
    only rows deleted by landings that committed before every landing of ours still open began:
    VACUUM cannot remove what an open snapshot may still see, and trying would only cost. At the
    end of a `once` pass (or when the daemon goes idle) every bucket that dead is vacuumed at
    once. That keeps each dataset within about twice a fresh load: a municipality's new rows are
    written before its old ones die, so its bucket briefly holds both; less dead space is
    autovacuum's (its default threshold is the same fifth)."""

    THRESHOLD = 0.2
    MIN_INTERVAL = 10.0  # seconds between two vacuums of one bucket (others' snapshots hold it)

    def __init__(self, acquire: Acquire, schema: str, timeouts: config.Timeouts):
        self._acquire = acquire
        self.schema = schema
        self.timeouts = timeouts
        self._seq = itertools.count()
        self._open: set[int] = set()  # when each open landing began (a sequence number)
        self._bucket: dict[tuple[str, str], str] = {}
        self._dead: dict[str, list[tuple[int, int]]] = {}  # bucket -> (committed at, rows)
        self._size: dict[str, int] = {}  # bucket -> its rows at its last vacuum, then written
        self._last: dict[str, float] = {}  # bucket -> when it was last vacuumed
        self._running: set[str] = set()

    def bucket_of(self, dataset: str, source_id: str) -> str | None:
        return self._bucket.get((dataset, source_id))

    def found_bucket(self, dataset: str, source_id: str, bucket: str) -> None:
        """Where a municipality's rows of a dataset live, as a landing found it out."""
        self._bucket[(dataset, source_id)] = bucket

    def opened(self) -> int:
        seq = next(self._seq)
        self._open.add(seq)
        return seq

    def closed(self, seq: int) -> None:
        self._open.discard(seq)

    def committed(
        self,
        source_id: str,
        buckets: dict[str, str],
        deleted: dict[str, int],
        landed: dict[str, int],
    ) -> None:
        """A landing committed: per dataset, its bucket, the rows it deleted and wrote."""
        seq = next(self._seq)
        for dataset, bucket in buckets.items():
            self._bucket[(dataset, source_id)] = bucket
            dead = deleted.get(dataset, 0)
            if dead:
                self._dead.setdefault(bucket, []).append((seq, dead))
            self._size[bucket] = self._size.get(bucket, 0) + landed.get(dataset, 0)

    def _removable(self, bucket: str) -> int:
        horizon = min(self._open, default=math.inf)
        return sum(rows for seq, rows in self._dead.get(bucket, ()) if seq < horizon)

    def _dead_enough(self, bucket: str) -> bool:
        return self._removable(bucket) >= max(1, self.THRESHOLD * self._size.get(bucket, 0))

    def due(self) -> list[str]:
        now = time.monotonic()
        return [
            b
            for b in self._dead
            if b not in self._running
            and now - self._last.get(b, -math.inf) >= self.MIN_INTERVAL
            and self._dead_enough(b)
        ]

    async def run_due(self) -> None:
        """The buckets due after a landing. One this process has not measured yet (its first
        landing there since start) is sized by the catalog's estimate first: counted from
        zero, the few rows a pass wrote would make the few it deleted look like a fifth, and
        every such pass would vacuum its whole bucket."""
        due = self.due()
        if any(b not in self._last for b in due):
            await self._measure([b for b in due if b not in self._last])
            due = [b for b in due if self._dead_enough(b)]
        await self._vacuum(due)

    async def flush(self) -> None:
        """Every bucket a fifth dead, however recently vacuumed: at the end of a `once` pass, or
        when the daemon is idle, no landing of ours holds back what VACUUM may remove. A bucket
        less dead is left to autovacuum: a landing writes only what changed, and a pass over a
        municipality with 2% of its rows changed would otherwise read its whole bucket again
        for 2% of dead rows. A bucket this process has not measured yet is sized by the
        catalog's estimate (a `once` knows only what it wrote itself)."""
        candidates = [b for b in self._dead if b not in self._running]
        unmeasured = [b for b in candidates if b not in self._last]
        if unmeasured:
            await self._measure(unmeasured)
        await self._vacuum(sorted(b for b in candidates if self._dead_enough(b)))

    async def _measure(self, buckets: Sequence[str]) -> None:
        """Buckets not vacuumed by this process yet, sized by the catalog's estimate (at least
        what this process wrote there)."""
        async with self._acquire() as conn:
            rows = await conn.fetch(
                "SELECT c.relname::text AS name, c.reltuples::bigint AS rows "
                "FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = ANY($2)",
                self.schema,
                list(buckets),
            )
        for r in rows:  # reltuples: -1 when never vacuumed nor analyzed
            self._size[r["name"]] = max(self._size.get(r["name"], 0), int(r["rows"]))

    async def _vacuum(self, buckets: Sequence[str]) -> None:
        todo = [b for b in buckets if b not in self._running]
        if not todo:
            return
        self._running.update(todo)
        try:
            async with self._acquire() as conn:
                for bucket in todo:
                    horizon = min(self._open, default=math.inf)
                    name = quoting.qualified(self.schema, bucket)
                    self._last[bucket] = time.monotonic()
                    try:
                        # TRUNCATE false: truncating the file end needs a lock readers would
                        # queue behind; the space is reused by the next pass anyway
                        # no ANALYZE: sampling a bucket costs more than vacuuming it, and
                        # autovacuum keeps the statistics as rows change
                        await conn.execute(
                            f"VACUUM (TRUNCATE false) {name}", timeout=self.timeouts.statement
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
                        log.warning(
                            "vacuum of %s failed: %s",
                            bucket,
                            classify(exc).reason,
                            extra={"event": Event.VACUUM_FAILED},
                        )
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
