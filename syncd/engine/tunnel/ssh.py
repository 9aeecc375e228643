"""One bastion's SSH connection (asyncssh), imported only when a bastion is used: asyncssh
takes a tenth of a second to import, which every `syncd once` without bastions would pay.
See engine/tunnel/__init__.py for how tunnels work."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import asyncssh

from syncd.config import Bastion
from syncd.config.values import is_loopback
from syncd.engine.tunnel.bridge import Bridge, ChannelSide, LocalSide, drop_unused
from syncd.engine.tunnel.errors import (
    BastionAuthFailed,
    BastionUnreachable,
    ForwardRefused,
    HostKeyMismatch,
    KeyFileError,
    TunnelError,
    TunnelNotConnected,
)
from syncd.logevents import Event

log = logging.getLogger(__name__)
ENCRYPTION = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com", "chacha20-poly1305@openssh.com")
# asyncssh prefers no compression unless told; rows cross slow municipal links, so ask for it
# first (OpenSSH's sshd offers zlib@openssh.com, after authentication), and take "none" from a
# server that offers nothing else. docs/configure/bastions.md#compression
COMPRESSION = ("zlib@openssh.com", "zlib", "none")
NO_COMPRESSION = ("none",)
logging.getLogger("asyncssh").setLevel(logging.WARNING)  # its INFO is one line per channel


def _read_secret_file(bastion: Bastion, key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            bastion.name, f"{key} {path} cannot be read ({exc.strerror or exc})"
        ) from None


class _Watch(asyncssh.SSHClient):
    """Says when a bastion's connection drops (its sessions fail as lost connections)."""

    def __init__(self, bastion: Bastion) -> None:
        self.bastion = bastion

    def connection_lost(self, exc: Exception | None) -> None:
        if exc is not None:
            log.warning(
                "bastion %s: connection lost (%s); reopened on next use",
                self.bastion.name,
                getattr(exc, "reason", None) or exc,
                extra={
                    "event": Event.BASTION_LOST,
                    "bastion": self.bastion.name,
                },
            )


