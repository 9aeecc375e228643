"""What every connection syncd opens gets: its name, TCP keepalives on both ends, and the
password read from its file when connecting (never kept)."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import asyncpg

from syncd.config import Source, Timeouts
from syncd.engine.errors import FinalError, Kind

APPLICATION_NAME = "syncd"


class PasswordFileError(FinalError):
    """A password_file that cannot give a password: no use connecting, nor trying again soon."""

    kind = Kind.CREDENTIALS


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


# Either end notices a dead peer within minutes, not hours: first probe after 60 s idle, then
# every 10 s, given up after 6 unanswered.
KEEPALIVE_IDLE, KEEPALIVE_INTERVAL, KEEPALIVE_COUNT = 60, 10, 6
SERVER_KEEPALIVES = {  # the server's side (PostgreSQL settings)
    "tcp_keepalives_idle": str(KEEPALIVE_IDLE),
    "tcp_keepalives_interval": str(KEEPALIVE_INTERVAL),
    "tcp_keepalives_count": str(KEEPALIVE_COUNT),
}


def enable_keepalive(conn: asyncpg.Connection) -> None:
    """TCP keepalives from our side too, so a silently dropped link is noticed."""
    # asyncpg has no public accessor for its socket (nor a socket factory); if this attribute
    # ever goes, tests/unit/test_source.py::test_sessions_have_tcp_keepalives fails
    transport = getattr(conn, "_transport", None)
    sock = transport.get_extra_info("socket") if transport is not None else None
    if sock is None or sock.family not in (socket.AF_INET, socket.AF_INET6):
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, KEEPALIVE_IDLE)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, KEEPALIVE_INTERVAL)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, KEEPALIVE_COUNT)


def session_settings(source: Source, timeouts: Timeouts) -> dict[str, str]:
    """What a municipal session is set to, sent in the startup packet (asyncpg's
    server_settings): the server applies it before its first answer, so no SET costs a round
    trip on the municipal link. The source's `params` are among them as `syncd.<name>` (values
    bound as protocol fields, never SQL; dataset queries read current_setting('syncd.<name>'))."""
    return {
        "application_name": APPLICATION_NAME,
        "default_transaction_read_only": "on",
        "statement_timeout": str(int(timeouts.statement * 1000)),
        **SERVER_KEEPALIVES,
        **{f"syncd.{name}": value for name, value in source.params},
    }
