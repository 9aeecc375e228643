"""One attempt at a municipality: a source snapshot, a destination landing, every dataset in
order, then the commit with the ledger rows and the notification.

A dataset's own failure stays in its savepoints; a retryable one is tried again in the same
snapshot and landing. When the snapshot or the landing itself is lost, `PassLost` asks the caller
(`sync._sync`) for a whole new attempt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from functools import partial

import anyio
from opentelemetry import trace

from syncd import ledger
from syncd.config import Dataset, Source
from syncd.engine import delta, downstream, fpstore, incremental, spans
from syncd.engine.diskbudget import OutOfDisk, OverBudget, Share, Shares
from syncd.engine.errors import Failure, FinalError, Kind, Side, classify, on_side
from syncd.engine.landing import Landed, Landing, Write
from syncd.engine.results import DatasetResult, SourceResult, now
from syncd.engine.shape import Shape
from syncd.engine.shared import Engine
from syncd.engine.source import SourceSession
from syncd.engine.tables import Target
from syncd.ledger import Mode, Status
from syncd.logevents import Event

log = logging.getLogger(__name__)


class PassLost(Exception):
    """The pass's source snapshot or destination transaction is gone: everything again."""

    def __init__(self, failure: Failure):
        super().__init__(failure.reason)
        self.failure = failure


async def open_snapshot(
    engine: Engine, source: Source, pending: Sequence[Dataset], result: SourceResult
) -> SourceSession:
    try:
        return await SourceSession.open(
            source,
            engine.config.timeouts,
            engine.tunnels,
            datasets=pending,
            caps=engine.limits.rates.buckets(source),
        )
    except Exception as exc:
        failure = classify(exc, Side.SOURCE)
        if isinstance(exc, TimeoutError):
            failure = Failure(
                True,
                f"no answer from {source.dsn.host_key} within "
                f"timeouts.connect ({engine.config.timeouts.connect:g}s)",
                Kind.TIMEOUT,
                Side.SOURCE,
            )
        for d in pending:
            result.datasets[d.name].attempts += 1
        raise PassLost(failure) from exc


async def land_all(
    engine: Engine,
    session: SourceSession,
    source: Source,
    pending: Sequence[Dataset],
    result: SourceResult,
) -> None:
    """Every pending dataset into one destination transaction, committed with the ledger rows:
    a reader sees all of this municipality's previous rows or all of its new ones.

    Each dataset's landing holds its share of the disk budget until the transaction ends; what a
    landing the disk could not take left behind is reclaimed once it has ended (a VACUUM needs
    the table free of the landing's own lock to give the pages back)."""
    shares = Shares()
    try:
        await _land_all(engine, session, source, pending, result, shares)
    finally:
        await engine.disk.ended(shares, engine.destination.connect)


async def _land_all(
    engine: Engine,
    session: SourceSession,
    source: Source,
    pending: Sequence[Dataset],
    result: SourceResult,
    shares: Shares,
) -> None:
    destination = engine.destination
    # every dataset described and its table made ready first: DDL (a column a newer PEC added,
    # an incremental key's index) runs before this pass holds any dataset table
    shapes: dict[str, Shape] = {}
    for dataset in pending:
        shape = await _prepare_dataset(engine, session, source, dataset, result)
        if shape is not None:
            shapes[dataset.name] = shape
    try:
        opened: Landing | None = None  # for the except: was it the landing that was lost?
        async with destination.landing(source.id) as landing:
            opened = landing
            shares.last = await engine.disk.estimates(landing.conn, source.id, list(shapes))
            for dataset in pending:
                if dataset.name in shapes:
                    await _copy_dataset(
                        engine,
                        session,
                        landing,
                        source,
                        dataset,
                        shapes[dataset.name],
                        result.datasets[dataset.name],
                        shares,
                    )
            loaded = [d for d in result.datasets.values() if d.status == Status.LOADED]
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
            with spans.span(engine.tracer, spans.SpanName.COMMIT, attributes):
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
                        res.status = Status.OK
                    result.recorded = True
    except (PassLost, anyio.get_cancelled_exc_class()):
        raise
    except Exception as exc:
        if result.recorded:  # it committed; what failed after it (a pool reset) changes nothing
            log.warning(
                "source %s: after the commit: %s",
                source.id,
                classify(exc).reason,
                extra={"event": Event.AFTER_COMMIT_FAILED},
            )
            landing.settled(buckets)
            return
        # the commit (or the last statements) failed: nothing landed
        failure = classify(exc, Side.DESTINATION)
        if failure.kind == Kind.DISK_FULL:
            for name, res in result.datasets.items():
                if res.status == Status.LOADED:
                    engine.disk.filled(failure, destination.parent(name))
            engine.disk.filled(failure)
        if not failure.lost_connection and opened is not None and opened.lost is not None:
            failure = opened.lost  # asyncpg's words for it talk about the pool
        if failure.retryable:
            raise PassLost(failure) from exc
        for res in result.datasets.values():
            if res.status == Status.LOADED:
                res.fail(failure.reason)
        return
    landing.settled(buckets)


