"""Telling downstream that a municipality has landed: one NOTIFY on the destination per pass.

`announce` runs `SELECT pg_notify(channel, payload)` on the connection of the transaction that
makes the municipality's rows visible. PostgreSQL delivers a notification only when its
transaction commits, so a listener never hears about rows it cannot read yet, and a rolled-back
landing (a failed swap) announces nothing.

The payload is compact JSON, at most `MAX_PAYLOAD_BYTES`, the dataset list cut to fit. Its one
description, every field and when a notification is sent, is docs/reference/notify.md, with its
JSON Schema (notify.schema.json) that tests/scenarios/test_downstream.py validates real
payloads against.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from syncd.ledger import Mode, Status

# PostgreSQL refuses payloads of 8000 bytes or more (a default build); the margin is for the
# `omitted` count added after the cut.
NOTIFY_LIMIT_BYTES = 8000
MAX_PAYLOAD_BYTES = NOTIFY_LIMIT_BYTES - 100
PAYLOAD_VERSION = 1


@dataclass(frozen=True, slots=True)
class DatasetOutcome:
    """One dataset of the pass as the notification reports it."""

    name: str
    status: Status  # ok | failed | aborted
    rows: int | None
    mode: Mode | None


def _dumps(value: object) -> str:
    # ASCII only: one character, one byte, so lengths below are byte counts
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def payload(
    source_id: str, pass_id: int | None, datasets: Sequence[DatasetOutcome], at: datetime
) -> str:
    """The notification's JSON, cut to fit: datasets are kept in order while they fit."""
    document: dict[str, object] = {
        "version": PAYLOAD_VERSION,
        "source": source_id,
        "pass": pass_id,
        "status": "ok" if all(d.status == Status.OK for d in datasets) else "partial",
        "at": at.isoformat(),
        "datasets": {},
    }
    size = len(_dumps(document))
    kept: dict[str, dict[str, object]] = {}
    for d in datasets:
        entry: dict[str, object] = {"status": d.status, "rows": d.rows, "mode": d.mode}
        # "name":{...} plus the comma before it
        cost = len(_dumps(d.name)) + 1 + len(_dumps(entry)) + (1 if kept else 0)
        if size + cost > MAX_PAYLOAD_BYTES:
            break
        kept[d.name] = entry
        size += cost
    document["datasets"] = kept
    if len(kept) < len(datasets):
        document["omitted"] = len(datasets) - len(kept)
    return _dumps(document)


async def announce(conn: asyncpg.Connection, channel: str | None, text: str) -> None:
    """NOTIFY `channel` with `text`, delivered when the caller's transaction commits.

    Call it inside the transaction that makes the announced rows visible. A `None` channel
    (`destination.notify_channel: null`) sends nothing."""
    if channel is None:
        return
    await conn.execute("SELECT pg_notify($1, $2)", channel, text)
