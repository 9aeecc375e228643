"""How failures are classed: what is worth another attempt, and what the operator reads."""

from __future__ import annotations

import asyncpg

from syncd.engine.errors import TransferError, classify


def test_a_protocol_cut_mid_operation_is_a_lost_connection_worth_retrying():
    """Seen when the destination restarted mid-COPY: asyncpg's protocol is left mid-operation
    and the next call says so. It used to be classed final and failed the dataset."""
    exc = asyncpg.InternalClientError(
        "cannot switch to state 15; another operation (2) is in progress"
    )
    failure = classify(TransferError("destination", exc))
    assert failure.retryable and failure.code == "connection" and failure.side == "destination"
    assert "connection broken in the middle of an operation" in failure.reason


def test_other_client_errors_stay_final():
    failure = classify(asyncpg.InternalClientError("no binary format encoder for type x"))
    assert not failure.retryable and failure.code == "client"


def test_reasons_are_one_line_and_redacted():
    failure = classify(RuntimeError("boom\nat postgresql://u:hunter2@h/db password=x"))
    assert "\n" not in failure.reason and "hunter2" not in failure.reason
    assert "password=***" in failure.reason
