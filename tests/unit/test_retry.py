"""The one retry policy: its delays, when it gives up, and the three traces every retry leaves."""

from __future__ import annotations

import logging

import anyio
import anyio.lowlevel
import asyncpg
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from syncd.engine.errors import Failure, Kind, Side
from syncd.engine.retry import RetryPolicy

LOST = Failure(True, "connection refused", Kind.CONNECTION, Side.DESTINATION)


def test_delays_double_up_to_the_cap_and_jitter_stays_within_half():
    policy = RetryPolicy(5, 1.0, 4.0, jitter=False)
    assert [policy.delay(n) for n in range(1, 6)] == [1.0, 2.0, 4.0, 4.0, 4.0]
    jittered = RetryPolicy(5, 1.0, 4.0)
    for n in range(1, 6):
        for _ in range(50):
            assert policy.delay(n) / 2 <= jittered.delay(n) <= policy.delay(n)


def test_only_retryable_failures_and_only_while_attempts_remain():
    policy = RetryPolicy(3, 0.0, 0.0)
    assert policy.allows(LOST, 1) and policy.allows(LOST, 2) and not policy.allows(LOST, 3)
    final = Failure(False, "syntax error", Kind.SERVER, Side.SOURCE, "42601")
    assert not policy.allows(final, 1)
    assert RetryPolicy(None, 0.0, 0.0).allows(LOST, 10_000)


async def test_every_retry_records_the_metric_the_span_event_and_the_log_line(caplog):
    heard: list[tuple[str | None, str | None, Kind]] = []
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    policy = RetryPolicy(
        3,
        0.5,
        1.0,
        jitter=False,
        observe=lambda source, dataset, failure: heard.append((source, dataset, failure.kind)),
        sleep=sleep,
    )
    calls = 0

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionRefusedError
        return "done"

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    with caplog.at_level(logging.WARNING, logger="syncd.engine.retry"):
        with provider.get_tracer("test").start_as_current_span("sync 351570"):
            assert (
                await policy.call(flaky, "source 351570", side=Side.SOURCE, source="351570")
                == "done"
            )
    assert calls == 3 and slept == [0.5, 1.0]
    assert heard == [("351570", None, Kind.CONNECTION)] * 2
    (span,) = exporter.get_finished_spans()
    events = [e for e in span.events if e.name == "retry"]
    assert [e.attributes["syncd.retry.attempt"] for e in events] == [2, 3]
    assert {e.attributes["error.type"] for e in events} == {"connection"}
    lines = [r for r in caplog.records if r.name == "syncd.engine.retry"]
    assert len(lines) == 2 and "attempt 2 of 3" in lines[0].getMessage()
    assert lines[0].source == "351570"


async def test_the_last_failure_is_raised_and_final_ones_are_not_retried():
    async def sleep(seconds: float) -> None:
        pass

    policy = RetryPolicy(2, 0.0, 0.0, sleep=sleep)
    calls = 0

    async def refused() -> None:
        nonlocal calls
        calls += 1
        raise ConnectionRefusedError

    with pytest.raises(ConnectionRefusedError):
        await policy.call(refused, "x")
    assert calls == 2

    calls = 0

    async def wrong() -> None:
        nonlocal calls
        calls += 1
        raise asyncpg.exceptions.UndefinedTableError("no such table")

    with pytest.raises(asyncpg.exceptions.UndefinedTableError):
        await policy.call(wrong, "x")
    assert calls == 1


async def test_retry_on_chooses_what_is_waited_out():
    """DDL waits for readers (lock_timeout) whatever classify says, and nothing else."""
    policy = RetryPolicy(None, 0.0, 0.0, sleep=lambda s: anyio.lowlevel.checkpoint())
    calls = 0

    async def locked_twice() -> int:
        nonlocal calls
        calls += 1
        if calls <= 2:
            raise asyncpg.exceptions.LockNotAvailableError("lock timeout")
        return calls

    only_locks = lambda exc: isinstance(exc, asyncpg.exceptions.LockNotAvailableError)  # noqa: E731
    assert await policy.call(locked_twice, "ddl", retry_on=only_locks) == 3


def test_an_endless_policy_keeps_its_cap_however_long_it_waits():
    """The daemon waits for its destination with no attempt limit: after a day of refusals the
    doubling must still stop at the cap, not overflow a float."""
    policy = RetryPolicy(None, 1.0, 60.0, jitter=False)
    assert policy.delay(100_000) == 60.0
    assert 30.0 <= RetryPolicy(None, 1.0, 60.0).delay(10**9) <= 60.0
