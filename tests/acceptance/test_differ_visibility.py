"""Never silently slow: with the compiled row differ absent (SYNCD_ROWDIFF_LIBRARY naming a
missing file or a broken library in a temporary directory: the real loader meets them) `syncd
once` and `syncd run` warn at start naming the reason, /metrics says 0, `check` and `check
--online` say so, the status page has a line, `once --json` names the differ, and `differ:
compiled` refuses to start (exit 2, one line). With the library there, each says it is compiled."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from syncd.engine import rowdiff

from tests.conftest import TABLE_DATASETS, DestDb
from tests.support.daemonproc import DaemonProcess, free_port
from tests.support.helpers import run_cli

DIM_EQUIPE = TABLE_DATASETS[3]
needs_compiled = pytest.mark.skipif(
    not rowdiff.ACCELERATED, reason="the compiled differ is not built in this tree"
)


@pytest.fixture
def missing(tmp_path: Path) -> dict[str, str]:
    return {"SYNCD_ROWDIFF_LIBRARY": str(tmp_path / "_rowdiff.so")}


@pytest.fixture
def broken(tmp_path: Path) -> dict[str, str]:
    library = tmp_path / "broken" / "_rowdiff.so"
    library.parent.mkdir()
    library.write_bytes(b"\x7fELF truncated by a full disk")
    return {"SYNCD_ROWDIFF_LIBRARY": str(library)}


async def test_once_warns_and_says_which_differ_ran(
    make_sources, dest: DestDb, write_config, broken: dict[str, str]
) -> None:
    (src,) = await make_sources(1)
    path, _ = write_config(dest, [src], [DIM_EQUIPE])
    result = run_cli("--log-format", "json", "once", "--json", "--config", str(path), env=broken)
    assert result.returncode == 0, result.stderr
    warnings = [
        json.loads(line)
        for line in result.stderr.splitlines()
        if line.startswith("{") and '"differ_pure_python"' in line
    ]
    assert len(warnings) == 1 and warnings[0]["level"] == "warning", result.stderr
    assert "does not load" in warnings[0]["msg"]
    assert broken["SYNCD_ROWDIFF_LIBRARY"] in warnings[0]["msg"]
    document = json.loads(result.stdout)
    assert document["differ"] == "python"
    assert "does not load" in document["differ_reason"]


@needs_compiled
async def test_once_with_the_library_says_compiled_and_warns_nothing(
    make_sources, dest: DestDb, write_config
) -> None:
    (src,) = await make_sources(1)
    path, _ = write_config(dest, [src], [DIM_EQUIPE], differ="compiled")
    result = run_cli("once", "--json", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert "differ_pure_python" not in result.stderr and "pure-Python" not in result.stderr
    document = json.loads(result.stdout)
    assert (document["differ"], document["differ_reason"]) == ("compiled", None)


@pytest.mark.parametrize("command", ["once", "run"])
async def test_differ_compiled_refuses_to_start_without_it(
    make_sources, dest: DestDb, write_config, missing: dict[str, str], command: str
) -> None:
    (src,) = await make_sources(1)
    path, _ = write_config(dest, [src], [DIM_EQUIPE], differ="compiled")
    result = run_cli(command, "--config", str(path), env=missing, timeout=60)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr, result.stderr
    assert lines[0].startswith("differ: compiled, but ") and "is missing" in lines[0]


async def test_the_python_setting_and_the_variable_say_themselves(
    make_sources, dest: DestDb, write_config
) -> None:
    (src,) = await make_sources(1)
    path, _ = write_config(dest, [src], [DIM_EQUIPE], differ="python")
    result = run_cli("once", "--json", "--config", str(path))
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["differ_reason"] == "the config says `differ: python`"
    path, _ = write_config(dest, [src], [DIM_EQUIPE])
    result = run_cli("once", "--json", "--config", str(path), env={"SYNCD_PURE_PYTHON_DIFF": "1"})
    assert json.loads(result.stdout)["differ_reason"] == "SYNCD_PURE_PYTHON_DIFF is set"


async def test_check_says_which_differ_would_run(
    make_sources, dest: DestDb, write_config, missing: dict[str, str]
) -> None:
    (src,) = await make_sources(1)
    path, _ = write_config(dest, [src], [DIM_EQUIPE])
    offline = run_cli("check", "--config", str(path), env=missing)
    assert offline.returncode == 0, offline.stderr
    assert "warning: the pure-Python row differ would run" in offline.stderr
    assert "is missing" in offline.stderr

    online = run_cli("check", "--online", "--config", str(path), env=missing)
    assert online.returncode == 0, online.stdout + online.stderr
    (line,) = [x for x in online.stdout.splitlines() if x.startswith("row differ:")]
    assert (
        line.startswith("row differ: warning: the pure-Python row differ") and "is missing" in line
    )
    as_json = run_cli("check", "--online", "--json", "--config", str(path), env=missing)
    differ = json.loads(as_json.stdout)["differ"]
    assert differ["compiled"] is False and "is missing" in differ["reason"] and differ["ok"]

    path, _ = write_config(dest, [src], [DIM_EQUIPE], differ="compiled")
    refused = run_cli("check", "--config", str(path), env=missing)
    assert refused.returncode == 2 and "differ: compiled, but" in refused.stderr
    failed = run_cli("check", "--online", "--config", str(path), env=missing)
    assert failed.returncode == 1 and "row differ: FAIL: " in failed.stdout


async def test_the_daemon_warns_and_shows_it_in_metrics_and_on_the_status_page(
    make_sources, dest: DestDb, write_config, broken: dict[str, str]
) -> None:
    (src,) = await make_sources(1)
    port = free_port()
    path, _ = write_config(
        dest,
        [src],
        [DIM_EQUIPE],
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"interval": "24h", "jitter": "0s"},
    )
    daemon = DaemonProcess(path, port, env=broken)
    try:
        daemon.wait_ready()
        assert "differ_pure_python" in daemon.log() and "does not load" in daemon.log()
        code, metrics = daemon.get("/metrics")
        assert code == 200
        assert "\nsyncd_row_differ_compiled 0.0\n" in metrics
        code, page = daemon.get("/")
        assert code == 200
        assert 'id="differ" class="slow">pure-Python row differ' in page
        assert "does not load" in page
    finally:
        daemon.stop()


@needs_compiled
async def test_the_daemon_with_the_library_says_compiled(
    make_sources, dest: DestDb, write_config
) -> None:
    (src,) = await make_sources(1)
    port = free_port()
    path, _ = write_config(
        dest,
        [src],
        [DIM_EQUIPE],
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"interval": "24h", "jitter": "0s"},
    )
    daemon = DaemonProcess(path, port)
    try:
        daemon.wait_ready()
        assert "differ_pure_python" not in daemon.log()
        assert "\nsyncd_row_differ_compiled 1.0\n" in daemon.get("/metrics")[1]
        assert '<span id="differ">compiled row differ</span>' in daemon.get("/")[1]
    finally:
        daemon.stop()


def test_the_demo_says_which_differ_runs_too(pg_base: Path, broken: dict[str, str]) -> None:
    result = run_cli(
        "demo",
        "--once",
        "--municipalities",
        "1",
        "--citizens",
        "20",
        "--data-dir",
        str(pg_base / "demo-differ"),
        env=broken,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "the pure-Python row differ runs" in result.stderr
    assert broken["SYNCD_ROWDIFF_LIBRARY"] in result.stderr
