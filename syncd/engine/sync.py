"""One municipality: its snapshot, its datasets in order, retries, its landing, its ledger rows.

    lock source -> ledger rows 'running' -> [source slot: open snapshot -> destination landing
    (one transaction) -> for each dataset: savepoints, describe, writer slot: DELETE + COPY pipe
    -> ledger rows final -> COMMIT]

Failures are sorted by `errors.classify`:
- a dataset's own final error (bad query, missing table, type conflict) fails that dataset only:
  both savepoints roll back, the snapshot and the landing go on;
- a retryable error with both sides intact (a statement timeout) retries that dataset in the same
  snapshot and landing, after a backoff;
- a lost or stalled source session, or a lost destination connection, restarts the whole
  municipality on a new snapshot and a new landing, so every dataset of the pass still comes from
  one snapshot and lands in one transaction.
"""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from functools import partial

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace

from syncd import ledger
from syncd.config import Config, Dataset, Source
from syncd.engine import downstream, incremental, spans
from syncd.engine.copy import Transfer
from syncd.engine.destination import Destination, Landing, Target
from syncd.engine.errors import Failure, FinalError, classify
from syncd.engine.limits import Limits
from syncd.engine.shape import Shape
from syncd.engine.source import SourceSession

log = logging.getLogger("syncd.sync")

OK, FAILED, ABORTED, SKIPPED = "ok", "failed", "aborted", "skipped"


def now() -> datetime:
    return datetime.now(UTC)


@dataclass(slots=True)
class DatasetResult:
    name: str
    status: str = "pending"  # pending -> loaded -> ok | failed | aborted
    rows: int = 0
    bytes: int = 0
    attempts: int = 0
    error: str | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None
    mode: str | None = None  # snapshot | full_refresh | incremental
    watermark: str | None = None

    def fail(self, reason: str, status: str = FAILED) -> None:
        self.status, self.error, self.ended_at = status, reason, now()

    def entry(self, *, landing: bool = False) -> ledger.Entry:
        """The ledger row; with `landing`, as the landing's commit will make it (loaded: ok)."""
        status = OK if landing and self.status == "loaded" else self.status
        done = status in (OK, FAILED, ABORTED)
        return ledger.Entry(
            self.name,
            status if done else ABORTED,
            self.started_at,
            self.ended_at,
            self.rows if status == OK else None,
            self.bytes if status == OK else None,
            self.attempts,
            self.error,
            self.mode,
            self.watermark if status == OK else None,
        )


@dataclass(slots=True)
class SourceResult:
    source_id: str
    datasets: dict[str, DatasetResult]
    pass_id: int | None = None
    status: str = "running"  # ok | failed | aborted | skipped
    error: str | None = None  # why the whole source failed, when it did
    started_at: datetime = field(default_factory=now)
    ended_at: datetime | None = None
    synced_elsewhere: datetime | None = None  # skipped: another instance synced it then
    recorded: bool = False  # the ledger rows were committed with the rows themselves

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.datasets.values() if d.status == OK)

    @property
    def bytes(self) -> int:
        return sum(d.bytes for d in self.datasets.values() if d.status == OK)

    def settle(self) -> None:
        statuses = {d.status for d in self.datasets.values()}
        if self.status != SKIPPED:
            self.status = OK if statuses <= {OK} else (ABORTED if ABORTED in statuses else FAILED)
        self.ended_at = now()


class Progress:
    """What a pass reports as it goes; the TTY display and the daemon's status override it."""

    def source_started(self, source_id: str) -> None: ...

    def source_finished(self, result: SourceResult) -> None: ...

    def bytes_moved(self, count: int) -> None: ...

    def retried(self, source_id: str, dataset: str | None, failure: Failure) -> None: ...


class Fanout(Progress):
    """Several listeners as one."""

    def __init__(self, *listeners: Progress):
        self.listeners = listeners

    def source_started(self, source_id: str) -> None:
        for listener in self.listeners:
            listener.source_started(source_id)

    def source_finished(self, result: SourceResult) -> None:
        for listener in self.listeners:
            listener.source_finished(result)

    def bytes_moved(self, count: int) -> None:
        for listener in self.listeners:
            listener.bytes_moved(count)

    def retried(self, source_id: str, dataset: str | None, failure: Failure) -> None:
        for listener in self.listeners:
            listener.retried(source_id, dataset, failure)


