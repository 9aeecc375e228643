"""(i) Municipalities through one SSH bastion (a real sshd on loopback, syncd.lab.sshd) against
the same municipalities direct, in the same process run after run:

- the ratio of `syncd once` times (runs alternate, medians compared; the README's target is
  at most 1.2x for 200 municipalities);
- `channels` sessions open at once, every one a forwarded channel over the bastion's one SSH
  connection, each answering a query;
- what one tunnelled session costs in memory: the RSS growth of holding them all open, per
  session, against the same number of direct sessions.

The bastion is on this machine, so the ratio is syncd's own cost (SSH encryption, the bridge),
not a network's.
"""

from __future__ import annotations

import asyncio
import os
import resource
from pathlib import Path
from typing import Any

import yaml

from syncd import config as config_module
from syncd.engine.source import SourceSession
from syncd.engine.tunnel import Tunnels
from syncd.lab.sshd import Sshd

from . import many
from .common import Clusters, median, once_ok, run_syncd, table


def _tunnelled(direct: Path, sshd: Sshd, name: str) -> Path:
    document = yaml.safe_load(direct.read_text())
    document["bastions"] = {"hub": sshd.bastion()}
    for source in document["sources"]:
        source["ssh_tunnel"] = {"bastion": "hub"}
    path = direct.with_name(name)
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return path


def _children_cpu_s(pid: int) -> float:
    """CPU time of the processes `pid` has reaped (sshd: one child per SSH connection)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")


def _rss_kb() -> int:
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * resource.getpagesize() // 1024


async def _hold_open(config: config_module.Config, count: int) -> dict[str, Any]:
    """`count` sessions at once over the config's sources (cycled), each asked SELECT 1."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)  # two sockets a tunnelled session
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 4 * count + 256)), hard))
    tunnels = Tunnels()
    sessions: list[SourceSession] = []
    sources = [config.sources[i % len(config.sources)] for i in range(count)]
    before = _rss_kb()
    try:
        semaphore = asyncio.Semaphore(64)  # opening, not holding: sshd's MaxStartups aside

        async def one(source: config_module.Source) -> None:
            async with semaphore:
                session = await SourceSession.open(source, config.timeouts, tunnels)
            sessions.append(session)

        await asyncio.gather(*(one(s) for s in sources))
        answers = await asyncio.gather(*(s.conn.fetchval("SELECT 1") for s in sessions))
        held = _rss_kb()
        links = tunnels.links()
        return {
            "sessions": len(sessions),
            "answered": sum(1 for a in answers if a == 1),
            "ssh_connections": sum(link.opened for link in links.values()),
            "rss_per_session_kb": (held - before) / max(len(sessions), 1),
        }
    finally:
        await asyncio.gather(*(s.close() for s in sessions), return_exceptions=True)
        await tunnels.close()


def run(
    clusters: Clusters,
    count: int,
    citizens: int,
    concurrency: int,
    lista: str,
    rounds: int,
    channels: int,
) -> dict[str, Any]:
    ids = asyncio.run(many.prepare(clusters, count, citizens))
    direct = many.config_for(clusters, "bastion-direct.yaml", ids, concurrency, lista)
    # every channel is a session on the municipal server too
    clusters.source.configure(max_connections=str(channels + 100))
    clusters.source.restart()
    sshd = Sshd(clusters.base / "sshd").start()
    try:
        tunnelled = _tunnelled(direct, sshd, "bastion-tunnelled.yaml")
        once_ok(direct)  # warm-up: tables exist, caches warm
        once_ok(tunnelled)
        times: dict[str, list[float]] = {"direct": [], "tunnelled": []}
        cpu: dict[str, list[float]] = {"direct": [], "tunnelled": [], "sshd": []}
        rss: dict[str, int] = {"direct": 0, "tunnelled": 0}
        assert sshd.proc is not None
        for i in range(rounds):  # ABBA: a drift over time weighs on both sides alike
            order = ["direct", "tunnelled"] if i % 2 == 0 else ["tunnelled", "direct"]
            for mode in order:
                before = _children_cpu_s(sshd.proc.pid)
                result = run_syncd(
                    "once", "--config", str(direct if mode == "direct" else tunnelled)
                )
                if result.returncode != 0:
                    raise SystemExit(f"syncd once ({mode}) failed:\n{result.output[-3000:]}")
                times[mode].append(result.seconds)
                cpu[mode].append(result.cpu_s)
                if mode == "tunnelled":  # its one SSH connection's sshd has exited by now
                    cpu["sshd"].append(_children_cpu_s(sshd.proc.pid) - before)
                rss[mode] = max(rss[mode], result.max_rss_kb)
        held_direct = asyncio.run(_hold_open(config_module.load(direct), channels))
        held = asyncio.run(_hold_open(config_module.load(tunnelled), channels))
    finally:
        sshd.stop()
    return {
        "municipalities": count,
        "concurrency": concurrency,
        "rounds": rounds,
        "direct_s": times["direct"],
        "tunnelled_s": times["tunnelled"],
        "direct_median_s": median(times["direct"]),
        "tunnelled_median_s": median(times["tunnelled"]),
        "ratio": median(times["tunnelled"]) / median(times["direct"]),
        "cpu_s": {k: median(v) for k, v in cpu.items()},
        "peak_rss_direct_mb": rss["direct"] / 1024,
        "peak_rss_tunnelled_mb": rss["tunnelled"] / 1024,
        "channels": held,
        "direct_sessions": held_direct,
        "extra_kb_per_tunnelled_session": held["rss_per_session_kb"]
        - held_direct["rss_per_session_kb"],
    }


def report(r: dict[str, Any]) -> list[str]:
    held = r["channels"]
    return [
        "",
        f"(i) {r['municipalities']} municipalities through one SSH bastion vs direct "
        f"(concurrency {r['concurrency']})",
        table(
            ["direct (median)", "through the bastion (median)", "ratio", "peak RSS d / b"],
            [
                [
                    f"{r['direct_median_s']:.2f} s",
                    f"{r['tunnelled_median_s']:.2f} s",
                    f"{r['ratio']:.2f}x",
                    f"{r['peak_rss_direct_mb']:.0f} / {r['peak_rss_tunnelled_mb']:.0f} MB",
                ]
            ],
        ),
        f"CPU (medians): syncd {r['cpu_s']['direct']:.2f} s direct, {r['cpu_s']['tunnelled']:.2f} s "
        f"tunnelled; the bastion's sshd {r['cpu_s']['sshd']:.2f} s (on this same 2-core machine)",
        f"{held['sessions']} sessions held open at once through the bastion: "
        f"{held['answered']} answered, over {held['ssh_connections']} SSH connection(s); "
        f"{held['rss_per_session_kb']:.0f} KiB RSS per tunnelled session "
        f"({r['direct_sessions']['rss_per_session_kb']:.0f} KiB direct, "
        f"{r['extra_kb_per_tunnelled_session']:+.0f} KiB for the tunnel)",
    ]
