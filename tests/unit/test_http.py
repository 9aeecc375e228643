"""The HTTP side as a client sees it: a real aiohttp server on 127.0.0.1, port 0, asked with
aiohttp's client. Behind it a small `Control` of our own (real metrics registry, real status
page), not the daemon: what is tested is the contract of docs/reference/http.md."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
import pytest

from syncd.ledger import Status
from syncd.observe.metrics import Metrics
from syncd.service import statuspage
from syncd.service.http import MAX_BODY, Control, HttpServer
from syncd.service.statusboard import SourceView

TOKEN = "s3cret-token"
HOSTILE = "<script>alert(1)</script>"


@dataclass
class Daemon:
    """Just enough of a daemon for the HTTP side: what it answers, and what it was asked."""

    sources: dict[str, str] = field(default_factory=lambda: {"1100015": "São José", "x": HOSTILE})
    ready_now: tuple[bool, str] = (False, "destination unreachable: connection refused")
    token: str | None = TOKEN
    triggered: list[str] = field(default_factory=list)
    with_page: bool = True
    metrics: Metrics = field(default_factory=Metrics)

    async def ready(self) -> tuple[bool, str]:
        return self.ready_now

    def status(self, query: Mapping[str, str]) -> dict:
        return {
            "sources": {sid: {"name": name, "state": "ok"} for sid, name in self.sources.items()}
        }

    def trigger(self, source_id: str) -> dict | None:
        if source_id not in self.sources:
            return None
        self.triggered.append(source_id)
        return {"source": source_id, "queued": True, "running": False, "requested_at": "now"}

    def page(self, nonce: str, query: Mapping[str, str]) -> str:
        now = datetime(2024, 2, 11, 12, 0, tzinfo=UTC)
        views = {
            sid: SourceView(name, Status.FAILED, last_error=f"{HOSTILE} <img onerror=x>")
            for sid, name in self.sources.items()
        }
        return statuspage.page(views, {}, now, nonce, "test", query)

    def control(self) -> Control:
        return Control(
            ready=self.ready,
            metrics=self.metrics.render,
            status=self.status,
            trigger=self.trigger,
            token=lambda: self.token,
            page=self.page if self.with_page else None,
        )


@dataclass
class Served:
    daemon: Daemon
    server: HttpServer
    client: aiohttp.ClientSession

    @property
    def url(self) -> str:
        host, port = self.server.runner.addresses[0][:2]
        return f"http://{host}:{port}"

    def post_trigger(self, source_id: str, authorization: str | None = None, **kwargs):
        headers = {"Authorization": authorization} if authorization is not None else {}
        return self.client.post(f"{self.url}/sources/{source_id}/sync", headers=headers, **kwargs)


@pytest.fixture
async def served() -> AsyncIterator[Served]:
    daemon = Daemon()
    server = HttpServer(daemon.control())
    await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as client:
            yield Served(daemon, server, client)
    finally:
        await server.stop()


async def test_healthz_answers_ok(served: Served):
    async with served.client.get(f"{served.url}/healthz") as response:
        assert response.status == 200
        assert await response.text() == "ok\n"


async def test_readyz_is_503_with_the_reason_until_ready(served: Served):
    async with served.client.get(f"{served.url}/readyz") as response:
        assert response.status == 503
        assert await response.json() == {
            "ready": False,
            "reason": "destination unreachable: connection refused",
        }
    served.daemon.ready_now = (True, "ok")
    async with served.client.get(f"{served.url}/readyz") as response:
        assert response.status == 200
        assert (await response.json())["ready"] is True


async def test_metrics_are_prometheus_text(served: Served):
    served.daemon.metrics.syncs.labels("ok").inc(3)
    async with served.client.get(f"{served.url}/metrics") as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = await response.text()
    assert 'syncd_syncs_total{outcome="ok"} 3.0' in text
    names = {line.split("{")[0].split()[0] for line in text.splitlines() if line[:1].isalpha()}
    assert names and all(name.startswith("syncd_") for name in names)


async def test_status_is_the_controls_json_with_names_unescaped(served: Served):
    async with served.client.get(f"{served.url}/status") as response:
        assert response.status == 200
        assert response.content_type == "application/json"
        assert "São José" in await response.text()  # UTF-8, not \u escapes
        assert await response.json() == served.daemon.status({})


async def test_a_trigger_needs_the_bearer_token(served: Served):
    refused = [None, "Bearer wrong-token", f"Basic {TOKEN}", f"Bearer {TOKEN}x", "Bearer"]
    for authorization in refused:
        async with served.post_trigger("1100015", authorization) as response:
            assert response.status == 401, authorization
            assert response.headers["WWW-Authenticate"] == 'Bearer realm="syncd"'
            assert TOKEN not in await response.text()
    assert served.daemon.triggered == []
    async with served.post_trigger("1100015", f"bearer  {TOKEN}") as response:
        assert response.status == 202
        assert await response.json() == {
            "source": "1100015",
            "queued": True,
            "running": False,
            "requested_at": "now",
        }
    assert served.daemon.triggered == ["1100015"]


async def test_a_trigger_of_an_unknown_source_is_404(served: Served):
    async with served.post_trigger("9999999", f"Bearer {TOKEN}") as response:
        assert response.status == 404
        assert await response.json() == {"error": "unknown source"}


async def test_without_a_token_configured_triggers_are_403_even_with_a_header(served: Served):
    served.daemon.token = None
    for authorization in (None, "Bearer ", f"Bearer {TOKEN}"):
        async with served.post_trigger("1100015", authorization) as response:
            assert response.status == 403
            assert "token_file" in (await response.json())["error"]
    assert served.daemon.triggered == []


async def test_bodies_over_4_kb_are_refused_even_chunked(served: Served):
    body = b"x" * (MAX_BODY + 1)
    async with served.post_trigger("1100015", f"Bearer {TOKEN}", data=body) as response:
        assert response.status == 413

    async def chunked() -> AsyncIterator[bytes]:
        for _ in range(8):
            yield b"y" * 1024

    async with served.post_trigger("1100015", f"Bearer {TOKEN}", data=chunked()) as response:
        assert response.status == 413
    assert served.daemon.triggered == []
    # a small body is no reason to refuse
    async with served.post_trigger("1100015", f"Bearer {TOKEN}", data=b"{}") as response:
        assert response.status == 202


async def test_unknown_routes_are_404_and_wrong_methods_405(served: Served):
    async with served.client.get(f"{served.url}/nowhere") as response:
        assert response.status == 404
    async with served.client.get(f"{served.url}/sources/1100015/sync") as response:
        assert response.status == 405
    async with served.client.post(f"{served.url}/status") as response:
        assert response.status == 405


async def test_the_status_page_carries_a_fresh_nonce_in_its_csp(served: Served):
    nonces = []
    for _ in range(2):
        async with served.client.get(f"{served.url}/") as response:
            assert response.status == 200
            assert response.content_type == "text/html"
            assert response.headers["X-Content-Type-Options"] == "nosniff"
            assert response.headers["Cache-Control"] == "no-store"
            csp = response.headers["Content-Security-Policy"]
            html = await response.text()
        match = re.search(r"script-src 'nonce-([^']+)'", csp)
        assert match, csp
        nonce = match.group(1)
        assert f'<script nonce="{nonce}">' in html
        assert HOSTILE not in html  # a municipality's name stays text
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
        nonces.append(nonce)
    assert nonces[0] != nonces[1]


async def test_without_a_page_the_root_is_404():
    daemon = Daemon(with_page=False)
    server = HttpServer(daemon.control())
    await server.start("127.0.0.1", 0)
    try:
        host, port = server.runner.addresses[0][:2]
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"http://{host}:{port}/") as response,
        ):
            assert response.status == 404
    finally:
        await server.stop()


async def test_start_again_moves_the_server_to_the_new_address(served: Served):
    old = served.url
    await served.server.start("127.0.0.2", 0)
    new = served.url
    assert new != old and new.startswith("http://127.0.0.2:")
    async with served.client.get(f"{new}/healthz") as response:
        assert response.status == 200
    with pytest.raises(aiohttp.ClientConnectionError):
        async with served.client.get(f"{old}/healthz"):
            pass
