"""Every log line's `event`: a stable snake_case name, so an operator filters by field
(`jq 'select(.event == "sync_failed")'`, `journalctl ... | grep event=reload_rejected`) and not
by the wording of a message, which may change.

Each call passes `extra={"event": Event.X}`; tests/unit/test_logevents.py fails when a logging
call in syncd/ has none, or when a name is listed here and never logged (or the other way). The
reference docs list `MEANINGS`.
"""

from __future__ import annotations

from enum import StrEnum


class Event(StrEnum):
    # one municipality's sync
    DATASET_SYNCED = "dataset_synced"
    DATASET_FAILED = "dataset_failed"
    SYNC_FAILED = "sync_failed"
    RETRY = "retry"
    AFTER_COMMIT_FAILED = "after_commit_failed"
    LEDGER_WRITE_FAILED = "ledger_write_failed"
    PASS_ABORTED = "pass_aborted"
    LOCK_LOST = "lock_lost"
    COLUMNS_DEFERRED = "columns_deferred"
    COLUMN_TYPE_CHANGED = "column_type_changed"
    COLUMN_TYPE_DEFERRED = "column_type_deferred"
    COLUMN_RETYPE_STARTED = "column_retype_started"
    COLUMN_RETYPE_BACKFILLED = "column_retype_backfilled"
    COLUMN_RETYPE_FAILED = "column_retype_failed"
    DELTA_FALLBACK = "delta_fallback"
    VACUUM_FAILED = "vacuum_failed"
    # the destination's disk
    DISK_FULL = "disk_full"
    DISK_RESUMED = "disk_resumed"
    # start and upgrades of the destination
    INTERRUPTED_RUN_CLEANED = "interrupted_run_cleaned"
    INTERRUPTED_RUN_CLEANUP_FAILED = "interrupted_run_cleanup_failed"
    TABLE_CONVERTING = "table_converting"
    TABLE_CONVERTED = "table_converted"
    RETIRED_TABLE_IN_USE = "retired_table_in_use"
    RETIRED_TABLE_KEPT = "retired_table_kept"
    ROW_HASHES_ADDING = "row_hashes_adding"
    SOURCE_FINGERPRINTS_ADDING = "source_fingerprints_adding"
    # bastions
    BASTION_CONNECTED = "bastion_connected"
    BASTION_LOST = "bastion_lost"
    HOST_KEY_MISMATCH = "host_key_mismatch"
    # the daemon
    STARTED = "started"
    LISTEN_FAILED = "listen_failed"
    SIGNAL_RECEIVED = "signal_received"
    STOPPING = "stopping"
    SYNCS_CANCELLED = "syncs_cancelled"
    STOPPED = "stopped"
    SIDE_TASK_DIED = "side_task_died"
    SIDE_TASK_RETURNED = "side_task_returned"
    LEDGER_READ_FAILED = "ledger_read_failed"
    CATALOG_WRITE_FAILED = "catalog_write_failed"
    SYNC_REQUESTED = "sync_requested"
    TOKEN_UNUSABLE = "token_unusable"
    SD_NOTIFY_FAILED = "sd_notify_failed"
    # config and reloads
    CONFIG_WARNING = "config_warning"
    DIFFER_PURE_PYTHON = "differ_pure_python"
    RELOADED = "reloaded"
    RELOAD_REJECTED = "reload_rejected"
    RELOAD_LISTEN_FAILED = "reload_listen_failed"
    # `syncd once` and telemetry
    PASS_CANCELLED = "pass_cancelled"
    TRACE_FLUSH_FAILED = "trace_flush_failed"