class SourceLocks:
    """Session advisory locks on the destination: one syncd at a time per municipality.

    Held on one dedicated connection, so they vanish with it when a syncd dies. If that
    connection drops while syncd lives, the locks are taken again on a new one; a source that
    another instance grabbed in between is reported lost, and its sync does not commit.
    """

    def __init__(self, destination: Destination):
        self.destination = destination
        self._conn = None
        self._lock = anyio.Lock()
        self._held: set[str] = set()

    @staticmethod
    def key(source_id: str) -> int:
        digest = hashlib.sha256(b"syncd-source:" + source_id.encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)

    async def _connection(self):
        if self._conn is None or self._conn.is_closed():
            reconnecting = self._conn is not None
            self._conn = await self.destination.connect()
            if reconnecting:
                for source_id in sorted(self._held):
                    if not await self._take(source_id):
                        self._held.discard(source_id)
                        log.error(
                            "source %s: lost its lock while the destination connection was down",
                            source_id,
                            extra={"source": source_id},
                        )
        return self._conn

    async def _take(self, source_id: str) -> bool:
        return bool(
            await self._conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key(source_id))
        )

    async def try_lock(self, source_id: str) -> bool:
        async with self._lock:
            await self._connection()
            if await self._take(source_id):
                self._held.add(source_id)
                return True
            return False

    async def confirm(self, source_id: str) -> bool:
        """Still ours? (Reconnects and re-takes the locks if their connection dropped.)"""
        async with self._lock:
            await self._connection()
            return source_id in self._held

    async def unlock(self, source_id: str) -> None:
        async with self._lock:
            self._held.discard(source_id)
            if self._conn is not None and not self._conn.is_closed():
                await self._conn.execute("SELECT pg_advisory_unlock($1)", self.key(source_id))

    async def close(self) -> None:
        if self._conn is not None:
            conn, self._conn = self._conn, None
            self._held.clear()
            try:
                await conn.close(timeout=5)
            except Exception:
                conn.terminate()


@dataclass(eq=False)
class Engine:
    """What every municipality sync shares."""

    config: Config
    destination: Destination
    limits: Limits
    locks: SourceLocks
    instance: str = field(default_factory=ledger.instance_name)
    progress: Progress = field(default_factory=Progress)
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep
    tracer: trace.Tracer = field(default_factory=spans.tracer)

    def backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter: half fixed, half random, capped."""
        retry = self.config.retry
        delay = min(retry.max_backoff, retry.backoff * 2 ** max(attempt - 1, 0))
        return delay / 2 + random.uniform(0, delay / 2)


class _PassLost(Exception):
    """The pass's source snapshot or destination transaction is gone: everything again."""

    def __init__(self, failure: Failure):
        super().__init__(failure.reason)
        self.failure = failure


async def sync_source(
    engine: Engine,
    source: Source,
    datasets: Sequence[Dataset],
    *,
    check_others: bool = False,
    known_success: datetime | None = None,
) -> SourceResult:
    """Sync one municipality. With `check_others`, skip it when the ledger shows that another
    instance synced every dataset after `known_success` (what this instance knew).

    One trace per municipality sync: this is its root span (a new trace, whatever called us)."""
    result = SourceResult(source.id, {d.name: DatasetResult(d.name) for d in datasets})
    attributes = {
        "syncd.source.id": source.id,
        "server.address": source.dsn.host,
        "server.port": source.dsn.port,
    }
    if source.name:
        attributes["syncd.source.name"] = source.name
    with spans.span(
        engine.tracer,
        f"sync {source.id}",
        attributes,
        client=False,
        context=otel_context.Context(),
    ) as span:
        engine.progress.source_started(source.id)
        try:
            await _locked_sync(engine, source, datasets, result, span, check_others, known_success)
        finally:
            span.set_attribute("syncd.status", result.status)
            span.set_attribute("syncd.rows", result.rows)
            span.set_attribute("syncd.bytes", result.bytes)
            if result.status in (FAILED, ABORTED):
                reasons = [f"{d.name}: {d.error}" for d in result.datasets.values() if d.error]
                span.set_status(
                    trace.Status(trace.StatusCode.ERROR, result.error or "; ".join(reasons)[:500])
                )
                spans.source_failed(span, result.status == ABORTED)
            elif result.status == SKIPPED:
                span.set_attribute("syncd.skipped", result.error or "")
            engine.progress.source_finished(result)
    try:
        await engine.destination.vacuum.run_due()
    except Exception as exc:  # never fails a sync: autovacuum does the same, later
        log.warning("vacuum: %s", classify(exc).reason)
    return result


