"""A municipal link between syncd and a source: a TCP proxy that limits bandwidth, adds latency
and counts the bytes each way.

Unlike tests/support/faultproxy.py (whose latency is a pause per chunk, so a long stream slows
by chunks x latency), this one models a link: each direction is one pipe of `bandwidth` bytes a
second shared by every connection through it (the municipality's uplink is one), and a byte
arrives `latency` seconds after it left (one way: a round trip is twice that). Runs its own
event loop in a thread, so a benchmark can drive syncd as a subprocess beside it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from dataclasses import dataclass, field

CHUNK = 16 * 1024
IN_FLIGHT = 64  # chunks queued per connection and direction (backpressure past that)


@dataclass
class _Pipe:
    """One direction of the link: when it is free to send the next byte."""

    bandwidth: float  # bytes a second
    free_at: float = 0.0

    def departure(self, size: int) -> float:
        """When a chunk of `size` bytes has left, sent as soon as the pipe is free."""
        start = max(time.monotonic(), self.free_at)
        self.free_at = start + size / self.bandwidth
        return self.free_at


@dataclass
class LinkProxy:
    target_host: str
    target_port: int
    bandwidth: float = 20e6 / 8  # 20 Mbit/s, each way
    latency: float = 0.030  # one way
    moved: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    connections: int = 0
    port: int = 0

    def __post_init__(self) -> None:
        self._pipes = {"up": _Pipe(self.bandwidth), "down": _Pipe(self.bandwidth)}
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._server: asyncio.Server | None = None

    def start(self) -> LinkProxy:
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    def dsn(self, dbname: str, user: str = "postgres") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}"

    def counted(self) -> dict[str, int]:
        return dict(self.moved)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(
            asyncio.start_server(self._accept, "127.0.0.1", 0)
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            writer.transport.abort()
            return
        await asyncio.gather(
            self._direction(reader, up_writer, "up"),
            self._direction(up_reader, writer, "down"),
            return_exceptions=True,
        )
        for w in (writer, up_writer):
            w.transport.abort()

    async def _direction(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, way: str
    ) -> None:
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue(IN_FLIGHT)
        pipe = self._pipes[way]

        async def send() -> None:
            while (item := await queue.get()) is not None:
                arrival, data = item
                delay = arrival - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(data)
                await writer.drain()
                self.moved[way] += len(data)
            with contextlib.suppress(Exception):
                writer.write_eof()

        sender = asyncio.ensure_future(send())
        try:
            while data := await reader.read(CHUNK):
                await queue.put((pipe.departure(len(data)) + self.latency, data))
        except (ConnectionError, OSError):
            pass
        finally:
            await queue.put(None)
            with contextlib.suppress(Exception):
                await sender