class BastionLink:
    """The one SSH connection to one bastion, opened on demand, reopened when it drops."""

    def __init__(self, bastion: Bastion) -> None:
        self.bastion = bastion
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock = asyncio.Lock()
        self._attempts = 0  # connection attempts finished
        self._failure: TunnelError | None = None  # the last attempt's, if it failed
        self._refused: TunnelError | None = None  # a host key mismatch: never tried again
        self.opened = 0  # SSH connections opened, over the link's life
        self.channels = 0  # sessions open now

    @property
    def connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def compression(self) -> str | None:
        """The compression negotiated for what the bastion sends ("zlib@openssh.com", "none"),
        None while not connected."""
        if self._conn is None:
            return None
        algorithm: str | None = self._conn.get_extra_info("recv_compression")
        return algorithm

    async def connection(self, timeout: float) -> asyncssh.SSHClientConnection:
        if self._refused is not None:
            raise self._refused.again()
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        seen = self._attempts
        async with self._lock:
            if self._refused is not None:
                raise self._refused.again()
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            if self._attempts != seen and self._failure is not None:
                raise self._failure.again()  # the attempt this session waited on failed
            try:
                self._conn = await self._connect(timeout)
                self._failure = None
                self.opened += 1
                log.info(
                    "bastion %s: connected to %s (compression %s)",
                    self.bastion.name,
                    self.bastion.address,
                    self.compression,
                    extra={
                        "event": Event.BASTION_CONNECTED,
                        "bastion": self.bastion.name,
                    },
                )
                return self._conn
            except TunnelError as exc:
                self._failure = exc
                if isinstance(exc, HostKeyMismatch):
                    self._refused = exc
                    log.error(
                        "%s; not trying this bastion again until the config is reloaded",
                        exc,
                        extra={
                            "event": Event.HOST_KEY_MISMATCH,
                            "bastion": self.bastion.name,
                        },
                    )
                raise
            finally:
                self._attempts += 1

    def _client_key(self) -> asyncssh.SSHKey:
        b = self.bastion
        data = _read_secret_file(b, "private_key_file", b.private_key_file)
        passphrase = None
        if b.passphrase_file is not None:
            text = _read_secret_file(b, "passphrase_file", b.passphrase_file)
            passphrase = text.decode("utf-8", "replace").splitlines()[0] if text else ""
        try:
            return asyncssh.import_private_key(data, passphrase)
        except (asyncssh.KeyImportError, asyncssh.KeyEncryptionError, ValueError) as exc:
            # asyncssh's words name the problem (a wrong passphrase, a format), never the key
            raise KeyFileError(b.name, f"private_key_file {b.private_key_file}: {exc}") from None

    async def _connect(self, timeout: float) -> asyncssh.SSHClientConnection:
        b = self.bastion
        key = self._client_key()
        pinned = asyncssh.import_public_key(b.host_key)
        try:
            return await asyncio.wait_for(
                asyncssh.connect(
                    b.host,
                    b.port,
                    username=b.user,
                    client_keys=[key],
                    known_hosts=([pinned], [], []),
                    config=None,  # no ~/.ssh/config, no agent, no password: only what is configured
                    agent_path=None,
                    password=None,
                    kbdint_auth=False,
                    gss_auth=False,
                    preferred_auth="publickey",
                    # AES-GCM first: one call into OpenSSL's AES-NI a packet, where
                    # asyncssh's chacha20-poly1305 (its default first) takes several
                    encryption_algs=ENCRYPTION,
                    compression_algs=COMPRESSION if b.compression else NO_COMPRESSION,
                    keepalive_interval=b.keepalive_interval,
                    keepalive_count_max=b.keepalive_count_max,
                    connect_timeout=timeout,
                    login_timeout=timeout,
                    client_factory=lambda: _Watch(b),
                ),
                timeout,
            )
        except asyncssh.HostKeyNotVerifiable:
            raise HostKeyMismatch(
                b.name,
                f"SECURITY: {b.address} presented a host key that is not the pinned host_key "
                "(the bastion was reinstalled, or someone is in between); refused",
            ) from None
        except asyncssh.PermissionDenied:
            raise BastionAuthFailed(
                b.name, f"{b.address} refused user {b.user!r} with private_key_file"
            ) from None
        except TimeoutError:
            raise BastionUnreachable(
                b.name, f"no SSH answer from {b.address} within timeouts.connect ({timeout:g}s)"
            ) from None
        except ConnectionRefusedError:
            raise BastionUnreachable(b.name, f"{b.address} refused the connection") from None
        except (OSError, asyncssh.Error) as exc:
            text = getattr(exc, "reason", None) or getattr(exc, "strerror", None) or str(exc)
            raise BastionUnreachable(b.name, f"{b.address}: {text or type(exc).__name__}") from None

    async def open(self, host: str, port: int, timeout: float) -> int:
        """A channel to host:port as the bastion sees it, bridged to a loopback port."""
        conn = await self.connection(timeout)
        bridge = Bridge(self._closed_one)
        self.channels += 1
        try:
            channel, _ = await asyncio.wait_for(
                conn.create_connection(lambda: ChannelSide(bridge), host, port), timeout
            )
            bridge.channel = channel
            loop = asyncio.get_running_loop()
            bridge.server = await loop.create_server(lambda: LocalSide(bridge), "127.0.0.1", 0)
        except BaseException as exc:
            bridge.close()
            if isinstance(exc, Exception):
                raise self._channel_error(exc, host, port, timeout) from None
            raise
        # asyncpg connects at once; a bridge nobody took goes away with the attempt
        asyncio.get_running_loop().call_later(timeout + 1, drop_unused, bridge)
        local_port: int = bridge.server.sockets[0].getsockname()[1]
        return local_port

    def _closed_one(self) -> None:
        self.channels -= 1

    def _channel_error(self, exc: Exception, host: str, port: int, timeout: float) -> TunnelError:
        name, where = self.bastion.name, f"{host}:{port}"
        if isinstance(exc, asyncssh.ChannelOpenError):
            if exc.code == asyncssh.OPEN_CONNECT_FAILED and is_loopback(host):
                return TunnelNotConnected(
                    name,
                    f"municipal tunnel not connected (nothing listens on {where} on the "
                    "bastion: the municipality's ssh -R is down; or, for a database on the "
                    "bastion itself, the database is)",
                )
            if exc.code == asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED:
                return ForwardRefused(
                    name, f"may not forward to {where} ({exc.reason})", retryable=False
                )
            return ForwardRefused(name, f"could not reach {where} ({exc.reason})")
        if isinstance(exc, TimeoutError):
            return BastionUnreachable(name, f"no channel to {where} within {timeout:g}s")
        text = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        return BastionUnreachable(name, f"connection lost while opening {where}: {text}")

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await conn.wait_closed()
