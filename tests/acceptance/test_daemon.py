"""`syncd run` as systemd runs it: a subprocess, a fake NOTIFY_SOCKET, real signals, real HTTP
(in process, where tests inject the clock, the shutdown trigger and side tasks, in
tests/scenarios/test_daemon.py)."""

from __future__ import annotations

import itertools
import json
import signal
import subprocess
import time
from pathlib import Path

import anyio
import asyncpg
import pytest
import yaml

from tests.conftest import TABLE_DATASETS
from tests.support.daemonproc import DaemonProcess, free_port
from tests.support.helpers import fingerprint, run_cli

PAUSABLE = {
    "name": "equipes",
    "query": "SELECT e.* FROM tb_dim_equipe e "
    "WHERE (SELECT pg_sleep(seconds) FROM syncd_test_pause)::text IS NOT NULL",
}
TOKEN = "s3cr3t-t0ken-for-tests"


async def make_pausable(sources, seconds: float = 0.0) -> None:
    for db in sources:
        conn = await asyncpg.connect(db.admin_dsn)
        try:
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS syncd_test_pause (seconds float8);"
                "GRANT SELECT ON syncd_test_pause TO esus_leitura;"
                "DELETE FROM syncd_test_pause;"
            )
            await conn.execute("INSERT INTO syncd_test_pause VALUES ($1)", seconds)
        finally:
            await conn.close()


@pytest.fixture
def daemons():
    started: list[DaemonProcess] = []

    def start(config_path: Path, port: int) -> DaemonProcess:
        daemon = DaemonProcess(config_path, port)
        started.append(daemon)
        return daemon

    yield start
    for daemon in started:
        daemon.stop()


@pytest.fixture
def daemon_config(write_config, tmp_path):
    """daemon_config(dest, sources, datasets, **sections) -> (path, port)"""

    def make(dest, sources, datasets, **sections):
        port = free_port()
        token = tmp_path / "token"
        token.write_text(TOKEN + "\n")
        http = {"listen": f"127.0.0.1:{port}", "token_file": str(token)}
        http.update(sections.pop("http", {}))
        schedule = {"interval": "24h", "jitter": "0s"}
        schedule.update(sections.pop("schedule", {}))
        path, _ = write_config(dest, sources, datasets, http=http, schedule=schedule, **sections)
        return path, port

    return make


def all_ok(ids):
    def check(status: dict) -> bool:
        sources = status["sources"]
        return all(sid in sources and sources[sid]["state"] == "ok" for sid in ids)

    return check


async def test_ready_first_pass_endpoints_and_clean_stop(
    make_sources, dest, daemon_config, daemons
):
    sources = await make_sources(5)
    path, port = daemon_config(dest, sources, [TABLE_DATASETS[0], TABLE_DATASETS[3]])
    daemon = daemons(path, port)
    daemon.wait_ready()
    status = daemon.wait_status(all_ok([s.id for s in sources]))

    entry = status["sources"][sources[0].id]
    assert set(entry) == {
        "name",
        "state",
        "last_success",
        "last_error",
        "next_due",
        "last_run",
        "datasets",
        "max_rate",
    }
    assert entry["max_rate"] is None  # no cap in this config
    assert entry["datasets"]["cidadaos"]["rows"] == sources[0].citizens
    assert entry["last_error"] is None and entry["next_due"] > entry["last_success"]
    assert entry["last_run"]["status"] == "ok"
    assert entry["last_run"]["started"] < entry["last_run"]["ended"] <= entry["next_due"]
    assert daemon.get("/healthz") == (200, "ok\n")
    code, body = daemon.get("/readyz")
    assert code == 200 and json.loads(body)["ready"] is True
    code, metrics = daemon.get("/metrics")
    assert code == 200
    assert 'syncd_syncs_total{outcome="ok"} 5.0' in metrics
    names = {
        line.split("{")[0].split(" ")[0]
        for line in metrics.splitlines()
        if line and not line.startswith("#")
    }
    assert all(name.startswith("syncd_") for name in names), names

    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit() == 0
    assert daemon.notify.states() == ["READY=1", "STOPPING=1"]
    assert "Traceback" not in daemon.log()


