"""Resizable limiters: municipalities at once, connections per source server, COPY writers,
and the bandwidth caps on municipal links (`rates`, engine/ratelimit.py).

anyio's CapacityLimiter resizes in place: growing `total_tokens` wakes waiters at once; shrinking
lets holders finish and admits nobody new until fewer than the new total are borrowed. So after a
reload the new limit holds as soon as the extra holders are done, and is never exceeded after.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from syncd.config import Concurrency
from syncd.engine.ratelimit import RateCaps


@dataclass(frozen=True, slots=True)
class Usage:
    in_use: int
    waiting: int
    total: int


def pool_size(concurrency: Concurrency) -> int:
    """Connections to the destination: each municipality syncing holds one for its landing
    transaction; the rest serve the ledger and the vacuum lane (DDL takes connections of its
    own)."""
    return concurrency.sources + 4


class Limits:
    """The limiters `concurrency` sets, built and resized here only (a new knob: here and in
    `pool_size` if it changes the destination pool)."""

    def __init__(self, concurrency: Concurrency):
        self.sources = anyio.CapacityLimiter(concurrency.sources)
        self.writers = anyio.CapacityLimiter(concurrency.writers)
        self._per_host = concurrency.per_host
        self._hosts: dict[str, anyio.CapacityLimiter] = {}
        self.rates = RateCaps()  # `max_rate`s: set by Engine.create and by each reload

    def host(self, key: str) -> anyio.CapacityLimiter:
        limiter = self._hosts.get(key)
        if limiter is None:
            limiter = self._hosts[key] = anyio.CapacityLimiter(self._per_host)
        return limiter

    @property
    def per_host(self) -> int:
        return self._per_host

    @asynccontextmanager
    async def source_slot(self, host_key: str) -> AsyncIterator[None]:
        """A connection to one municipal server: its host's slot first, then a global one.

        In this order a source waiting for its busy server holds no global slot, so servers
        with free capacity are never starved by one crowded server.
        """
        async with self.host(host_key), self.sources:
            yield

    def resize(self, concurrency: Concurrency) -> None:
        self.sources.total_tokens = concurrency.sources
        self.writers.total_tokens = concurrency.writers
        self._per_host = concurrency.per_host
        for limiter in self._hosts.values():
            limiter.total_tokens = concurrency.per_host

    def usage(self) -> dict[str, Usage]:
        def of(limiter: anyio.CapacityLimiter) -> Usage:
            stats = limiter.statistics()
            return Usage(stats.borrowed_tokens, stats.tasks_waiting, int(stats.total_tokens))

        hosts = [of(limiter) for limiter in self._hosts.values()]
        return {
            "sources": of(self.sources),
            "writers": of(self.writers),
            "per_host": Usage(
                max((h.in_use for h in hosts), default=0),
                sum(h.waiting for h in hosts),
                self._per_host,
            ),
        }
