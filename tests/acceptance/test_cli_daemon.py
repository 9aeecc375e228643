"""`syncd trigger` against a real daemon (accepted, wrong token, unknown id, daemon down), and
`syncd status --json` / `--late` from a real ledger."""

from __future__ import annotations

import json

import asyncpg

from syncd.lab import embedded

from tests.conftest import TABLE_DATASETS
from tests.support.daemonproc import DaemonProcess, free_port
from tests.support.helpers import run_cli

TOKEN = "trigger-test-token-0123456789"


def states(ids: dict[str, str]):
    def check(status: dict) -> bool:
        sources = status["sources"]
        return all(sources.get(sid, {}).get("state") == want for sid, want in ids.items())

    return check


async def test_trigger_and_status_from_the_shell(make_sources, dest, write_config, tmp_path):
    good = await make_sources(2)
    dead = {"id": "999001", "dsn": f"postgresql://esus_leitura@127.0.0.1:{free_port()}/esus"}
    port = free_port()
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    path, _ = write_config(
        dest,
        [*good, dead],
        [TABLE_DATASETS[3]],
        http={"listen": f"127.0.0.1:{port}", "token_file": str(token)},
        schedule={"interval": "24h", "jitter": "0s", "failed_backoff": "1h"},
    )
    config = ["--config", str(path)]
    daemon = DaemonProcess(path, port)
    try:
        daemon.wait_ready()
        daemon.wait_status(states({good[0].id: "ok", good[1].id: "ok", "999001": "failed"}))
        first = daemon.status()["sources"][good[0].id]["last_run"]["started"]

        result = run_cli("trigger", good[0].id, *config)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith(f"{good[0].id}: queued, requested at ")
        daemon.wait_status(
            lambda s: (
                s["sources"][good[0].id]["last_run"]["started"] > first
                and s["sources"][good[0].id]["state"] == "ok"
            )
        )

        result = run_cli("trigger", "nope_1", good[1].id, *config)
        assert result.returncode == 1
        assert result.stderr == (
            "nope_1: the daemon knows no source 'nope_1' (404); this config does not list it "
            "either\n"
        )
        assert result.stdout.startswith(f"{good[1].id}: queued")

        wrong = tmp_path / "wrong"
        wrong.write_text("not-the-token\n")
        result = run_cli("trigger", good[1].id, *config, "--token-file", str(wrong))
        assert result.returncode == 1 and "(401)" in result.stderr
        assert TOKEN not in result.stdout + result.stderr
        assert "not-the-token" not in result.stdout + result.stderr
    finally:
        daemon.stop()

    result = run_cli("trigger", good[0].id, *config)
    assert result.returncode == 1
    assert result.stderr.startswith(f"no daemon answers at http://127.0.0.1:{port} (")

    # a success three days old is late; never synced is late too; a fresh one is not
    conn = await asyncpg.connect(dest.dsn)
    try:
        await conn.execute(
            "UPDATE syncd.latest SET last_success = last_success - interval '3 days' "
            "WHERE source_id = $1",
            good[1].id,
        )
    finally:
        await conn.close()
    result = run_cli("status", "--json", *config)
    assert result.returncode == 0, result.stderr
    document = json.loads(result.stdout)
    assert document["version"] == 1 and document["late_after_seconds"] == 48 * 3600
    sources = document["sources"]
    assert set(sources) == {good[0].id, good[1].id, "999001"}
    assert (sources[good[0].id]["state"], sources[good[0].id]["late"]) == ("ok", False)
    assert (sources[good[1].id]["state"], sources[good[1].id]["late"]) == ("ok", True)
    assert (sources["999001"]["state"], sources["999001"]["late"]) == ("failed", True)
    assert "connection refused" in sources["999001"]["last_error"]
    equipe = sources[good[1].id]["datasets"]["dim_equipe"]
    assert equipe["late"] and equipe["age_seconds"] > 3 * 86400 and equipe["rows"] > 0

    late = json.loads(run_cli("status", "--json", "--late", *config).stdout)["sources"]
    assert set(late) == {good[1].id, "999001"}
    result = run_cli("status", "--late", *config)
    assert result.returncode == 0
    rows = [line.split()[0] for line in result.stdout.splitlines()[2:]]
    assert rows == [good[1].id, "999001"]


def test_status_without_its_destination_is_one_line(tmp_path):
    """No destination to read: the status command says so in one line (exit 1)."""
    path = tmp_path / "syncd.yaml"
    path.write_text(
        f"destination: {{dsn: 'postgresql://syncd@127.0.0.1:{embedded.free_port()}/x'}}\n"
        "sources: [{id: a, dsn: 'postgresql://u@127.0.0.1:1/e'}]\n"
        "datasets: [{name: d, table: t}]\n"
    )
    result = run_cli("status", "--late", "--config", str(path))
    assert result.returncode == 1 and len(result.stderr.splitlines()) == 1
    assert "Traceback" not in result.stderr
