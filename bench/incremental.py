"""(d) Incremental passes: 650 municipalities after a first full load, 0.5% new rows each; then,
on 100 municipalities, the same new rows over tables 4x larger, and 4x the new rows."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from syncd.lab import pec

from .common import (
    Clusters,
    execute,
    make_municipalities,
    run_syncd,
    spread_sources,
    write_config,
)

DATASET = {
    "name": "atendimentos",
    "table": "public.tb_fat_atendimento_individual",
    "mode": "incremental",
    "cursor": "co_seq_fat_atd_ind",
    "key": "co_seq_fat_atd_ind",
    "full_refresh_every": "7d",
}


async def append(
    clusters: Clusters, prefix: str, ids: list[str], citizens: int, count: int
) -> None:
    semaphore = asyncio.Semaphore(4)

    async def one(mid: str) -> None:
        async with semaphore:
            conn = await asyncpg.connect(clusters.source.dsn(f"{prefix}_{mid}"))
            try:
                await pec.append_atendimentos(conn, pec.Municipality(mid, citizens), count)
            finally:
                await conn.close()

    await asyncio.gather(*(one(mid) for mid in ids))


def _config(clusters: Clusters, prefix: str, ids: list[str], destination: str) -> Path:
    return write_config(
        clusters.base / f"{prefix}.yaml",
        {
            "destination": {"dsn": clusters.dest.dsn(destination)},
            "sources": spread_sources(clusters, prefix, ids),
            "datasets": [DATASET],
        },
    )


def _pass(config) -> float:
    result = run_syncd("once", "--config", str(config))
    if result.returncode != 0:
        raise SystemExit(f"syncd once failed:\n{result.output[-3000:]}")
    return result.seconds


async def _settle(clusters: Clusters, database: str) -> None:
    await execute(clusters.dest.dsn(database), "VACUUM", "CHECKPOINT")


def run(clusters: Clusters, count: int, citizens: int, grid_citizens: int = 1000) -> dict:
    ids = pec.municipality_ids(count)
    rows_each = citizens * 3
    new_each = max(1, rows_each * 5 // 1000)  # 0.5%
    asyncio.run(execute(clusters.dest.dsn(), "CREATE DATABASE main", "CREATE DATABASE sizes"))

    asyncio.run(make_municipalities(clusters, "m", ids, citizens))
    config = _config(clusters, "m", ids, "main")
    full = _pass(config)
    asyncio.run(append(clusters, "m", ids, citizens, new_each))
    asyncio.run(_settle(clusters, "main"))
    incremental = _pass(config)

    # how the time grows: the same new rows over 4x larger tables, then 400x the new rows
    small_ids = pec.municipality_ids(100, start=count)
    large_ids = pec.municipality_ids(100, start=count + 100)
    asyncio.run(make_municipalities(clusters, "s", small_ids, grid_citizens))
    asyncio.run(make_municipalities(clusters, "l", large_ids, grid_citizens * 4))
    small = _config(clusters, "s", small_ids, "sizes")
    large = _config(clusters, "l", large_ids, "sizes")
    _pass(small)
    _pass(large)
    few = max(1, grid_citizens * 3 * 5 // 1000)
    grid = {}
    for label, prefix, chosen, config_, size, new in (
        (f"{grid_citizens * 3:,} rows, {few} new", "s", small_ids, small, grid_citizens, few),
        (f"{grid_citizens * 12:,} rows, {few} new", "l", large_ids, large, grid_citizens * 4, few),
        (
            f"{grid_citizens * 3:,} rows, {few * 400} new",
            "s",
            small_ids,
            small,
            grid_citizens,
            few * 400,
        ),
        (
            f"{grid_citizens * 12:,} rows, {few * 400} new",
            "l",
            large_ids,
            large,
            grid_citizens * 4,
            few * 400,
        ),
    ):
        asyncio.run(append(clusters, prefix, chosen, size, new))
        asyncio.run(_settle(clusters, "sizes"))
        grid[label] = _pass(config_)
    return {
        "municipalities": count,
        "rows_each": rows_each,
        "new_rows_each": new_each,
        "full_s": full,
        "incremental_s": incremental,
        "fraction": incremental / full,
        "grid_municipalities": 100,
        "grid": grid,
    }
