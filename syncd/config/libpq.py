"""libpq's connection parameters, and what syncd's driver (asyncpg) does with each.

The names and the secret marks are libpq 18's `PQconndefaults()` (dispchar `*`: a password, not
to be shown); `tests/unit/test_dsn.py` compares this table with the libpq the tests run, so a
libpq that adds a parameter fails a test until it is listed here.

asyncpg parses a DSN itself and sends every query parameter it does not know to the server as a
setting, which the server refuses (`unrecognized configuration parameter "connect_timeout"`): a
parameter libpq knows but asyncpg does not would fail every connection to that server, every
pass. Those are config errors here, each with what to do instead; so are the few the server
would take as settings of its own (client_encoding, replication, tcp_user_timeout), which do
something else than libpq does with them, and `service` (syncd counts per-host limits by the
DSN's host). One, application_name, is accepted with a warning: syncd names its sessions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from syncd.config.problem import did_you_mean


class Support(Enum):
    DRIVER = "driver"  # asyncpg reads it
    SERVER = "server"  # asyncpg passes it to the server, which takes it as libpq would send it
    IGNORED = "ignored"  # accepted, but syncd sets it itself: a warning
    REFUSED = "refused"  # asyncpg does not know it and would send it to the server: an error


@dataclass(frozen=True, slots=True)
class Parameter:
    support: Support
    values: tuple[str, ...] = ()  # the values libpq accepts, when it is a fixed set
    secret: bool = False
    instead: str = ""  # for REFUSED and IGNORED: what to do instead


_D, _S, _I, _R = Support.DRIVER, Support.SERVER, Support.IGNORED, Support.REFUSED
_BOOL = ("0", "1")
_TLS = ("TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3")
_UNSUPPORTED = "asyncpg, syncd's driver, does not support it"
_KEEPALIVES = (
    "syncd sets TCP keepalives on every connection itself (docs/design/guarantees.md: Timeouts)"
)

PARAMETERS: dict[str, Parameter] = {
    "host": Parameter(_D),
    "hostaddr": Parameter(_R, instead=f"{_UNSUPPORTED}; give the address as the host"),
    "port": Parameter(_D),
    "dbname": Parameter(_D),
    "user": Parameter(_D),
    "password": Parameter(_D, secret=True),
    "passfile": Parameter(_D),
    "require_auth": Parameter(_R, instead=_UNSUPPORTED),
    "channel_binding": Parameter(_R, ("disable", "prefer", "require"), instead=_UNSUPPORTED),
    "connect_timeout": Parameter(_R, instead=f"{_UNSUPPORTED}; set timeouts.connect"),
    "client_encoding": Parameter(
        _R, instead="syncd reads and writes UTF-8 (binary COPY keeps the bytes as they are)"
    ),
    "options": Parameter(_S),
    "application_name": Parameter(
        _I, instead="every syncd session is application_name=syncd, which the DBA sees"
    ),
    "fallback_application_name": Parameter(_R, instead=_UNSUPPORTED),
    "keepalives": Parameter(_R, _BOOL, instead=_KEEPALIVES),
    "keepalives_idle": Parameter(_R, instead=_KEEPALIVES),
    "keepalives_interval": Parameter(_R, instead=_KEEPALIVES),
    "keepalives_count": Parameter(_R, instead=_KEEPALIVES),
    "tcp_user_timeout": Parameter(
        _R,
        instead="asyncpg would send it as the server's setting of that name, not set it on "
        f"syncd's socket; {_KEEPALIVES}",
    ),
    "replication": Parameter(_R, instead="syncd reads with ordinary sessions"),
    "sslmode": Parameter(_D, ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")),
    "sslnegotiation": Parameter(_D, ("postgres", "direct")),
    "sslcompression": Parameter(_R, _BOOL, instead=_UNSUPPORTED),
    "sslcert": Parameter(_D),
    "sslkey": Parameter(_D),
    "sslcertmode": Parameter(_R, ("disable", "allow", "require"), instead=_UNSUPPORTED),
    "sslpassword": Parameter(_D, secret=True),
    "sslrootcert": Parameter(_D),
    "sslcrl": Parameter(_D),
    "sslcrldir": Parameter(_R, instead=f"{_UNSUPPORTED}; give one file as sslcrl"),
    "sslsni": Parameter(_R, _BOOL, instead=f"{_UNSUPPORTED} (it always sends SNI for a name)"),
    "sslkeylogfile": Parameter(_R, instead=_UNSUPPORTED),
    "requirepeer": Parameter(_R, instead=_UNSUPPORTED),
    "min_protocol_version": Parameter(_R, ("3.0", "3.2", "latest"), instead=_UNSUPPORTED),
    "max_protocol_version": Parameter(_R, ("3.0", "3.2", "latest"), instead=_UNSUPPORTED),
    "ssl_min_protocol_version": Parameter(_D, _TLS),
    "ssl_max_protocol_version": Parameter(_D, _TLS),
    "gssencmode": Parameter(
        _R, ("disable", "prefer", "require"), instead=f"{_UNSUPPORTED} (no GSSAPI encryption)"
    ),
    "krbsrvname": Parameter(_D),
    "gsslib": Parameter(_D, ("gssapi", "sspi")),
    "gssdelegation": Parameter(_R, _BOOL, instead=_UNSUPPORTED),
    "service": Parameter(
        _R, instead="syncd needs the server in the DSN itself (per-host limits count by it)"
    ),
    "target_session_attrs": Parameter(
        _D, ("any", "read-write", "read-only", "primary", "standby", "prefer-standby")
    ),
    "load_balance_hosts": Parameter(_R, ("disable", "random"), instead=_UNSUPPORTED),
    # libpq marks these "D" (debug), not "*"; they stand for the password all the same
    "scram_client_key": Parameter(_R, secret=True, instead=_UNSUPPORTED),
    "scram_server_key": Parameter(_R, secret=True, instead=_UNSUPPORTED),
    "oauth_issuer": Parameter(_R, instead=_UNSUPPORTED),
    "oauth_client_id": Parameter(_R, instead=_UNSUPPORTED),
    "oauth_client_secret": Parameter(_R, secret=True, instead=_UNSUPPORTED),
    "oauth_scope": Parameter(_R, instead=_UNSUPPORTED),
}

SECRET_PARAMETERS = frozenset(name for name, p in PARAMETERS.items() if p.secret)
_SHOWN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}")


def shown_value(name: str, value: str) -> str:
    """A parameter's value as syncd may print it: a secret's, or an unknown parameter's (it
    may be a misspelt secret), never."""
    parameter = PARAMETERS.get(name)
    return "***" if parameter is None or parameter.secret else value


def parameter_problems(params: tuple[tuple[str, str], ...]) -> list[str]:
    """What is wrong with a DSN's parameters, one line each; never a value that may be secret."""
    found: list[str] = []
    seen: set[str] = set()
    for name, value in params:
        parameter = PARAMETERS.get(name)
        label = repr(name) if _SHOWN_NAME.fullmatch(name) else "a parameter (name not shown)"
        if name in seen:
            found.append(f"parameter {label} is given twice")
            continue
        seen.add(name)
        if parameter is None:
            hint = did_you_mean(name, list(PARAMETERS)) if _SHOWN_NAME.fullmatch(name) else ""
            found.append(f"parameter {label} is not a libpq connection parameter{hint}")
        elif parameter.values and value not in parameter.values:
            shown_value = "" if parameter.secret else f" {value!r}"
            found.append(
                f"{name}{shown_value} is not one of {', '.join(parameter.values)}"
                + did_you_mean(value, parameter.values)
            )
        elif parameter.support is Support.REFUSED:
            found.append(f"parameter {name!r}: {parameter.instead}")
    return found


def parameter_notes(params: tuple[tuple[str, str], ...]) -> list[str]:
    """Parameters that are accepted but have no effect."""
    return [
        f"parameter {name!r} has no effect: {PARAMETERS[name].instead}"
        for name, _ in params
        if name in PARAMETERS and PARAMETERS[name].support is Support.IGNORED
    ]


def reference() -> str:
    """The Markdown table of docs/reference/dsn-parameters.md (tools/reference.py; tests/unit/test_reference.py keeps it current)."""
    said = {
        Support.DRIVER: "accepted",
        Support.SERVER: "accepted (passed to the server, as libpq does)",
        Support.IGNORED: "warning: no effect",
        Support.REFUSED: "error",
    }
    rows = ["| parameter | in a syncd DSN | values |", "|---|---|---|"]
    for name, p in PARAMETERS.items():
        what = said[p.support] + (f": {p.instead}" if p.instead else "")
        if p.secret:
            what += "; a secret, shown as `***`"
        values = ", ".join(f"`{v}`" for v in p.values)
        rows.append(f"| `{name}` | {what} | {values} |")
    return "\n".join(rows) + "\n"
