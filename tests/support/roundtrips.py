"""A TCP proxy that counts round trips, and can hold every chunk for a fixed delay (asyncio).

A round trip is one turnaround on a connection: bytes from the client, then bytes from the
server. Five messages the client sends at once and the server's five answers are one; a query
sent, answered, then the next query sent, are two. That is what a link's latency multiplies, and
what psql reading two tables with two COPYs pays 4 or 5 of (connecting included).

The count after connecting starts at the server's first ReadyForQuery (`Z`, length 5): the TLS
probe and the startup/authentication exchange before it are the connection's, not the pass's.

`delay` (seconds, each way) makes a latency link of it: every chunk is delivered `delay` after it
arrived, in order, without holding back the chunks behind it (a delay line, not a queue of
sleeps), so a round trip costs 2 x delay and a bulk COPY keeps its throughput. Bench (j) runs 200
sources through one at 25 ms each way.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass, field

CHUNK = 64 * 1024
READY_FOR_QUERY = b"Z\x00\x00\x00\x05"


@dataclass
class Link:
    """One proxied connection: its round trips, in total and after connecting."""

    turns: int = 0  # client bytes followed by server bytes
    connected_at: int | None = None  # `turns` when the first ReadyForQuery came
    up: int = 0  # bytes client -> server
    down: int = 0  # bytes server -> client
    _client_spoke: bool = False
    writers: list[asyncio.StreamWriter] = field(default_factory=list)

    @property
    def after_connecting(self) -> int:
        return self.turns - (self.connected_at if self.connected_at is not None else 0)

    def saw(self, direction: str, data: bytes) -> None:
        if direction == "up":
            self.up += len(data)
            self._client_spoke = True
            return
        self.down += len(data)
        if self._client_spoke:
            self.turns += 1
            self._client_spoke = False
        if self.connected_at is None and READY_FOR_QUERY in data:
            self.connected_at = self.turns


class RoundTripProxy:
    def __init__(self, target_host: str, target_port: int, delay: float = 0.0):
        self.target = (target_host, target_port)
        self.delay = delay
        self.links: list[Link] = []
        self._server: asyncio.base_events.Server | None = None
        self._tasks: set[asyncio.Task] = set()
        self.port = 0

    async def start(self, host: str = "127.0.0.1") -> RoundTripProxy:
        self._server = await asyncio.start_server(self._accept, host, 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for link in self.links:
            for writer in link.writers:
                writer.transport.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def dsn(self, dbname: str, user: str = "postgres", host: str = "127.0.0.1") -> str:
        return f"postgresql://{user}@{host}:{self.port}/{dbname}"

    def clear(self) -> None:
        self.links.clear()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        link = Link()
        self.links.append(link)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        link.writers = [writer, up_writer]
        try:
            await asyncio.gather(
                self._pump(reader, up_writer, link, "up"),
                self._pump(up_reader, writer, link, "down"),
                return_exceptions=True,
            )
        finally:
            for w in link.writers:
                w.transport.abort()

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        link: Link,
        direction: str,
    ) -> None:
        loop = asyncio.get_running_loop()
        line: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue(64)  # bounded: backpressure

        async def deliver() -> None:
            while True:
                due, data = await line.get()
                if not data:
                    break
                wait = due - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                writer.write(data)
                await writer.drain()
            with contextlib.suppress(OSError, RuntimeError):
                writer.write_eof()

        delivery = asyncio.ensure_future(deliver())
        try:
            while True:
                data = await reader.read(CHUNK)
                if data:
                    link.saw(direction, data)
                await line.put((loop.time() + self.delay, data))
                if not data:
                    break
            await delivery
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            delivery.cancel()
            for w in link.writers:
                w.transport.abort()
