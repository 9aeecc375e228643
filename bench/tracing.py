"""(c) What tracing costs: the many-municipalities pass with traces exported to a local OTLP/HTTP
receiver, against the same pass with no exporter. Runs alternate; medians compared."""

from __future__ import annotations

import asyncio
import threading

from aiohttp import web

from . import many
from .common import Clusters, execute, median, run_syncd


class Receiver:
    """An OTLP/HTTP endpoint in a thread: counts the export requests and their bytes."""

    def __init__(self) -> None:
        self.requests = 0
        self.bytes = 0
        self.port = 0
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._serve()), daemon=True)

    async def _serve(self) -> None:
        async def handle(request: web.Request) -> web.Response:
            self.requests += 1
            self.bytes += len(await request.read())
            return web.Response(body=b"", content_type="application/x-protobuf")

        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_post("/v1/traces", handle)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._stop = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._ready.set()
        await self._stop.wait()
        await runner.cleanup()

    def __enter__(self) -> Receiver:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)


def run(
    clusters: Clusters, count: int, citizens: int, concurrency: int, lista: str, rounds: int
) -> dict:
    ids = asyncio.run(many.prepare(clusters, count, citizens))
    config = many.config_for(clusters, "tracing", ids, concurrency, lista)
    off, on = [], []
    with Receiver() as receiver:
        env_on = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
        run_syncd("once", "--config", str(config))  # warm-up: tables exist, caches warm
        for i in range(rounds):  # ABBA: a drift over time weighs on both sides alike
            order = [(off, {}), (on, env_on)] if i % 2 == 0 else [(on, env_on), (off, {})]
            for times, env in order:
                asyncio.run(settle(clusters))
                times.append(_timed(config, env))
        exported = receiver.requests
    return {
        "municipalities": count,
        "rounds": rounds,
        "off_s": off,
        "on_s": on,
        "off_median_s": median(off),
        "on_median_s": median(on),
        "overhead": median(on) / median(off) - 1,
        "export_requests": exported,
    }


async def settle(clusters: Clusters) -> None:
    """Same starting line for every run: catalog garbage of the last pass vacuumed, WAL flushed."""
    await execute(clusters.dest.dsn("impulso"), "VACUUM", "CHECKPOINT")


def _timed(config, env: dict) -> float:
    result = run_syncd("once", "--config", str(config), env=env)
    if result.returncode != 0:
        raise SystemExit(f"syncd once failed:\n{result.output[-3000:]}")
    return result.seconds
