"""Errors as values with a class: retryable (the next attempt may succeed) or final.

Every failure that reaches the ledger, a log line or the operator goes through `classify`, which
gives one line of text with secrets redacted.
"""

from __future__ import annotations

import re
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum

import anyio
import asyncpg

from syncd.config.libpq import SECRET_PARAMETERS
from syncd.safetext import printable

# SQLSTATEs (or classes of them) worth another attempt: the server went away, was restarted,
# is overloaded, cancelled us on a timeout, or lost a race we can win next time.
RETRYABLE_STATES = {
    "08",  # connection exception
    "53",  # insufficient resources (too many connections, out of memory); not disk full
    "57P01",  # admin shutdown
    "57P02",  # crash shutdown
    "57P03",  # cannot connect now (starting up, recovery)
    "57014",  # query canceled: statement_timeout
    "40001",  # serialization failure
    "40P01",  # deadlock detected
    "55P03",  # lock not available: lock_timeout on DDL
    "58000",  # system error
    "58030",  # I/O error
    "XX000",  # internal error: seen on crash recovery; a second attempt tells
}

TOO_MANY_COLUMNS = "54011"
DISK_FULL = "53100"
READ_ONLY = "25006"
# a full disk as the server words it where no SQLSTATE says so (a write of the relation cache's
# init file at connect, an extension of a relation reported as an I/O error)
_DISK_FULL_WORDS = ("no space left on device", "could not write init file")
OUT_OF_DISK = "the analytical database is out of disk space"
MAX_COLUMNS = 1600  # PostgreSQL's limit per table

# every libpq parameter that holds a secret (password, sslpassword, oauth_client_secret...)
_SECRET_NAMES = "|".join(sorted({"password", *SECRET_PARAMETERS}, key=len, reverse=True))
_SECRET_PATTERNS = [
    (re.compile(r"(postgres(?:ql)?://[^:/@\s]*:)[^@\s]*@", re.I), r"\1***@"),
    (re.compile(rf"((?:{_SECRET_NAMES})\s*=\s*)('[^']*'|[^\s&]+)", re.I), r"\1***"),
    (re.compile(r"(Bearer\s+)\S+", re.I), r"\1***"),
]


def redact(text: str) -> str:
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class Kind(StrEnum):
    """What kind of failure it was; a server's own error code, if any, is `Failure.sqlstate`.
    The value is the span's `error.type` and part of the retry metric's reason."""

    CONNECTION = "connection"  # the link or the server went away (refused, reset, closed)
    TIMEOUT = "timeout"  # no answer within a timeout
    STALLED = "stalled"  # a COPY stream moved no bytes for timeouts.idle_stream
    SERVER = "server"  # PostgreSQL answered with an error: see the SQLSTATE
    TLS = "tls"  # the handshake or the certificate failed
    CREDENTIALS = "credentials"  # a password file that gives no password
    REJECTED = "rejected"  # syncd refuses: a type it cannot copy, a schema conflict, a lost lock
    BUSY = "busy"  # others held what syncd needed for longer than timeouts.lock
    CLIENT = "client"  # the driver refused the operation
    INTERNAL = "internal"  # none of the above: a bug
    # through an SSH bastion (syncd.engine.tunnel)
    BASTION_UNREACHABLE = "bastion_unreachable"  # no SSH connection to the bastion
    HOST_KEY_MISMATCH = "host_key_mismatch"  # the bastion's key is not the pinned one: security
    BASTION_AUTH_FAILED = "bastion_auth_failed"  # the bastion refused syncd's key
    FORWARD_REFUSED = "forward_refused"  # the bastion could not (or may not) reach the database
    TUNNEL_NOT_CONNECTED = "tunnel_not_connected"  # a reverse tunnel's municipal end is not up
    # the analytical database's disk (syncd.engine.diskbudget)
    DISK_FULL = "disk_full"  # out of disk space: a state, waited out, never retried in a pass
    DISK_BUDGET = "disk_budget"  # the landing would take the database past destination.max_size