async def _prepare_dataset(
    engine: Engine, session: SourceSession, source: Source, dataset: Dataset, result: SourceResult
) -> Shape | None:
    """Describe the dataset on the source and make its table ready (DDL, if any), before the
    landing opens; None if it failed for good (recorded in the result)."""
    res = result.datasets[dataset.name]
    res.started_at = res.started_at or now()
    spec = dataset.incremental
    tries = 0

    async def prepare() -> Shape:
        with on_side(Side.SOURCE):
            shape = await session.describe(dataset)
        with on_side(Side.DESTINATION):
            await engine.destination.prepare(shape, source.id, spec.key if spec else ())
        return shape

    while True:
        tries += 1
        try:
            async with session.savepoint():
                return await prepare()
        except Exception as exc:
            res.attempts += 1  # a clean pass counts its landing alone
            failure = await _classify_failure(exc, session, None, None)
            if await _retry_after_pause(engine, source, dataset, failure, tries):
                continue
            attributes = spans.db_attributes(source.dsn, "COPY", dataset.table)
            attributes["syncd.dataset"] = dataset.name
            with spans.span(engine.tracer, spans.SpanName.COPY, attributes) as span:
                spans.failed(span, failure)  # the dataset's span, as if it had started
            _failed(source, dataset, res, failure)
            return None


async def _classify_failure(
    exc: Exception, session: SourceSession, landing: Landing | None, span: trace.Span | None
) -> Failure:
    """What a dataset's failure means: raises PassLost when the pass must start again."""
    failure = classify(exc)
    if landing is not None and landing.lost is not None:
        failure = failure if failure.lost_connection else landing.lost
        raise PassLost(failure) from exc  # the transaction is gone: all again
    if failure.side == Side.DESTINATION and failure.lost_connection:
        raise PassLost(failure) from exc
    lost = failure.side == Side.SOURCE and failure.lost_connection
    if failure.kind == Kind.STALLED or lost or not session.alive:
        await session.abort()  # the snapshot is gone or hung: a new one for everything
        if span is not None:
            spans.interrupted(span, failure)  # the pass's retry is recorded on its root
        raise PassLost(failure) from exc
    return failure


async def _retry_after_pause(
    engine: Engine, source: Source, dataset: Dataset, failure: Failure, attempts: int
) -> bool:
    """After a dataset's own failure: True once the retry policy's pause is over."""
    engine.destination.forget(dataset.name)
    if not engine.retry.allows(failure, attempts):
        return False
    await engine.retry.pause(
        failure,
        attempts,
        f"source {source.id} dataset {dataset.name}",
        source=source.id,
        dataset=dataset.name,
    )
    return True


def _failed(source: Source, dataset: Dataset, res: DatasetResult, failure: Failure) -> None:
    log.warning(
        "source %s dataset %s failed: %s",
        source.id,
        dataset.name,
        failure.reason,
        extra={
            "event": Event.DATASET_FAILED,
            "source": source.id,
            "dataset": dataset.name,
            "reason": failure.reason,
        },
    )
    res.fail(failure.reason)


async def _copy_dataset(
    engine: Engine,
    session: SourceSession,
    landing: Landing,
    source: Source,
    dataset: Dataset,
    shape: Shape,
    res: DatasetResult,
    shares: Shares,
) -> None:
    """Land one dataset in the open transaction; a dataset that fails for good is recorded in
    `res` and rolled back alone. None starts while the disk is full or past the budget."""
    attributes = spans.db_attributes(source.dsn, "COPY", dataset.table)
    attributes.update({"syncd.dataset": dataset.name, "syncd.dataset.kind": dataset.kind})
    with spans.span(engine.tracer, spans.SpanName.COPY, attributes) as span:
        try:
            share = await engine.disk.admit(
                landing.conn, source.id, dataset.name, shares.last.get(dataset.name)
            )
        except (OverBudget, OutOfDisk) as exc:
            res.attempts += 1
            failure = classify(exc)
            engine.progress.refused(failure)
            spans.failed(span, failure)
            _failed(source, dataset, res, failure)
            return
        shares.held.append(share)
        await _copy_attempts(engine, session, landing, source, dataset, shape, res, span, share)
        if share is not None and res.status == Status.LOADED:
            engine.disk.landed(source.id, dataset.name)
        span.set_attribute("syncd.attempts", res.attempts)
        if res.status == Status.LOADED:
            span.set_attribute("db.response.returned_rows", res.rows)
            span.set_attribute("syncd.rows", res.rows)
            span.set_attribute("syncd.bytes", res.bytes)
            span.set_attribute("syncd.rows.inserted", res.inserted)
            span.set_attribute("syncd.rows.deleted", res.deleted)


