"""The byte pipe between a source COPY TO and a destination COPY FROM, without PostgreSQL.

Both ends are what the pipe really takes: a coroutine that streams bytes into a sink and returns
its row count, and one that reads the chunks and returns the rows it took. The tests drive the
interleaving with `anyio.wait_all_tasks_blocked`, not with clocks; only the idle watchdog needs a
(short, real) timeout.
"""

from __future__ import annotations

from collections.abc import AsyncIterable

import anyio
import pytest

from syncd.engine.copy import CopyIn, CopyOut, Sink, Transfer, copy_row_count, pipe
from syncd.engine.errors import FinalError, IdleStreamTimeout, Side, TransferError

HANG = 30  # seconds: a broken pipe tends to hang rather than fail; this turns that into a failure
CHUNKS = [b"PGCOPY\n\xff\r\n\x00", b"\x00" * 1000, b"\x01\x02\x03", b"", b"\xff" * 70_000]


def source_of(chunks: list[bytes], rows: int | None = None):
    """A source COPY that sends these chunks and reports `rows` (default: one per chunk)."""

    async def copy_out(sink: Sink) -> int:
        for chunk in chunks:
            await sink(chunk)
        return len(chunks) if rows is None else rows

    return copy_out


async def piped(copy_out: CopyOut, copy_in: CopyIn, **kwargs) -> Transfer:
    with anyio.fail_after(HANG):
        return await pipe(copy_out, copy_in, **kwargs)


class Collector:
    """A destination COPY that keeps every chunk, and knows whether the stream ended."""

    def __init__(self, rows: int | None = None):
        self.chunks: list[bytes] = []
        self.ended = False
        self.rows = rows

    async def __call__(self, chunks: AsyncIterable[bytes]) -> int:
        async for chunk in chunks:
            self.chunks.append(chunk)
        self.ended = True
        return len(self.chunks) if self.rows is None else self.rows


async def test_bytes_pass_through_unchanged_and_in_order():
    seen: list[int] = []
    sink = Collector()
    transfer = await piped(source_of(CHUNKS), sink, on_bytes=seen.append)
    assert sink.chunks == CHUNKS
    assert sink.ended
    assert transfer.rows == len(CHUNKS)
    assert transfer.bytes == sum(map(len, CHUNKS)) == sum(seen)
    assert seen == [len(c) for c in CHUNKS]


async def test_the_queue_is_bounded_so_a_waiting_destination_holds_the_source_back():
    sent = 0

    async def copy_out(sink: Sink) -> int:
        nonlocal sent
        for _ in range(100):
            await sink(b"x" * 10)
            sent += 1
        return 100

    queued_before_reading: list[int] = []

    async def copy_in(chunks: AsyncIterable[bytes]) -> int:
        await anyio.wait_all_tasks_blocked()  # the source runs until the queue stops it
        queued_before_reading.append(sent)
        return sum([1 async for _ in chunks])

    # no coalescing wait: a waiting source would count as blocked too
    transfer = await piped(copy_out, copy_in, queue_chunks=3, coalesce_wait=0)
    # the queue's 3, and the first chunk, which the destination COPY waits for before it starts
    assert queued_before_reading == [3 + 1]
    assert transfer.rows == 100


async def test_no_destination_copy_runs_when_nothing_comes_through():
    """A transform that lets nothing through (no row changed) writes nothing."""

    class Nothing:
        rows = 0

        async def feed(self, chunk: bytes) -> bytes:
            return b""

        async def finish(self) -> bytes:
            return b""

    async def copy_out(sink: Sink) -> int:
        for _ in range(5):
            await sink(b"x" * 10)
        return 5

    started: list[bool] = []

    async def copy_in(chunks: AsyncIterable[bytes]) -> int:
        started.append(True)
        return sum([1 async for _ in chunks])

    transfer = await pipe(copy_out, copy_in, transform=Nothing())
    assert started == []
    assert (transfer.rows, transfer.bytes, transfer.written) == (5, 50, 0)