# Kinds that mean the link to a server went away: the session is gone, a new one may work.
LINK_KINDS = frozenset(
    {Kind.CONNECTION, Kind.BASTION_UNREACHABLE, Kind.TUNNEL_NOT_CONNECTED, Kind.FORWARD_REFUSED}
)


class Side(StrEnum):
    SOURCE = "source"
    DESTINATION = "destination"


class SyncdError(Exception):
    """An error syncd raises itself, with a message fit for an operator; `side` where the
    error is about one server whatever raised it (the destination's disk budget)."""

    retryable = False
    kind = Kind.INTERNAL
    side: Side | None = None


class FinalError(SyncdError):
    """Will fail again the same way: a type syncd cannot copy, a schema conflict..."""

    kind = Kind.REJECTED


class RetryableError(SyncdError):
    """Others held what syncd needed; the next attempt may get it."""

    retryable = True
    kind = Kind.BUSY


class NoAnswer(RetryableError):
    """A server that did not answer within one of syncd's own timeouts (the COPY past
    timeouts.statement, a command past timeouts.idle_stream)."""

    kind = Kind.TIMEOUT


class IdleStreamTimeout(RetryableError):
    """No bytes moved for `timeouts.idle_stream`: the link or the server hangs."""

    kind = Kind.STALLED


class TransferError(Exception):
    """A failure on one side of a COPY pipe: `side` is 'source' or 'destination'."""

    def __init__(self, side: Side, cause: BaseException):
        super().__init__(f"{side}: {cause}")
        self.side = side
        self.cause = cause


@contextmanager
def on_side(side: Side) -> Iterator[None]:
    """What fails in here failed on `side`: the server's error carries no word of which server
    sent it, and a reason must name it (a destination statement timeout is never the source's).
    A TransferError already knows its side."""
    try:
        yield
    except TransferError:
        raise
    except Exception as exc:
        raise TransferError(side, exc) from exc


@dataclass(frozen=True, slots=True)
class Failure:
    retryable: bool
    reason: str  # one line, redacted
    kind: Kind
    side: Side | None = None  # None when unknown
    sqlstate: str | None = None  # PostgreSQL's error code, for Kind.SERVER

    @property
    def lost_connection(self) -> bool:
        return self.kind in LINK_KINDS

    def __str__(self) -> str:
        return self.reason


def _one_line(text: str, limit: int = 1000) -> str:
    """One line, redacted, with control characters (a municipal server's ESC sequences)
    escaped: what the ledger stores and every display shows."""
    text = printable(" ".join(redact(str(text)).split()))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def classify(exc: BaseException, side: Side | None = None) -> Failure:
    """Turn any exception into a Failure. Never raises."""
    if isinstance(exc, TransferError):
        return classify(exc.cause, exc.side)
    if isinstance(exc, BaseExceptionGroup):
        inner = [e for e in exc.exceptions if not _is_cancellation(e)]
        return classify(inner[0] if inner else exc.exceptions[0], side)
    if isinstance(exc, SyncdError):
        return Failure(exc.retryable, _one_line(str(exc)), exc.kind, exc.side or side)
    if isinstance(exc, asyncpg.PostgresError):
        return _server_failure(exc, side)
    if isinstance(exc, OSError) and _says_disk_full(str(exc)):
        return _disk_full(str(exc), side)
    return _client_failure(exc, side)


def on_the(side: Side | None) -> str:
    """Which server, in the words of a reason: ' on the destination'."""
    return f" on the {side}" if side is not None else ""


def _says_disk_full(text: str) -> bool:
    text = text.lower()
    return any(words in text for words in _DISK_FULL_WORDS)


def _disk_full(message: str, side: Side | None) -> Failure:
    """Out of disk space: never retried within the pass (each attempt would fill the disk
    again); the destination's is a state the engine waits out (syncd.engine.diskbudget)."""
    what = OUT_OF_DISK if side != Side.SOURCE else "the source is out of disk space"
    reason = _one_line(f"{what} ({message})")
    return Failure(False, reason, Kind.DISK_FULL, side, DISK_FULL)