MEANINGS: dict[Event, str] = {
    Event.DATASET_SYNCED: "a dataset of a municipality landed (rows, bytes, seconds)",
    Event.DATASET_FAILED: "a dataset of a municipality failed; the others may still land",
    Event.SYNC_FAILED: "a municipality's sync failed as a whole (reason in the line)",
    Event.RETRY: "a retryable failure (connection lost, timeout...): tried again after a delay",
    Event.AFTER_COMMIT_FAILED: "something failed after the landing committed; nothing is lost",
    Event.LEDGER_WRITE_FAILED: "the outcome of a pass could not be recorded in the ledger",
    Event.PASS_ABORTED: "ledger rows of an interrupted pass of a source were marked aborted",
    Event.LOCK_LOST: "a source's lock went with a lost destination connection",
    Event.COLUMNS_DEFERRED: "new source columns wait: readers hold the table; rows land without",
    Event.COLUMN_TYPE_CHANGED: "a dataset column took a wider type a municipality sends (both named)",
    Event.COLUMN_TYPE_DEFERRED: "a column's type change waits: readers hold the table; rows that fit land",
    Event.COLUMN_RETYPE_STARTED: "a column's type change began online (a hidden column, filled)",
    Event.COLUMN_RETYPE_BACKFILLED: "an online type change filled every stored row; the swap is next",
    Event.COLUMN_RETYPE_FAILED: "a step of an online type change failed; tried again after a pass",
    Event.DELTA_FALLBACK: "a delta transfer round failed at the source: the dataset streams whole",
    Event.VACUUM_FAILED: "a VACUUM after landing failed; autovacuum does it later",
    Event.DISK_FULL: "the analytical database is out of disk space: no landing starts (once)",
    Event.DISK_RESUMED: "a disk probe write succeeded (or could not tell): landing resumes",
    Event.INTERRUPTED_RUN_CLEANED: "at start: ledger rows of an interrupted run marked aborted",
    Event.INTERRUPTED_RUN_CLEANUP_FAILED: "at start: cleaning up an interrupted run failed",
    Event.TABLE_CONVERTING: "a table of one partition per municipality is being bucketed by hash",
    Event.TABLE_CONVERTED: "a dataset table was converted to hash buckets",
    Event.RETIRED_TABLE_IN_USE: "a table retired by an upgrade is still read: dropped later",
    Event.RETIRED_TABLE_KEPT: "a table retired by an upgrade has dependents: drop it by hand",
    Event.ROW_HASHES_ADDING: "row hashes are being added to a dataset table that has none",
    Event.SOURCE_FINGERPRINTS_ADDING: (
        "source fingerprints (delta transfer) are being added to a dataset table"
    ),
    Event.BASTION_CONNECTED: "an SSH connection to a bastion is open",
    Event.BASTION_LOST: "an SSH connection to a bastion was lost; reopened on next use",
    Event.HOST_KEY_MISMATCH: "a bastion's host key does not match: not tried until a reload",
    Event.STARTED: "the daemon serves (sources, datasets, HTTP address)",
    Event.LISTEN_FAILED: "the daemon cannot listen on its HTTP address and exits",
    Event.SIGNAL_RECEIVED: "SIGTERM or SIGINT received: the daemon stops",
    Event.STOPPING: "stopping: waiting for the syncs in flight up to the grace period",
    Event.SYNCS_CANCELLED: "syncs still running after the grace period were cancelled",
    Event.STOPPED: "the daemon stopped",
    Event.SIDE_TASK_DIED: "a task the daemon needs failed: the daemon stops",
    Event.SIDE_TASK_RETURNED: "a task the daemon needs ended: the daemon stops",
    Event.LEDGER_READ_FAILED: "reading what other instances synced from the ledger failed",
    Event.CATALOG_WRITE_FAILED: "recording the configured sources in syncd.catalog failed",
    Event.SYNC_REQUESTED: "a sync was requested over HTTP",
    Event.TOKEN_UNUSABLE: "http.token_file unreadable or empty: POST endpoints disabled",
    Event.SD_NOTIFY_FAILED: "a message to systemd (sd_notify) could not be sent",
    Event.CONFIG_WARNING: "a warning about the config (one line per kind)",
    Event.DIFFER_PURE_PYTHON: "at start: the pure-Python row differ runs (several times "
    "slower), and why (the compiled one is missing, does not load, is stale, or is turned off)",
    Event.RELOADED: "a reload applied a new config",
    Event.RELOAD_REJECTED: "a reload was rejected: the previous config keeps running",
    Event.RELOAD_LISTEN_FAILED: "a reload's new HTTP address could not be listened on",
    Event.PASS_CANCELLED: "`syncd once`: a signal cancelled the pass",
    Event.TRACE_FLUSH_FAILED: "sending the buffered traces failed at exit",
}
