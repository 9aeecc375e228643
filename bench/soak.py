"""(g) The soak: `syncd run` for a while (30 minutes by default), 100 municipalities x 2 datasets
due every 15 s, the sources changing a few rows between passes, and the fault proxy resetting or
stalling about a tenth of the connections on both sides. At the end, with the faults off and
the changes stopped, every municipality's destination rows must equal its source's
(`syncd verify`), no ledger row may be left running, and the daemon's RSS and open files must
be flat (the last samples against those after warm-up).

python -m bench --only soak [--soak-minutes 30] [--soak-municipalities 100]
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import asyncpg

from syncd.lab import pec

from .common import ROOT, Clusters, execute, make_municipalities, run_syncd, write_config
from tests.support.faultproxy import FaultProxy

DATASETS = [
    {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"},
    {"name": "atendimentos", "table": "public.tb_fat_atendimento_individual"},
]
FAULT_EVERY = 2.0  # seconds between two rounds of faults
FAULT_SHARE = 0.1  # of the open connections, each round


class Faults:
    """Both proxies on an event loop of their own, hurting connections at random."""

    def __init__(self, clusters: Clusters):
        self.clusters = clusters
        self.loop = asyncio.new_event_loop()
        self.source: FaultProxy | None = None
        self.dest: FaultProxy | None = None
        self.on = True
        self.counts = {"resets": 0, "stalls": 0}
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> Faults:
        self._thread.start()
        self._ready.wait()
        return self

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_until_complete(self._main())

    async def _main(self) -> None:
        self.source = await FaultProxy("127.0.0.1", self.clusters.source.port).start()
        self.dest = await FaultProxy("127.0.0.1", self.clusters.dest.port).start()
        self._ready.set()
        rng = random.Random(7)
        while True:
            await asyncio.sleep(FAULT_EVERY)
            if not self.on:
                continue
            for proxy in (self.source, self.dest):
                for conn in list(proxy.conns):
                    if rng.random() >= FAULT_SHARE:
                        continue
                    if rng.random() < 0.5:
                        conn.abort(rst=True)
                        self.counts["resets"] += 1
                    else:  # past timeouts.idle_stream half the time: a hung link
                        proxy.stall(conn, rng.choice([2.0, 12.0]))
                        self.counts["stalls"] += 1


def _changer(clusters: Clusters, ids: list[str], stop: threading.Event, counts: dict) -> None:
    """A few rows of a few municipalities, every few seconds, straight on the source."""

    async def run() -> None:
        rng = random.Random(11)
        conns = {m: await asyncpg.connect(clusters.source.dsn(f"soak_{m}")) for m in ids}
        try:
            while not stop.is_set():
                for m in rng.sample(ids, 10):
                    conn = conns[m]
                    pick = rng.randint(1, 50)
                    await conn.execute(
                        "UPDATE tb_fat_cidadao_pec SET no_cidadao = md5(random()::text) "
                        "WHERE co_seq_fat_cidadao_pec % 50 = $1",
                        pick,
                    )
                    await conn.execute(
                        "DELETE FROM tb_fat_atendimento_individual "
                        "WHERE co_seq_fat_atd_ind = (SELECT min(co_seq_fat_atd_ind) "
                        "FROM tb_fat_atendimento_individual)"
                    )
                    await conn.execute(
                        "INSERT INTO tb_fat_atendimento_individual (co_seq_fat_atd_ind, "
                        "co_fat_cidadao_pec) SELECT max(co_seq_fat_atd_ind) + 1, 1 "
                        "FROM tb_fat_atendimento_individual"
                    )
                    counts["changes"] += 1
                await asyncio.sleep(3)
        finally:
            for conn in conns.values():
                await conn.close()

    asyncio.run(run())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample(pid: int) -> tuple[int, int]:
    """(RSS kB, open files) of the daemon."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
    return rss, len(os.listdir(f"/proc/{pid}/fd"))


