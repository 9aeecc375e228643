"""Bandwidth caps on the municipal link (`max_rate` on a source, on a bastion): token buckets the
COPY-out sink awaits.

The cap is enforced on the bytes syncd reads from the source, where they are read: asyncpg hands
each chunk of a COPY to the sink and reads nothing more from the socket until the sink returns
(it pauses the transport), so while the sink waits for tokens the kernel's receive buffer fills,
TCP's window closes and the municipal server's send blocks. Nothing is buffered here: the table
never sits in memory, and the link carries the cap's rate (plus, at the start, what the socket
buffers hold).

A chunk is paid for in pieces of at most a quarter second of the rate, so the pipe sees progress
at least that often (a capped stream is slow, not stalled: `timeouts.idle_stream` keeps meaning a
hang) and a reload that changes the rate is felt within a quarter second. The buckets live as long
as the daemon (`Limits.rates`); a reload sets their rates in place, so transfers under way pick up
the new cap, and a cap removed lets them go at once.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Iterable

import anyio

from syncd.config import Source
from syncd.engine.copy import Sink

PIECE_SECONDS = 0.25  # the most of the rate paid for at once
MIN_PIECE = 1024  # bytes: below this, slicing costs more than it smooths
BURST_SECONDS = 0.25  # tokens a bucket holds when idle: a short burst, never a second's worth


class TokenBucket:
    """`rate` bytes per second (None: no cap), shared by everything that takes from it; those
    waiting are served in turn (FIFO). The clock and the sleep can be injected (tests)."""

    def __init__(
        self,
        rate: float | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ):
        self._clock = clock
        self._sleep = sleep
        self._rate = rate
        self._tokens = self._burst()
        self._stamp = clock()
        self._turn = anyio.Lock()

    @property
    def rate(self) -> float | None:
        return self._rate

    @rate.setter
    def rate(self, rate: float | None) -> None:
        """A reload's cap: what was earned at the old rate is kept, the new one counts from now."""
        self._refill()
        self._rate = rate
        self._tokens = min(self._tokens, self._burst())

    def _burst(self) -> float:
        return (self._rate or 0.0) * BURST_SECONDS

    def _refill(self) -> None:
        now = self._clock()
        if self._rate is not None:
            self._tokens = min(self._burst(), self._tokens + (now - self._stamp) * self._rate)
        self._stamp = now

    async def take(self, count: int) -> None:
        """Return once `count` bytes fit under the cap (at once when there is none)."""
        if self._rate is None:
            return
        async with self._turn:
            self._refill()
            self._tokens -= count
            while self._rate is not None and self._tokens < -0.5:  # half a byte: float noise
                # in short naps: a reload's new rate (or no cap) applies to a debt being paid
                await self._sleep(min(-self._tokens / self._rate, PIECE_SECONDS))
                self._refill()
            if self._rate is None:
                self._tokens = 0.0


def capped(sink: Sink, buckets: tuple[TokenBucket, ...]) -> Sink:
    """`sink`, paying each bucket for every byte before passing it on."""
    if not buckets:
        return sink

    async def capped_sink(chunk: bytes) -> None:
        rates = [b.rate for b in buckets if b.rate is not None]
        if not rates:
            await sink(chunk)
            return
        piece = max(MIN_PIECE, int(min(rates) * PIECE_SECONDS))
        for start in range(0, len(chunk), piece):
            part = chunk[start : start + piece]
            for bucket in buckets:
                await bucket.take(len(part))
            await sink(part)

    return capped_sink


class RateCaps:
    """Every source's bucket and every bastion's (shared by its sources), rates from the
    config; kept across reloads so that transfers under way follow a changed cap."""

    def __init__(self) -> None:
        self._sources: dict[str, TokenBucket] = {}
        self._bastions: dict[str, TokenBucket] = {}

    def configure(self, sources: Iterable[Source]) -> None:
        """The caps of a (re)loaded config; a source or bastion no longer capped goes free."""
        source_rates: dict[str, float | None] = {}
        bastion_rates: dict[str, float | None] = {}
        for source in sources:
            source_rates[source.id] = source.max_rate
            if source.bastion is not None:
                bastion_rates[source.bastion.name] = source.bastion.max_rate
        for known, rates in ((self._sources, source_rates), (self._bastions, bastion_rates)):
            for name, bucket in known.items():
                bucket.rate = rates.get(name)
            for name, rate in rates.items():
                if name not in known:
                    known[name] = TokenBucket(rate)

    def buckets(self, source: Source) -> tuple[TokenBucket, ...]:
        """What a transfer from `source` pays: its own bucket and its bastion's."""
        own = self._sources.setdefault(source.id, TokenBucket(source.max_rate))
        if source.bastion is None:
            return (own,)
        shared = self._bastions.setdefault(
            source.bastion.name, TokenBucket(source.bastion.max_rate)
        )
        return (own, shared)

    def rate(self, source: Source) -> float | None:
        """The cap in force on `source` now: the lower of its own and its bastion's."""
        rates = [b.rate for b in self.buckets(source) if b.rate is not None]
        return min(rates) if rates else None
