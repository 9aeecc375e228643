"""(a) One 2,000,000-row PEC-shaped table between two clusters: `syncd once` vs the psql pipe.

The baseline is the fastest thing there is: `psql -c "COPY t TO STDOUT (FORMAT binary)" |
psql -c "COPY t FROM STDIN (FORMAT binary)"` into a fresh table. syncd does more (a staging
table, the partition swap, ANALYZE, the ledger, Python start-up) and is timed as a whole command.
Runs alternate; the ratio is of the medians.
"""

from __future__ import annotations

import asyncio
import shlex

import asyncpg

from syncd.lab import pec

from .common import (
    Clusters,
    execute,
    median,
    run_shell,
    run_syncd,
    write_config,
)

TABLE = "tb_fat_atendimento_individual"


async def prepare(clusters: Clusters, rows: int) -> None:
    await execute(clusters.source.dsn(), "CREATE DATABASE esus")
    await execute(clusters.dest.dsn(), "CREATE DATABASE impulso", "CREATE DATABASE pipe")
    conn = await asyncpg.connect(clusters.source.dsn("esus"))
    try:
        # the generator makes three consultations per citizen
        await pec.create_municipality(conn, pec.Municipality("351570", -(-rows // 3)))
        await conn.execute(f"DELETE FROM {TABLE} WHERE co_seq_fat_atd_ind > $1", rows)
        await conn.execute(f"VACUUM ANALYZE {TABLE}")
    finally:
        await conn.close()


async def fresh_pipe_target(clusters: Clusters) -> None:
    conn = await asyncpg.connect(clusters.dest.dsn("pipe"))
    try:
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
        await pec.create_schema(conn)
        await conn.execute(f"DROP INDEX {TABLE}_co_fat_cidadao_pec_idx")  # no index: plain load
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()


async def checkpoint(clusters: Clusters) -> None:
    await execute(clusters.dest.dsn(), "CHECKPOINT")


def run(clusters: Clusters, rows: int, rounds: int) -> dict:
    asyncio.run(prepare(clusters, rows))
    config = write_config(
        clusters.base / "single.yaml",
        {
            "destination": {"dsn": clusters.dest.dsn("impulso")},
            "sources": [{"id": "351570", "dsn": clusters.source.dsn("esus")}],
            "datasets": [{"name": "atendimentos", "table": f"public.{TABLE}"}],
        },
    )
    psql = shlex.join([str(clusters.source.bin_dir / "psql"), "-X", "-q"])
    pipe = (
        f"{psql} {shlex.quote(clusters.source.dsn('esus'))} "
        f"-c 'COPY public.{TABLE} TO STDOUT (FORMAT binary)' | "
        f"{psql} {shlex.quote(clusters.dest.dsn('pipe'))} "
        f"-c 'COPY public.{TABLE} FROM STDIN (FORMAT binary)'"
    )
    warm = run_syncd("once", "--config", str(config))  # creates the dataset table, warms caches
    if warm.returncode != 0:
        raise SystemExit(f"syncd once failed:\n{warm.output}")
    syncd_times, pipe_times = [], []
    for _ in range(rounds):
        asyncio.run(fresh_pipe_target(clusters))
        pipe_times.append(run_shell(pipe))
        asyncio.run(checkpoint(clusters))
        result = run_syncd("once", "--config", str(config))
        if result.returncode != 0:
            raise SystemExit(f"syncd once failed:\n{result.output}")
        syncd_times.append(result.seconds)
        asyncio.run(checkpoint(clusters))
    size = asyncio.run(_size(clusters))
    return {
        "rows": rows,
        "bytes": size,
        "rounds": rounds,
        "pipe_s": pipe_times,
        "syncd_s": syncd_times,
        "pipe_median_s": median(pipe_times),
        "syncd_median_s": median(syncd_times),
        "ratio": median(syncd_times) / median(pipe_times),
    }


async def _size(clusters: Clusters) -> int:
    conn = await asyncpg.connect(clusters.dest.dsn("impulso"))
    try:
        return await conn.fetchval(
            "SELECT bytes FROM syncd.ledger WHERE status = 'ok' ORDER BY pass_id DESC LIMIT 1"
        )
    finally:
        await conn.close()
