"""A clock that moves only when a test moves it: schedules without real waiting."""

from __future__ import annotations

from datetime import datetime, timedelta

import anyio

from syncd.service.clock import Clock


class FakeClock(Clock):
    def __init__(self, start: datetime):
        self._now = start
        self._mono = 0.0
        self._timers: list[tuple[float, anyio.CancelScope]] = []  # (deadline, scope)

    def now(self) -> datetime:
        return self._now

    def monotonic(self) -> float:
        return self._mono

    def move_on_after(self, seconds: float | None) -> anyio.CancelScope:
        scope = anyio.CancelScope()
        if seconds is not None:
            self._timers.append((self._mono + seconds, scope))
            self._fire()
        return scope

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)
        self._mono += seconds
        self._fire()

    def set(self, when: datetime) -> None:
        self._mono += (when - self._now).total_seconds()
        self._now = when
        self._fire()

    def _fire(self) -> None:
        due = [scope for deadline, scope in self._timers if deadline <= self._mono]
        self._timers = [(d, s) for d, s in self._timers if d > self._mono]
        for scope in due:  # cancelling a scope already left does nothing
            scope.cancel()
