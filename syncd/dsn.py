"""Connection strings: parsed once, shown only redacted, passwords read when connecting.
And what every connection syncd opens gets: TCP keepalives on both ends."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from .errors import FinalError

SCHEMES = ("postgresql", "postgres")


class DsnError(ValueError):
    pass


@dataclass(frozen=True, slots=True)
class Dsn:
    """A PostgreSQL URI. `str()` and `repr()` never show the password."""

    raw: str = field(repr=False)
    host: str
    port: int
    database: str | None
    user: str | None
    has_password: bool
    params: tuple[tuple[str, str], ...]

    @classmethod
    def parse(cls, raw: str) -> Dsn:
        if not isinstance(raw, str) or not raw.strip():
            raise DsnError("must be a postgresql:// URI")
        try:
            parts = urlsplit(raw.strip())
        except ValueError as exc:
            raise DsnError(f"is not a valid URI ({exc})") from None
        if "#" in raw:
            raise DsnError("contains '#', which ends a URI: percent-encode it as %23")
        if parts.scheme not in SCHEMES:
            raise DsnError("must start with postgresql:// (key=value strings are not supported)")
        params = tuple(parse_qsl(parts.query, keep_blank_values=True))
        query = dict(params)
        try:
            port = parts.port
        except ValueError:
            raise DsnError("has a port that is not a number in 1-65535") from None
        host = parts.hostname or query.get("host") or ""
        if not host:
            raise DsnError("names no host")
        if "port" in query:
            if not query["port"].isdigit() or not 0 < int(query["port"]) < 65536:
                raise DsnError("has a port that is not a number in 1-65535")
            port = int(query["port"])
        database = unquote(parts.path.lstrip("/")) or query.get("dbname") or None
        user = unquote(parts.username) if parts.username else query.get("user")
        has_password = parts.password is not None or "password" in query
        return cls(raw.strip(), host, port or 5432, database, user, has_password, params)

    def missing_files(self) -> list[str]:
        """TLS files the DSN names that are not there (libpq's sslrootcert=system aside)."""
        return [
            f"{name} {value} not found"
            for name, value in self.params
            if name in ("sslrootcert", "sslcert", "sslkey", "sslcrl")
            and value != "system"
            and not Path(value).is_file()
        ]

    @property
    def host_key(self) -> str:
        """What `concurrency.per_host` counts against: one PostgreSQL server."""
        return f"{self.host}:{self.port}"

    @property
    def redacted(self) -> str:
        parts = urlsplit(self.raw)
        netloc = parts.netloc
        if parts.password is not None:
            userinfo, _, hostinfo = netloc.rpartition("@")
            user = userinfo.split(":", 1)[0]
            netloc = f"{user}:***@{hostinfo}"
        query = "&".join(
            f"{k}={'***' if k == 'password' else quote(v, safe='/:,')}" for k, v in self.params
        )
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    def __str__(self) -> str:
        return self.redacted


class PasswordFileError(FinalError):
    """A password_file that cannot give a password: no use connecting, nor trying again soon."""


def read_password_file(path: Path) -> str:
    """The first line of a password file (systemd credentials, Kubernetes secrets...)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise PasswordFileError(f"password_file {path} not found") from None
    except IsADirectoryError:
        raise PasswordFileError(f"password_file {path} is a directory, not a file") from None
    except PermissionError:
        raise PasswordFileError(f"password_file {path} cannot be read: permission denied") from None
    except UnicodeDecodeError:
        raise PasswordFileError(f"password_file {path} is not UTF-8 text") from None
    except OSError as exc:
        raise PasswordFileError(
            f"password_file {path} cannot be read: {exc.strerror or exc}"
        ) from None
    password = text.splitlines()[0] if text else ""
    if not password:
        raise PasswordFileError(f"password_file {path} is empty (its first line is the password)")
    return password


def connect_password(password_file: Path | None) -> str | None:
    """The password to pass to asyncpg, if one comes from a file.

    Passwords in the DSN and PGPASSWORD are applied by asyncpg itself; a password_file wins.
    A file that is missing or unreadable raises PasswordFileError, which names it.
    """
    if password_file is None:
        return None
    return read_password_file(password_file)


def world_readable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False


# The server notices a dead syncd within minutes, not hours (PostgreSQL settings).
SERVER_KEEPALIVES = {
    "tcp_keepalives_idle": "60",
    "tcp_keepalives_interval": "10",
    "tcp_keepalives_count": "6",
}


def enable_keepalive(conn) -> None:
    """TCP keepalives from our side too, so a silently dropped link is noticed."""
    transport = getattr(conn, "_transport", None)  # asyncpg has no public accessor
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 60)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 6)
