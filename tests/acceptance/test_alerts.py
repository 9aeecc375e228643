"""The alert rules as Prometheus runs them (promtool), and the metrics they need from syncd."""

from __future__ import annotations

import datetime as dt
import subprocess

import anyio
from prometheus_client.parser import text_string_to_metric_families

from syncd.observe.metrics import RETRY_REASONS, SYNC_OUTCOMES
from syncd.service.reloadstate import ReloadOutcome

from tests.conftest import TABLE_DATASETS
from tests.support import tools
from tests.support.daemonproc import DaemonProcess, free_port
from tests.support.helpers import ROOT, run_pass

RULES = ROOT / "deploy" / "prometheus"


def test_promtool_rule_tests_pass():
    """never-synced at 48 h and 72 h, the first pass counted, skips outside the ratio, the
    stalled alert, and freshness alerts that keep firing while syncd is down."""
    result = subprocess.run(
        [tools.promtool(), "test", "rules", "syncd-rules.test.yml"],
        cwd=RULES,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def samples(text: str) -> dict[tuple[str, tuple], float]:
    found = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            found[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return found


async def ready_metrics(daemon: DaemonProcess) -> dict[tuple[str, tuple], float]:
    """/metrics once the daemon is ready (the ledger is read once the destination answers)."""
    daemon.wait_ready()
    found: dict[tuple[str, tuple], float] = {}
    for _ in range(200):
        code, text = daemon.get("/metrics")
        assert code == 200
        found = samples(text)
        if found.get(("syncd_ready", ())) == 1:
            break
        await anyio.sleep(0.1)
    return found


async def test_counters_are_at_zero_before_any_sync(make_sources, dest, write_config, tmp_path):
    """Scraped before the first sync ends: every counter with every label value at 0, and the
    never-synced sources visible to freshness through their pending-since time."""
    sources = await make_sources(2)
    port = free_port()
    # a window that is closed now (and for the next hours): nothing starts, nothing ends
    hour = (dt.datetime.now(dt.UTC).hour + 12) % 24
    window = f"{hour:02d}:00-{(hour + 1) % 24:02d}:00"
    path, _ = write_config(
        dest,
        sources,
        [TABLE_DATASETS[0], TABLE_DATASETS[3]],
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"window": window, "timezone": "UTC", "jitter": "0s"},
    )
    daemon = DaemonProcess(path, port)
    try:
        found = await ready_metrics(daemon)
        for outcome in SYNC_OUTCOMES:
            assert found[("syncd_syncs_total", (("outcome", outcome),))] == 0, outcome
            assert found[("syncd_sync_duration_seconds_count", (("outcome", outcome),))] == 0
        for outcome in ReloadOutcome:
            assert found[("syncd_config_reloads_total", (("outcome", outcome),))] == 0
        for reason in RETRY_REASONS:
            assert found[("syncd_retries_total", (("reason", reason),))] == 0
        for dataset in ("cidadaos", "dim_equipe"):
            for outcome in ("ok", "failed", "aborted"):
                key = (
                    "syncd_dataset_syncs_total",
                    (("dataset", dataset), ("outcome", outcome)),
                )
                assert found[key] == 0, key
            assert found[("syncd_rows_total", (("dataset", dataset),))] == 0
            assert found[("syncd_bytes_total", (("dataset", dataset),))] == 0
        for s in sources:
            assert found[("syncd_source_consecutive_failures", (("source", s.id),))] == 0
            since = found[("syncd_source_pending_since_timestamp_seconds", (("source", s.id),))]
            assert since > 1.7e9  # when the daemon registered it in syncd.catalog
            assert ("syncd_last_success_timestamp_seconds", (("source", s.id),)) not in found
        # due (the window is closed: nothing due) is computed, not left at a stale value
        assert found[("syncd_sources_due", ())] == 0
    finally:
        daemon.stop()


async def test_failures_in_a_row_survive_a_restart(make_sources, dest, write_config):
    """Three failed passes recorded in the ledger: a daemon started afterwards exports 3, not 0,
    so `SyncdMunicipalityFailing` does not resolve on a restart."""
    (good,) = await make_sources(1)
    unreachable = {
        "id": "999001",
        "dsn": f"postgresql://esus_leitura@127.0.0.1:{free_port()}/esus",
    }
    port = free_port()
    hour = (dt.datetime.now(dt.UTC).hour + 12) % 24
    path, config = write_config(
        dest,
        [good, unreachable],
        [TABLE_DATASETS[3]],
        retry={"attempts": 1},
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"window": f"{hour:02d}:00-{(hour + 1) % 24:02d}:00", "timezone": "UTC"},
    )
    for _ in range(3):
        code, _, _ = await run_pass(config)
        assert code == 1
    daemon = DaemonProcess(path, port)
    try:
        found = await ready_metrics(daemon)
        assert found[("syncd_source_consecutive_failures", (("source", "999001"),))] == 3
        assert found[("syncd_source_consecutive_failures", (("source", good.id),))] == 0
        assert ("syncd_last_success_timestamp_seconds", (("source", good.id),)) in found
    finally:
        daemon.stop()


async def test_a_source_the_config_no_longer_names_exports_no_freshness(
    make_sources, dest, write_config
):
    """The ledger keeps the successes of a source removed from the config: a daemon started
    afterwards exports no last-success series for it (its freshness alert could never resolve),
    as the ledger refresh of a running daemon never did."""
    kept, removed = await make_sources(2)
    _, both = write_config(dest, [kept, removed], [TABLE_DATASETS[3]])
    code, _, _ = await run_pass(both)
    assert code == 0
    port = free_port()
    hour = (dt.datetime.now(dt.UTC).hour + 12) % 24
    path, _ = write_config(
        dest,
        [kept],
        [TABLE_DATASETS[3]],
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"window": f"{hour:02d}:00-{(hour + 1) % 24:02d}:00", "timezone": "UTC"},
    )
    daemon = DaemonProcess(path, port)
    try:
        found = await ready_metrics(daemon)
        assert ("syncd_last_success_timestamp_seconds", (("source", kept.id),)) in found
        assert ("syncd_last_success_timestamp_seconds", (("source", removed.id),)) not in found
    finally:
        daemon.stop()