async def _locked_sync(
    engine: Engine,
    source: Source,
    datasets: Sequence[Dataset],
    result: SourceResult,
    span: trace.Span,
    check_others: bool,
    known_success: datetime | None,
) -> None:
    locked = False
    try:
        locked = await _retrying(engine, lambda: engine.locks.try_lock(source.id))
        if not locked:
            _skip(result, "another syncd instance is syncing this source now")
            return
        if check_others:
            synced = await _retrying(engine, lambda: _synced_since(engine, source, datasets))
            if synced is not None and (known_success is None or synced > known_success):
                result.synced_elsewhere = synced
                _skip(result, f"already synced by another instance at {synced:%H:%M:%S}")
                return
        result.pass_id = await _retrying(engine, lambda: _begin(engine, source, datasets))
        span.set_attribute("syncd.pass.id", result.pass_id)
        await _sync(engine, source, datasets, result, span)
    except anyio.get_cancelled_exc_class():
        for d in result.datasets.values():
            if d.status not in (OK, FAILED):
                d.fail("cancelled: syncd was stopping", ABORTED)
        raise
    except Exception as exc:  # the destination is gone, or a bug: this source fails, others go on
        failure = classify(exc)
        result.error = failure.reason
        for d in result.datasets.values():
            if d.status not in (OK, FAILED):
                d.fail(failure.reason)
        spans.failed(span, failure)
        log.error("source %s failed: %s", source.id, failure.reason, extra={"source": source.id})
    finally:
        result.settle()
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            await _finish(engine, source, result)
            if locked:
                await engine.locks.unlock(source.id)


def _skip(result: SourceResult, reason: str) -> None:
    result.status, result.error = SKIPPED, reason
    for d in result.datasets.values():
        d.fail(reason, SKIPPED)


async def _synced_since(
    engine: Engine, source: Source, datasets: Sequence[Dataset]
) -> datetime | None:
    """When every one of these datasets last succeeded (the oldest), if all ever did."""
    async with engine.destination.acquire() as conn:
        return await ledger.oldest_success(conn, source.id, [d.name for d in datasets])


async def _retrying(engine: Engine, operation: Callable[[], Awaitable]):
    """A destination round trip, retried while the failure is retryable."""
    attempt = 0
    while True:
        attempt += 1
        try:
            return await operation()
        except Exception as exc:
            failure = classify(exc, "destination")
            if not failure.retryable or attempt >= engine.config.retry.attempts:
                raise
            await engine.sleep(engine.backoff(attempt))


async def _begin(engine: Engine, source: Source, datasets: Sequence[Dataset]) -> int:
    async with engine.destination.acquire() as conn:
        pass_id = await ledger.begin_pass(
            conn, source.id, [d.name for d in datasets], engine.instance
        )
        stale = await ledger.abort_stale(conn, source.id, pass_id)
    if stale:
        log.warning(
            "source %s: %d ledger rows of an interrupted pass marked aborted", source.id, stale
        )
    return pass_id


