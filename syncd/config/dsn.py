"""Connection strings: parsed once, shown only redacted. The password itself is read when
connecting (`syncd.engine.connect`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

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


def world_readable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False
