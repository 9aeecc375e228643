"""What the benchmarks share: clusters, timing, the syncd command, medians."""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import yaml

from syncd.lab import embedded, pec

ROOT = Path(__file__).resolve().parent.parent
LOOPBACKS = 40  # the municipal cluster listens on 127.0.0.1..40: forty "servers"

# Durable like a real server (fsync on), but room enough that no checkpoint lands mid-run.
BENCH_SETTINGS = {
    "max_connections": "200",
    "shared_buffers": "256MB",
    "max_wal_size": "8GB",
    "checkpoint_timeout": "30min",
    "log_min_messages": "warning",
    "max_locks_per_transaction": "256",
}


@dataclass
class Clusters:
    source: embedded.Cluster
    dest: embedded.Cluster
    base: Path

    def destroy(self) -> None:
        self.source.destroy()
        self.dest.destroy()


def start_clusters(prefix: str) -> Clusters:
    base = embedded.make_base_dir(prefix)
    bin_dir = embedded.wheel_bin_dir()
    source = embedded.Cluster.create(bin_dir, base / "municipal", settings=BENCH_SETTINGS)
    dest = embedded.Cluster.create(bin_dir, base / "analytics", settings=BENCH_SETTINGS)
    return Clusters(source, dest, base)


async def execute(dsn: str, *statements: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


async def make_municipalities(
    clusters: Clusters, prefix: str, ids: list[str], citizens: int
) -> None:
    """One database per municipality (`<prefix>_<id>`): a schema template, clones, own data."""
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


async def change_share(dsns: list[str], share: float = 0.02) -> int:
    """About `share` of every database's citizens changed (the day's corrections), and as many
    consultations added: what a steady-state pass then meets. Returns the rows touched."""
    semaphore = asyncio.Semaphore(8)
    touched = 0

    async def one(dsn: str) -> None:
        nonlocal touched
        async with semaphore:
            conn = await asyncpg.connect(dsn)
            try:
                status = await conn.execute(
                    "UPDATE tb_fat_cidadao_pec SET no_cidadao = md5(no_cidadao) "
                    "WHERE random() < $1",
                    share,
                )
                touched += int(status.split()[-1])
            finally:
                await conn.close()

    await asyncio.gather(*(one(d) for d in dsns))
    return touched


def spread_sources(clusters: Clusters, prefix: str, ids: list[str]) -> list[dict]:
    """Sources over LOOPBACKS addresses, so `per_host` sees that many servers."""
    return [
        {
            "id": mid,
            "dsn": clusters.source.dsn(f"{prefix}_{mid}", host=f"127.0.0.{1 + i % LOOPBACKS}"),
        }
        for i, mid in enumerate(ids)
    ]


def write_config(path: Path, document: dict) -> Path:
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


@dataclass
class Run:
    seconds: float
    max_rss_kb: int
    returncode: int
    output: str
    cpu_s: float = 0.0  # the command's own CPU time, user and system


def run_syncd(*args: str, env: dict | None = None, tree: Path | None = None) -> Run:
    """Run the syncd command as an operator would; wall time and the child's peak RSS. `tree`:
    another checkout's syncd (an older version, measured beside this one)."""
    started = time.perf_counter()
    extra = {"PYTHONPATH": str(tree)} if tree is not None else {}
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--log-level", "warning", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        cwd=tree or ROOT,
        env={**os.environ, **extra, **(env or {})},
    )
    output = proc.stdout.read().decode() if proc.stdout else ""
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(seconds, usage.ru_maxrss, proc.returncode, output, usage.ru_utime + usage.ru_stime)


def once_ok(config: Path) -> Run:
    """`syncd once` that must succeed: a benchmark of a failing pass measures nothing."""
    result = run_syncd("once", "--config", str(config))
    if result.returncode != 0:
        raise SystemExit(f"syncd once failed:\n{result.output[-3000:]}")
    return result


def run_shell(command: str) -> float:
    started = time.perf_counter()
    subprocess.run(command, shell=True, check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - started


class ConnectionWatcher:
    """Polls pg_stat_activity from a thread: the peak number of syncd's connections."""

    def __init__(self, cluster: embedded.Cluster, every: float = 0.05):
        self.cluster = cluster
        self.every = every
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self) -> None:
        conn = await asyncpg.connect(self.cluster.dsn())
        try:
            while not self._stop.is_set():
                count = await conn.fetchval(
                    "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncd'"
                )
                self.peak = max(self.peak, count)
                await asyncio.sleep(self.every)
        finally:
            await conn.close()

    def __enter__(self) -> ConnectionWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def median(values: list[float]) -> float:
    return statistics.median(values)


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [
        "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |",
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
    ]
    lines += [
        "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows
    ]
    return "\n".join(lines)
