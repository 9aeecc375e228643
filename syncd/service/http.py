"""The HTTP side (aiohttp): health, readiness, metrics, status, and the manual trigger.

No endpoint shows a password or the token; the token is compared in constant time; without a
token configured the POST endpoints answer 403 (an unprotected trigger is worse than none).
"""

from __future__ import annotations

import hmac
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.typedefs import Handler

from syncd.logevents import Event
from syncd.observe.metrics import CONTENT_TYPE
from syncd.service import statuspage
from syncd.service.statusquery import BadQuery

log = logging.getLogger(__name__)

MAX_BODY = 4096  # the POST endpoints take no body; anything large is refused
COMPRESS_OVER = 16 * 1024  # bytes


@dataclass
class Control:
    """What the HTTP side may ask of the daemon."""

    ready: Callable[[], Awaitable[tuple[bool, str]]]
    metrics: Callable[[], bytes]
    status: Callable[[Mapping[str, str]], dict[str, Any]]  # JSON, given the query parameters
    trigger: Callable[[str], dict[str, Any] | None]  # JSON; None: unknown source
    token: Callable[[], str | None]
    # the status page's HTML, given its CSP nonce and the query parameters
    page: Callable[[str, Mapping[str, str]], str] | None = None


def _json(data: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(
        text=json.dumps(data, ensure_ascii=False), status=status, content_type="application/json"
    )


def _compressed(response: web.Response) -> web.Response:
    """gzip when the client takes it and it is worth it (the whole /status of 5,570
    municipalities is 2.5 MB of JSON, 0.2 MB compressed). Nothing secret is in these bodies."""
    body = response.body
    if isinstance(body, bytes) and len(body) > COMPRESS_OVER:
        response.enable_compression()
    return response


@web.middleware
async def _limits(request: web.Request, handler: Handler) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > MAX_BODY:
        return _too_large()
    if request.content_length is None and request.body_exists:
        # chunked: no size announced, so read it here, where client_max_size stops it at 4 kB
        try:
            await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _too_large()
    return await handler(request)


def _too_large() -> web.Response:
    response = _json({"error": "request body too large"}, 413)
    response.force_close()  # not reading the rest of it to keep the connection
    return response


def build_app(control: Control) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY, middlewares=[_limits])

    async def page(request: web.Request) -> web.Response:
        if control.page is None:
            raise web.HTTPNotFound()
        nonce = statuspage.new_nonce()
        headers = {
            "Content-Security-Policy": statuspage.csp(nonce),
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Cache-Control": "no-store",
        }
        try:
            text = control.page(nonce, request.query)
        except BadQuery as exc:
            return web.Response(text=f"{exc}\n", status=400, headers=headers)
        return _compressed(web.Response(text=text, content_type="text/html", headers=headers))

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def readyz(request: web.Request) -> web.Response:
        ready, reason = await control.ready()
        return _json({"ready": ready, "reason": reason}, 200 if ready else 503)

    async def metrics(request: web.Request) -> web.Response:
        response = web.Response(body=control.metrics())
        response.headers["Content-Type"] = CONTENT_TYPE
        return response

    async def status(request: web.Request) -> web.Response:
        try:
            return _compressed(_json(control.status(request.query)))
        except BadQuery as exc:
            return _json({"error": str(exc)}, 400)

    async def trigger(request: web.Request) -> web.Response:
        token = control.token()
        if token is None:
            return _json({"error": "no http.token_file configured: triggers are disabled"}, 403)
        header = request.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(
            given.strip().encode(), token.encode()
        ):
            return web.Response(
                status=401,
                text="unauthorized\n",
                headers={"WWW-Authenticate": 'Bearer realm="syncd"'},
            )
        result = control.trigger(request.match_info["id"])
        if result is None:
            return _json({"error": "unknown source"}, 404)
        log.info(
            "manual sync of %s requested over HTTP",
            request.match_info["id"],
            extra={"event": Event.SYNC_REQUESTED},
        )
        return _json(result, 202)

    app.router.add_get("/", page)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/status", status)
    app.router.add_post("/sources/{id}/sync", trigger)
    return app


class HttpServer:
    """An aiohttp app on one host:port; can move to another on reload."""

    def __init__(self, control: Control):
        self.runner = web.AppRunner(build_app(control), access_log=None, handle_signals=False)
        self.site: web.TCPSite | None = None
        self.address: tuple[str, int] | None = None

    async def start(self, host: str, port: int) -> None:
        if self.runner.server is None:
            await self.runner.setup()
        site = web.TCPSite(self.runner, host, port, reuse_address=True)
        await site.start()
        if self.site is not None:
            await self.site.stop()
        self.site, self.address = site, (host, port)

    async def stop(self) -> None:
        await self.runner.cleanup()
