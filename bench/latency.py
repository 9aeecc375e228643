"""(j) 200 municipalities behind a 50 ms round trip: what a pass costs when latency, not
bandwidth, is the municipal link's price (target: at most 9 s on the 2-core box).

Each municipality is its own "server": a proxy of its own (tests/support/roundtrips.py, a delay
line of 25 ms each way) in front of its database, so `concurrency.per_host` sees 200 servers, as
in the field. The proxies also count round trips per session: after connecting, a snapshot pass
costs its table datasets plus two, and a query dataset three (its query parsed to learn its
columns, their types named, the COPY).
"""

from __future__ import annotations

import asyncio
import statistics
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from . import many
from .common import Clusters, change_share, once_ok, table, write_config
from tests.support.roundtrips import RoundTripProxy

ONE_WAY = 0.025  # seconds: a 50 ms round trip


@contextmanager
def delayed(clusters: Clusters, ids: list[str]) -> Iterator[dict[str, RoundTripProxy]]:
    """One delaying, counting proxy per municipality, served by a thread of their own while
    `syncd once` runs as a subprocess."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    async def start() -> dict[str, RoundTripProxy]:
        source = clusters.source
        return {
            mid: await RoundTripProxy(source.host, source.port, delay=ONE_WAY).start()
            for mid in ids
        }

    proxies = asyncio.run_coroutine_threadsafe(start(), loop).result()
    try:
        yield proxies
    finally:

        async def stop() -> None:
            for proxy in proxies.values():
                await proxy.stop()

        asyncio.run_coroutine_threadsafe(stop(), loop).result()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


def run(clusters: Clusters, count: int, citizens: int, concurrency: int, lista: str) -> dict:
    ids = asyncio.run(many.prepare(clusters, count, citizens))
    direct = many.config_for(clusters, "latency-direct", ids, concurrency, lista)
    with delayed(clusters, ids) as proxies:
        document: dict[str, Any] = yaml.safe_load(direct.read_text())
        for source in document["sources"]:
            source["dsn"] = proxies[source["id"]].dsn(f"pec_{source['id']}")
        config = write_config(clusters.base / "latency.yaml", document)
        first = once_ok(config)
        asyncio.run(change_share([clusters.source.dsn(f"pec_{mid}") for mid in ids], 0.02))
        for proxy in proxies.values():
            proxy.clear()
        steady = once_ok(config)
        links = [link for proxy in proxies.values() for link in proxy.links]
    after = [link.after_connecting for link in links]
    return {
        "municipalities": count,
        "datasets": len(many.DATASETS),
        "rtt_ms": 2 * ONE_WAY * 1000,
        "concurrency": concurrency,
        "first_s": first.seconds,
        "steady_s": steady.seconds,
        "sessions": len(links),
        "round_trips_after_connecting": {
            "median": statistics.median(after) if after else None,
            "max": max(after, default=None),
        },
        "round_trips_connecting": statistics.median(
            [link.connected_at or 0 for link in links] or [0]
        ),
    }


def report(r: dict) -> list[str]:
    trips = r["round_trips_after_connecting"]
    return [
        "",
        f"(j) {r['municipalities']} municipalities x {r['datasets']} datasets behind a "
        f"{r['rtt_ms']:g} ms round trip each (one proxy per municipality)",
        table(
            [
                "first pass",
                "steady-state pass (~2% changed)",
                "target",
                "round trips a session after connecting (median, max)",
                "connecting",
            ],
            [
                [
                    f"{r['first_s']:.1f} s",
                    f"{r['steady_s']:.1f} s",
                    "<= 9 s",
                    f"{trips['median']:g}, {trips['max']}",
                    f"{r['round_trips_connecting']:g}",
                ]
            ],
        ),
    ]
