"""The ledger in schema `syncd`: what syncd records of every pass, for people and for itself.

    states.py     Status and Mode: the strings the ledger stores
    rows.py       a pass's rows in syncd.ledger and syncd.latest, written and read back
    catalog.py    syncd.catalog: the configured (municipality, dataset) pairs, and since when
    migrate.py    schema `syncd` brought to the current version (`syncd/sql/migrations/`)
    lockkeys.py   the advisory lock keys syncd takes on the destination

Every query is in `syncd/sql/ledger.sql`, under its name; the names below are the package's
public ones, so `from syncd import ledger` reaches them all.
"""

from syncd.ledger.catalog import pairs, pending_since, register
from syncd.ledger.lockkeys import LOCK_NAMESPACE
from syncd.ledger.migrate import MIGRATIONS, migrate
from syncd.ledger.rows import (
    DatasetStatus,
    Entry,
    abort_orphans,
    abort_stale,
    begin_pass,
    consecutive_failures,
    finish_pass,
    instance_name,
    last_durations,
    last_successes,
    latest,
    oldest_success,
    running_sources,
)
from syncd.ledger.states import FINAL, Mode, Status

__all__ = [
    "FINAL",
    "LOCK_NAMESPACE",
    "MIGRATIONS",
    "DatasetStatus",
    "Entry",
    "Mode",
    "Status",
    "abort_orphans",
    "abort_stale",
    "begin_pass",
    "consecutive_failures",
    "finish_pass",
    "instance_name",
    "last_durations",
    "last_successes",
    "latest",
    "migrate",
    "oldest_success",
    "pairs",
    "pending_since",
    "register",
    "running_sources",
]