async def _sync(
    engine: Engine,
    source: Source,
    datasets: Sequence[Dataset],
    result: SourceResult,
    span: trace.Span,
) -> None:
    retry = engine.config.retry
    attempt = 0
    while True:
        attempt += 1
        # what failed for good stays failed; everything else is landed again, together
        pending = [d for d in datasets if result.datasets[d.name].status != FAILED]
        for d in pending:
            result.datasets[d.name].status = "pending"
        try:
            async with engine.limits.source_slot(source.dsn.host_key):
                session = await _open(engine, source, pending, result)
                try:
                    await _land_all(engine, session, source, pending, result)
                finally:
                    await session.close()
            break
        except _PassLost as lost:
            failure = lost.failure
            if failure.retryable and attempt < retry.attempts:
                engine.progress.retried(source.id, None, failure)
                delay = engine.backoff(attempt)
                spans.retried(span, failure, attempt + 1, delay)
                log.warning(
                    "source %s: %s; again on a new snapshot in %.1fs (attempt %d of %d)",
                    source.id,
                    failure.reason,
                    delay,
                    attempt + 1,
                    retry.attempts,
                    extra={"source": source.id, "attempt": attempt + 1, "reason": failure.reason},
                )
                await engine.sleep(delay)
                continue
            result.error = failure.reason
            spans.failed(span, failure)
            for d in pending:
                result.datasets[d.name].fail(failure.reason)
            break


async def _open(
    engine: Engine, source: Source, pending: Sequence[Dataset], result: SourceResult
) -> SourceSession:
    try:
        return await SourceSession.open(source, engine.config.timeouts)
    except Exception as exc:
        failure = classify(exc, "source")
        if isinstance(exc, TimeoutError):
            failure = Failure(
                True,
                f"no answer from {source.dsn.host_key} within "
                f"timeouts.connect ({engine.config.timeouts.connect:g}s)",
                "timeout",
                "source",
            )
        for d in pending:
            result.datasets[d.name].attempts += 1
        raise _PassLost(failure) from exc


async def _land_all(
    engine: Engine,
    session: SourceSession,
    source: Source,
    pending: Sequence[Dataset],
    result: SourceResult,
) -> None:
    """Every pending dataset into one destination transaction, committed with the ledger rows:
    a reader sees all of this municipality's previous rows or all of its new ones."""
    destination = engine.destination
    try:
        opened: Landing | None = None  # for the except: was it the landing that was lost?
        async with destination.landing(source.id) as landing:
            opened = landing
            for dataset in pending:
                await _copy_dataset(
                    engine, session, landing, source, dataset, result.datasets[dataset.name]
                )
            loaded = [d for d in result.datasets.values() if d.status == "loaded"]
            if not loaded:
                return  # nothing to make visible; the ledger says why in _finish
            if not await engine.locks.confirm(source.id):
                raise FinalError(
                    "lost this source's lock while the destination connection was down; "
                    "not committing what another instance may be syncing"
                )
            buckets = await landing.buckets()
            attributes = spans.db_attributes(destination.settings.dsn, "COMMIT")
            attributes["syncd.datasets"] = len(loaded)
            with spans.span(engine.tracer, f"commit {source.id}", attributes):
                ended = now()
                for res in loaded:
                    res.ended_at = ended
                # the ledger rows and the notification say `ok` for what this commit makes
                # visible; the results say so only once it has (a cancel before it rolls back)
                if result.pass_id is not None:
                    await ledger.finish_pass(
                        landing.conn,
                        result.pass_id,
                        source.id,
                        [d.entry(landing=True) for d in result.datasets.values()],
                    )
                # in the transaction that makes the rows visible: heard only once they are
                await downstream.announce(
                    landing.conn, engine.config.destination.notify_channel, _announcement(result)
                )
                # never cancelled half-way: a commit sent is a commit known
                with anyio.CancelScope(shield=True):
                    await landing.commit()
                    for res in loaded:
                        res.status = OK
                    result.recorded = True
    except (_PassLost, anyio.get_cancelled_exc_class()):
        raise
    except Exception as exc:
        if result.recorded:  # it committed; what failed after it (a pool reset) changes nothing
            log.warning("source %s: after the commit: %s", source.id, classify(exc).reason)
            destination.vacuum.committed(landing, buckets)
            return
        # the commit (or the last statements) failed: nothing landed
        failure = classify(exc, "destination")
        if failure.code != "connection" and opened is not None and opened.lost is not None:
            failure = opened.lost  # asyncpg's words for it talk about the pool
        if failure.retryable:
            raise _PassLost(failure) from exc
        for res in result.datasets.values():
            if res.status == "loaded":
                res.fail(failure.reason)
        return
    destination.vacuum.committed(landing, buckets)