async def test_http_auth_and_errors(make_sources, dest, daemon_config, daemons, tmp_path):
    sources = await make_sources(1)
    path, port = daemon_config(dest, sources, [TABLE_DATASETS[3]])
    daemon = daemons(path, port)
    daemon.wait_ready()
    sid = sources[0].id
    daemon.wait_status(all_ok([sid]))
    assert daemon.post(f"/sources/{sid}/sync")[0] == 401
    assert daemon.post(f"/sources/{sid}/sync", token="wrong")[0] == 401
    assert daemon.post(f"/sources/{sid}/sync", token=TOKEN[:-1])[0] == 401
    assert daemon.post("/sources/nope/sync", token=TOKEN)[0] == 404
    assert daemon.post("/sources/%27%3B%20DROP/sync", token=TOKEN)[0] == 404
    assert daemon.get(f"/sources/{sid}/sync")[0] == 405
    assert daemon.get("/nothing-here")[0] == 404
    assert daemon.post(f"/sources/{sid}/sync", token=TOKEN, body=b"x" * 100_000)[0] == 413
    before = daemon.status()["sources"][sid]["last_success"]
    code, body = daemon.post(f"/sources/{sid}/sync", token=TOKEN)
    assert code == 202 and json.loads(body)["queued"] is True
    daemon.wait_status(lambda s: s["sources"][sid]["last_success"] > before)
    for endpoint in ("/status", "/metrics", "/readyz", "/healthz"):
        assert TOKEN not in daemon.get(endpoint)[1]
    assert TOKEN not in daemon.log()

    # no token configured: the trigger is refused, not open
    text = path.read_text().replace(f"token_file: {tmp_path / 'token'}", "token_file: null")
    path.write_text(text)
    daemon.signal(signal.SIGHUP)
    daemon.notify.wait_for(lambda s: s.count("READY=1") >= 2)
    assert daemon.post(f"/sources/{sid}/sync", token=TOKEN)[0] == 403


async def test_sighup_adds_sources_and_lowers_concurrency(
    make_sources, dest, daemon_config, daemons, source_cluster
):
    sources = await make_sources(9)
    await make_pausable(sources, 1.5)
    first, added = sources[:6], sources[6:]
    path, port = daemon_config(dest, first, [PAUSABLE], concurrency={"sources": 4, "per_host": 10})
    daemon = daemons(path, port)
    daemon.wait_ready()

    watcher = await asyncpg.connect(source_cluster.dsn())
    samples: list[tuple[float, int]] = []

    async def sample() -> int:
        count = await watcher.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncd' "
            "AND backend_type = 'client backend'"
        )
        samples.append((time.monotonic(), count))
        return count

    while await sample() < 4:  # four municipalities in flight
        await anyio.sleep(0.02)

    document = yaml.safe_load(path.read_text())
    document["sources"] += [s.source_entry() for s in added]
    document["concurrency"]["sources"] = 2
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    reloaded_at = time.monotonic()
    daemon.signal(signal.SIGHUP)

    ids = [s.id for s in sources]
    deadline = time.monotonic() + 120
    while not all_ok(ids)(daemon.status()):
        assert time.monotonic() < deadline, daemon.log()[-3000:]
        await sample()
        await anyio.sleep(0.02)
    await watcher.close()

    states = daemon.notify.states()
    assert states[:3] == ["READY=1", "RELOADING=1", "READY=1"], states
    # in-flight syncs were not dropped: every pass of every source succeeded, none aborted
    dst = await dest.connect()
    try:
        outcomes = {r[0] for r in await dst.fetch("SELECT DISTINCT status FROM syncd.ledger")}
        assert outcomes == {"ok"}, outcomes
        for db in added:
            assert (await fingerprint(dst, "equipes", db.id))[0] > 0
    finally:
        await dst.close()
    # concurrency settles at the new limit: once down to 2, never above it again
    after = [count for at, count in samples if at > reloaded_at]
    settled = next(i for i, count in enumerate(after) if count <= 2)
    assert max(after[settled:]) <= 2, after
    assert 2 in after[settled:]


async def test_sighup_with_broken_yaml_keeps_the_old_config(
    make_sources, dest, daemon_config, daemons
):
    sources = await make_sources(2)
    path, port = daemon_config(dest, sources, [TABLE_DATASETS[3]])
    daemon = daemons(path, port)
    daemon.wait_ready()
    daemon.wait_status(all_ok([s.id for s in sources]))
    good = path.read_text()
    path.write_text(good + "datasets: [unclosed\n")
    daemon.signal(signal.SIGHUP)
    daemon.notify.wait_for(lambda s: s == ["READY=1", "RELOADING=1", "READY=1"])
    assert daemon.proc.poll() is None
    _, metrics = daemon.get("/metrics")
    assert 'syncd_config_reloads_total{outcome="failure"} 1.0' in metrics
    assert "syncd_config_last_reload_successful 0.0" in metrics
    assert "reload rejected, still running the previous config" in daemon.log()
    # the line names its event and its module, for `jq 'select(.event == "reload_rejected")'`
    lines = [json.loads(line) for line in daemon.log().splitlines() if line.startswith("{")]
    rejected = [line for line in lines if line.get("event") == "reload_rejected"]
    assert [line["logger"] for line in rejected] == ["syncd.service.reloader"], lines
    # the old config is in force: its sources are served and can still be synced
    status = daemon.status()
    assert set(status["sources"]) == {s.id for s in sources}
    assert daemon.post(f"/sources/{sources[0].id}/sync", token=TOKEN)[0] == 202

    path.write_text(good)  # fixed: the next reload applies
    daemon.signal(signal.SIGHUP)
    daemon.notify.wait_for(lambda s: s.count("READY=1") == 3)
    _, metrics = daemon.get("/metrics")
    assert "syncd_config_last_reload_successful 1.0" in metrics


