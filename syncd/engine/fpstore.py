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
from syncd.engine import fingerprint
from syncd.engine.landing import Landing
from syncd.engine.layout import SRC_FP
from syncd.engine.tables import Target

SQL = sql.load("delta")
FPS_TABLE = "syncd_fps"  # the delta's fingerprints, a temporary table of the landing's connection
FPS = f"pg_temp.{FPS_TABLE}"


@dataclass(frozen=True, slots=True)
class Stored:
    context: dict[str, Any]
    rows: int
    fp_sum: str


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
        f"FROM {parent} WHERE {landing.tables.mine()}"
    )
    assert row is not None
    return int(row["n"]), str(row["s"])


async def fingerprints(landing: Landing, target: Target) -> list[int]:
    """Every stored fingerprint of the municipality's rows (one bytea: 8 bytes a row)."""
    parent = landing.tables.parent(target.dataset)
    data: bytes | None = await landing.conn.fetchval(
        f"SELECT pg_catalog.string_agg(pg_catalog.int8send({SRC_FP}), ''::bytea) "  # noqa: S608
        f"FROM {parent} WHERE {landing.tables.mine()} AND {SRC_FP} IS NOT NULL"
    )
    data = data or b""
    return list(struct.unpack(f">{len(data) // 8}q", data))


def digests(fps: list[int], groups: int) -> bytes:
    """Round 2's upload: each group's digest, 8 bytes big-endian, in group order (0: empty),
    as fingerprint.GROUP_DIGEST computes it at the source: numeric arithmetic, whose remainder
    takes the sign of the dividend."""
    mask = groups - 1
    sums, counts = [0] * groups, [0] * groups
    for fp in fps:
        sums[fp & mask] += fp
        counts[fp & mask] += 1
    values = [0] * groups
    prime = fingerprint.DIGEST_PRIME
    for g in range(groups):
        if counts[g]:
            total = sums[g] + counts[g] * 7919
            values[g] = abs(total) % prime * (1 if total >= 0 else -1)
    return struct.pack(f">{groups}q", *values)


def held(fps: list[int], mask: int, groups: list[int]) -> Counter[int]:
    """The stored fingerprints of these groups, with their counts."""
    wanted = set(groups)
    return Counter(fp for fp in fps if fp & mask in wanted)


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
