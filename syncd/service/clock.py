"""Time, injected: wall time for schedules, monotonic time for durations, and the waits of the
dispatcher on the same clock, so a test drives schedules with a fake clock instead of waiting."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import anyio


class Clock:
    def now(self) -> datetime:
        return datetime.now(UTC)

    def monotonic(self) -> float:
        return time.monotonic()

    def move_on_after(self, seconds: float | None) -> anyio.CancelScope:
        """A scope cancelled after `seconds` of this clock's time (None: never)."""
        return anyio.move_on_after(seconds)

    async def sleep(self, seconds: float) -> None:
        with self.move_on_after(seconds):
            await anyio.sleep_forever()