async def test_sigterm_during_a_long_sync_exits_clean_and_changes_nothing(
    make_sources, dest, daemon_config, daemons, source_cluster
):
    (db,) = await make_sources(1)
    await make_pausable([db], 0)
    path, port = daemon_config(
        dest, [db], [TABLE_DATASETS[0], PAUSABLE], timeouts={"shutdown_grace": "1s"}
    )
    daemon = daemons(path, port)
    daemon.wait_ready()
    daemon.wait_status(all_ok([db.id]))
    dst = await dest.connect()
    before = {name: await fingerprint(dst, name, db.id) for name in ("cidadaos", "equipes")}

    src = await asyncpg.connect(db.admin_dsn)
    await src.execute("UPDATE syncd_test_pause SET seconds = 60")
    await src.execute("UPDATE tb_fat_cidadao_pec SET no_cidadao = 'mudou'")
    await src.close()
    assert daemon.post(f"/sources/{db.id}/sync", token=TOKEN)[0] == 202
    watcher = await asyncpg.connect(source_cluster.dsn())
    while not await watcher.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'syncd' "
        "AND query LIKE '%pg_sleep%' AND state = 'active'"
    ):
        await anyio.sleep(0.05)
    await watcher.close()

    stopped_at = time.monotonic()
    daemon.signal(signal.SIGTERM)
    assert daemon.wait_exit(timeout=60) == 0
    took = time.monotonic() - stopped_at
    assert "STOPPING=1" in daemon.notify.states()
    assert "cancelling 1 syncs still running after 1s" in daemon.log()
    try:
        after = {name: await fingerprint(dst, name, db.id) for name in ("cidadaos", "equipes")}
        assert after == before  # cidadaos had been loaded into staging: never swapped in
        rows = await dst.fetch(
            "SELECT status, error FROM syncd.ledger ORDER BY pass_id DESC LIMIT 2"
        )
        assert {r["status"] for r in rows} == {"aborted"}
        leftovers = await dst.fetchval(
            "SELECT count(*) FROM pg_class WHERE relname LIKE '%\\_\\_staging'"
        )
        assert leftovers == 0
    finally:
        await dst.close()
    assert took < 60


async def test_two_daemons_never_sync_one_source_at_once(
    make_sources, dest, daemon_config, daemons, tmp_path
):
    sources = await make_sources(40)
    await make_pausable(sources, 1.0)
    datasets = [PAUSABLE, TABLE_DATASETS[3]]
    path_a, port_a = daemon_config(
        dest, sources, datasets, concurrency={"sources": 4, "per_host": 8}
    )
    path_b, port_b = daemon_config(
        dest, sources, datasets, concurrency={"sources": 4, "per_host": 8}
    )
    a, b = daemons(path_a, port_a), daemons(path_b, port_b)
    a.wait_ready()
    b.wait_ready()

    dst = await dest.connect()
    try:
        # let both work, then kill -9 one of them in the middle of its syncs
        with anyio.fail_after(120):
            await _wait_both_working(dst, b.pid)
        b.proc.kill()
        b.wait_exit()

        ids = [s.id for s in sources]
        with anyio.fail_after(180):  # the survivor takes over what the dead one held
            while (
                await dst.fetchval(
                    "SELECT count(DISTINCT source_id) FROM syncd.ledger WHERE status = 'ok'"
                )
                < 40
            ):
                assert a.proc.poll() is None, a.log()[-3000:]
                await anyio.sleep(0.2)
        passes = await dst.fetch(
            "SELECT source_id, pass_id, instance, min(started_at) AS started, "
            "max(ended_at) AS ended, bool_and(status = 'ok') AS ok "
            "FROM syncd.ledger GROUP BY source_id, pass_id, instance ORDER BY source_id, started"
        )
        synced = {p["source_id"] for p in passes if p["ok"]}
        assert synced == set(ids)
        instances = {p["instance"] for p in passes}
        assert len(instances) == 2
        by_source: dict[str, list] = {}
        for p in passes:
            assert p["ended"] is not None, f"pass {p['pass_id']} never closed"
            by_source.setdefault(p["source_id"], []).append(p)
        for sid, ps in by_source.items():
            for first, second in itertools.pairwise(ps):
                assert first["ended"] <= second["started"], (
                    f"{sid}: passes overlap: {first} {second}"
                )
        aborted = await dst.fetchval("SELECT count(*) FROM syncd.ledger WHERE status = 'aborted'")
        assert aborted >= 1  # what the killed daemon was doing, closed by the survivor
    finally:
        await dst.close()


