"""Where a dataset or a municipality stands (`Status`) and how a dataset's rows were landed
(`Mode`): the strings the ledger stores, and what every other module compares against."""

from __future__ import annotations

from enum import StrEnum


class Status(StrEnum):
    """Where a dataset or a municipality stands. The ledger stores running, ok, failed and
    aborted; the others live in memory only."""

    PENDING = "pending"  # not started in this pass (or started again after a lost pass)
    RUNNING = "running"  # the pass is under way
    LOADED = "loaded"  # its rows are in the landing transaction, visible once it commits
    OK = "ok"
    FAILED = "failed"
    ABORTED = "aborted"  # cut short: syncd stopped, or died and a later pass found its rows
    SKIPPED = "skipped"  # another instance held or had just synced the municipality


FINAL = frozenset({Status.OK, Status.FAILED, Status.ABORTED})


class Mode(StrEnum):
    """How a dataset's rows were landed."""

    SNAPSHOT = "snapshot"  # every row, replacing the municipality's rows
    FULL_REFRESH = "full_refresh"  # an incremental dataset reloaded whole, with its watermark
    INCREMENTAL = "incremental"  # the rows past the watermark, upserted by key
