"""The progress hooks of a pass: what the live display, the metrics and the daemon's status board
listen to while municipalities start, finish, move bytes and retry."""

from __future__ import annotations

from syncd.engine.diskbudget import DiskReport
from syncd.engine.errors import Failure
from syncd.engine.results import SourceResult


class Progress:
    """What a pass reports as it goes; the TTY display and the daemon's status override it."""

    def source_started(self, source_id: str) -> None: ...

    def source_finished(self, result: SourceResult) -> None: ...

    def bytes_moved(self, count: int) -> None: ...

    def retried(self, source_id: str | None, dataset: str | None, failure: Failure) -> None: ...

    def disk(self, report: DiskReport) -> None:
        """The destination's disk: its size measured again, or it filled, or it has room again."""

    def refused(self, failure: Failure) -> None:
        """A dataset landing not started, or stopped, for the destination's disk (its kind says
        which: disk_full or disk_budget)."""


class Fanout(Progress):
    """Several listeners as one."""

    def __init__(self, *listeners: Progress):
        self.listeners = listeners

    def source_started(self, source_id: str) -> None:
        for listener in self.listeners:
            listener.source_started(source_id)

    def source_finished(self, result: SourceResult) -> None:
        for listener in self.listeners:
            listener.source_finished(result)

    def bytes_moved(self, count: int) -> None:
        for listener in self.listeners:
            listener.bytes_moved(count)

    def retried(self, source_id: str | None, dataset: str | None, failure: Failure) -> None:
        for listener in self.listeners:
            listener.retried(source_id, dataset, failure)

    def disk(self, report: DiskReport) -> None:
        for listener in self.listeners:
            listener.disk(report)

    def refused(self, failure: Failure) -> None:
        for listener in self.listeners:
            listener.refused(failure)
