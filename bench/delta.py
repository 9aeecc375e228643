"""(l) Delta transfer over a slow municipal link: one PEC-shaped table (300,000 rows by
default) behind a link proxy (bench/linkproxy.py: 20 Mbit/s each way, 30 ms each way, bytes
counted), what crosses the link and how long a pass takes:

- reading the table alone through the link (`psql -c "COPY t TO STDOUT (FORMAT binary)"`):
  the bytes of a full binary COPY, and the time of the floor;
- a full pass (`delta: false`, the table unchanged: what every pass cost before);
- delta transfer, nothing changed; then ~2% of the rows updated, deleted or inserted, spread
  over the whole table; `syncd verify` after each (exit 0: equal);
- per pass: bytes each way, seconds (the whole `syncd once` command), the source's CPU (every
  backend of the municipal cluster, the fingerprint scans included) and its sequential scans
  of the table (pg_stat_user_tables.seq_scan).
"""

from __future__ import annotations

import asyncio
import os
import shlex
import time
from pathlib import Path

import asyncpg

from .common import Clusters, run_shell, run_syncd, write_config
from .landing import _change
from .linkproxy import LinkProxy
from .single_table import TABLE, prepare

TICKS = os.sysconf("SC_CLK_TCK")


def _cluster_cpu(data_dir: Path) -> float:
    """CPU seconds of the cluster: the postmaster, its live children, and the children it
    reaped (every backend that ended: syncd's sessions)."""
    pid = int((data_dir / "postmaster.pid").read_text().split()[0])
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        ppid, utime, stime = int(fields[1]), int(fields[11]), int(fields[12])
        if int(entry) == pid:
            total += utime + stime + int(fields[13]) + int(fields[14])
        elif ppid == pid:
            total += utime + stime
    return total / TICKS


async def _seq_scans(dsn: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(
            await conn.fetchval(
                "SELECT seq_scan FROM pg_stat_user_tables WHERE relname = $1", TABLE
            )
        )
    finally:
        await conn.close()


def _measure(clusters: Clusters, proxy: LinkProxy, run) -> dict:
    """Run `run()`; what crossed the link, how long it took, what the source spent."""
    dsn = clusters.source.dsn("esus")
    time.sleep(0.7)  # the last pass's backends reaped, its statistics sent
    scans = asyncio.run(_seq_scans(dsn))
    cpu = _cluster_cpu(clusters.source.data_dir)
    before = proxy.counted()
    started = time.perf_counter()
    run()
    seconds = time.perf_counter() - started
    after = proxy.counted()
    time.sleep(0.7)
    return {
        "seconds": seconds,
        "down": after["down"] - before["down"],
        "up": after["up"] - before["up"],
        "source_cpu_s": _cluster_cpu(clusters.source.data_dir) - cpu,
        "seq_scans": asyncio.run(_seq_scans(dsn)) - scans,
    }


def run(clusters: Clusters, rows: int, rounds: int, mbit: float = 20.0, rtt: float = 0.060) -> dict:
    asyncio.run(prepare(clusters, rows))
    proxy = LinkProxy(
        clusters.source.host, clusters.source.port, bandwidth=mbit * 1e6 / 8, latency=rtt / 2
    ).start()
    try:
        return _run(clusters, proxy, rows, rounds, mbit, rtt)
    finally:
        proxy.stop()


def _run(
    clusters: Clusters, proxy: LinkProxy, rows: int, rounds: int, mbit: float, rtt: float
) -> dict:
    def config(name: str, delta: bool) -> Path:
        return write_config(
            clusters.base / f"{name}.yaml",
            {
                "destination": {"dsn": clusters.dest.dsn("impulso")},
                "sources": [{"id": "351570", "dsn": proxy.dsn("esus")}],
                "datasets": [{"name": "atendimentos", "table": f"public.{TABLE}", "delta": delta}],
            },
        )

    with_delta, without = config("delta", True), config("full", False)

    def once(path: Path) -> None:
        result = run_syncd("once", "--config", str(path))
        if result.returncode != 0:
            raise SystemExit(f"syncd once failed:\n{result.output[-3000:]}")

    def verify() -> int:
        return run_syncd("verify", "--config", str(with_delta)).returncode

    psql = shlex.join([str(clusters.source.bin_dir / "psql"), "-X", "-q"])
    read = (
        f"{psql} {shlex.quote(proxy.dsn('esus'))} "
        f"-c 'COPY public.{TABLE} TO STDOUT (FORMAT binary)' -o /dev/null"
    )
    result: dict = {"rows": rows, "mbit": mbit, "rtt_ms": rtt * 1000, "rounds": rounds}
    result["read"] = _measure(clusters, proxy, lambda: run_shell(read))
    once(without)  # the dataset table made and filled
    result["full"] = _measure(clusters, proxy, lambda: once(without))
    result["first"] = _measure(clusters, proxy, lambda: once(with_delta))  # fingerprints stored
    result["unchanged"] = []
    result["changed"] = []
    result["changed_rows"] = []
    result["verify"] = []
    for i in range(rounds):
        result["unchanged"].append(_measure(clusters, proxy, lambda: once(with_delta)))
        result["verify"].append(verify())
        touched = asyncio.run(_change(clusters.source.dsn("esus"), 5 + i, rows, False))
        result["changed_rows"].append(touched)
        result["changed"].append(_measure(clusters, proxy, lambda: once(with_delta)))
        result["verify"].append(verify())
    full = result["read"]["down"]
    unchanged, changed = result["unchanged"][-1], result["changed"][-1]
    result["unchanged_share"] = (unchanged["down"] + unchanged["up"]) / full
    result["changed_share"] = (changed["down"] + changed["up"]) / full
    result["changed_vs_full_time"] = changed["seconds"] / result["full"]["seconds"]
    return result


def report(r: dict) -> list[str]:
    from .common import table

    def row(label: str, m: dict, target: str = "") -> list[str]:
        return [
            label,
            f"{m['down'] / 1e6:.3f} MB",
            f"{m['up'] / 1e6:.3f} MB",
            f"{m['seconds']:.2f} s",
            f"{m['source_cpu_s']:.2f} s",
            str(m["seq_scans"]),
            target,
        ]

    rows = [
        row("reading the table alone (psql binary COPY)", r["read"]),
        row("full pass (delta: false, unchanged)", r["full"]),
        row("first pass with delta (streams all, stores fingerprints)", r["first"]),
    ]
    for i, (u, c) in enumerate(zip(r["unchanged"], r["changed"], strict=True)):
        rows.append(row(f"delta, nothing changed (round {i + 1})", u, "<= 1% of the bytes"))
        rows.append(
            row(
                f"delta, ~2% changed spread ({r['changed_rows'][i]:,} rows, round {i + 1})",
                c,
                "<= 10% of the bytes, <= 0.15x the full pass's time",
            )
        )
    return [
        f"(l) delta transfer over a {r['mbit']:g} Mbit/s, {r['rtt_ms']:g} ms round-trip link, one "
        f"{r['rows']:,}-row PEC-shaped table; bytes counted by the link proxy",
        table(
            ["pass", "down (from the source)", "up", "time", "source CPU", "seq scans", "target"],
            rows,
        ),
        f"unchanged: {r['unchanged_share'] * 100:.3f}% of a full COPY's bytes; ~2% changed: "
        f"{r['changed_share'] * 100:.2f}% of them, {r['changed_vs_full_time']:.3f}x the full "
        f"pass's time; verify after every pass: exit {sorted(set(r['verify']))}",
    ]
