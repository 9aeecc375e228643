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
from collections.abc import AsyncIterable, Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio

from syncd.engine.errors import FinalError, IdleStreamTimeout, Side, TransferError

QUEUE_CHUNKS = 8  # asyncpg hands over whatever one socket read gave: ~64-256 kB per chunk

Sink = Callable[[bytes], Coroutine[Any, Any, None]]  # what asyncpg's COPY TO output calls
CopyOut = Callable[[Sink], Awaitable[int]]  # streams into the sink, returns rows
CopyIn = Callable[[AsyncIterable[bytes]], Awaitable[int]]  # consumes the chunks, returns rows


@dataclass(slots=True)
class Transfer:
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0


async def pipe(
    copy_out: CopyOut,
    copy_in: CopyIn,
    *,
    idle_timeout: float = math.inf,
    queue_chunks: int = QUEUE_CHUNKS,
    on_bytes: Callable[[int], None] | None = None,
) -> Transfer:
    """Run both COPYs concurrently; raises TransferError naming the side that failed."""
    send, receive = anyio.create_memory_object_stream[bytes](queue_chunks)
    transfer = Transfer()
    started = time.monotonic()
    last_progress = started
    rows_in = -1

    async def sink(chunk: bytes) -> None:
        nonlocal last_progress
        transfer.bytes += len(chunk)
        last_progress = time.monotonic()
        if on_bytes is not None:
            on_bytes(len(chunk))
        await send.send(chunk)

    async def produce() -> None:
        try:
            transfer.rows = await copy_out(sink)
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise TransferError(Side.SOURCE, exc) from exc
        send.close()  # only now: end of stream means the source COPY completed

    class Chunks:
        """The queue as the destination COPY reads it; taking a chunk counts as progress."""

        def __aiter__(self) -> Chunks:
            return self

        async def __anext__(self) -> bytes:
            nonlocal last_progress
            try:
                chunk = await receive.receive()
            except anyio.EndOfStream:
                raise StopAsyncIteration from None
            last_progress = time.monotonic()
            return chunk

    async def consume() -> None:
        nonlocal rows_in
        try:
            with receive:
                rows_in = await copy_in(Chunks())
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:
            raise TransferError(Side.DESTINATION, exc) from exc

    async def watchdog(scope: anyio.CancelScope) -> None:
        with scope:
            while True:
                await anyio.sleep(min(idle_timeout / 4, 5.0))
                if time.monotonic() - last_progress > idle_timeout:
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
    if rows_in != transfer.rows:
        raise TransferError(
            Side.DESTINATION,
            FinalError(
                f"row count mismatch: source sent {transfer.rows}, destination took {rows_in}"
            ),
        )
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
