"""Source, per-host and writer slots: who gets in, who waits, and what a resize changes.

Holders are real tasks that keep a slot until told to leave; `anyio.wait_all_tasks_blocked` lets
every task get as far as it can before the usage numbers are read.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from anyio.abc import TaskGroup

from syncd.config import Concurrency
from syncd.engine.limits import Limits, Usage


class Holder:
    """A task that takes a slot, says so, and keeps it until `leave()`."""

    def __init__(self, tg: TaskGroup, slot: Callable[[], AbstractAsyncContextManager]):
        self.inside = False
        self._leave = anyio.Event()
        tg.start_soon(self._hold, slot)

    async def _hold(self, slot: Callable[[], AbstractAsyncContextManager]) -> None:
        async with slot():
            self.inside = True
            await self._leave.wait()
            self.inside = False

    def leave(self) -> None:
        self._leave.set()


@asynccontextmanager
async def holders() -> AsyncIterator[tuple[TaskGroup, list[Holder]]]:
    made: list[Holder] = []
    async with anyio.create_task_group() as tg:
        yield tg, made
        for h in made:
            h.leave()


async def settle() -> None:
    await anyio.wait_all_tasks_blocked()


async def test_a_source_waiting_for_its_busy_host_holds_no_global_slot():
    limits = Limits(Concurrency(sources=2, per_host=1, writers=1))
    async with holders() as (tg, made):
        first = Holder(tg, lambda: limits.source_slot("a:5432"))
        queued = Holder(tg, lambda: limits.source_slot("a:5432"))
        other = Holder(tg, lambda: limits.source_slot("b:5432"))
        made += [first, queued, other]
        await settle()
        # the second source of server a waits for a, leaving the global slot to server b
        assert (first.inside, queued.inside, other.inside) == (True, False, True)
        assert limits.usage()["sources"] == Usage(in_use=2, waiting=0, total=2)
        assert limits.usage()["per_host"] == Usage(in_use=1, waiting=1, total=1)
        first.leave()
        await settle()
        assert queued.inside


async def test_global_source_slots_cap_every_host_together():
    limits = Limits(Concurrency(sources=2, per_host=4, writers=1))
    async with holders() as (tg, made):
        made += [Holder(tg, lambda h=h: limits.source_slot(h)) for h in ("a:1", "b:1", "c:1")]
        await settle()
        assert [h.inside for h in made] == [True, True, False]
        assert limits.usage()["sources"] == Usage(in_use=2, waiting=1, total=2)
        made[0].leave()
        await settle()
        assert made[2].inside


async def test_growing_a_limit_admits_waiters_at_once():
    limits = Limits(Concurrency(sources=4, per_host=4, writers=1))
    async with holders() as (tg, made):
        made += [Holder(tg, lambda: limits.writers) for _ in range(3)]
        await settle()
        assert [h.inside for h in made] == [True, False, False]
        limits.resize(Concurrency(sources=4, per_host=4, writers=3))
        await settle()
        assert [h.inside for h in made] == [True, True, True]
        assert limits.usage()["writers"] == Usage(in_use=3, waiting=0, total=3)


async def test_shrinking_lets_holders_finish_and_then_holds_the_new_limit():
    limits = Limits(Concurrency(sources=3, per_host=3, writers=1))
    async with holders() as (tg, made):
        made += [Holder(tg, lambda: limits.source_slot("a:1")) for _ in range(3)]
        await settle()
        assert all(h.inside for h in made)
        limits.resize(Concurrency(sources=1, per_host=3, writers=1))
        late = Holder(tg, lambda: limits.source_slot("a:1"))
        made.append(late)
        await settle()
        # nobody is thrown out; nobody new gets in while 3 hold a limit of 1
        assert [h.inside for h in made] == [True, True, True, False]
        made[0].leave()
        await settle()
        assert not late.inside  # 2 still hold a limit of 1
        made[1].leave()
        made[2].leave()
        await settle()
        assert late.inside
        assert limits.usage()["sources"] == Usage(in_use=1, waiting=0, total=1)


async def test_a_resize_reaches_known_hosts_and_hosts_seen_later():
    limits = Limits(Concurrency(sources=8, per_host=1, writers=1))
    async with holders() as (tg, made):
        made += [Holder(tg, lambda: limits.source_slot("a:1")) for _ in range(2)]
        await settle()
        assert [h.inside for h in made] == [True, False]
        limits.resize(Concurrency(sources=8, per_host=2, writers=1))
        await settle()
        assert [h.inside for h in made] == [True, True]
        later = [Holder(tg, lambda: limits.source_slot("b:1")) for _ in range(3)]
        made += later
        await settle()
        assert [h.inside for h in later] == [True, True, False]
        # per_host shows the busiest host and every host's waiters
        assert limits.usage()["per_host"] == Usage(in_use=2, waiting=1, total=2)


def test_usage_of_idle_limits_is_zero_in_use_at_the_configured_totals():
    usage = Limits(Concurrency(sources=5, per_host=2, writers=3)).usage()
    assert usage == {
        "sources": Usage(0, 0, 5),
        "writers": Usage(0, 0, 3),
        "per_host": Usage(0, 0, 2),
    }
