"""TLS for a tunnelled session: asyncpg connects to the tunnel's loopback end, but the
certificate names the database server, so `sslmode=verify-full` must check the DSN's host."""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

from syncd.config.dsn import Dsn
from syncd.engine.errors import FinalError


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
