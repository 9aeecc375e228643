"""The bytes of one tunnelled session: a direct-tcpip channel on a bastion's SSH connection,
bridged to the one loopback connection asyncpg makes (it takes a host and port, not a socket).

Transport to transport, with flow control both ways: a full channel window stops reading
asyncpg's socket, a full socket buffer stops reading the channel. The listener takes one
connection and closes; either side closing closes the other (asyncpg then sees its connection
lost, which the engine retries on a new session).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import cast

import asyncssh


class Bridge:
    """One session: a direct-tcpip channel and the one local connection asyncpg makes."""

    def __init__(self, on_close: Callable[[], None]) -> None:
        self.on_close = on_close
        self.channel: asyncssh.SSHTCPChannel[bytes] | None = None
        self.local: asyncio.Transport | None = None
        self.server: asyncio.base_events.Server | None = None
        self.early: list[bytes] = []
        self.closed = False

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.on_close()
        if self.server is not None:
            self.server.close()
        if self.channel is not None:
            self.channel.close()
        if self.local is not None:
            self.local.abort()  # the session sees its connection lost at once


class ChannelSide(asyncssh.SSHTCPSession[bytes]):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge

    def data_received(self, data: bytes, datatype: asyncssh.DataType) -> None:
        if self.bridge.local is not None:
            self.bridge.local.write(data)
        else:
            self.bridge.early.append(data)

    def eof_received(self) -> bool:
        if self.bridge.local is not None and self.bridge.local.can_write_eof():
            self.bridge.local.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        self.bridge.close()

    def pause_writing(self) -> None:  # the channel's window is full: stop reading asyncpg
        if self.bridge.local is not None:
            self.bridge.local.pause_reading()

    def resume_writing(self) -> None:
        if self.bridge.local is not None:
            self.bridge.local.resume_reading()


class LocalSide(asyncio.Protocol):
    def __init__(self, bridge: Bridge) -> None:
        self.bridge = bridge
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not asyncio's classes
        bridge = self.bridge
        if bridge.local is not None or bridge.closed:
            transport.abort()  # one connection per bridge: asyncpg's
            return
        self.transport = transport
        bridge.local = transport
        if bridge.server is not None:
            bridge.server.close()
        for data in bridge.early:
            transport.write(data)
        bridge.early.clear()

    def data_received(self, data: bytes) -> None:
        if self.bridge.channel is not None and self.transport is self.bridge.local:
            self.bridge.channel.write(data)

    def eof_received(self) -> bool:
        if self.bridge.channel is not None and self.transport is self.bridge.local:
            self.bridge.channel.write_eof()
        return True

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is self.bridge.local:
            self.bridge.close()

    def pause_writing(self) -> None:  # asyncpg reads slower than the channel brings
        if self.bridge.channel is not None:
            self.bridge.channel.pause_reading()

    def resume_writing(self) -> None:
        if self.bridge.channel is not None:
            self.bridge.channel.resume_reading()


def drop_unused(bridge: Bridge) -> None:
    if bridge.local is None:
        bridge.close()
