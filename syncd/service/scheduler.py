"""What is due when. Pure: the time comes from an injected clock, nothing here sleeps.

- A source never synced is due at once (inside the window).
- After a success it is due `interval` later, minus a stable per-source offset in [0, jitter):
  the freshness promise is `interval` at worst, and sources spread instead of marching in step.
- After a failure it is due again sooner: `failed_backoff`, doubling per consecutive failure, up
  to `failed_backoff_max` (never later than the regular due time).
- With a daily `window`, a due time outside it moves to the next opening, plus the source's
  offset, so 650 sources do not all start on the same second at 03:00.
- A manual trigger makes a source due now, window or not, ahead of everything else.
- Datasets a reload adds are due at once (inside the window) for every source, alone: a pass
  of just those, leaving the regular schedule of the others as it was. A failed one is tried
  again after the failure backoff; a regular pass that comes first takes them along.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from syncd.config import DailyWindow, Schedule
from syncd.service.clock import Clock

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def offset(source_id: str, span: float) -> float:
    """A stable spot in [0, span) for this source: the same after every restart."""
    if span <= 0:
        return 0.0
    digest = hashlib.sha256(b"syncd-jitter:" + source_id.encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64 * span


@dataclass(slots=True)
class _State:
    last_success: datetime | None = None
    last_attempt: datetime | None = None
    failures: int = 0
    triggered: datetime | None = None
    not_before: datetime | None = None
    added: frozenset[str] = frozenset()  # datasets a reload added, not yet synced here
    added_at: datetime | None = None  # when (a success elsewhere after it counts)
    added_due: datetime | None = None  # after a failed pass of them: the backoff
    added_failures: int = 0


class Scheduler:
    def __init__(self, schedule: Schedule, source_ids: Sequence[str], clock: Clock) -> None:
        self.schedule = schedule
        self.clock = clock
        self._states: dict[str, _State] = {sid: _State() for sid in source_ids}

    # -- what happened ------------------------------------------------------------------------

    def update(self, schedule: Schedule, source_ids: Sequence[str]) -> None:
        """A reload: new settings; sources added start fresh, removed ones are forgotten."""
        self.schedule = schedule
        wanted = set(source_ids)
        for sid in list(self._states):
            if sid not in wanted:
                del self._states[sid]
        for sid in source_ids:
            self._states.setdefault(sid, _State())

    def datasets_added(self, names: Iterable[str]) -> None:
        """A reload added these datasets: due at once for every source."""
        names = frozenset(names)
        if not names:
            return
        now = self.clock.now()
        for state in self._states.values():
            state.added |= names
            state.added_at, state.added_due, state.added_failures = now, None, 0

    def only(self, source_id: str, now: datetime | None = None) -> frozenset[str] | None:
        """What a pass starting now should sync: None for every dataset (the source is due on
        its own schedule, or triggered), else just the datasets a reload added."""
        state = self._states.get(source_id)
        if state is None or not state.added or state.triggered is not None:
            return None
        now = now or self.clock.now()
        return None if self.next_due(source_id, now, own_schedule=True) <= now else state.added

    def added_since(self, source_id: str) -> datetime | None:
        state = self._states.get(source_id)
        return state.added_at if state is not None else None

    def added_failed(
        self, source_id: str, names: Iterable[str], at: datetime, *, failed: bool = True
    ) -> None:
        """A pass of added datasets failed (or was not run: `failed=False`): they stay due,
        after the failure backoff."""
        state = self._states.get(source_id)
        if state is None:
            return
        state.added |= frozenset(names)
        if not failed:
            return
        state.added_failures += 1
        backoff = min(
            self.schedule.failed_backoff * 2 ** (state.added_failures - 1),
            self.schedule.failed_backoff_max,
        )
        state.added_due = at + timedelta(seconds=backoff)

    def known(self, source_id: str) -> bool:
        return source_id in self._states

    def succeeded(self, source_id: str, at: datetime) -> None:
        state = self._states.get(source_id)
        if state is None:
            return
        if state.last_success is None or at > state.last_success:
            state.last_success = at
        state.last_attempt = max(filter(None, [state.last_attempt, at]))
        state.failures = 0

    def failed(self, source_id: str, at: datetime) -> None:
        state = self._states.get(source_id)
        if state is None:
            return
        state.last_attempt = at
        state.failures += 1

    def seen_success(self, source_id: str, at: datetime | None) -> None:
        """What the ledger says (another instance may have synced it)."""
        if at is not None:
            state = self._states.get(source_id)
            if state is not None and (state.last_success is None or at > state.last_success):
                state.last_success = at
                if state.last_attempt is None or at > state.last_attempt:
                    state.failures = 0

    def defer(self, source_id: str, delay: timedelta) -> None:
        """Not before `delay` from now (another instance holds it)."""
        state = self._states.get(source_id)
        if state is not None:
            state.not_before = self.clock.now() + delay

    def last_success(self, source_id: str) -> datetime | None:
        state = self._states.get(source_id)
        return state.last_success if state is not None else None

    def trigger(self, source_id: str) -> bool:
        state = self._states.get(source_id)
        if state is None:
            return False
        state.triggered = state.triggered or self.clock.now()
        return True

    def started(self, source_id: str) -> None:
        state = self._states.get(source_id)
        if state is not None:
            state.triggered = state.not_before = None
            state.added = frozenset()  # this pass takes them, whichever kind it is

    # -- what is due ---------------------------------------------------------------------------

    def next_due(
        self, source_id: str, now: datetime | None = None, *, own_schedule: bool = False
    ) -> datetime:
        """When this source is due; `now` at the earliest. `own_schedule`: leaving out the
        datasets a reload added."""
        now = now or self.clock.now()
        state = self._states[source_id]
        if state.triggered is not None:
            return state.triggered
        schedule = self.schedule
        spread = offset(source_id, schedule.jitter)
        if state.last_success is None and state.failures == 0:
            base = EPOCH  # never synced: due at once
        else:
            regular = (
                state.last_success + timedelta(seconds=max(schedule.interval - spread, 0.0))
                if state.last_success is not None
                else None
            )
            base = regular or EPOCH
            if state.failures and state.last_attempt is not None:
                backoff = min(
                    schedule.failed_backoff * 2 ** (state.failures - 1), schedule.failed_backoff_max
                )
                retry = state.last_attempt + timedelta(seconds=backoff)
                base = min(retry, regular) if regular is not None else retry
        if state.added and not own_schedule:
            base = min(base, state.added_due or EPOCH)
        if state.not_before is not None:
            base = max(base, state.not_before)
        return self._in_window(max(base, now), spread)

    def is_triggered(self, source_id: str) -> bool:
        state = self._states.get(source_id)
        return state is not None and state.triggered is not None

    def due(self, now: datetime | None = None) -> list[str]:
        """Due sources, most urgent first: manual triggers, then by how overdue."""
        now = now or self.clock.now()
        due = [(not self.is_triggered(sid), self.next_due(sid, now), sid) for sid in self._states]
        return [sid for _, when, sid in sorted(due) if when <= now]

    def next_wakeup(self, now: datetime | None = None) -> datetime | None:
        now = now or self.clock.now()
        future = [when for sid in self._states if (when := self.next_due(sid, now)) > now]
        return min(future, default=None)

    # -- the daily window ----------------------------------------------------------------------

    def _in_window(self, when: datetime, spread: float) -> datetime:
        window = self.schedule.window
        if window is None:
            return when
        tz = ZoneInfo(self.schedule.timezone)
        if inside(window, when.astimezone(tz).time()):
            return when
        opening = next_opening(window, when, tz)
        length = window_length(window)
        return opening + timedelta(seconds=min(spread, max(length - 60, 0)))


def inside(window: DailyWindow, t: dtime) -> bool:
    if window.start < window.end:
        return window.start <= t < window.end
    return t >= window.start or t < window.end  # crosses midnight


def window_length(window: DailyWindow) -> float:
    start = window.start.hour * 3600 + window.start.minute * 60
    end = window.end.hour * 3600 + window.end.minute * 60
    return (end - start) % 86400 or 86400


def next_opening(window: DailyWindow, after: datetime, tz: ZoneInfo) -> datetime:
    """The first start of the window after `after` (an aware datetime), in UTC."""
    local = after.astimezone(tz)
    for days in range(0, 3):
        day = (local + timedelta(days=days)).date()
        opening = datetime.combine(day, window.start, tzinfo=tz)
        if opening > local:
            return opening.astimezone(UTC)
    raise AssertionError("a daily window opens within two days")  # pragma: no cover
