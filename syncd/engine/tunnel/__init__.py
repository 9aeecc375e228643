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
  the context checks the DSN's host, not the loopback end (`tls.py`).
- The key and its passphrase are read when connecting and kept by asyncssh only.

    __init__.py   `Tunnels`: what the engine asks for a session's endpoint
    ssh.py        one bastion's SSH connection (asyncssh, imported only when a bastion is used)
    bridge.py     a channel bridged to a one-shot loopback listener
    errors.py     what can fail, hop by hop
    tls.py        the TLS context that checks the database's name through the tunnel
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import TYPE_CHECKING

from syncd.config import Bastion, Source
from syncd.engine.tunnel.errors import (  # re-exported: what can fail, hop by hop
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
from syncd.engine.tunnel.tls import HostPinnedContext, tls_context, verify_full_context

if TYPE_CHECKING:
    from syncd.engine.tunnel.ssh import BastionLink

__all__ = [
    "HOPS",
    "BastionAuthFailed",
    "BastionUnreachable",
    "Endpoint",
    "ForwardRefused",
    "Hop",
    "HostKeyMismatch",
    "HostPinnedContext",
    "KeyFileError",
    "TunnelError",
    "TunnelNotConnected",
    "Tunnels",
    "tls_context",
    "verify_full_context",
]


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
            from syncd.engine.tunnel.ssh import BastionLink  # asyncssh: only with bastions

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
