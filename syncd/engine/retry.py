"""One retry policy for the whole program.

Every retry in syncd, whether a dataset's COPY, a municipality's whole pass on a new snapshot, a
destination round trip, DDL waiting for readers or the daemon waiting for its destination, goes
through `RetryPolicy.pause`, which leaves the same three traces together: the `syncd_retries_total`
metric (through the `observe` hook), a `retry` event on the current span, and a log line.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import anyio
from opentelemetry import trace

from syncd import config
from syncd.engine import spans
from syncd.engine.errors import Failure, Kind, Side, classify
from syncd.logevents import Event

log = logging.getLogger(__name__)

T = TypeVar("T")
# A bastion that is down or a municipal tunnel that is not connected gets one retry: waiting
# longer helps none of the sources behind it, and each of them would wait as long.
ONE_RETRY = frozenset({Kind.BASTION_UNREACHABLE, Kind.TUNNEL_NOT_CONNECTED})
Observer = Callable[[str | None, str | None, Failure], None]  # (source, dataset, failure)
Sleep = Callable[[float], Awaitable[None]]


def unobserved(source: str | None, dataset: str | None, failure: Failure) -> None:
    pass


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts, how long between them, and who hears about each retry.

    `attempts` None: until the caller stops it (a deadline, a shutdown)."""

    attempts: int | None
    backoff: float  # the first delay; it doubles per attempt, up to max_backoff
    max_backoff: float
    jitter: bool = True  # half the delay fixed, half random: a fleet does not retry in step
    observe: Observer = unobserved
    sleep: Sleep = anyio.sleep
    level: int = logging.WARNING

    @classmethod
    def configured(cls, settings: config.Retry, observe: Observer = unobserved) -> RetryPolicy:
        return cls(settings.attempts, settings.backoff, settings.max_backoff, observe=observe)

    def delay(self, attempt: int) -> float:
        """The wait after failed attempt number `attempt` (1-based)."""
        doublings = min(max(attempt - 1, 0), 64)  # attempts=None counts without end
        delay = min(self.max_backoff, self.backoff * 2.0**doublings)
        return delay / 2 + random.uniform(0, delay / 2) if self.jitter else delay

    def allows(self, failure: Failure, attempt: int) -> bool:
        """Is there another attempt after failed attempt number `attempt`?"""
        if failure.kind in ONE_RETRY:
            return failure.retryable and attempt < min(self.attempts or 2, 2)
        return failure.retryable and (self.attempts is None or attempt < self.attempts)

    def recorded(
        self,
        failure: Failure,
        attempt: int,
        delay: float,
        what: str,
        *,
        source: str | None = None,
        dataset: str | None = None,
    ) -> None:
        """The metric, the span event and the log line of one retry: attempt `attempt + 1`
        comes after `delay` seconds."""
        self.observe(source, dataset, failure)
        spans.retried(trace.get_current_span(), failure, attempt + 1, delay)
        of = f" of {self.attempts}" if self.attempts is not None else ""
        fields = {"attempt": attempt + 1, "reason": failure.reason, "error_type": failure.kind}
        if source is not None:
            fields["source"] = source
        if dataset is not None:
            fields["dataset"] = dataset
        log.log(
            self.level,
            "%s: %s; attempt %d%s in %.1fs",
            what,
            failure.reason,
            attempt + 1,
            of,
            delay,
            extra={"event": Event.RETRY, **fields},
        )

    async def pause(
        self,
        failure: Failure,
        attempt: int,
        what: str,
        *,
        source: str | None = None,
        dataset: str | None = None,
    ) -> None:
        """Record the retry, then wait before the next attempt."""
        delay = self.delay(attempt)
        self.recorded(failure, attempt, delay, what, source=source, dataset=dataset)
        await self.sleep(delay)

    async def call(
        self,
        operation: Callable[[], Awaitable[T]],
        what: str,
        *,
        side: Side | None = None,
        source: str | None = None,
        retry_on: Callable[[BaseException], bool] | None = None,
    ) -> T:
        """`operation()`, attempted again while its failure is retryable (or, with `retry_on`,
        while that says so) and attempts remain; the last failure is raised."""
        attempt = 0
        while True:
            attempt += 1
            try:
                return await operation()
            except Exception as exc:
                failure = classify(exc, side)
                wanted = retry_on(exc) if retry_on is not None else failure.retryable
                if not wanted or (self.attempts is not None and attempt >= self.attempts):
                    raise
                await self.pause(failure, attempt, what, source=source)
