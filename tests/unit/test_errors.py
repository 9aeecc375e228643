"""How failures are classed: what is worth another attempt, and what the operator reads."""

from __future__ import annotations

import asyncpg

from syncd.engine.connect import PasswordFileError
from syncd.engine.errors import (
    FinalError,
    IdleStreamTimeout,
    Kind,
    Side,
    TransferError,
    classify,
    redact,
)


def test_a_protocol_cut_mid_operation_is_a_lost_connection_worth_retrying():
    """Seen when the destination restarted mid-COPY: asyncpg's protocol is left mid-operation
    and the next call says so. Not final: a final class would fail the dataset."""
    exc = asyncpg.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    )
    failure = classify(TransferError(Side.DESTINATION, exc))
    assert failure.retryable and failure.kind == Kind.CONNECTION
    assert failure.side == Side.DESTINATION and failure.sqlstate is None
    assert "connection broken in the middle of an operation" in failure.reason


def test_other_client_errors_stay_final():
    failure = classify(asyncpg.InternalClientError("no binary format encoder for type x"))
    assert not failure.retryable and failure.kind == Kind.CLIENT


def test_reasons_are_one_line_and_redacted():
    failure = classify(RuntimeError("boom\nat postgresql://u:hunter2@h/db password=x"))
    assert "\n" not in failure.reason and "hunter2" not in failure.reason
    assert "password=***" in failure.reason


def test_every_secret_bearing_parameter_is_redacted_in_free_text():
    from syncd.config.libpq import SECRET_PARAMETERS

    for name in SECRET_PARAMETERS:
        text = redact(f"at postgresql://u@h/db?{name}=s3cr3t&sslmode=require, or {name} = 's 3'")
        assert "s3cr3t" not in text and "s 3" not in text, text
        assert "sslmode=require" in text


def test_a_server_error_keeps_its_sqlstate_apart_from_its_kind():
    failure = classify(
        asyncpg.exceptions.LockNotAvailableError("canceling statement due to lock timeout")
    )
    assert failure.kind == Kind.SERVER and failure.sqlstate == "55P03" and failure.retryable
    failure = classify(asyncpg.exceptions.UndefinedTableError('relation "x" does not exist'))
    assert failure.kind == Kind.SERVER and failure.sqlstate == "42P01" and not failure.retryable


def test_syncd_errors_carry_their_kind_not_their_class_name():
    assert classify(IdleStreamTimeout("no bytes for 30s")).kind == Kind.STALLED
    assert classify(IdleStreamTimeout("no bytes for 30s")).retryable
    assert classify(FinalError("a type syncd cannot copy")).kind == Kind.REJECTED
    assert classify(PasswordFileError("password_file /x not found")).kind == Kind.CREDENTIALS
    assert classify(TimeoutError(), Side.SOURCE).kind == Kind.TIMEOUT
    assert classify(ConnectionRefusedError()).kind == Kind.CONNECTION


def test_a_source_that_does_not_answer_is_a_timeout_not_a_lock_wait():
    """A COPY past timeouts.statement is counted as a timeout; only others holding what syncd
    needs (a key index readers keep from being built) is `busy`, labelled lock_timeout."""
    from syncd.engine.errors import NoAnswer, RetryableError
    from syncd.observe.metrics import retry_reason

    stalled = classify(TransferError(Side.SOURCE, NoAnswer("statement timeout on the source")))
    assert stalled.retryable and stalled.kind == Kind.TIMEOUT
    assert retry_reason(stalled) == "timeout"
    held = classify(RetryableError("readers held syncd_data.x while its key index was built"))
    assert held.kind == Kind.BUSY and retry_reason(held) == "lock_timeout"
    assert retry_reason(classify(IdleStreamTimeout("no data for 30s"))) == "idle_stream"


def _server_error(cls: type[asyncpg.PostgresError], message: str) -> asyncpg.PostgresError:
    return cls(message)


