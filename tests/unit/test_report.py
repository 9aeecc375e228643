"""Ages and durations as people read them: one form for the terminal tables and the status page."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from syncd.observe.report import human_duration, iso


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0.0 s"),
        (4.24, "4.2 s"),
        (42.0, "42 s"),
        (59.4, "59 s"),
        (60.0, "1 min"),
        (3599.0, "59 min"),
        (5400.0, "1 h 30 min"),
        (3600.0 * 47 + 60 * 5, "47 h 05 min"),
        (86400.0 * 3 + 3600 * 4, "3 d 4 h"),
        (-3.0, "0.0 s"),  # a clock a little ahead of the ledger's
    ],
)
def test_a_duration_reads_in_its_units(seconds: float, text: str):
    assert human_duration(seconds) == text


def test_none_is_the_callers_placeholder():
    assert human_duration(None) == "-"
    assert human_duration(None, "—") == "—"


def test_iso():
    assert iso(None) is None
    assert iso(datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2026-01-02T03:04:05+00:00"
