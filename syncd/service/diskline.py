"""The status page's line about the analytical database's disk: its size against the budget
(`destination.max_size`), and, while it lasts, that it is out of space."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from html import escape

from syncd.config.values import format_size, human_size
from syncd.engine.diskbudget import DiskReport

HIGH = 0.9  # the share of the budget from which the line turns red (the alert's threshold)


def html(report: DiskReport | None, when: Callable[[datetime | None], str]) -> str:
    """The analytical database's size against its budget, and whether it is out of space."""
    if report is None or (report.size is None and not report.full):
        return ""
    parts = []
    if report.full:
        since = f" since {when(report.full_since)}" if report.full_since else ""
        parts.append(
            f'<strong class="full">the analytical database is out of disk space{escape(since)}: '
            "no landing starts until a probe write succeeds</strong>"
        )
    if report.size is not None:
        size = f"analytical database: {human_size(report.size)}"
        used = report.used
        if used is not None and report.max_size:
            level = " high" if used >= HIGH else ""
            size = (
                f'<span class="budget{level}">{size} of {format_size(report.max_size)} '
                f"(destination.max_size), {used:.0%}</span>"
            )
        parts.append(size)
    return " &middot; ".join(parts)