async def _wait_both_working(dst: asyncpg.Connection, pid: int) -> None:
    while not await dst.fetchval("SELECT to_regclass('syncd.ledger') IS NOT NULL"):
        await anyio.sleep(0.1)
    while (
        await dst.fetchval("SELECT count(DISTINCT instance) FROM syncd.ledger WHERE status = 'ok'")
        < 2
    ):
        await anyio.sleep(0.1)
    while not await dst.fetchval(
        "SELECT count(*) FROM syncd.ledger WHERE status = 'running' AND instance LIKE $1",
        f"%:{pid}",
    ):
        await anyio.sleep(0.02)


async def test_reload_helper_waits_for_the_daemon(make_sources, dest, daemon_config, tmp_path):
    """`syncd reload` (ExecReload= on systemd 252) returns once the daemon has applied the
    config, and fails, naming the problem, when the daemon rejected it."""
    sources = await make_sources(1)
    path, port = daemon_config(dest, sources, [TABLE_DATASETS[3]])
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    daemon = DaemonProcess(path, port, env={"RUNTIME_DIRECTORY": str(run_dir)})
    try:
        daemon.wait_ready()

        def reload() -> subprocess.CompletedProcess:
            return run_cli(
                "reload",
                "--pid",
                str(daemon.pid),
                "--timeout",
                "60",
                env={"RUNTIME_DIRECTORY": str(run_dir)},
            )

        result = await anyio.to_thread.run_sync(reload)
        assert result.returncode == 0, result.stderr
        assert "config reloaded: 1 sources" in result.stdout
        assert daemon.notify.states() == ["READY=1", "RELOADING=1", "READY=1"]

        good = path.read_text()
        path.write_text(
            good.replace("concurrency:", "concurrency:\n  nonsense: 1", 1)
            if "concurrency:" in good
            else good + "\nnonsense: 1\n"
        )
        result = await anyio.to_thread.run_sync(reload)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "rejected, still running the previous config" in result.stderr
        assert "nonsense" in result.stderr
        assert daemon.notify.states()[-2:] == ["RELOADING=1", "READY=1"]
        assert daemon.proc.poll() is None
    finally:
        daemon.stop()


async def test_metrics_after_a_pass_names_types_and_bounded_labels(
    make_sources, dest, daemon_config, daemons
):
    from prometheus_client.parser import text_string_to_metric_families

    sources = await make_sources(3)
    failing = {"name": "falta", "table": "public.nao_ha"}
    path, port = daemon_config(dest, sources, [TABLE_DATASETS[3], failing])
    daemon = daemons(path, port)
    daemon.wait_ready()
    daemon.wait_status(lambda s: all(v["state"] == "failed" for v in s["sources"].values()))
    code, text = daemon.get("/metrics")
    assert code == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    expected = {
        "syncd_sync_duration_seconds": "histogram",
        "syncd_syncs": "counter",
        "syncd_dataset_syncs": "counter",
        "syncd_rows": "counter",
        "syncd_bytes": "counter",
        "syncd_retries": "counter",
        "syncd_config_reloads": "counter",
        "syncd_limiter_in_use": "gauge",
        "syncd_limiter_waiting": "gauge",
        "syncd_limiter_capacity": "gauge",
        "syncd_last_success_timestamp_seconds": "gauge",
        "syncd_source_consecutive_failures": "gauge",
        "syncd_syncs_in_flight": "gauge",
        "syncd_process_start_time_seconds": "gauge",
    }
    for name, kind in expected.items():
        assert name in families and families[name].type == kind, name
    assert all(name.startswith("syncd_") for name in families)
    per_source = {f.name for f in families.values() if any("source" in s.labels for s in f.samples)}
    # no success yet: no timestamp, but since when each is waiting for one
    assert per_source == {
        "syncd_source_consecutive_failures",
        "syncd_source_pending_since_timestamp_seconds",
    }
    buckets = [
        s for s in families["syncd_sync_duration_seconds"].samples if s.name.endswith("_bucket")
    ]
    assert max(float(s.labels["le"]) for s in buckets if s.labels["le"] != "+Inf") >= 8 * 3600
    outcomes = {
        (s.labels["dataset"], s.labels["outcome"]): s.value
        for s in families["syncd_dataset_syncs"].samples
    }
    assert outcomes[("dim_equipe", "ok")] == 3 and outcomes[("falta", "failed")] == 3
    limiters = {s.labels["limiter"] for s in families["syncd_limiter_capacity"].samples}
    assert limiters == {"sources", "per_host", "writers"}
