"""/readyz: does the destination answer? Asked at most every 5 s; while the daemon has no
destination, the reason its last connection attempt failed."""

from __future__ import annotations

import anyio

from syncd.engine.errors import classify
from syncd.engine.shared import Engine
from syncd.observe.metrics import Metrics
from syncd.service.clock import Clock

FRESH = 5.0  # seconds an answer is reused
PROBE_TIMEOUT = 3.0


class Readiness:
    def __init__(self, clock: Clock, metrics: Metrics) -> None:
        self._clock = clock
        self._metrics = metrics
        self._cache: tuple[float, bool, str] = (-1e9, False, "starting")  # (at, ready, reason)

    def failed(self, reason: str) -> None:
        """Connecting to the destination failed: say why, until it succeeds."""
        self._cache = (self._clock.monotonic(), False, reason)

    def connected(self) -> None:
        """The destination answered: the next question asks it again."""
        self._cache = (-1e9, False, "")

    async def check(self, engine: Engine | None) -> tuple[bool, str]:
        at, ok, reason = self._cache
        if self._clock.monotonic() - at < FRESH:
            return ok, reason
        if engine is None:
            return False, reason or "connecting to the destination"
        try:
            with anyio.fail_after(PROBE_TIMEOUT):
                async with engine.destination.acquire() as conn:
                    await conn.fetchval("SELECT 1")
            ok, reason = True, ""
        except Exception as exc:
            ok, reason = False, f"destination: {classify(exc).reason}"
        self._cache = (self._clock.monotonic(), ok, reason)
        self._metrics.ready.set(int(ok))
        return ok, reason
