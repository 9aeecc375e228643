"""Schema `syncd` brought to the current version: the scripts are `syncd/sql/migrations/*.sql`,
the version applied is in `syncd.schema_version`."""

from __future__ import annotations

import asyncpg

from syncd.ledger.lockkeys import LOCK_NAMESPACE
from syncd.sql import load, migrations

SQL = load("ledger")

MIGRATIONS: list[str] = migrations()


async def migrate(conn: asyncpg.Connection) -> None:
    """Bring schema `syncd` to the current version; safe with several instances starting."""
    async with conn.transaction():
        await conn.execute(SQL["migration_lock"], LOCK_NAMESPACE)
        await conn.execute(SQL["create_schema"])
        version = await conn.fetchval(SQL["schema_version"]) or 0
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"the destination's syncd schema is version {version}, newer than this syncd "
                f"({len(MIGRATIONS)}): upgrade syncd"
            )
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await conn.execute(script)
            await conn.execute(SQL["record_version"], number)
