"""(b) 650 synthetic municipalities x 2 datasets at concurrency 32: wall time, peak RSS, peak
source connections.

The municipalities live on one PostgreSQL here, reached through 40 loopback addresses so that
`per_host` (default 4) sees 40 servers, as in the field where each has its own.
"""

from __future__ import annotations

import asyncio
import time

import asyncpg

from syncd import pec

from .common import Clusters, ConnectionWatcher, execute, run_syncd, write_config

HOSTS = 40
DATASETS = [
    {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"},
    {"name": "lista_nominal_hipertensos", "query_file": "LISTA"},
]


async def prepare(clusters: Clusters, count: int, citizens: int) -> list[str]:
    ids = pec.municipality_ids(count)
    await execute(clusters.dest.dsn(), "CREATE DATABASE impulso")
    admin = await asyncpg.connect(clusters.source.dsn())
    try:
        await admin.execute("CREATE DATABASE pec_template")
        conn = await asyncpg.connect(clusters.source.dsn("pec_template"))
        try:
            await pec.create_schema(conn)
        finally:
            await conn.close()
        for mid in ids:
            await admin.execute(
                f"CREATE DATABASE pec_{mid} TEMPLATE pec_template STRATEGY FILE_COPY"
            )
    finally:
        await admin.close()
    semaphore = asyncio.Semaphore(4)

    async def fill(mid: str) -> None:
        async with semaphore:
            conn = await asyncpg.connect(clusters.source.dsn(f"pec_{mid}"))
            try:
                await pec.fill(conn, pec.Municipality(mid, citizens))
            finally:
                await conn.close()

    await asyncio.gather(*(fill(mid) for mid in ids))
    return ids


def run(clusters: Clusters, count: int, citizens: int, concurrency: int, lista: str) -> dict:
    started = time.perf_counter()
    ids = asyncio.run(prepare(clusters, count, citizens))
    setup = time.perf_counter() - started
    sources = [
        {"id": mid, "dsn": clusters.source.dsn(f"pec_{mid}", host=f"127.0.0.{1 + i % HOSTS}")}
        for i, mid in enumerate(ids)
    ]
    datasets = [dict(d, query_file=lista) if "query_file" in d else d for d in DATASETS]
    config = write_config(
        clusters.base / "many.yaml",
        {
            "destination": {"dsn": clusters.dest.dsn("impulso")},
            "concurrency": {"sources": concurrency},
            "sources": sources,
            "datasets": datasets,
        },
    )
    with ConnectionWatcher(clusters.source) as watcher:
        result = run_syncd("once", "--config", str(config))
    if result.returncode != 0:
        raise SystemExit(f"syncd once failed:\n{result.output[-3000:]}")
    summary_line = [line for line in result.output.splitlines() if "sources ok" in line]
    return {
        "municipalities": count,
        "datasets": len(datasets),
        "citizens_each": citizens,
        "concurrency": concurrency,
        "setup_s": setup,
        "wall_s": result.seconds,
        "peak_rss_mb": result.max_rss_kb / 1024,
        "peak_source_connections": watcher.peak,
        "summary": summary_line[-1] if summary_line else "",
    }