async def _copy_dataset(
    engine: Engine,
    session: SourceSession,
    landing: Landing,
    source: Source,
    dataset: Dataset,
    res: DatasetResult,
) -> None:
    """Land one dataset in the open transaction; a dataset that fails for good is recorded in
    `res` and rolled back alone."""
    attributes = spans.db_attributes(source.dsn, "COPY", dataset.table)
    attributes.update({"syncd.dataset": dataset.name, "syncd.dataset.kind": dataset.kind})
    with spans.span(engine.tracer, f"COPY {dataset.name}", attributes) as span:
        await _copy_attempts(engine, session, landing, source, dataset, res, span)
        span.set_attribute("syncd.attempts", res.attempts)
        if res.status == "loaded":
            span.set_attribute("db.response.returned_rows", res.rows)
            span.set_attribute("syncd.rows", res.rows)
            span.set_attribute("syncd.bytes", res.bytes)


async def _copy_attempts(
    engine: Engine,
    session: SourceSession,
    landing: Landing,
    source: Source,
    dataset: Dataset,
    res: DatasetResult,
    span: trace.Span,
) -> None:
    retry = engine.config.retry
    fields = {"source": source.id, "dataset": dataset.name}
    while True:
        res.attempts += 1
        res.started_at = res.started_at or now()
        try:
            async with session.savepoint(), landing.savepoint():
                shape = await session.describe(dataset)
                target, transfer = await _land(engine, landing, session, shape, dataset)
        except Exception as exc:
            failure = classify(exc)
            if landing.lost is not None:
                failure = landing.lost if failure.code != "connection" else failure
                raise _PassLost(failure) from exc  # the transaction is gone: all again
            if failure.side == "destination" and failure.code == "connection":
                raise _PassLost(failure) from exc
            lost = failure.side == "source" and failure.code == "connection"
            if failure.code == "IdleStreamTimeout" or lost or not session.alive:
                await session.abort()  # the snapshot is gone or hung: a new one for everything
                spans.retried(span, failure, res.attempts, 0.0)
                raise _PassLost(failure) from exc
            engine.destination.forget(dataset.name)
            if failure.retryable and res.attempts < retry.attempts:
                engine.progress.retried(source.id, dataset.name, failure)
                delay = engine.backoff(res.attempts)
                spans.retried(span, failure, res.attempts + 1, delay)
                log.warning(
                    "source %s dataset %s: %s; retry in %.1fs (attempt %d of %d)",
                    source.id,
                    dataset.name,
                    failure.reason,
                    delay,
                    res.attempts + 1,
                    retry.attempts,
                    extra={**fields, "attempt": res.attempts + 1, "reason": failure.reason},
                )
                await engine.sleep(delay)
                continue
            spans.failed(span, failure)
            log.warning(
                "source %s dataset %s failed: %s",
                source.id,
                dataset.name,
                failure.reason,
                extra={**fields, "reason": failure.reason},
            )
            res.fail(failure.reason)
            return
        res.rows, res.bytes, res.mode, res.watermark = (
            transfer.rows,
            transfer.bytes,
            target.mode,
            target.watermark,
        )
        res.status = "loaded"  # visible when the pass commits
        span.set_attribute("syncd.mode", target.mode)
        if target.watermark is not None:
            span.set_attribute("syncd.watermark", target.watermark)
        if target.missing:
            span.add_event("columns not added yet", {"syncd.columns": list(target.missing)})
        log.info(
            "source %s dataset %s: %d rows, %d bytes in %.2fs",
            source.id,
            dataset.name,
            transfer.rows,
            transfer.bytes,
            transfer.seconds,
            extra={
                **fields,
                "rows": transfer.rows,
                "bytes": transfer.bytes,
                "seconds": round(transfer.seconds, 3),
            },
        )
        return


