"""The advisory lock keys syncd takes on the destination, all (LOCK_NAMESPACE, n):

    n = 0                  migrating schema `syncd` (ledger.migrate)
    n = 1                  creating the data schema (engine.destination)
    n = 2                  writing the catalog (ledger.catalog), converting older dataset
                           tables (engine.upgrade)
    n = hashtext(table)    DDL on one dataset table (engine.destination)

The per-municipality sync locks are single-key ones of their own, `source_key(source_id)`:
a syncd syncing a municipality holds it for the session (engine.synclock), and the online
change of a column type takes it per transaction to fill that municipality's rows
(engine.retype).
"""

from __future__ import annotations

import hashlib

LOCK_NAMESPACE = 0x73796E63  # 'sync': first key of every syncd advisory lock


def source_key(source_id: str) -> int:
    """The single-key advisory lock of one municipality's syncs."""
    digest = hashlib.sha256(b"syncd-source:" + source_id.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
