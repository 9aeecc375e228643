"""The status page's line about the analytical database's disk."""

from __future__ import annotations

from datetime import UTC, datetime

from syncd.engine.diskbudget import DiskReport
from syncd.service import diskline, statuspage

GB = 1024**3


def test_the_status_page_shows_the_size_against_the_budget_and_a_full_disk():
    when = statuspage._when
    assert diskline.html(None, when) == ""
    line = diskline.html(DiskReport(372 * GB, 400 * GB), when)
    assert "372GB of 400GB (destination.max_size), 93%" in line and "budget high" in line
    calm = diskline.html(DiskReport(100 * GB, 400 * GB), when)
    assert "25%" in calm and "high" not in calm
    assert diskline.html(DiskReport(5 * GB, None), when) == "analytical database: 5GB"
    since = datetime(2026, 12, 7, 3, 0, tzinfo=UTC)
    full = diskline.html(DiskReport(5 * GB, None, since, "no space"), when)
    assert "the analytical database is out of disk space since" in full
    page = statuspage.page({}, {}, since, "n0nce", "1.0", {}, disk=DiskReport(1 * GB, 2 * GB))
    assert '<span id="disk" class="meta"><span class="budget">analytical database: 1GB' in page
