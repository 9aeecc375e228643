"""The destination's disk budget and full-disk state as the metrics and the status page show
them, and a landing's share of the budget as it streams (the database parts are scenarios:
tests/scenarios/test_disk.py)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from prometheus_client.parser import text_string_to_metric_families

from syncd.engine.diskbudget import Disk, DiskReport, OverBudget, Share
from syncd.engine.errors import Kind, Side, classify
from syncd.observe.metrics import Metrics

GB = 1024**3


def samples(metrics: Metrics) -> dict[tuple[str, tuple], float]:
    text = metrics.render().decode()
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_the_disk_metrics_exist_from_the_start_and_follow_the_reports():
    metrics = Metrics()
    before = samples(metrics)
    for reason in ("disk_full", "disk_budget"):
        assert before[("syncd_landings_refused_total", (("reason", reason),))] == 0
    assert before[("syncd_destination_disk_full", ())] == 0
    metrics.disk(DiskReport(372 * GB, 400 * GB))
    metrics.refused(classify(OverBudget("not started: ... destination.max_size (400GB)")))
    after = samples(metrics)
    assert after[("syncd_destination_size_bytes", ())] == 372 * GB
    assert after[("syncd_destination_max_size_bytes", ())] == 400 * GB
    assert after[("syncd_landings_refused_total", (("reason", "disk_budget"),))] == 1
    metrics.disk(DiskReport(None, None, datetime.now(UTC), "out of disk space"))
    after = samples(metrics)
    assert after[("syncd_destination_disk_full", ())] == 1
    assert after[("syncd_destination_max_size_bytes", ())] == 0  # no budget
    assert after[("syncd_destination_size_bytes", ())] == 372 * GB  # the last measure stays


def test_a_share_past_its_estimate_is_stopped_where_it_crosses_the_budget():
    disk = Disk(max_size=100, probe_interval=60.0)
    disk.size = 60
    mine = Share(disk, "source 1 dataset big", ("1", "big"), estimate=10)
    other = Share(disk, "source 2 dataset big", ("2", "big"), estimate=20)
    disk._held = {id(mine): mine, id(other): other}
    mine.grow(10)  # within its estimate: nothing to check
    mine.grow(10)  # 60 + 20 + 20 = 100: still fits
    with pytest.raises(OverBudget) as stopped:
        mine.grow(1)
    failure = classify(stopped.value)
    assert failure.kind == Kind.DISK_BUDGET and failure.side == Side.DESTINATION
    assert not failure.retryable
    assert "stopped and rolled back" in failure.reason and "destination.max_size" in failure.reason
    mine.release()
    assert list(disk._held.values()) == [other]