# every class of error the classifier knows, as each side may raise it: (what, kind, retryable)
def _every_error() -> list[tuple[BaseException, Kind, bool]]:
    import ssl

    from syncd.engine.errors import NoAnswer, RetryableError

    cert = ssl.SSLCertVerificationError("certificate verify failed")
    cert.verify_message = "self-signed certificate"
    exc = asyncpg.exceptions
    return [
        (
            _server_error(exc.QueryCanceledError, "canceling statement due to statement timeout"),
            Kind.SERVER,
            True,
        ),
        (
            _server_error(exc.LockNotAvailableError, "canceling statement due to lock timeout"),
            Kind.SERVER,
            True,
        ),
        (
            _server_error(
                exc.AdminShutdownError, "terminating connection due to administrator command"
            ),
            Kind.SERVER,
            True,
        ),
        (
            _server_error(exc.CannotConnectNowError, "the database system is starting up"),
            Kind.SERVER,
            True,
        ),
        (_server_error(exc.ConnectionFailureError, "connection failure"), Kind.SERVER, True),
        (
            _server_error(exc.TooManyConnectionsError, "sorry, too many clients already"),
            Kind.SERVER,
            True,
        ),
        (_server_error(exc.SerializationError, "could not serialize access"), Kind.SERVER, True),
        (_server_error(exc.DeadlockDetectedError, "deadlock detected"), Kind.SERVER, True),
        (_server_error(exc.UndefinedTableError, 'relation "x" does not exist'), Kind.SERVER, False),
        (
            _server_error(
                exc.ReadOnlySQLTransactionError, "cannot execute INSERT in a read-only transaction"
            ),
            Kind.SERVER,
            False,
        ),
        (
            _server_error(
                exc.DiskFullError, 'could not extend file "base/1/2": No space left on device'
            ),
            Kind.DISK_FULL,
            False,
        ),
        (
            _server_error(exc.InternalServerError, "could not write init file"),
            Kind.DISK_FULL,
            False,
        ),
        (cert, Kind.TLS, False),
        (ssl.SSLError(1, "handshake failure"), Kind.TLS, False),
        (TimeoutError(), Kind.TIMEOUT, True),
        (ConnectionRefusedError(), Kind.CONNECTION, True),
        (ConnectionResetError(104, "Connection reset by peer"), Kind.CONNECTION, True),
        (OSError(28, "No space left on device"), Kind.DISK_FULL, False),
        (asyncpg.InterfaceError("connection is closed"), Kind.CONNECTION, True),
        (
            asyncpg.InterfaceError("the number of query arguments cannot exceed 32767"),
            Kind.CLIENT,
            False,
        ),
        (
            asyncpg.InternalClientError("another operation (2) is in progress"),
            Kind.CONNECTION,
            True,
        ),
        (asyncpg.InternalClientError("no binary format encoder"), Kind.CLIENT, False),
        (ConnectionError("connection lost"), Kind.CONNECTION, True),
        (NoAnswer("no answer within timeouts.idle_stream (300s)"), Kind.TIMEOUT, True),
        (IdleStreamTimeout("no data for 30s"), Kind.STALLED, True),
        (RetryableError("readers held the table"), Kind.BUSY, True),
        (FinalError("a type syncd cannot copy"), Kind.REJECTED, False),
        (PasswordFileError("password_file /x not found"), Kind.CREDENTIALS, False),
        (RuntimeError("a bug"), Kind.INTERNAL, False),
    ]


def test_every_error_class_names_the_side_it_came_from():
    """A destination failure never reads as the source's, nor the other way round: the
    failure carries its side, and a reason in the server's or the driver's words says which
    server it was (syncd's own errors are worded by the code that knows; a bug is a bug)."""
    for side, other in ((Side.SOURCE, Side.DESTINATION), (Side.DESTINATION, Side.SOURCE)):
        for exc, kind, retryable in _every_error():
            failure = classify(TransferError(side, exc))
            assert failure.side == side, (exc, side)
            assert (failure.kind, failure.retryable) == (kind, retryable), (exc, side, failure)
            assert classify(exc, side) == failure
            if isinstance(exc, (FinalError, IdleStreamTimeout)) or kind in (
                Kind.INTERNAL,
                Kind.BUSY,
                Kind.CREDENTIALS,
            ):
                continue
            if isinstance(exc, asyncpg.PostgresError) or kind != Kind.TIMEOUT:
                named = str(side) in failure.reason or (
                    side == Side.DESTINATION and "the analytical database" in failure.reason
                )
                assert named, (exc, side, failure.reason)
                assert f"on the {other}" not in failure.reason, (exc, side, failure.reason)


def test_a_statement_timeout_names_its_server_and_its_bound():
    timeout = asyncpg.exceptions.QueryCanceledError("canceling statement due to statement timeout")
    on_destination = classify(TransferError(Side.DESTINATION, timeout))
    assert on_destination.reason == (
        "statement timeout on the destination (timeouts.destination_statement)"
    )
    assert (
        classify(timeout, Side.SOURCE).reason
        == "statement timeout on the source (timeouts.statement)"
    )
    assert classify(timeout).reason == "statement timeout"  # nobody knows: it says nothing


def test_a_full_disk_is_its_own_kind_never_retried():
    from syncd.engine.retry import RetryPolicy

    full = classify(
        asyncpg.exceptions.DiskFullError("could not extend file: No space left on device"),
        Side.DESTINATION,
    )
    assert full.kind == Kind.DISK_FULL and full.sqlstate == "53100" and not full.retryable
    assert full.reason.startswith("the analytical database is out of disk space (")
    assert not RetryPolicy(4, 0.1, 1.0).allows(full, 1)
    others = asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients already")
    assert classify(others, Side.DESTINATION).retryable  # the rest of class 53 passes
