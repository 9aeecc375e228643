"""Where the secrets are when the config names no file for them: the credentials directory.

Under the shipped unit, systemd copies /etc/syncd/credentials into `$CREDENTIALS_DIRECTORY`
(/run/credentials/syncd.service), readable by the service alone: `analytics` (the destination's
password), `http-token` (the bearer token of the POST endpoints), and the directory `municipios`,
one file per source named by its id, which systemd flattens: `municipios/351570` becomes
`municipios_351570` (systemd.exec(5), LoadCredential= of a directory). Outside the unit,
`--credentials-dir DIR` or `$SYNCD_CREDENTIALS_DIRECTORY` names the same tree as it is kept in
/etc, where the file is `municipios/351570`. Both spellings are looked for in either place.

What the config says wins: a `password_file` or `token_file`, or a password in the DSN. A source
or destination with none of those needs its credential. Inside the service (systemd set
`$CREDENTIALS_DIRECTORY`) a missing one is a config error, so `check-config` in ExecStartPre=,
the daemon's start and a reload refuse it instead of failing that municipality on every pass;
elsewhere it is a warning (`syncd status` needs only the destination's), unless asked for
(`check-config --credentials-dir`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from syncd.config.dsn import Dsn

DESTINATION = "analytics"
HTTP_TOKEN = "http-token"
SOURCES = "municipios"
SYSTEMD_ENV = "CREDENTIALS_DIRECTORY"  # set by systemd for a unit with credentials
SYNCD_ENV = "SYNCD_CREDENTIALS_DIRECTORY"
# a connection with one of these authenticates without a password of ours
OTHER_AUTH_PARAMS = ("passfile", "sslcert")


def in_service(environ: Mapping[str, str] = os.environ) -> bool:
    """Run by systemd for a unit with credentials (the daemon, its ExecStartPre=...)."""
    return bool(environ.get(SYSTEMD_ENV))


@dataclass(frozen=True, slots=True)
class Credentials:
    directory: Path
    strict: bool  # a missing credential is a config error, not a warning
    pgpassword: bool = False  # PGPASSWORD is set: libpq's own fallback for every connection

    @classmethod
    def find(
        cls,
        explicit: Path | None = None,
        strict: bool | None = None,
        environ: Mapping[str, str] = os.environ,
    ) -> Credentials | None:
        """The directory: `explicit` (--credentials-dir), else $SYNCD_CREDENTIALS_DIRECTORY,
        else systemd's $CREDENTIALS_DIRECTORY. `strict` defaults to "inside the service"."""
        text = str(explicit) if explicit else environ.get(SYNCD_ENV) or environ.get(SYSTEMD_ENV)
        if not text:
            return None
        if strict is None:
            strict = in_service(environ)
        return cls(Path(text), strict, bool(environ.get("PGPASSWORD")))

    def destination(self, dsn: Dsn) -> tuple[Path | None, str | None]:
        """(the password file, or None; why that is a problem, or None)."""
        return self._find(dsn, (self.directory / DESTINATION,), f"credential {DESTINATION!r}")

    def source(self, source_id: str, dsn: Dsn) -> tuple[Path | None, str | None]:
        flat = self.directory / f"{SOURCES}_{source_id}"  # as systemd hands it to the service
        nested = self.directory / SOURCES / source_id  # as it is kept in /etc/syncd/credentials
        return self._find(
            dsn, (flat, nested), f"credential {flat.name!r} (or {SOURCES}/{source_id})"
        )

    def http_token(self) -> Path | None:
        path = self.directory / HTTP_TOKEN
        try:
            path.stat()
        except OSError:
            return None  # no token: the POST endpoints answer 403, and say why
        return path

    def _find(self, dsn: Dsn, paths: tuple[Path, ...], what: str) -> tuple[Path | None, str | None]:
        if dsn.has_password:  # written in the config: it wins over a convention
            return None, None
        for path in paths:
            try:
                path.stat()
            except (FileNotFoundError, NotADirectoryError):
                continue
            except OSError as exc:
                return None, f"{path}: {exc.strerror or exc}"
            return path, None  # a directory or an unreadable file is named when connecting
        if self.pgpassword or any(name in OTHER_AUTH_PARAMS for name, _ in dsn.params):
            return None, None
        return None, f"no password_file and no {what} in {self.directory}"
