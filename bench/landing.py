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
import subprocess
from pathlib import Path

import asyncpg

from .common import ROOT, Clusters, execute, median, run_shell, run_syncd, write_config
from .single_table import TABLE, fresh_pipe_target, prepare

V2_REV = "ca0b938"  # the last commit of landing v2: measured beside v3, in the same run


def _v2_tree(base: Path) -> Path | None:
    """A checkout of landing v2 (this repository's history), or None without git or history."""
    tree = base / "v2"
    done = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), V2_REV],
        capture_output=True,
        text=True,
    )
    return tree if done.returncode == 0 else None


def _drop_tree(tree: Path | None) -> None:
    if tree is not None:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
            capture_output=True,
        )


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


async def _change(dsn: str, round_: int, rows: int, recent: bool) -> int:
    """About 2% of the rows: a third updated, a third deleted, a third inserted; spread over the
    whole table (`recent` False: the worst case, every page as likely), or among its most
    recent tenth (True: as a fact table's corrections mostly are)."""
    conn = await asyncpg.connect(dsn)
    try:
        m, where = (150, "TRUE") if not recent else (15, f"co_seq_fat_atd_ind > {rows * 9 // 10}")
        updated = await conn.execute(
            f"UPDATE {TABLE} SET nu_peso = coalesce(nu_peso, 0) + 1 "
            f"WHERE co_seq_fat_atd_ind % {m} = {3 * round_ % m} AND {where}"
        )
        deleted = await conn.execute(
            f"DELETE FROM {TABLE} WHERE co_seq_fat_atd_ind % {m} = {(3 * round_ + 1) % m} "
            f"AND {where}"
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
        offset = 10_000_000 * (2 * round_ + 1 + int(recent))  # new ids: one range a change
        inserted = await conn.execute(
            f"INSERT INTO {TABLE} ({columns}) SELECT co_seq_fat_atd_ind + {offset}, "
            f"{rest} FROM {TABLE} WHERE co_seq_fat_atd_ind % {m} = {(3 * round_ + 2) % m} "
            f"AND co_seq_fat_atd_ind < 10000000 AND {where}"
        )
        await conn.execute(f"VACUUM ANALYZE {TABLE}")
        return sum(int(s.split()[-1]) for s in (updated, deleted, inserted))
    finally:
        await conn.close()


def _once(config, tree: Path | None = None) -> tuple[float, int]:
    result = run_syncd("once", "--config", str(config), tree=tree)
    if result.returncode != 0:
        raise SystemExit(f"syncd once failed:\n{result.output[-3000:]}")
    return result.seconds, result.max_rss_kb


def run(clusters: Clusters, rows: int, rounds: int) -> dict:
    asyncio.run(prepare(clusters, rows))
    asyncio.run(execute(clusters.dest.dsn(), "CREATE DATABASE impulso_v2"))

    def config_for(name: str, database: str) -> Path:
        return write_config(
            clusters.base / f"{name}.yaml",
            {
                "destination": {"dsn": clusters.dest.dsn(database)},
                "sources": [{"id": "351570", "dsn": clusters.source.dsn("esus")}],
                # (f) is the landing's own cost on a free link: the whole stream, the row
                # differ; delta transfer trades source scans for link bytes and is (l)'s
                # (the older commit beside it knows no `delta` key)
                "datasets": [
                    {"name": "atendimentos", "table": f"public.{TABLE}"}
                    | ({"delta": False} if name == "landing" else {})
                ],
            },
        )

    config, config_v2 = config_for("landing", "impulso"), config_for("v2", "impulso_v2")
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
    dest, dest_v2 = clusters.dest.dsn("impulso"), clusters.dest.dsn("impulso_v2")
    t: dict[str, list[float]] = {
        k: [] for k in ("floor", "pipe", "first", "unchanged", "spread", "recent", "v2_again")
    }
    wal: dict[str, list[int]] = {k: [] for k in ("pipe", "spread", "recent", "v2_again")}
    touched: dict[str, list[int]] = {"spread": [], "recent": []}
    rss: list[int] = []
    tree = _v2_tree(clusters.base)
    try:
        if tree is not None:
            _once(config_v2, tree)  # v2's tables made and filled: its passes after replace
        for i in range(rounds):
            t["floor"].append(run_shell(read))
            asyncio.run(fresh_pipe_target(clusters))
            lsn = asyncio.run(_wal(clusters.dest.dsn("pipe")))
            t["pipe"].append(run_shell(pipe))
            wal["pipe"].append(asyncio.run(_wal_since(clusters.dest.dsn("pipe"), lsn)))
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
            t["first"].append(seconds)
            rss.append(kb)
            asyncio.run(execute(dest, "VACUUM ANALYZE syncd_data.atendimentos", "CHECKPOINT"))
            seconds, kb = _once(config)
            t["unchanged"].append(seconds)
            rss.append(kb)
            if tree is not None:  # landing v2 on the same rows: it rewrites them all
                lsn = asyncio.run(_wal(dest_v2))
                t["v2_again"].append(_once(config_v2, tree)[0])
                wal["v2_again"].append(asyncio.run(_wal_since(dest_v2, lsn)))
            for case in ("spread", "recent"):
                changes = _change(clusters.source.dsn("esus"), i, rows, case == "recent")
                touched[case].append(asyncio.run(changes))
                lsn = asyncio.run(_wal(dest))
                seconds, kb = _once(config)
                t[case].append(seconds)
                rss.append(kb)
                wal[case].append(asyncio.run(_wal_since(dest, lsn)))
    finally:
        _drop_tree(tree)
    pipe_s, pipe_wal = median(t["pipe"]), median(wal["pipe"])
    return {
        "rows": rows,
        "rounds": rounds,
        "seconds": t,
        "wal_bytes": wal,
        "changed_rows": touched,
        "peak_rss_mb": max(rss) / 1024,
        "unchanged_vs_floor": median(t["unchanged"]) / median(t["floor"]),
        "changed_vs_pipe": {k: median(t[k]) / pipe_s for k in ("spread", "recent")},
        "changed_wal_vs_pipe": {k: median(wal[k]) / pipe_wal for k in ("spread", "recent")},
        "first_vs_pipe": median(t["first"]) / pipe_s,
        "v2_vs_pipe": median(t["v2_again"]) / pipe_s if t["v2_again"] else None,
        "v2_wal_vs_pipe": median(wal["v2_again"]) / pipe_wal if wal["v2_again"] else None,
        "v2_vs_floor": median(t["v2_again"]) / median(t["floor"]) if t["v2_again"] else None,
    }
