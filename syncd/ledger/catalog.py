"""`syncd.catalog`: which (municipality, dataset) pairs are configured, and since when, so that
freshness counts from the day a dataset was configured even before its first success."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import asyncpg

from syncd.config import Config
from syncd.ledger.lockkeys import LOCK_NAMESPACE
from syncd.sql import load

SQL = load("ledger")


def pairs(config: Config) -> list[tuple[str, str, str | None]]:
    return [(s.id, d.name, s.name) for s in config.sources for d in config.datasets]


async def register(
    conn: asyncpg.Connection, pairs: Sequence[tuple[str, str, str | None]], *, replace: bool
) -> None:
    """Record the configured (source, dataset, source name) triples in syncd.catalog.

    The daemon replaces the catalog with its config; `syncd once` only adds what it syncs.
    """
    async with conn.transaction():
        await conn.execute(SQL["catalog_lock"], LOCK_NAMESPACE)
        await conn.execute(
            SQL["catalog_add"],
            [p[0] for p in pairs],
            [p[1] for p in pairs],
            [p[2] for p in pairs],
        )
        if replace:
            await conn.execute(
                SQL["catalog_keep_only"],
                [p[0] for p in pairs],
                [p[1] for p in pairs],
            )


async def pending_since(conn: asyncpg.Connection) -> dict[str, datetime]:
    """Per configured source with a dataset that never succeeded: since when that dataset is
    configured (the oldest such), for freshness to count from."""
    rows = await conn.fetch(SQL["pending_since"])
    return {r["source_id"]: r["since"] for r in rows}
