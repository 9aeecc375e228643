"""The advisory lock keys syncd takes on the destination, all (LOCK_NAMESPACE, n):

    n = 0                  migrating schema `syncd` (ledger.migrate)
    n = 1                  creating the data schema (engine.destination)
    n = 2                  writing the catalog (ledger.catalog), converting older dataset
                           tables (engine.upgrade)
    n = hashtext(table)    DDL on one dataset table (engine.destination)

The per-municipality sync locks are single-key ones of their own (engine.synclock).
"""

from __future__ import annotations

LOCK_NAMESPACE = 0x73796E63  # 'sync': first key of every syncd advisory lock