async def _land(
    engine: Engine, landing: Landing, session: SourceSession, shape, dataset: Dataset
) -> tuple[Target, Transfer]:
    """Replace the municipality's rows (snapshots, full refreshes) or upsert a window
    (incremental), in the pass's transaction."""
    destination = engine.destination
    spec = dataset.incremental
    target = await destination.prepare(shape, session.source.id, spec.key if spec else ())
    if target.missing:
        shape = shape.only(target.columns)
    window = None
    if spec is not None:
        cursor_type = shape.column(spec.cursor).type
        for column in spec.key:
            shape.column(column)
        state = await landing.watermark(target)
        target = replace(target, cursor=spec.cursor)
        if (
            state is None
            or state[0] is None
            or incremental.refresh_due(spec, state[1], now())
            or not incremental.readable(spec, cursor_type, state[0])
        ):
            top = await session.max_cursor(shape, spec.cursor, incremental.cap(spec, cursor_type))
            target = replace(target, mode="full_refresh", watermark=top)
        else:
            window = incremental.window(spec, cursor_type, state[0])
            target = replace(target, mode="incremental", watermark=state[0])
    where = f"{destination.schema}.{target.dataset}"
    with spans.span(
        engine.tracer,
        f"COPY {where}",
        spans.db_attributes(destination.settings.dsn, "COPY", where),
    ):
        async with engine.limits.writers:
            return await _copy(engine, landing, session, shape, target, window)


async def _copy(
    engine: Engine,
    landing: Landing,
    session: SourceSession,
    shape: Shape,
    target: Target,
    window: incremental.CursorWindow | None,
) -> tuple[Target, Transfer]:
    timeouts = engine.config.timeouts
    if window is None:
        transfer = await landing.replace(
            target,
            partial(session.copy_out, shape),
            idle_timeout=timeouts.idle_stream,
            on_bytes=engine.progress.bytes_moved,
        )
        if target.mode == "full_refresh":  # the rows and their watermark, together
            await landing.store_watermark(target, full=True)
        return target, transfer
    transfer, watermark = await landing.upsert(
        target,
        partial(session.copy_out, shape, window=window),
        cap=window.cap,
        idle_timeout=timeouts.idle_stream,
        on_bytes=engine.progress.bytes_moved,
    )
    target = replace(target, watermark=watermark)
    await landing.store_watermark(target, full=False)
    return target, transfer


def _announcement(result: SourceResult) -> str:
    """The notification's payload: the pass as it commits (loaded datasets are `ok` then)."""
    outcomes = []
    for d in result.datasets.values():
        status = OK if d.status in (OK, "loaded") else d.status
        outcomes.append(
            downstream.DatasetOutcome(d.name, status, d.rows if status == OK else None, d.mode)
        )
    return downstream.payload(result.source_id, result.pass_id, outcomes, now())


async def _finish(engine: Engine, source: Source, result: SourceResult) -> None:
    """Ledger rows final, unless they committed with the rows. Retried; never raises."""
    if result.recorded or result.pass_id is None:
        return

    async def record() -> None:
        async with engine.destination.acquire() as conn:
            await ledger.finish_pass(
                conn, result.pass_id, source.id, [d.entry() for d in result.datasets.values()]
            )

    try:
        await _retrying(engine, record)
    except Exception as exc:
        log.error(
            "source %s: could not record the pass in the ledger: %s",
            source.id,
            classify(exc).reason,
            extra={"source": source.id},
        )


async def sweep(engine: Engine) -> int:
    """What a dead syncd left: `running` ledger rows of sources no live instance holds (its
    uncommitted rows died with its connections). Returns the ledger rows aborted."""
    async with engine.destination.acquire() as conn:
        running = await ledger.running_sources(conn)
    aborted = 0
    for source_id in sorted(running):
        if not await engine.locks.try_lock(source_id):
            continue  # another instance is syncing it: those are its rows
        try:
            async with engine.destination.acquire() as conn:
                aborted += await ledger.abort_orphans(conn, source_id)
        finally:
            await engine.locks.unlock(source_id)
    if aborted:
        log.warning("cleaned up after an interrupted run: %d ledger rows marked aborted", aborted)
    return aborted


async def sync_many(
    engine: Engine, sources: Sequence[Source], datasets: Sequence[Dataset]
) -> list[SourceResult]:
    """Every source at once, as far as the limits allow; results in the order given."""
    results: dict[str, SourceResult] = {}

    async def one(source: Source) -> None:
        results[source.id] = await sync_source(engine, source, datasets)

    async with anyio.create_task_group() as tg:
        for source in sources:
            tg.start_soon(one, source)
    return [results[s.id] for s in sources]
