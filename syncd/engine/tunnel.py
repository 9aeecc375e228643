"""Sources behind an SSH bastion: one SSH connection per bastion, one channel per session.

Every source session through bastion B is a `direct-tcpip` channel on B's one SSH connection
(asyncssh), opened when the session opens and bridged to a one-shot listener on 127.0.0.1 that
asyncpg connects to: asyncpg takes a host and port, not a socket. The listener accepts one
connection and closes; the bridge passes bytes as they come, with flow control both ways.

- The connection is opened on first use and again when it has dropped; sessions waiting on an
  attempt that fails share its failure (a bastion down costs its sources one `timeouts.connect`,
  not one each).
- The bastion's host key is pinned (`bastions.<name>.host_key`): a mismatch is refused and never
  tried again on this engine; a reload (a new engine) tries again.
- SSH keepalives (`keepalive_interval`, `keepalive_count_max`) close a connection whose traffic
  is blackholed; its channels close with it, and their sessions fail as lost connections.
- TLS through the tunnel still verifies the database's real name: with `sslmode=verify-full`
  the context checks the DSN's host, not the loopback end (`HostPinnedContext`).
- The key and its passphrase are read when connecting and kept by asyncssh only.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import ssl
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

import asyncssh

from syncd.config import Bastion, Source
from syncd.config.dsn import Dsn
from syncd.engine.bridge import Bridge, ChannelSide, LocalSide, drop_unused
from syncd.engine.errors import FinalError, Kind, RetryableError

log = logging.getLogger("syncd.tunnel")
logging.getLogger("asyncssh").setLevel(logging.WARNING)  # its INFO is one line per channel


class Hop(StrEnum):
    """The hops of a tunnelled connection, in order (`syncd check --online` shows each)."""

    REACHABLE = "bastion reachable"
    HOST_KEY = "host key matches"
    AUTHENTICATED = "authenticated"
    FORWARD = "forward accepted"


HOPS = (Hop.REACHABLE, Hop.HOST_KEY, Hop.AUTHENTICATED, Hop.FORWARD)


class TunnelError(RetryableError):
    """A failure on the way through a bastion; `hop` is the first hop that failed."""

    hop = Hop.REACHABLE

    def __init__(self, bastion: str, detail: str, *, retryable: bool | None = None):
        # the kind in the text too: the ledger keeps the text (`syncd status`, the page)
        super().__init__(f"bastion {bastion} ({self.kind}): {detail}")
        self.bastion, self.detail = bastion, detail
        if retryable is not None:
            self.retryable = retryable

    def again(self) -> TunnelError:
        """The same failure, for another session that waited on the same attempt."""
        return type(self)(self.bastion, self.detail, retryable=self.retryable)


class BastionUnreachable(TunnelError):
    kind = Kind.BASTION_UNREACHABLE


class HostKeyMismatch(TunnelError):
    """Security: the bastion (or someone in between) presents another key than the pinned one."""

    kind = Kind.HOST_KEY_MISMATCH
    retryable = False
    hop = Hop.HOST_KEY


class BastionAuthFailed(TunnelError):
    kind = Kind.BASTION_AUTH_FAILED
    retryable = False
    hop = Hop.AUTHENTICATED


class ForwardRefused(TunnelError):
    kind = Kind.FORWARD_REFUSED
    hop = Hop.FORWARD


class TunnelNotConnected(TunnelError):
    """A reverse tunnel whose municipal end is not connected: nothing listens on the bastion's
    loopback port the municipality's `ssh -R` should hold."""

    kind = Kind.TUNNEL_NOT_CONNECTED
    hop = Hop.FORWARD


class KeyFileError(TunnelError):
    """syncd's own key (or its passphrase) cannot be read or opened."""

    kind = Kind.CREDENTIALS
    retryable = False
    hop = Hop.AUTHENTICATED


