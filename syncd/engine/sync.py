"""One municipality: its lock, its ledger rows, its attempts, its root span.

    lock source -> ledger rows 'running' -> [source slot: open snapshot -> destination landing
    (one transaction) -> for each dataset: savepoints, describe, writer slot: DELETE + COPY pipe
    -> ledger rows final -> COMMIT]   (the bracket is one attempt: `engine.attempt`)

Failures are sorted by `errors.classify`:
- a dataset's own final error (bad query, missing table, type conflict) fails that dataset only:
  both savepoints roll back, the snapshot and the landing go on;
- a retryable error with both sides intact (a statement timeout) retries that dataset in the same
  snapshot and landing, after a backoff;
- a lost or stalled source session, or a lost destination connection, restarts the whole
  municipality on a new snapshot and a new landing, so every dataset of the pass still comes from
  one snapshot and lands in one transaction.
Every retry goes through the engine's `RetryPolicy`.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime

import anyio
from opentelemetry import context as otel_context
from opentelemetry import trace

from syncd import ledger
from syncd.config import Dataset, Source
from syncd.engine import spans
from syncd.engine.attempt import PassLost, land_all, open_snapshot
from syncd.engine.diskbudget import OutOfDisk
from syncd.engine.errors import Kind, Side, classify
from syncd.engine.results import DatasetResult, SourceResult
from syncd.engine.shared import Engine
from syncd.ledger import Status
from syncd.logevents import Event

log = logging.getLogger(__name__)


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
    attributes: spans.Attributes = {
        "syncd.source.id": source.id,
        "server.address": source.dsn.host,
        "server.port": source.dsn.port,
    }
    if source.name:
        attributes["syncd.source.name"] = source.name
    if source.bastion is not None:  # server.* stay the database's, as the bastion sees it
        attributes["syncd.bastion"] = source.bastion.name
    with spans.span(
        engine.tracer,
        spans.SpanName.SYNC,
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
            if result.status in (Status.FAILED, Status.ABORTED):
                reasons = [f"{d.name}: {d.error}" for d in result.datasets.values() if d.error]
                span.set_status(
                    trace.Status(trace.StatusCode.ERROR, result.error or "; ".join(reasons)[:500])
                )
                spans.source_failed(span, result.status == Status.ABORTED)
            elif result.status == Status.SKIPPED:
                span.set_attribute("syncd.skipped", result.error or "")
            engine.progress.source_finished(result)
    try:
        await engine.destination.vacuum.run_due()
    except Exception as exc:  # never fails a sync: autovacuum does the same, later
        log.warning("vacuum: %s", classify(exc).reason, extra={"event": Event.VACUUM_FAILED})
    # a column type changing online goes on outside any landing (logs its own failures)
    await engine.destination.retypes.run_due()
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
    what = f"source {source.id}: the destination"
    try:
        locked = await engine.retry.call(
            lambda: engine.locks.try_lock(source.id), what, side=Side.DESTINATION, source=source.id
        )
        if not locked:
            _skip(result, "another syncd instance is syncing this source now")
            return
        if check_others:
            synced = await engine.retry.call(
                lambda: _synced_since(engine, source, datasets),
                what,
                side=Side.DESTINATION,
                source=source.id,
            )
            if synced is not None and (known_success is None or synced > known_success):
                result.synced_elsewhere = synced
                _skip(result, f"already synced by another instance at {synced:%H:%M:%S}")
                return
        result.pass_id = await engine.retry.call(
            lambda: _begin(engine, source, datasets), what, side=Side.DESTINATION, source=source.id
        )
        span.set_attribute("syncd.pass.id", result.pass_id)
        await _sync_until_settled(engine, source, datasets, result, span)
    except anyio.get_cancelled_exc_class():
        for d in result.datasets.values():
            if d.status not in (Status.OK, Status.FAILED):
                d.fail("cancelled: syncd was stopping", Status.ABORTED)
        raise
    except Exception as exc:  # the destination is gone, or a bug: this source fails, others go on
        failure = classify(exc)
        if failure.kind == Kind.DISK_FULL and failure.side != Side.SOURCE:
            engine.disk.filled(failure)
        result.error = failure.reason
        for d in result.datasets.values():
            if d.status not in (Status.OK, Status.FAILED):
                d.fail(failure.reason)
        spans.failed(span, failure)
        log.error(
            "source %s failed: %s",
            source.id,
            failure.reason,
            extra={"event": Event.SYNC_FAILED, "source": source.id},
        )
    finally:
        result.settle()
        with anyio.CancelScope(shield=True), anyio.move_on_after(15):
            await _finish(engine, source, result)
            if locked:
                await engine.locks.unlock(source.id)


def _skip(result: SourceResult, reason: str) -> None:
    result.status, result.error = Status.SKIPPED, reason
    for d in result.datasets.values():
        d.fail(reason, Status.SKIPPED)


async def _synced_since(
    engine: Engine, source: Source, datasets: Sequence[Dataset]
) -> datetime | None:
    """When every one of these datasets last succeeded (the oldest), if all ever did."""
    async with engine.destination.acquire() as conn:
        return await ledger.oldest_success(conn, source.id, [d.name for d in datasets])


async def _begin(engine: Engine, source: Source, datasets: Sequence[Dataset]) -> int:
    async with engine.destination.acquire() as conn:
        pass_id = await ledger.begin_pass(
            conn, source.id, [d.name for d in datasets], engine.instance
        )
        stale = await ledger.abort_stale(conn, source.id, pass_id)
    if stale:
        log.warning(
            "source %s: %d ledger rows of an interrupted pass marked aborted",
            source.id,
            stale,
            extra={"event": Event.PASS_ABORTED},
        )
    return pass_id


async def _sync_until_settled(
    engine: Engine,
    source: Source,
    datasets: Sequence[Dataset],
    result: SourceResult,
    span: trace.Span,
) -> None:
    retry = engine.retry
    attempt = 0
    while True:
        attempt += 1
        # what failed for good stays failed; everything else is landed again, together
        pending = [d for d in datasets if result.datasets[d.name].status != Status.FAILED]
        for d in pending:
            result.datasets[d.name].status = Status.PENDING
        try:
            # while the destination is out of disk space nothing starts (the one log line
            # about it is the disk's); every timeouts.disk_probe one sync probes
            await engine.disk.guard(engine.destination.connect)
        except OutOfDisk as exc:
            failure = classify(exc)
            result.error = failure.reason
            for d in pending:
                engine.progress.refused(failure)
                result.datasets[d.name].fail(failure.reason)
            return
        try:
            async with engine.limits.source_slot(source.host_key):
                session = await open_snapshot(engine, source, pending, result)
                try:
                    await land_all(engine, session, source, pending, result)
                finally:
                    await session.close()
            break
        except PassLost as lost:
            failure = lost.failure
            if retry.allows(failure, attempt):
                what = f"source {source.id} (all its datasets, on a new snapshot)"
                await retry.pause(failure, attempt, what, source=source.id)
                continue
            result.error = failure.reason
            spans.failed(span, failure)
            for d in pending:
                result.datasets[d.name].fail(failure.reason)
            break


async def _finish(engine: Engine, source: Source, result: SourceResult) -> None:
    """Ledger rows final, unless they committed with the rows. Retried; never raises."""
    pass_id = result.pass_id
    if result.recorded or pass_id is None:
        return

    async def record() -> None:
        async with engine.destination.acquire() as conn:
            await ledger.finish_pass(
                conn, pass_id, source.id, [d.entry() for d in result.datasets.values()]
            )

    try:
        await engine.retry.call(
            record, f"source {source.id}: the ledger", side=Side.DESTINATION, source=source.id
        )
    except Exception as exc:
        log.error(
            "source %s: could not record the pass in the ledger: %s",
            source.id,
            classify(exc).reason,
            extra={"event": Event.LEDGER_WRITE_FAILED, "source": source.id},
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
        log.warning(
            "cleaned up after an interrupted run: %d ledger rows marked aborted",
            aborted,
            extra={"event": Event.INTERRUPTED_RUN_CLEANED},
        )
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
