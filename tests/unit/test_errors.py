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