async def test_a_source_failure_names_the_source_and_never_ends_the_destination_stream():
    boom = ConnectionResetError("municipal server went away")

    async def copy_out(sink: Sink) -> int:
        await sink(b"first")
        await sink(b"second")
        raise boom

    sink = Collector()
    with pytest.raises(TransferError) as caught:
        await piped(copy_out, sink)
    assert caught.value.side is Side.SOURCE
    assert caught.value.cause is boom
    # the destination COPY must be aborted, never finished with half the rows
    assert not sink.ended


async def test_a_destination_failure_names_the_destination_and_stops_the_source():
    produced = 0

    async def endless(sink: Sink) -> int:
        nonlocal produced
        while True:
            await sink(b"row")
            produced += 1

    boom = ValueError("invalid input syntax")

    async def copy_in(chunks: AsyncIterable[bytes]) -> int:
        async for _ in chunks:
            # the source is blocked on a full queue when the destination fails
            await anyio.wait_all_tasks_blocked()
            raise boom
        return 0

    with pytest.raises(TransferError) as caught:
        await piped(endless, copy_in, queue_chunks=2)
    assert caught.value.side is Side.DESTINATION
    assert caught.value.cause is boom
    assert produced <= 3  # stopped, not left streaming into nowhere


async def test_a_row_count_mismatch_is_a_final_destination_error():
    with pytest.raises(TransferError) as caught:
        await piped(source_of(CHUNKS, rows=5), Collector(rows=4))
    assert caught.value.side is Side.DESTINATION
    assert isinstance(caught.value.cause, FinalError)
    assert "source sent 5, destination took 4" in str(caught.value.cause)


async def test_a_stalled_source_is_cut_by_the_idle_watchdog():
    async def stalls(sink: Sink) -> int:
        await sink(b"header")
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    sink = Collector()
    with pytest.raises(TransferError) as caught:
        await piped(stalls, sink, idle_timeout=0.05)
    assert caught.value.side is Side.SOURCE
    assert isinstance(caught.value.cause, IdleStreamTimeout)
    assert sink.chunks == [b"header"]
    assert not sink.ended


async def test_a_destination_that_takes_nothing_is_named_by_the_idle_watchdog():
    """The source keeps sending until the queue is full; then nothing moves because the
    destination's COPY takes nothing: the stall is the destination's, not the source's."""

    async def endless(sink: Sink) -> int:
        while True:
            await sink(b"row")

    async def takes_one(chunks: AsyncIterable[bytes]) -> int:
        async for _ in chunks:
            await anyio.sleep_forever()
        return 0

    with pytest.raises(TransferError) as caught:
        await piped(endless, takes_one, idle_timeout=0.05, queue_chunks=2)
    assert caught.value.side is Side.DESTINATION
    assert isinstance(caught.value.cause, IdleStreamTimeout)
    assert "the destination's COPY stalled" in str(caught.value.cause)


async def test_a_stream_that_keeps_moving_outlasts_the_idle_timeout():
    # each gap is a twentieth of the idle timeout (room for a loaded machine); the whole
    # stream lasts longer than it
    async def trickles(sink: Sink) -> int:
        for _ in range(30):
            await sink(b"r")
            await anyio.sleep(0.025)
        return 30

    transfer = await piped(trickles, Collector(), idle_timeout=0.5)
    assert transfer.rows == 30


async def test_a_cancelled_pipe_never_ends_the_destination_stream():
    started = anyio.Event()

    async def copy_out(sink: Sink) -> int:
        await sink(b"one")
        started.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    sink = Collector()
    async with anyio.create_task_group() as tg:
        tg.start_soon(piped, copy_out, sink)
        await started.wait()
        await anyio.wait_all_tasks_blocked()
        tg.cancel_scope.cancel()
    assert sink.chunks == [b"one"]
    assert not sink.ended


def test_copy_row_count_reads_the_command_tag():
    assert copy_row_count("COPY 1234") == 1234
    assert copy_row_count("COPY 0") == 0
    assert copy_row_count(None) == 0
    assert copy_row_count("") == 0
    assert copy_row_count("COPY") == 0
