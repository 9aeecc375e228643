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

import os
import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from syncd.config import Bastion, Source
from syncd.config.dsn import Dsn
from syncd.engine.errors import FinalError
from syncd.engine.tunnelerrors import (  # re-exported: what can fail, hop by hop
    HOPS,
    BastionAuthFailed,
    BastionUnreachable,
    ForwardRefused,
    Hop,
    HostKeyMismatch,
    KeyFileError,
    TunnelError,
    TunnelNotConnected,
)

if TYPE_CHECKING:
    from syncd.engine.sshlink import BastionLink

__all__ = [
    "HOPS",
    "BastionAuthFailed",
    "BastionUnreachable",
    "Endpoint",
    "ForwardRefused",
    "Hop",
    "HostKeyMismatch",
    "KeyFileError",
    "TunnelError",
    "TunnelNotConnected",
    "Tunnels",
    "tls_context",
    "verify_full_context",
]


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


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where asyncpg connects for one session: the bridge's loopback port, and the TLS context
    to use instead of the DSN's (None: the DSN's)."""

    host: str
    port: int
    ssl: ssl.SSLContext | None


class Tunnels:
    """Every bastion link of one engine (or one `syncd check`), keyed by the bastion's config:
    a reload that changes a bastion gets a new link."""

    def __init__(self) -> None:
        self._links: dict[Bastion, BastionLink] = {}

    def link(self, bastion: Bastion) -> BastionLink:
        link = self._links.get(bastion)
        if link is None:
            from syncd.engine.sshlink import BastionLink  # asyncssh: only with bastions

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