def run(clusters: Clusters, minutes: float, count: int) -> dict:
    ids = pec.municipality_ids(count)
    asyncio.run(execute(clusters.dest.dsn(), "CREATE DATABASE impulso"))
    asyncio.run(make_municipalities(clusters, "soak", ids, 200))
    faults = Faults(clusters).start()
    assert faults.source is not None and faults.dest is not None
    base = {
        "concurrency": {"sources": 16},
        "schedule": {"interval": "15s", "jitter": "1s", "failed_backoff": "5s"},
        "timeouts": {"connect": "5s", "idle_stream": "8s", "statement": "60s"},
        "retry": {"attempts": 3, "backoff": "0.5s", "max_backoff": "5s"},
        "datasets": DATASETS,
    }
    proxied = write_config(
        clusters.base / "soak.yaml",
        {
            **base,
            "destination": {"dsn": faults.dest.dsn("impulso")},
            "http": {"listen": f"127.0.0.1:{_free_port()}"},
            "sources": [{"id": m, "dsn": faults.source.dsn(f"soak_{m}")} for m in ids],
        },
    )
    direct = write_config(
        clusters.base / "direct.yaml",
        {
            **base,
            "destination": {"dsn": clusters.dest.dsn("impulso")},
            "sources": [{"id": m, "dsn": clusters.source.dsn(f"soak_{m}")} for m in ids],
        },
    )
    stop = threading.Event()
    counts = {"changes": 0}
    changer = threading.Thread(target=_changer, args=(clusters, ids, stop, counts), daemon=True)
    log = (clusters.base / "soak.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", "--log-level", "warning", "run", "--config", str(proxied)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    samples: list[tuple[float, int, int]] = []
    started = time.monotonic()
    try:
        changer.start()
        deadline = started + minutes * 60
        while time.monotonic() < deadline:
            time.sleep(10)
            if proc.poll() is not None:
                raise SystemExit(f"syncd run exited with {proc.returncode}: see {log.name}")
            rss, fds = _sample(proc.pid)
            samples.append((time.monotonic() - started, rss, fds))
        stop.set()
        changer.join()
        faults.on = False
        time.sleep(45)  # three intervals without faults or changes: every municipality lands
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=120)
        log.close()
    verify = run_syncd("verify", "--config", str(direct))
    stuck, ok, failed = asyncio.run(_ledger(clusters.dest.dsn("impulso")))
    warm = [s for s in samples if s[0] >= min(300.0, minutes * 60 / 3)] or samples
    head, tail = warm[: max(1, len(warm) // 5)], warm[-max(1, len(warm) // 5) :]
    return {
        "minutes": minutes,
        "municipalities": count,
        "exit_code": code,
        "verify_exit": verify.returncode,
        "verify_tail": verify.output.strip().splitlines()[-1] if verify.output else "",
        "ledger_running": stuck,
        "passes_ok": ok,
        "passes_failed": failed,
        "faults": faults.counts,
        "source_changes": counts["changes"],
        "rss_mb_after_warmup": max(s[1] for s in head) / 1024,
        "rss_mb_at_end": max(s[1] for s in tail) / 1024,
        "rss_mb_peak": max(s[1] for s in samples) / 1024 if samples else 0,
        "fds_after_warmup": max(s[2] for s in head),
        "fds_at_end": max(s[2] for s in tail),
    }


async def _ledger(dsn: str) -> tuple[int, int, int]:
    conn = await asyncpg.connect(dsn)
    try:
        row = await conn.fetchrow(
            "SELECT count(*) FILTER (WHERE status = 'running') AS running, "
            "count(*) FILTER (WHERE status = 'ok') AS ok, "
            "count(*) FILTER (WHERE status IN ('failed', 'aborted')) AS failed FROM syncd.ledger"
        )
        return row["running"], row["ok"], row["failed"]
    finally:
        await conn.close()