async def _copy_attempts(
    engine: Engine,
    session: SourceSession,
    landing: Landing,
    source: Source,
    dataset: Dataset,
    shape: Shape,
    res: DatasetResult,
    span: trace.Span,
    share: Share | None,
) -> None:
    on_bytes: Callable[[int], None] = engine.progress.bytes_moved
    if share is not None:  # past the budget, the pipe stops
        on_bytes = share.counting(on_bytes)
    while True:
        res.attempts += 1
        try:
            async with session.savepoint(), landing.savepoint():
                target, landed = await _land(engine, landing, session, shape, dataset, on_bytes)
        except Exception as exc:
            failure = await _classify_failure(exc, session, landing, span)
            if failure.kind == Kind.DISK_FULL and failure.side == Side.DESTINATION:
                # a state, not a failure of this dataset: no more landings until it has room
                engine.disk.filled(failure, engine.destination.parent(dataset.name))
            if failure.kind == Kind.DISK_BUDGET and share is not None:
                res.bytes = share.streamed  # the next pass's estimate (the ledger keeps it)
                engine.disk.left_dead(engine.destination.parent(dataset.name))
            if failure.kind in (Kind.DISK_FULL, Kind.DISK_BUDGET):
                engine.progress.refused(failure)
            if await _retry_after_pause(engine, source, dataset, failure, res.attempts):
                continue
            spans.failed(span, failure)
            _failed(source, dataset, res, failure)
            return
        transfer = landed.transfer
        res.rows, res.bytes, res.mode, res.watermark = (
            transfer.rows,
            transfer.bytes,
            target.mode,
            target.watermark,
        )
        res.inserted, res.deleted = landed.inserted, landed.deleted
        res.conversions = target.conversions  # a mixed fleet: shown on the status page
        res.status = Status.LOADED  # visible when the pass commits
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
                "event": Event.DATASET_SYNCED,
                "source": source.id,
                "dataset": dataset.name,
                "rows": transfer.rows,
                "bytes": transfer.bytes,
                "seconds": round(transfer.seconds, 3),
            },
        )
        return


async def _land(
    engine: Engine,
    landing: Landing,
    session: SourceSession,
    shape: Shape,
    dataset: Dataset,
    on_bytes: Callable[[int], None],
) -> tuple[Target, Landed]:
    """Write what changed of the municipality's rows (snapshots, incremental reloads), rewrite
    them all (a full refresh is due, or nothing is stored yet) or upsert a window
    (incremental), in the pass's transaction."""
    destination = engine.destination
    spec = dataset.incremental
    source_id = session.source.id
    with on_side(Side.DESTINATION):
        target = await destination.prepare(shape, source_id, spec.key if spec else ())
        state = await landing.watermark(target)
    if target.missing:
        shape = shape.only(target.columns)
    shape = shape.converted(target.conversions)  # a mixed fleet: the table's types, on the source
    rewrite = incremental.rewrite_due(
        dataset.full_refresh_every, state[1] if state else None, now(), source_id, dataset.name
    )
    write = Write.REWRITE if rewrite else Write.DIFF
    window = None
    if spec is not None:
        cursor_type = shape.column(spec.cursor).type
        for column in spec.key:
            shape.column(column)
        target = replace(target, cursor=spec.cursor)
        if (
            state is None
            or state[0] is None
            or rewrite
            or not incremental.readable(spec, cursor_type, state[0])
        ):
            with on_side(Side.SOURCE):
                top = await session.max_cursor(
                    shape, spec.cursor, incremental.cap(spec, cursor_type)
                )
            target = replace(target, mode=Mode.FULL_REFRESH, watermark=top)
        else:
            window = incremental.window(spec, cursor_type, state[0])
            write = Write.WINDOW
            target = replace(target, mode=Mode.INCREMENTAL, watermark=state[0])
    where = f"{destination.schema}.{target.dataset}"
    attributes = spans.db_attributes(destination.settings.dsn, "COPY", where)
    attributes["syncd.write"] = write
    land_rows = partial(
        landing.land,
        idle_timeout=engine.config.timeouts.idle_stream,
        on_bytes=on_bytes,
    )
    with spans.span(engine.tracer, spans.SpanName.COPY, attributes) as span:
        async with engine.limits.writers:
            # the pipe and the delta rounds name the side of their own failures; the rest of
            # land() is the destination
            with on_side(Side.DESTINATION):
                if spec is None and delta.enabled(dataset, session.source):
                    outcome = await delta.land(
                        landing, session, shape, target, write, land_rows=land_rows
                    )
                    landed = outcome.landed
                    span.set_attribute("syncd.delta", outcome.plan)
                else:
                    landed = await land_rows(
                        target,
                        partial(session.copy_out, shape, window=window),
                        write=write,
                        cap=window.cap if window else None,
                    )
                    if spec is None:
                        await fpstore.forget(landing.conn, source_id, dataset.name)
    if window is not None:
        target = replace(target, watermark=landed.watermark)
    if spec is not None or rewrite:  # the rows and their watermark (or refresh time), together
        await landing.store_watermark(target, full=rewrite)
    return target, landed


def _announcement(result: SourceResult) -> str:
    """The notification's payload: the pass as it commits (loaded datasets are `ok` then)."""
    outcomes = []
    for d in result.datasets.values():
        status = Status.OK if d.status in (Status.OK, Status.LOADED) else d.status
        outcomes.append(
            downstream.DatasetOutcome(
                d.name, status, d.rows if status == Status.OK else None, d.mode
            )
        )
    return downstream.payload(result.source_id, result.pass_id, outcomes, now())
