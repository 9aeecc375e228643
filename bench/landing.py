"""(f) Landing v3 on one 2,000,000-row PEC-shaped table: what a pass costs when nothing changed,
when about 2% of the rows changed, and on a first load, against the fastest ways there are.

- the floor: reading the table alone (`psql -c "COPY t TO STDOUT (FORMAT binary)"` to /dev/null),
  since every source row must be read once;
- the pipe: `psql COPY TO | psql COPY FROM` into a fresh table without index, and its WAL.

syncd is timed as a whole `syncd once` command (Python start-up included); WAL is
`pg_current_wal_lsn()` before and after, after a CHECKPOINT (so full-page images count, as they
do on a server that checkpoints every few minutes). Runs alternate; ratios are of medians.
"""

from __future__ import annotations

import asyncio
import shlex

import asyncpg

from .common import Clusters, execute, median, run_shell, run_syncd, write_config
from .single_table import TABLE, fresh_pipe_target, prepare

# landing v2 on this box, from issue #18 (main before v3, PostgreSQL 15 both sides)
V2 = {"unchanged_vs_pipe": 1.88, "first_vs_pipe": None}


async def _wal(dsn: str) -> str:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("CHECKPOINT")
        return await conn.fetchval("SELECT pg_current_wal_lsn()::text")
    finally:
        await conn.close()


async def _wal_since(dsn: str, lsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval("SELECT pg_current_wal_lsn() - $1::text::pg_lsn", lsn))
    finally:
        await conn.close()


async def _change(dsn: str, round_: int) -> int:
    """About 2% of the rows: a third updated, a third deleted, a third inserted."""
    conn = await asyncpg.connect(dsn)
    try:
        m = 150
        updated = await conn.execute(
            f"UPDATE {TABLE} SET nu_peso = coalesce(nu_peso, 0) + 1 "
            f"WHERE co_seq_fat_atd_ind % {m} = {3 * round_ % m}"
        )
        deleted = await conn.execute(
            f"DELETE FROM {TABLE} WHERE co_seq_fat_atd_ind % {m} = {(3 * round_ + 1) % m}"
        )
        columns = ", ".join(
            r[0]
            for r in await conn.fetch(
                "SELECT attname FROM pg_attribute WHERE attrelid = $1::regclass AND attnum > 0 "
                "AND NOT attisdropped ORDER BY attnum",
                TABLE,
            )
        )
        rest = columns.split(", ", 1)[1]
        inserted = await conn.execute(
            f"INSERT INTO {TABLE} ({columns}) SELECT co_seq_fat_atd_ind + {10_000_000 * (round_ + 1)}, "
            f"{rest} FROM {TABLE} WHERE co_seq_fat_atd_ind % {m} = {(3 * round_ + 2) % m} "
            f"AND co_seq_fat_atd_ind < 10000000"
        )
        await conn.execute(f"VACUUM ANALYZE {TABLE}")
        return sum(int(s.split()[-1]) for s in (updated, deleted, inserted))
    finally:
        await conn.close()


def _once(config) -> tuple[float, int]:
    result = run_syncd("once", "--config", str(config))
    if result.returncode != 0:
        raise SystemExit(f"syncd once failed:\n{result.output[-3000:]}")
    return result.seconds, result.max_rss_kb


def run(clusters: Clusters, rows: int, rounds: int) -> dict:
    asyncio.run(prepare(clusters, rows))
    config = write_config(
        clusters.base / "landing.yaml",
        {
            "destination": {"dsn": clusters.dest.dsn("impulso")},
            "sources": [{"id": "351570", "dsn": clusters.source.dsn("esus")}],
            "datasets": [{"name": "atendimentos", "table": f"public.{TABLE}"}],
        },
    )
    psql = shlex.join([str(clusters.source.bin_dir / "psql"), "-X", "-q"])
    read = (
        f"{psql} {shlex.quote(clusters.source.dsn('esus'))} "
        f"-c 'COPY public.{TABLE} TO STDOUT (FORMAT binary)' -o /dev/null"
    )
    pipe = (
        f"{psql} {shlex.quote(clusters.source.dsn('esus'))} "
        f"-c 'COPY public.{TABLE} TO STDOUT (FORMAT binary)' | "
        f"{psql} {shlex.quote(clusters.dest.dsn('pipe'))} "
        f"-c 'COPY public.{TABLE} FROM STDIN (FORMAT binary)'"
    )
    dest = clusters.dest.dsn("impulso")
    floor, pipes, pipe_wal, first, unchanged, changed, changed_wal, rss = (
        [],
        [],
        [],
        [],
        [],
        [],
        [],
        [],
    )
    touched = []
    for i in range(rounds):
        floor.append(run_shell(read))
        asyncio.run(fresh_pipe_target(clusters))
        lsn = asyncio.run(_wal(clusters.dest.dsn("pipe")))
        pipes.append(run_shell(pipe))
        pipe_wal.append(asyncio.run(_wal_since(clusters.dest.dsn("pipe"), lsn)))
        # a first load: the dataset as a new municipality meets it
        asyncio.run(
            execute(
                dest,
                "DROP SCHEMA IF EXISTS syncd_data CASCADE",
                "DROP SCHEMA IF EXISTS syncd CASCADE",
                "CHECKPOINT",
            )
        )
        seconds, kb = _once(config)
        first.append(seconds)
        rss.append(kb)
        asyncio.run(execute(dest, "VACUUM ANALYZE syncd_data.atendimentos", "CHECKPOINT"))
        seconds, kb = _once(config)
        unchanged.append(seconds)
        rss.append(kb)
        touched.append(asyncio.run(_change(clusters.source.dsn("esus"), i)))
        lsn = asyncio.run(_wal(dest))
        seconds, kb = _once(config)
        changed.append(seconds)
        rss.append(kb)
        changed_wal.append(asyncio.run(_wal_since(dest, lsn)))
    return {
        "rows": rows,
        "rounds": rounds,
        "floor_s": floor,
        "pipe_s": pipes,
        "pipe_wal_bytes": pipe_wal,
        "first_s": first,
        "unchanged_s": unchanged,
        "changed_s": changed,
        "changed_wal_bytes": changed_wal,
        "changed_rows": touched,
        "peak_rss_mb": max(rss) / 1024,
        "unchanged_vs_floor": median(unchanged) / median(floor),
        "changed_vs_pipe": median(changed) / median(pipes),
        "changed_wal_vs_pipe": median(changed_wal) / median(pipe_wal),
        "first_vs_pipe": median(first) / median(pipes),
        "v2": V2,
    }
