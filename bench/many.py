"""(b) 650 synthetic municipalities x 2 datasets at concurrency 32: wall time, peak RSS, peak
source connections.

The municipalities live on one PostgreSQL here, reached through 40 loopback addresses so that
`per_host` (default 4) sees 40 servers, as in the field where each has its own.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from syncd.lab import pec

from .common import (
    Clusters,
    ConnectionWatcher,
    change_share,
    execute,
    make_municipalities,
    once_ok,
    spread_sources,
    write_config,
)

STEADY_SHARE = 0.02  # of each municipality's citizens changed before the steady-state pass
DATASETS = [
    {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"},
    {"name": "lista_nominal_hipertensos", "query_file": "LISTA"},
]


async def prepare(clusters: Clusters, count: int, citizens: int) -> list[str]:
    ids = pec.municipality_ids(count)
    await execute(clusters.dest.dsn(), "CREATE DATABASE impulso")
    await make_municipalities(clusters, "pec", ids, citizens)
    return ids


def config_for(clusters: Clusters, name: str, ids: list[str], concurrency: int, lista: str) -> Path:
    datasets = [dict(d, query_file=lista) if "query_file" in d else d for d in DATASETS]
    return write_config(
        clusters.base / f"{name}.yaml",
        {
            "destination": {"dsn": clusters.dest.dsn("impulso")},
            "concurrency": {"sources": concurrency},
            "sources": spread_sources(clusters, "pec", ids),
            "datasets": datasets,
        },
    )


def run(clusters: Clusters, count: int, citizens: int, concurrency: int, lista: str) -> dict:
    started = time.perf_counter()
    ids = asyncio.run(prepare(clusters, count, citizens))
    setup = time.perf_counter() - started
    config = config_for(clusters, "many", ids, concurrency, lista)
    with ConnectionWatcher(clusters.source) as watcher:
        first = once_ok(config)
    # the daily case: every municipality already landed, about 2% of its rows changed
    changed = asyncio.run(
        change_share([clusters.source.dsn(f"pec_{mid}") for mid in ids], STEADY_SHARE)
    )
    steady = once_ok(config)
    summary_line = [line for line in steady.output.splitlines() if "sources ok" in line]
    return {
        "municipalities": count,
        "datasets": len(DATASETS),
        "citizens_each": citizens,
        "concurrency": concurrency,
        "setup_s": setup,
        "wall_s": first.seconds,
        "steady_s": steady.seconds,
        "steady_changed_rows": changed,
        "peak_rss_mb": max(first.max_rss_kb, steady.max_rss_kb) / 1024,
        "peak_source_connections": watcher.peak,
        "summary": summary_line[-1] if summary_line else "",
    }
