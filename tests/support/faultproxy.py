"""A fault-injecting TCP proxy for tests (asyncio).

Put it between syncd and a PostgreSQL server; every fault can be switched while connections are
open, and applies to the next chunk that crosses:

- `latency`: seconds added to every chunk, both ways;
- `bandwidth`: bytes per second, per connection and direction;
- `cut_after`: close a connection abruptly once this many bytes went `cut_direction`
  ("down": server to client, "up": client to server); `cuts` connections at most (the first
  ones to get that far);
- `reset()`: RST every open connection now;
- `blackhole`: accept, never answer; open connections stop moving bytes;
- `stall(conn, seconds)`: one open connection stops moving bytes for a while (the soak's).

`moved` counts the bytes forwarded each way over every connection (delta transfer's tests).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import time
from dataclasses import dataclass, field

CHUNK = 64 * 1024


@dataclass
class _Conn:
    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None
    sent: dict[str, int] = field(default_factory=lambda: {"up": 0, "down": 0})
    tasks: list[asyncio.Task] = field(default_factory=list)
    stalled_until: float = 0.0

    def abort(self, rst: bool = False) -> None:
        for writer in (self.client, self.server):
            if writer is None:
                continue
            sock = writer.get_extra_info("socket")
            if rst and sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            writer.transport.abort()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int):
        self.target = (target_host, target_port)
        self.latency = 0.0
        self.bandwidth: float | None = None
        self.cut_after: int | None = None
        self.cut_direction = "down"
        self.cuts = 0
        self.blackhole = False
        self.accepted = 0
        self.cut_count = 0
        self.conns: list[_Conn] = []
        self.moved = {"up": 0, "down": 0}  # bytes forwarded each way, every connection
        self._server: asyncio.base_events.Server | None = None
        self.port = 0

    async def start(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        for conn in list(self.conns):
            conn.abort()
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)

    def reset(self) -> None:
        """RST every open connection."""
        for conn in list(self.conns):
            conn.abort(rst=True)

    def stall(self, conn: _Conn, seconds: float) -> None:
        conn.stalled_until = time.monotonic() + seconds

    def cut_next(self, after: int, direction: str = "down", times: int = 1) -> None:
        self.cut_after, self.cut_direction, self.cuts = after, direction, times

    def clear(self) -> None:
        self.latency, self.bandwidth, self.cut_after, self.cuts = 0.0, None, None, 0
        self.blackhole = False

    def dsn(self, dbname: str, user: str = "postgres", params: str = "") -> str:
        return f"postgresql://{user}@127.0.0.1:{self.port}/{dbname}{params}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        conn = _Conn(writer, None)
        self.conns.append(conn)
        try:
            if self.blackhole:
                await self._swallow(reader)
                return
            try:
                up_reader, up_writer = await asyncio.open_connection(*self.target)
            except OSError:
                writer.transport.abort()
                return
            conn.server = up_writer
            conn.tasks = [
                asyncio.ensure_future(self._pump(reader, up_writer, conn, "up")),
                asyncio.ensure_future(self._pump(up_reader, writer, conn, "down")),
            ]
            await asyncio.gather(*conn.tasks, return_exceptions=True)
        finally:
            conn.abort()
            if conn in self.conns:
                self.conns.remove(conn)

    async def _swallow(self, reader: asyncio.StreamReader) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(CHUNK):
                pass

    async def _pump(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        conn: _Conn,
        direction: str,
    ) -> None:
        try:
            while True:
                data = await reader.read(CHUNK)
                if not data:
                    break
                while self.blackhole or time.monotonic() < conn.stalled_until:
                    await asyncio.sleep(0.05)  # hold everything, answer nothing
                if self.latency:
                    await asyncio.sleep(self.latency)
                if self.cuts > 0 and self.cut_after is not None and direction == self.cut_direction:
                    room = self.cut_after - conn.sent[direction]
                    if len(data) >= room:
                        self.cuts -= 1
                        if room > 0:
                            writer.write(data[:room])
                            with contextlib.suppress(Exception):
                                await writer.drain()
                        self.cut_count += 1
                        conn.abort()
                        return
                if self.bandwidth:
                    for start in range(0, len(data), 4096):
                        piece = data[start : start + 4096]
                        writer.write(piece)
                        await writer.drain()
                        await asyncio.sleep(len(piece) / self.bandwidth)
                else:
                    writer.write(data)
                    await writer.drain()
                conn.sent[direction] += len(data)
                self.moved[direction] += len(data)
        except (ConnectionError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            conn.abort()
