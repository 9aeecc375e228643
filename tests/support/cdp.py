"""Headless Chromium driven over the DevTools protocol (aiohttp's websocket client), for what
`--dump-dom` cannot do: type into the page, wait for its script, read its performance entries."""

from __future__ import annotations

import asyncio
import itertools
import json
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp

from tests.support import tools

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--remote-debugging-port=0",  # Chromium picks one and writes it to DevToolsActivePort
    "--window-size=1280,900",
]


class Cdp:
    """One page's DevTools session."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws, self.ids = ws, itertools.count(1)
        self.events: list[str] = []  # names of the events seen while waiting for answers

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        n = next(self.ids)
        await self.ws.send_json({"id": n, "method": method, "params": params})
        async for message in self.ws:
            data = json.loads(message.data)
            if data.get("id") == n:
                if "error" in data:
                    raise RuntimeError(f"{method}: {data['error']}")
                return dict(data["result"])
            if "method" in data:
                self.events.append(data["method"])
        raise RuntimeError("DevTools closed")

    async def wait_event(self, name: str) -> None:
        if name in self.events:
            self.events.remove(name)
            return
        async for message in self.ws:
            if json.loads(message.data).get("method") == name:
                return
        raise RuntimeError("DevTools closed")

    async def open(self, url: str) -> None:
        self.events.clear()
        await self.call("Page.navigate", url=url)
        await self.wait_event("Page.loadEventFired")

    async def evaluate(self, expression: str) -> Any:
        """The value of a JS expression (awaited if a promise), passed through JSON.stringify."""
        result = await self.call(
            "Runtime.evaluate",
            expression=f"Promise.resolve({expression}).then(v => JSON.stringify(v))",
            awaitPromise=True,
            returnByValue=True,
        )
        if "exceptionDetails" in result:
            raise RuntimeError(result["exceptionDetails"])
        return json.loads(result["result"]["value"])


@asynccontextmanager
async def browser(timeout: float = 60) -> AsyncIterator[Cdp]:
    """A fresh headless Chromium (its own profile) on about:blank, with Page events on."""
    with tools.chromium_profile() as profile:
        proc = tools.start_chromium(
            profile, *FLAGS, "about:blank", stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            active = Path(profile) / "DevToolsActivePort"
            async with asyncio.timeout(timeout):  # Chromium's start, not what follows
                while not active.exists() or not active.read_text().strip():
                    await asyncio.sleep(0.1)
            port = int(active.read_text().split()[0])
            async with aiohttp.ClientSession() as http:
                async with http.get(f"http://127.0.0.1:{port}/json/list") as r:
                    page = next(t for t in await r.json() if t["type"] == "page")
                async with http.ws_connect(page["webSocketDebuggerUrl"], max_msg_size=0) as ws:
                    cdp = Cdp(ws)
                    await cdp.call("Page.enable")
                    yield cdp
        finally:
            tools.stop_chromium(proc)