def _server_failure(exc: asyncpg.PostgresError, side: Side | None) -> Failure:
    """PostgreSQL's own error, with the server it came from named in its reason."""
    state = exc.sqlstate or ""
    message = str(exc.args[0] if exc.args else exc)
    if state == DISK_FULL or _says_disk_full(message):
        return _disk_full(message, side)
    retryable = state in RETRYABLE_STATES or state[:2] in RETRYABLE_STATES
    if state == "57014" and "statement timeout" in message:
        bound = {
            Side.SOURCE: " (timeouts.statement)",
            Side.DESTINATION: " (timeouts.destination_statement)",
        }
        message = f"statement timeout{on_the(side)}{bound.get(side, '') if side else ''}"
    elif side is not None:
        message = f"{message} (on the {side})"
    if state == READ_ONLY and side != Side.SOURCE:  # sources are read-only on purpose
        message += (
            "; the analytical database refuses writes (default_transaction_read_only, "
            "or a standby): syncd cannot land there"
        )
    parts = [message]
    detail = getattr(exc, "detail", None)
    context = getattr(exc, "context", None)
    if detail:
        parts.append(f"({detail})")
    if context and "COPY" in context:
        parts.append(f"[{context.splitlines()[0]}]")
    if state == TOO_MANY_COLUMNS:
        parts.append(
            "(syncd adds its own source column, destination.source_column, to every dataset "
            f"table: a dataset may have at most {MAX_COLUMNS - 1} columns, and columns "
            "dropped from the dataset table still count)"
        )
    return Failure(retryable, _one_line(" ".join(parts)), Kind.SERVER, side, state or None)


def _client_failure(exc: BaseException, side: Side | None) -> Failure:
    """What the driver, the network or TLS say: the server it was talking to named."""
    failure = _client_failure_unnamed(exc, side)
    if side is None or failure.kind == Kind.INTERNAL or str(side) in failure.reason:
        return failure
    reason = _one_line(f"{failure.reason} (on the {side})")
    return Failure(failure.retryable, reason, failure.kind, side, failure.sqlstate)


def _client_failure_unnamed(exc: BaseException, side: Side | None) -> Failure:
    if isinstance(exc, ssl.SSLCertVerificationError):
        reason = exc.verify_message or str(exc)
        return Failure(False, _one_line(f"TLS certificate rejected: {reason}"), Kind.TLS, side)
    if isinstance(exc, ssl.SSLError):
        said = getattr(exc, "reason", None) or exc  # set by the ssl module, not by all
        return Failure(False, _one_line(f"TLS error: {said}"), Kind.TLS, side)
    if isinstance(exc, TimeoutError):
        text = str(exc) or (f"the {side} did not answer in time" if side else "timed out")
        return Failure(True, _one_line(text), Kind.TIMEOUT, side)
    if isinstance(exc, ConnectionRefusedError):
        return Failure(True, "connection refused", Kind.CONNECTION, side)
    if isinstance(exc, OSError):
        text = exc.strerror or str(exc) or type(exc).__name__
        return Failure(True, _one_line(f"network error: {text}"), Kind.CONNECTION, side)
    if isinstance(exc, asyncpg.InterfaceError):
        text = str(exc)
        lost = "closed" in text or "connection" in text.lower()
        return Failure(lost, _one_line(text), Kind.CONNECTION if lost else Kind.CLIENT, side)
    if isinstance(exc, asyncpg.InternalClientError):
        text = str(exc)
        if "in progress" in text or '"failed" state' in text or "is cancelling" in text:
            # the protocol was cut in the middle of an operation (a server restart, a dropped
            # link): the connection is unusable, the next one will do
            reason = f"connection broken in the middle of an operation ({text})"
            return Failure(True, _one_line(reason), Kind.CONNECTION, side)
        return Failure(False, _one_line(text), Kind.CLIENT, side)
    if isinstance(exc, ConnectionError):
        return Failure(True, _one_line(str(exc) or "connection lost"), Kind.CONNECTION, side)
    return Failure(False, _one_line(f"{type(exc).__name__}: {exc}"), Kind.INTERNAL, side)


def _is_cancellation(exc: BaseException) -> bool:
    return isinstance(exc, anyio.get_cancelled_exc_class())
