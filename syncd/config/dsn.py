"""Connection strings: parsed once, their parameters checked against libpq's (`libpq`), shown
only redacted. The password itself is read when connecting (`syncd.engine.connect`)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import parse_qsl, quote, unquote, urlsplit, urlunsplit

from syncd.config.libpq import (
    SECRET_PARAMETERS,
    parameter_notes,
    parameter_problems,
    shown_value,
)

SCHEMES = ("postgresql", "postgres")


class DsnError(ValueError):
    """Why a DSN cannot be used: one line per reason (`messages`)."""

    def __init__(self, *messages: str):
        self.messages = messages
        super().__init__("; ".join(messages))


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
        try:  # as strictly as asyncpg parses it
            params = tuple(parse_qsl(parts.query, keep_blank_values=True, strict_parsing=True))
        except ValueError:  # its message quotes the field, which may be a secret
            raise DsnError("has a query parameter that is not name=value") from None
        wrong = parameter_problems(params)
        if wrong:
            raise DsnError(*wrong)
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
        has_password = parts.password is not None or any(
            name in SECRET_PARAMETERS for name, _ in params
        )
        return cls(raw.strip(), host, port or 5432, database, user, has_password, params)

    @property
    def notes(self) -> list[str]:
        """Parameters that are accepted but change nothing (application_name)."""
        return parameter_notes(self.params)

    def missing_tls_files(self) -> list[tuple[str, str]]:
        """(parameter, path) of the TLS files the DSN names that are not there (libpq's
        sslrootcert=system aside)."""
        return [
            (name, value)
            for name, value in self.params
            if name in ("sslrootcert", "sslcert", "sslkey", "sslcrl")
            and value != "system"
            and not Path(value).is_file()
        ]

    def missing_files(self) -> list[str]:
        return [f"{name} {value} not found" for name, value in self.missing_tls_files()]

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
        query = "&".join(f"{k}={quote(shown_value(k, v), safe='/:,*')}" for k, v in self.params)
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))

    def __str__(self) -> str:
        return self.redacted

    def __repr__(self) -> str:  # the parameters may hold secrets (sslpassword=...)
        return f"Dsn({self.redacted!r})"


def world_readable(path: Path) -> bool:
    try:
        return bool(os.stat(path).st_mode & 0o004)
    except OSError:
        return False
