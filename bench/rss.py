"""(h) The daemon's memory: `syncd run` with `concurrency.sources` 32 over 63 small municipalities
and one of 2,000,000 rows (541 MB of binary COPY), its first pass (everything new) and its
second (nothing changed: the big one's 2 M stored hashes held while its stream goes by). RSS is
sampled from /proc four times a second; the peak is what counts.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time

import asyncpg

from syncd.lab import pec

from .common import ROOT, Clusters, make_municipalities, write_config
from .single_table import TABLE, prepare
from .soak import _free_port, _sample


async def _ok_passes(dsn: str, source_id: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        if not await conn.fetchval("SELECT to_regclass('syncd.ledger') IS NOT NULL"):
            return 0
        return await conn.fetchval(
            "SELECT count(DISTINCT pass_id) FROM syncd.ledger WHERE source_id = $1 AND status = 'ok'",
            source_id,
        )
    finally:
        await conn.close()


def run(clusters: Clusters, rows: int, small: int = 63) -> dict:
    asyncio.run(prepare(clusters, rows))
    ids = pec.municipality_ids(small, start=1)
    asyncio.run(make_municipalities(clusters, "rss", ids, 200))
    config = write_config(
        clusters.base / "rss.yaml",
        {
            "destination": {"dsn": clusters.dest.dsn("impulso")},
            "concurrency": {"sources": 32},
            "schedule": {"interval": "20s", "jitter": "0s"},
            "http": {"listen": f"127.0.0.1:{_free_port()}"},
            "sources": [{"id": "351570", "dsn": clusters.source.dsn("esus")}]
            + [{"id": m, "dsn": clusters.source.dsn(f"rss_{m}")} for m in ids],
            "datasets": [
                {"name": "atendimentos", "table": f"public.{TABLE}"},
                {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"},
            ],
        },
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--log-level", "warning", "run", "--config", str(config)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        cwd=ROOT,
    )
    peaks: dict[int, int] = {}
    started = time.monotonic()
    try:
        passes = 0
        last_check = 0.0
        while passes < 2 and time.monotonic() - started < 900:
            time.sleep(0.25)
            if proc.poll() is not None:
                raise SystemExit(f"syncd run exited with {proc.returncode}")
            rss, _ = _sample(proc.pid)
            peaks[passes] = max(peaks.get(passes, 0), rss)
            if time.monotonic() - last_check > 2:
                last_check = time.monotonic()
                passes = asyncio.run(_ok_passes(clusters.dest.dsn("impulso"), "351570"))
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=120)
    return {
        "municipalities": small + 1,
        "big_rows": rows,
        "first_pass_peak_mb": peaks.get(0, 0) / 1024,
        "second_pass_peak_mb": peaks.get(1, 0) / 1024,
        "peak_mb": max(peaks.values(), default=0) / 1024,
    }
