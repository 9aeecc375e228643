"""(d) Incremental passes: 650 municipalities after a first full load, 0.5% new rows each; then,
on 100 municipalities, the same new rows over tables 4x larger, and 4x the new rows."""

from __future__ import annotations

import asyncio

import asyncpg

from syncd import pec

from .common import Clusters, execute, run_syncd, write_config

HOSTS = 40
DATASET = {
    "name": "atendimentos",
    "table": "public.tb_fat_atendimento_individual",
    "mode": "incremental",
    "cursor": "co_seq_fat_atd_ind",
    "key": "co_seq_fat_atd_ind",
    "full_refresh_every": "7d",
}


async def prepare(clusters: Clusters, prefix: str, ids: list[str], citizens: int) -> None:
    admin = await asyncpg.connect(clusters.source.dsn())
    try:
        template = f"{prefix}_template"
        await admin.execute(f"CREATE DATABASE {template}")
        conn = await asyncpg.connect(clusters.source.dsn(template))
        try:
            await pec.create_schema(conn)
        finally:
            await conn.close()
        for mid in ids:
            await admin.execute(
                f"CREATE DATABASE {prefix}_{mid} TEMPLATE {template} STRATEGY FILE_COPY"
            )
    finally:
        await admin.close()
    semaphore = asyncio.Semaphore(4)

    async def fill(mid: str) -> None:
        async with semaphore:
            conn = await asyncpg.connect(clusters.source.dsn(f"{prefix}_{mid}"))
            try:
                await pec.fill(conn, pec.Municipality(mid, citizens))
            finally:
                await conn.close()

    await asyncio.gather(*(fill(mid) for mid in ids))


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


def _config(clusters: Clusters, prefix: str, ids: list[str], destination: str) -> object:
    sources = [
        {"id": mid, "dsn": clusters.source.dsn(f"{prefix}_{mid}", host=f"127.0.0.{1 + i % HOSTS}")}
        for i, mid in enumerate(ids)
    ]
    return write_config(
        clusters.base / f"{prefix}.yaml",
        {
            "destination": {"dsn": clusters.dest.dsn(destination)},
            "sources": sources,
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


def run(clusters: Clusters, count: int, citizens: int) -> dict:
    ids = pec.municipality_ids(count)
    rows_each = citizens * 3
    new_each = max(1, rows_each * 5 // 1000)  # 0.5%
    asyncio.run(execute(clusters.dest.dsn(), "CREATE DATABASE main", "CREATE DATABASE sizes"))

    asyncio.run(prepare(clusters, "m", ids, citizens))
    config = _config(clusters, "m", ids, "main")
    full = _pass(config)
    asyncio.run(append(clusters, "m", ids, citizens, new_each))
    asyncio.run(_settle(clusters, "main"))
    incremental = _pass(config)

    # how the time grows: same new rows over 4x larger tables, then 4x the new rows
    small_ids = pec.municipality_ids(100, start=count)
    large_ids = pec.municipality_ids(100, start=count + 100)
    asyncio.run(prepare(clusters, "s", small_ids, citizens))
    asyncio.run(prepare(clusters, "l", large_ids, citizens * 4))
    small, large = (
        _config(clusters, "s", small_ids, "sizes"),
        _config(clusters, "l", large_ids, "sizes"),
    )
    _pass(small)
    _pass(large)
    grid = {}
    for label, prefix, chosen, config_, size, new in (
        ("1x table, 1x new rows", "s", small_ids, small, citizens, new_each),
        ("4x table, 1x new rows", "l", large_ids, large, citizens * 4, new_each),
        ("1x table, 4x new rows", "s", small_ids, small, citizens, new_each * 4),
        ("4x table, 4x new rows", "l", large_ids, large, citizens * 4, new_each * 4),
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
