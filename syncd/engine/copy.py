"""The byte pipe: COPY out of the source -> a bounded queue -> COPY into the destination.

Bytes stay bytes: the binary COPY stream of the source is handed to the destination's COPY
unchanged, chunk by chunk, and no row is ever decoded in Python. The queue is bounded, so a slow
destination slows the source read (TCP backpressure) instead of filling memory.

The stream is closed only after the source COPY ended cleanly: any failure on either side cancels
the other, so the destination COPY is aborted (CopyFail), never finished with half the rows.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Protocol

import anyio

from syncd.engine.errors import FinalError, IdleStreamTimeout, Side, TransferError

QUEUE_CHUNKS = 8  # asyncpg hands over whatever one socket read gave: up to 256 kB per chunk
# A chunk smaller than this says syncd is ahead of the source: wait a moment before taking the
# next, so the kernel gathers what arrives (asyncpg does not read the socket while the sink
# runs) and the next read hands over up to 256 kB at once. Each chunk costs ~30 us of Python
# (asyncpg's wait_for, the differ's call, the queue, the counters) whatever its size: on a fast
# link a 2M-row table came in 40,000 chunks of ~8 kB, 3,000 of ~200 kB with the wait, and the
# pass used 27% less CPU, which on a server whose cores the database also needs is wall time.
# A slow link loses nothing (the wait ends long before the buffer could fill), and what waits
# is syncd, not the source: the kernel keeps receiving. Only a stream past its first megabyte
# waits: a small dataset (most of them) is over before it would gain anything.
COALESCE_BELOW = 128 * 1024
COALESCE_AFTER = 1024 * 1024
COALESCE_WAIT = 0.001  # seconds: one tick of the event loop's timer

Sink = Callable[[bytes], Coroutine[Any, Any, None]]  # what asyncpg's COPY TO output calls
CopyOut = Callable[[Sink], Awaitable[int]]  # streams into the sink, returns rows
CopyIn = Callable[[AsyncIterable[bytes]], Awaitable[int]]  # consumes the chunks, returns rows


@dataclass(slots=True)
class Transfer:
    rows: int = 0  # read from the source
    bytes: int = 0  # read from the source
    seconds: float = 0.0
    written: int = 0  # rows the destination took (all of them, unless a transform filtered)


class Transform(Protocol):
    """Between the two COPYs: what the destination gets of each source chunk (the row
    differ's: only the rows it does not hold yet). It may wait; `rows` is what it let through."""

    rows: int

    async def feed(self, chunk: bytes) -> bytes: ...

    async def finish(self) -> bytes: ...


async def pipe(
    copy_out: CopyOut,
    copy_in: CopyIn,
    *,
    idle_timeout: float = math.inf,
    queue_chunks: int = QUEUE_CHUNKS,
    coalesce_wait: float = COALESCE_WAIT,
    on_bytes: Callable[[int], None] | None = None,
    transform: Transform | None = None,
) -> Transfer:
    """Run both COPYs concurrently; raises TransferError naming the side that failed.

    The destination COPY starts with the first chunk it gets: when a transform lets nothing
    through, no COPY runs there at all."""
    send, receive = anyio.create_memory_object_stream[bytes](queue_chunks)
    transfer = Transfer()
    started = time.monotonic()
    last_progress = started
    rows_in = -1
    queue_full = False  # the source's chunk waits for room in the queue

    async def sink(chunk: bytes) -> None:
        nonlocal last_progress, queue_full
        if coalesce_wait and transfer.bytes >= COALESCE_AFTER and len(chunk) < COALESCE_BELOW:
            await anyio.sleep(coalesce_wait)  # the next chunk gathers meanwhile
        transfer.bytes += len(chunk)
        last_progress = time.monotonic()
        if on_bytes is not None:
            on_bytes(len(chunk))
        if transform is not None:
            chunk = await transform.feed(chunk)
            if not chunk:
                return
        queue_full = True  # until the destination takes a chunk: then a stall is its own
        try:
            await send.send(chunk)
        finally:
            queue_full = False

    async def produce() -> None:
        try:
            transfer.rows = await copy_out(sink)
            if transform is not None and (tail := await transform.finish()):
                await send.send(tail)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise TransferError(Side.SOURCE, exc) from exc
        send.close()  # only now: end of stream means the source COPY completed

    async def chunks(first: bytes) -> AsyncIterator[bytes]:
        """The queue as the destination COPY reads it; taking a chunk counts as progress."""
        nonlocal last_progress
        yield first
        async for chunk in receive:
            last_progress = time.monotonic()
            yield chunk

    async def consume() -> None:
        nonlocal rows_in
        try:
            with receive:
                try:
                    first = await receive.receive()
                except anyio.EndOfStream:
                    rows_in = 0  # nothing to write: no COPY
                    return
                rows_in = await copy_in(chunks(first))
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise TransferError(Side.DESTINATION, exc) from exc

    async def watchdog(scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await anyio.sleep(min(idle_timeout / 4, 5.0))
                if time.monotonic() - last_progress > idle_timeout:
                    if queue_full:  # the source sent, the destination took nothing
                        raise TransferError(
                            Side.DESTINATION,
                            IdleStreamTimeout(
                                f"nothing taken for {idle_timeout:g}s: the destination's COPY "
                                "stalled"
                            ),
                        )
                    raise TransferError(
                        Side.SOURCE,
                        IdleStreamTimeout(f"no data for {idle_timeout:g}s: source stream stalled"),
                    )

    try:
        async with anyio.create_task_group() as tg:
            watch = anyio.CancelScope()
            if math.isfinite(idle_timeout):
                tg.start_soon(watchdog, watch)
            async with anyio.create_task_group() as pair:
                pair.start_soon(produce)
                pair.start_soon(consume)
            watch.cancel()
    except BaseExceptionGroup as group:
        raise first_failure(group) from None
    finally:
        send.close()
    sent = transform.rows if transform is not None else transfer.rows
    if rows_in != sent:
        raise TransferError(
            Side.DESTINATION,
            FinalError(f"row count mismatch: source sent {sent}, destination took {rows_in}"),
        )
    transfer.written = rows_in
    transfer.seconds = time.monotonic() - started
    return transfer


def first_failure(group: BaseExceptionGroup) -> BaseException:
    """The failure that started it: nested groups flattened, cancellations last."""
    flat: list[BaseException] = []

    def walk(exc: BaseException) -> None:
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                walk(inner)
        else:
            flat.append(exc)

    walk(group)
    cancelled = anyio.get_cancelled_exc_class()
    for exc in flat:
        if not isinstance(exc, cancelled):
            return exc
    return flat[0]


def copy_row_count(status: str | None) -> int:
    """Rows from a COPY command tag ('COPY 1234')."""
    if not status:
        return 0
    try:
        return int(status.split()[-1])
    except (ValueError, IndexError):
        return 0
