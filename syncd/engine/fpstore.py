"""The destination's side of delta transfer (engine/delta.py): what is stored about one
municipality's rows of a dataset, read and written on its landing's connection, in its
transaction: the context their source fingerprints (`syncd_src_fp`) were made under with their
count and sum (`syncd.fingerprints`, queries in syncd/sql/delta.sql), each group's digest, and
the fingerprints a pass's delta is made of (a temporary table the landing's diff reads)."""

from __future__ import annotations

import json
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

import asyncpg

from syncd import sql
from syncd.engine import fingerprint, quoting
from syncd.engine.landing import Landing
from syncd.engine.layout import SOURCE_SETTING, SRC_FP
from syncd.engine.tables import Target

SQL = sql.load("delta")
FPS_TABLE = "syncd_fps"  # the delta's fingerprints, a temporary table of the landing's connection
FPS = f"pg_temp.{FPS_TABLE}"


@dataclass(frozen=True, slots=True)
class Stored:
    context: dict[str, Any]
    rows: int
    fp_sum: str


def _mine(landing: Landing) -> str:
    column = quoting.ident(landing.tables.source_column)
    return f"{column} = pg_catalog.current_setting({quoting.literal(SOURCE_SETTING)})"


async def load(conn: asyncpg.Connection, target: Target) -> Stored | None:
    row = await conn.fetchrow(SQL["load_context"], target.source_id, target.dataset)
    if row is None:
        return None
    return Stored(json.loads(row["context"]), int(row["row_count"]), str(row["fp_sum"]))


async def store(
    conn: asyncpg.Connection, target: Target, context: dict[str, Any], rows: int, total: str
) -> None:
    """In the landing's transaction: the context stands or falls with the rows it describes."""
    await conn.execute(
        SQL["store_context"],
        target.source_id,
        target.dataset,
        json.dumps(context, sort_keys=True),
        rows,
        total,
    )


async def forget(conn: asyncpg.Connection, source_id: str, dataset: str) -> None:
    """The dataset landed without fingerprints: nothing describes its rows any more."""
    await conn.execute(SQL["forget_context"], source_id, dataset)


async def totals(landing: Landing, target: Target) -> tuple[int, str]:
    parent = landing.tables.parent(target.dataset)
    row = await landing.conn.fetchrow(
        f"SELECT count(*)::bigint AS n, coalesce(sum({SRC_FP}), 0)::text AS s "  # noqa: S608
        f"FROM {parent} WHERE {_mine(landing)}"
    )
    assert row is not None
    return int(row["n"]), str(row["s"])


async def digests(landing: Landing, target: Target, groups: int) -> bytes:
    """Round 2's upload: each group's digest, 8 bytes big-endian, in group order (0: empty)."""
    parent = landing.tables.parent(target.dataset)
    digest = fingerprint.GROUP_DIGEST.format(fp=SRC_FP)
    rows = await landing.conn.fetch(
        f"SELECT ({SRC_FP} & $1::bigint)::int AS g, {digest} AS h "  # noqa: S608
        f"FROM {parent} WHERE {_mine(landing)} GROUP BY 1",
        groups - 1,
    )
    values = [0] * groups
    for r in rows:
        values[r["g"]] = r["h"]
    return struct.pack(f">{groups}q", *values)


async def held(landing: Landing, target: Target, mask: int, groups: list[int]) -> Counter[int]:
    parent = landing.tables.parent(target.dataset)
    if not groups:
        return Counter()
    rows = await landing.conn.fetch(
        f"SELECT {SRC_FP} AS fp FROM {parent} WHERE {_mine(landing)} "  # noqa: S608
        f"AND ({SRC_FP} & $1::bigint)::int IN (SELECT pg_catalog.unnest($2::int[]))",
        mask,
        groups,
    )
    return Counter(int(r["fp"]) for r in rows)


async def put_delta(conn: asyncpg.Connection, fps: list[int]) -> None:
    """The delta's fingerprints where the landing's restriction reads them."""
    await conn.execute(
        f"CREATE TEMP TABLE IF NOT EXISTS {FPS_TABLE} (fp bigint) ON COMMIT DELETE ROWS; "  # noqa: S608
        f"DELETE FROM {FPS}"
    )
    if fps:
        await conn.copy_records_to_table(
            FPS_TABLE, schema_name="pg_temp", records=[(fp,) for fp in fps]
        )
