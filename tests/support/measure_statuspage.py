"""Measure the status page and /status at national scale (5,570 municipalities x 2 datasets) in
headless Chromium: bytes of the page, of its refresh and of /status, and the page's load and
refresh times. A measurement for docs/benchmarks.md, not a test (no timing is asserted anywhere):

    .venv/bin/python -m tests.support.measure_statuspage [URL-QUERY]

The board is the daemon's own StatusBoard (tests/support/pagescale.py), served by the daemon's
own HTTP app; Chromium is driven over the DevTools protocol (aiohttp's websocket client)."""

from __future__ import annotations

import asyncio
import gzip
import sys
import time

import aiohttp

from syncd.service.http import HttpServer

from tests.support import pagescale
from tests.support.cdp import browser

NAVIGATION = """(() => {
  const n = performance.getEntriesByType("navigation")[0];
  const p = performance.getEntriesByType("paint").map(e => [e.name, e.startTime]);
  return {transfer: n.transferSize, body: n.decodedBodySize, response_end: n.responseEnd,
          dom_content_loaded: n.domContentLoadedEventEnd, load: n.loadEventEnd, paint: p,
          rows: document.querySelectorAll("tr[data-id]").length};
})()"""
REFRESH = """new Promise(resolve => {
  const before = performance.getEntriesByType("resource").length;
  new MutationObserver((_, obs) => {
    obs.disconnect();
    const done = performance.now();
    const r = performance.getEntriesByType("resource").slice(before).pop();
    resolve({transfer: r.transferSize, body: r.decodedBodySize,
      fetch_start: r.startTime, response_end: r.responseEnd, swapped: done,
      rows: document.querySelectorAll("tr[data-id]").length});
  }).observe(document.body, {attributes: true, attributeFilter: ["data-refreshed"]});
})"""


async def status_sizes(base: str, board: pagescale.StatusBoard) -> None:
    """/status as curl would get it: bytes on the wire (gzip accepted) and decoded."""
    async with aiohttp.ClientSession(auto_decompress=False) as http:
        for path in ("/status", "/status?state=failed", "/status?limit=100", "since"):
            if path == "since":  # what a client following changes gets after one more sync
                cursor = board.cursor
                pagescale.finish(board, next(iter(board.sources)), ok=False)
                path = f"/status?since={cursor}"
            async with http.get(base + path, headers={"Accept-Encoding": "gzip"}) as r:
                wire = await r.read()
                body = gzip.decompress(wire) if r.headers.get("Content-Encoding") else wire
                print(f"GET {path}: {len(wire):,} bytes on the wire, {len(body):,} decoded")


async def measure(query: str) -> None:
    board, due = pagescale.board()
    server = HttpServer(pagescale.board_control(board, due))
    await server.start("127.0.0.1", 0)
    host, port = server.runner.addresses[0][:2]
    base = f"http://{host}:{port}"
    try:
        await status_sizes(base, board)
        async with browser() as cdp:
            started = time.monotonic()
            await cdp.open(f"{base}/?{query}")
            print(f"GET /?{query} load, wall clock: {time.monotonic() - started:.2f} s")
            print("page:", await cdp.evaluate(NAVIGATION))
            print("refresh (waits for the page's own 30 s timer):")
            print(await cdp.evaluate(REFRESH))
    finally:
        await server.stop()


if __name__ == "__main__":
    asyncio.run(measure(sys.argv[1] if len(sys.argv) > 1 else ""))
