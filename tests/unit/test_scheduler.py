"""The scheduler on a fake clock: no real hours waited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio

from syncd.config import Schedule, parse_window
from syncd.service.dispatch import Wakeup
from syncd.service.scheduler import Scheduler, offset

from tests.support.fakeclock import FakeClock

SP = ZoneInfo("America/Sao_Paulo")  # UTC-3, no daylight saving since 2019
HOUR = 3600.0


def at(text: str, tz=SP) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def make(ids, clock, **kw) -> Scheduler:
    schedule = Schedule(**{"interval": 24 * HOUR, "jitter": 0.0, **kw})
    return Scheduler(schedule, ids, clock)


def test_never_synced_is_due_at_once_then_every_interval():
    clock = FakeClock(at("2026-11-27T10:00"))
    s = make(["a", "b"], clock)
    assert s.due() == ["a", "b"]
    s.succeeded("a", clock.now())
    assert s.due() == ["b"]
    assert s.next_due("a") == at("2026-11-28T10:00")
    clock.advance(24 * HOUR - 1)
    assert "a" not in s.due()
    clock.advance(1)
    assert "a" in s.due()


def test_window_across_midnight_in_the_configured_time_zone():
    clock = FakeClock(at("2026-11-27T14:00"))  # 14:00 in São Paulo = 17:00 UTC
    s = make(["a"], clock, window=parse_window("22:00-06:00"), timezone="America/Sao_Paulo")
    assert s.due() == []
    assert s.next_due("a") == at("2026-11-27T22:00")
    assert s.next_due("a").astimezone(UTC) == datetime(2026, 11, 28, 1, 0, tzinfo=UTC)
    clock.set(at("2026-11-27T23:30"))
    assert s.due() == ["a"]
    clock.set(at("2026-11-28T05:59"))
    assert s.due() == ["a"]  # still inside: the window runs past midnight
    clock.set(at("2026-11-28T06:00"))
    assert s.due() == []
    assert s.next_due("a") == at("2026-11-28T22:00")


def test_the_same_window_means_other_utc_hours_in_another_zone():
    clock = FakeClock(datetime(2026, 11, 27, 12, 0, tzinfo=UTC))
    manaus = make(["a"], clock, window=parse_window("03:00-13:00"), timezone="America/Manaus")
    sao_paulo = make(["a"], clock, window=parse_window("03:00-13:00"))
    # 12:00 UTC is 08:00 in Manaus (UTC-4) and 09:00 in São Paulo: both inside
    assert manaus.due() == sao_paulo.due() == ["a"]
    clock.set(datetime(2026, 11, 27, 16, 30, tzinfo=UTC))  # 12:30 Manaus, 13:30 São Paulo
    assert manaus.due() == ["a"] and sao_paulo.due() == []
    assert sao_paulo.next_due("a") == datetime(2026, 11, 28, 6, 0, tzinfo=UTC)


def test_a_success_late_in_the_window_waits_for_the_next_opening_plus_offset():
    clock = FakeClock(at("2026-11-27T12:50"))
    s = make(["a"], clock, window=parse_window("03:00-13:00"), jitter=600.0)
    s.succeeded("a", clock.now())
    # due 24h later minus its offset, which is inside the window (12:40-12:50 next day)
    assert at("2026-11-28T12:40") <= s.next_due("a") <= at("2026-11-28T12:50")
    s2 = make(["b"], clock, window=parse_window("03:00-04:00"), jitter=600.0)
    s2.succeeded("b", clock.now())
    due = s2.next_due("b")
    assert at("2026-11-29T03:00") <= due < at("2026-11-29T03:10")
    assert due == at("2026-11-29T03:00") + timedelta(seconds=offset("b", 600.0))


def test_jitter_spreads_650_sources_across_the_window_opening():
    clock = FakeClock(at("2026-11-27T20:00"))
    ids = [f"{110000 + i}" for i in range(650)]
    s = make(ids, clock, window=parse_window("03:00-13:00"), jitter=600.0)
    for sid in ids:
        s.succeeded(sid, at("2026-11-27T02:00"))
    starts = sorted(s.next_due(sid) for sid in ids)
    opening = at("2026-11-28T03:00")
    assert starts[0] >= opening and starts[-1] < opening + timedelta(minutes=10)
    per_second = {}
    for when in starts:
        per_second[when.replace(microsecond=0)] = per_second.get(when.replace(microsecond=0), 0) + 1
    assert max(per_second.values()) <= 5  # not 650 on one second
    minutes = {when.replace(second=0, microsecond=0) for when in starts}
    assert len(minutes) == 10  # every minute of the spread gets its share
    # stable: the same source gets the same spot after a restart
    again = make(ids, clock, window=parse_window("03:00-13:00"), jitter=600.0)
    for sid in ids:
        again.succeeded(sid, at("2026-11-27T02:00"))
    assert [again.next_due(sid) for sid in ids] == [s.next_due(sid) for sid in ids]


def test_jitter_never_makes_a_source_later_than_its_interval():
    clock = FakeClock(at("2026-11-27T10:00"))
    s = make(["a", "b", "c"], clock, jitter=1800.0)
    for sid in "abc":
        s.succeeded(sid, clock.now())
        assert (
            clock.now() + timedelta(hours=23.5)
            <= s.next_due(sid)
            <= clock.now() + timedelta(hours=24)
        )


def test_failed_sources_back_off_doubling_up_to_the_cap():
    clock = FakeClock(at("2026-11-27T10:00"))
    s = make(["a"], clock, failed_backoff=300.0, failed_backoff_max=3600.0)
    delays = []
    for _ in range(6):
        s.failed("a", clock.now())
        delays.append((s.next_due("a") - clock.now()).total_seconds())
        clock.set(s.next_due("a"))
        assert s.due() == ["a"]
    assert delays == [300, 600, 1200, 2400, 3600, 3600]
    s.succeeded("a", clock.now())
    assert s.next_due("a") == clock.now() + timedelta(hours=24)


def test_failure_backoff_never_later_than_the_regular_time():
    clock = FakeClock(at("2026-11-27T10:00"))
    s = make(["a"], clock, interval=600.0, failed_backoff=3600.0, failed_backoff_max=7200.0)
    s.succeeded("a", clock.now())
    clock.advance(60)
    s.failed("a", clock.now())
    assert s.next_due("a") == at("2026-11-27T10:10")


def test_manual_trigger_jumps_the_queue_and_ignores_the_window():
    clock = FakeClock(at("2026-11-27T20:00"))
    s = make(["a", "b", "c"], clock, window=parse_window("03:00-13:00"))
    assert s.due() == []
    assert s.trigger("c") and not s.trigger("nope")
    assert s.due() == ["c"]
    s.started("c")
    s.failed("c", clock.now())
    clock.set(at("2026-11-28T03:00"))
    assert s.due() == ["a", "b", "c"]
    s.trigger("c")
    assert s.due() == ["c", "a", "b"]
    s.started("c")
    assert s.due() == ["a", "b", "c"]


def test_reload_adds_and_forgets_sources():
    clock = FakeClock(at("2026-11-27T10:00"))
    s = make(["a", "b"], clock)
    s.succeeded("a", clock.now())
    s.update(Schedule(interval=HOUR, jitter=0.0), ["a", "c"])
    assert not s.known("b") and s.known("c")
    assert s.next_due("a") == clock.now() + timedelta(hours=1)  # new interval, old history
    assert s.due() == ["c"]


def test_seen_success_from_another_instance_and_defer():
    clock = FakeClock(at("2026-11-27T10:00"))
    s = make(["a"], clock)
    s.seen_success("a", at("2026-11-27T09:00"))
    assert s.next_due("a") == at("2026-11-28T09:00")
    s.seen_success("a", at("2026-11-26T09:00"))  # older news changes nothing
    assert s.next_due("a") == at("2026-11-28T09:00")
    s2 = make(["b"], clock)
    s2.defer("b", timedelta(seconds=10))
    assert s2.due() == []
    clock.advance(10)
    assert s2.due() == ["b"]


def test_datasets_a_reload_adds_are_due_at_once_alone():
    clock = FakeClock(at("2026-11-27T10:00"))
    s = make(["a", "b"], clock, failed_backoff=300.0)
    for sid in ("a", "b"):
        s.succeeded(sid, clock.now())
    clock.advance(HOUR)
    assert s.due() == []
    s.datasets_added({"gestantes"})
    assert s.due() == ["a", "b"]
    assert s.only("a") == frozenset({"gestantes"})  # just the new one
    s.started("a")
    assert s.due() == ["b"]
    assert s.next_due("a") == at("2026-11-28T10:00")  # the regular schedule is untouched
    s.added_failed("a", {"gestantes"}, clock.now())
    assert s.next_due("a") == at("2026-11-27T11:05")  # the failure backoff
    clock.advance(5 * 60)
    assert s.due() == ["a", "b"]
    # a source due on its own schedule takes the new datasets along in its regular pass
    clock.set(at("2026-11-28T10:00"))
    assert s.only("a") is None
    s.started("a")
    s.succeeded("a", clock.now())
    assert s.only("a") is None and "a" not in s.due()


def test_added_datasets_wait_for_the_window():
    clock = FakeClock(at("2026-11-27T15:00"))
    s = make(["a"], clock, window=parse_window("03:00-13:00"))
    s.succeeded("a", at("2026-11-27T04:00"))
    s.datasets_added({"gestantes"})
    assert s.due() == []
    assert s.next_due("a") == at("2026-11-28T03:00")


async def test_the_dispatcher_sleeps_on_the_same_clock():
    """The wait for the next due time ends when the fake clock gets there, or when woken."""
    clock = FakeClock(at("2026-11-27T10:00"))
    wakeup = Wakeup(clock)
    ended: list[datetime] = []

    async def wait(timeout: float | None) -> None:
        await wakeup.wait(timeout)
        ended.append(clock.now())

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait, HOUR)
        await anyio.sleep(0.05)
        clock.advance(HOUR - 1)
        await anyio.sleep(0.05)
        assert ended == []
        clock.advance(1)
        with anyio.fail_after(5):
            while not ended:
                await anyio.sleep(0.01)
        assert ended == [at("2026-11-27T11:00")]

        tg.start_soon(wait, None)  # no timeout: only a wakeup ends it
        await anyio.sleep(0.05)
        clock.advance(24 * HOUR)
        await anyio.sleep(0.05)
        assert len(ended) == 1
        wakeup.set()
        with anyio.fail_after(5):
            while len(ended) == 1:
                await anyio.sleep(0.01)