class HostPinnedContext(ssl.SSLContext):
    """An SSL context that verifies `server_name` whatever host the socket connected to: the
    socket goes to the loopback end of a tunnel, the certificate names the database server."""

    server_name: str = ""

    def wrap_bio(self, *args: Any, **kwargs: Any) -> ssl.SSLObject:
        kwargs["server_hostname"] = self.server_name
        if len(args) > 3:
            args = args[:3]
        return super().wrap_bio(*args, **kwargs)


def _postgresql_file(name: str) -> Path | None:
    home = os.environ.get("HOME")
    return Path(home, ".postgresql", name) if home else None


def verify_full_context(dsn: Dsn) -> HostPinnedContext:
    """`sslmode=verify-full` as libpq (and asyncpg) read it, checking the DSN's own host."""
    params = dict(dsn.params)
    ctx = HostPinnedContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.server_name = dsn.host
    ctx.check_hostname = True
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    root = params.get("sslrootcert") or os.environ.get("PGSSLROOTCERT")
    if root == "system":
        ctx.load_default_certs()
    else:
        root_path = Path(root) if root else _postgresql_file("root.crt")
        if root_path is None or not root_path.is_file():
            raise FinalError(f"sslmode=verify-full: root certificate {root_path} not found")
        ctx.load_verify_locations(cafile=str(root_path))
    crl = params.get("sslcrl") or os.environ.get("PGSSLCRL")
    if crl:
        ctx.load_verify_locations(cafile=crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_CHAIN
    cert = params.get("sslcert") or os.environ.get("PGSSLCERT")
    key = params.get("sslkey") or os.environ.get("PGSSLKEY")
    password = params.get("sslpassword", "")
    if cert:
        ctx.load_cert_chain(cert, keyfile=key or None, password=lambda: password)
    return ctx


def tls_context(dsn: Dsn) -> ssl.SSLContext | None:
    """The context to pass asyncpg for a tunnelled session, when the DSN's own would check the
    wrong name (verify-full); None: asyncpg reads the DSN's sslmode as usual."""
    mode = dict(dsn.params).get("sslmode") or os.environ.get("PGSSLMODE")
    return verify_full_context(dsn) if mode == "verify-full" else None


def _read_secret_file(bastion: Bastion, key: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise KeyFileError(
            bastion.name, f"{key} {path} cannot be read ({exc.strerror or exc})"
        ) from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where asyncpg connects for one session: the bridge's loopback port, and the TLS context
    to use instead of the DSN's (None: the DSN's)."""

    host: str
    port: int
    ssl: ssl.SSLContext | None


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
                extra={"action": "bastion_lost", "bastion": self.bastion.name},
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
                    "bastion %s: connected to %s",
                    self.bastion.name,
                    self.bastion.address,
                    extra={"action": "bastion_connected", "bastion": self.bastion.name},
                )
                return self._conn
            except TunnelError as exc:
                self._failure = exc
                if isinstance(exc, HostKeyMismatch):
                    self._refused = exc
                    log.error(
                        "%s; not trying this bastion again until the config is reloaded",
                        exc,
                        extra={"action": "host_key_mismatch", "bastion": self.bastion.name},
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
            if exc.code == asyncssh.OPEN_CONNECT_FAILED and _is_loopback(host):
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


class Tunnels:
    """Every bastion link of one engine (or one `syncd check`), keyed by the bastion's config:
    a reload that changes a bastion gets a new link."""

    def __init__(self) -> None:
        self._links: dict[Bastion, BastionLink] = {}

    def link(self, bastion: Bastion) -> BastionLink:
        link = self._links.get(bastion)
        if link is None:
            link = self._links[bastion] = BastionLink(bastion)
        return link

    async def endpoint(self, source: Source, timeout: float) -> Endpoint:
        assert source.bastion is not None
        context = tls_context(source.dsn)  # a bad TLS setup fails before the bastion is asked
        port = await self.link(source.bastion).open(source.dsn.host, source.dsn.port, timeout)
        return Endpoint("127.0.0.1", port, context)

    def links(self) -> dict[str, BastionLink]:
        return {b.name: link for b, link in self._links.items()}

    async def close(self) -> None:
        links, self._links = list(self._links.values()), {}
        for link in links:
            await link.close()
