"""(e) All of Brazil's shape: up to 5,570 municipalities x 2 datasets as shared installations
(about ten PEC databases, one source per municipality with `params`), steady-state pass time
and time per municipality from 100 up, to show the curve is flat.

Each point is its own destination database: a first pass lands everything, then the steady-state
pass (every municipality's rows replaced) is timed.
"""

from __future__ import annotations

import asyncio

import asyncpg

from syncd.lab import pec

from .common import Clusters, change_share, execute, once_ok, write_config

DATABASES = 10
CITIZENS = 30  # per municipality
BY_IBGE = (
    "FROM tb_fat_cidadao_pec c JOIN tb_dim_municipio m "
    "ON m.co_seq_dim_municipio = c.co_dim_municipio "
    "WHERE m.co_ibge = current_setting('syncd.co_ibge')"
)
DATASETS = [
    {"name": "cidadaos", "query": f"SELECT c.* {BY_IBGE}"},
    {
        "name": "atendimentos",
        "query": "SELECT a.* FROM tb_fat_atendimento_individual a "
        "JOIN tb_fat_cidadao_pec c ON c.co_seq_fat_cidadao_pec = a.co_fat_cidadao_pec "
        "JOIN tb_dim_municipio m ON m.co_seq_dim_municipio = c.co_dim_municipio "
        "WHERE m.co_ibge = current_setting('syncd.co_ibge')",
    },
]


async def prepare(clusters: Clusters, total: int) -> dict[str, list[str]]:
    """DATABASES shared installations holding `total` municipalities between them."""
    ids = pec.municipality_ids(total)
    per_db = -(-total // DATABASES)
    placed: dict[str, list[str]] = {}
    for n in range(DATABASES):
        mine = ids[n * per_db : (n + 1) * per_db]
        if not mine:
            break
        dbname = f"shared_{n}"
        await execute(clusters.source.dsn(), f"CREATE DATABASE {dbname}")
        conn = await asyncpg.connect(clusters.source.dsn(dbname))
        try:
            await pec.create_municipality(conn, pec.Municipality(mine[0], CITIZENS * len(mine)))
            await conn.execute("DELETE FROM tb_dim_municipio WHERE co_seq_dim_municipio > 1")
            # row 1 is mine[0] already (create_municipality made it)
            await conn.executemany(
                "INSERT INTO tb_dim_municipio VALUES ($1, $2, 'M', 'SP')",
                [(i + 2, mid) for i, mid in enumerate(mine[1:])],
            )
            await conn.execute(
                "UPDATE tb_fat_cidadao_pec SET co_dim_municipio = co_seq_fat_cidadao_pec % $1 + 1",
                len(mine),
            )
            await conn.execute(
                "CREATE INDEX ON tb_fat_cidadao_pec (co_dim_municipio);"
                "CREATE UNIQUE INDEX ON tb_dim_municipio (co_ibge)"
            )
            await conn.execute("VACUUM ANALYZE")
        finally:
            await conn.close()
        placed[dbname] = mine
    return placed


def run(clusters: Clusters, points: list[int], concurrency: int) -> dict:
    top = max(points)
    placed = asyncio.run(prepare(clusters, top))
    # interleaved, so that any prefix of the list spreads over every database
    order = [
        (n, db, mids[i])
        for i in range(max(map(len, placed.values())))
        for n, (db, mids) in enumerate(placed.items())
        if i < len(mids)
    ]
    curve = []
    for count in points:
        dbname = f"brasil_{count}"
        asyncio.run(execute(clusters.dest.dsn(), f"CREATE DATABASE {dbname}"))
        # each database behind an address of its own: ten servers, `per_host` each
        sources = [
            {
                "id": mid,
                "dsn": clusters.source.dsn(db, host=f"127.0.0.{1 + n}"),
                "params": {"co_ibge": mid},
            }
            for n, db, mid in order[:count]
        ]
        config = write_config(
            clusters.base / f"brasil-{count}.yaml",
            {
                "destination": {"dsn": clusters.dest.dsn(dbname)},
                "concurrency": {"sources": concurrency},
                "sources": sources,
                "datasets": DATASETS,
            },
        )
        first = once_ok(config)
        asyncio.run(change_share([clusters.source.dsn(db) for db in placed], 0.02))
        steady = once_ok(config)
        curve.append(
            {
                "municipalities": count,
                "first_s": first.seconds,
                "steady_s": steady.seconds,
                "ms_per_municipality": steady.seconds * 1000 / count,
                "peak_rss_mb": steady.max_rss_kb / 1024,
            }
        )
    return {"databases": len(placed), "citizens_each": CITIZENS, "curve": curve}
