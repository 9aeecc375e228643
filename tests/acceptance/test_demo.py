"""`syncd demo --once`: embedded PostgreSQL, synthetic municipalities, one pass, where it landed."""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.support.daemonproc import free_port, request
from tests.support.helpers import ROOT, run_cli


@pytest.mark.slow
def test_demo_once_lands_every_municipality(pg_base):
    result = run_cli(
        "demo",
        "--once",
        "--municipalities",
        "20",
        "--citizens",
        "300",
        "--data-dir",
        str(pg_base / "demo"),
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "20 of 20 sources ok" in result.stdout
    assert re.search(r"lista_nominal_hipertensos\s+\|\s+20\s+\|", result.stdout)
    assert re.search(r"cidadaos\s+\|\s+20\s+\|\s+6000\n", result.stdout)
    assert "psql" in result.stdout and "syncd_data" in result.stdout
    assert "Traceback" not in result.stderr


def test_demo_in_an_unreachable_directory_says_why(tmp_path):
    result = run_cli("demo", "--once", "--data-dir", str(tmp_path / "demo"))
    if result.returncode == 0:  # not root: nothing to refuse
        return
    assert result.returncode == 1
    assert result.stderr.strip().startswith("syncd demo: ")
    assert "Traceback" not in result.stderr


def test_demo_listen_takes_another_address(pg_base):
    """`syncd demo --listen HOST:PORT`: 9187 may be taken; the daemon serves where it is told."""
    port = free_port()
    demo_dir = pg_base / "demo-listen"
    log = open(pg_base / "demo-listen.log", "w")
    command = ["demo", "--listen", f"127.0.0.1:{port}", "--municipalities", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "syncd", *command, "--citizens", "20", "--data-dir", str(demo_dir)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=ROOT,
    )
    try:
        deadline = time.monotonic() + 180
        code = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                code, _ = request("GET", f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                time.sleep(0.2)
        assert code == 200, (pg_base / "demo-listen.log").read_text()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(120) == 0, (pg_base / "demo-listen.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    output = (pg_base / "demo-listen.log").read_text()
    assert f"http://127.0.0.1:{port}/status" in output
    assert "9187" not in output


def test_demo_listen_refuses_what_is_not_host_port():
    result = run_cli("demo", "--listen", "localhost")
    assert result.returncode == 2
    assert "is not HOST:PORT" in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_on_a_taken_port_says_so_before_building_anything():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("demo", "--listen", f"127.0.0.1:{port}", timeout=60)
    assert result.returncode == 1
    assert result.stderr.strip() == (
        f"syncd demo: cannot listen on 127.0.0.1:{port} (Address already in use); "
        "choose another address with --listen HOST:PORT"
    )
    assert "starting PostgreSQL" not in result.stdout
