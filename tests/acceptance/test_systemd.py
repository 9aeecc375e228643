"""The shipped unit, unedited, under a real systemd (PID 1 of private namespaces: systemdlane):
Type=notify start, credentials through LoadCredential=, the hardening with the process metrics,
reload applied and rejected, stop draining, watchdog pings and kills, config errors that do
not restart forever.

The destination and the source are the session's clusters, reached on 127.0.0.1 (the lane
shares the network); their lane roles need passwords (scram-sha-256), so a landed row proves
the credential was read.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import anyio
import asyncpg
import pytest
import yaml

from tests.acceptance import systemdlane
from tests.acceptance.systemdlane import Lane
from tests.conftest import PasswordRoles
from tests.support.daemonproc import free_port, request
from tests.support.helpers import ROOT

pytestmark = pytest.mark.slow

ROLES = PasswordRoles()
DEST_PASSWORD, SOURCE_PASSWORD = ROLES.dest_password, ROLES.source_password
TOKEN = "token-da-lane-0123456789"
EQUIPES = {"name": "equipes", "table": "public.tb_dim_equipe"}
PAUSABLE = {
    "name": "equipes_pausavel",
    "query": "SELECT e.* FROM tb_dim_equipe e "
    "WHERE (SELECT pg_sleep(seconds) FROM lane_pause)::text IS NOT NULL",
}
PROCESS_SERIES = (
    "syncd_process_resident_memory_bytes",
    "syncd_process_virtual_memory_bytes",
    "syncd_process_start_time_seconds",
    "syncd_process_cpu_seconds_total",
    "syncd_process_open_fds",
    "syncd_process_max_fds",
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI") == "true":  # CI installs everything the lane needs (.ci/run)
        pytest.fail(reason)
    pytest.skip(reason)


@pytest.fixture(scope="module")
def lane(tmp_path_factory):
    reason = systemdlane.missing()
    if reason:
        _unavailable(reason)
    lane = Lane(tmp_path_factory.mktemp("systemd-lane"))
    lane.start()
    yield lane
    lane.close()


class Deployment:
    """/etc/syncd inside the lane: the config and /etc/syncd/credentials, as docs/install.md says."""

    def __init__(self, lane: Lane, dest, sources, datasets) -> None:
        self.lane = lane
        self.dest = dest
        self.sources = sources
        self.port = free_port()
        self.path = lane.etc / "syncd.yaml"
        credentials = lane.etc / "credentials"
        shutil.rmtree(credentials, ignore_errors=True)
        (credentials / "municipios").mkdir(parents=True)
        for name, secret in (("analytics", DEST_PASSWORD), ("http-token", TOKEN)):
            (credentials / name).write_text(secret + "\n")
        for db in sources:
            (credentials / "municipios" / db.id).write_text(SOURCE_PASSWORD + "\n")
        for path in credentials.rglob("*"):
            path.chmod(0o700 if path.is_dir() else 0o600)
        self.document = {
            # no password_file anywhere: the credentials are found by convention
            "destination": {"dsn": ROLES.dest_dsn(dest)},
            "sources": [{"id": db.id, "dsn": ROLES.source_dsn(db)} for db in sources],
            "datasets": datasets,
            "http": {"listen": f"127.0.0.1:{self.port}"},
            "schedule": {"interval": "24h", "jitter": "0s"},
            "retry": {"attempts": 3, "backoff": "20ms", "max_backoff": "100ms"},
        }
        self.write()

    def write(self, text: str | None = None) -> None:
        self.path.write_text(text if text is not None else yaml.safe_dump(self.document))
        os.chown(self.path, 0, self.lane.uid)  # root:syncd 0640, as installed
        self.path.chmod(0o640)

    def get(self, path: str, token: str | None = None, method: str = "GET") -> tuple[int, str]:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return request(method, f"http://127.0.0.1:{self.port}{path}", headers)

    def status(self) -> dict:
        code, text = self.get("/status")
        assert code == 200, text
        return json.loads(text)

    def wait_status(self, predicate, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                status = self.status()
                if predicate(status):
                    return status
            except OSError:
                status = {}
            if time.monotonic() > deadline:
                raise AssertionError(f"status never matched: {status}\n{self.lane.output()}")
            time.sleep(0.2)


async def _grant(sources, dest, pause: bool = False) -> None:
    for db in sources:
        if pause:
            conn = await asyncpg.connect(db.admin_dsn)
            try:
                await conn.execute(
                    "CREATE TABLE lane_pause (seconds float); INSERT INTO lane_pause VALUES (0)"
                )
            finally:
                await conn.close()
    await ROLES.grant(sources, dest)


async def _set_pause(db, seconds: float) -> None:
    conn = await asyncpg.connect(db.admin_dsn)
    try:
        await conn.execute("UPDATE lane_pause SET seconds = $1", seconds)
    finally:
        await conn.close()


def test_the_unit_under_test_is_the_shipped_one(lane):
    assert (lane.units / "syncd.service").read_bytes() == systemdlane.UNIT.read_bytes()
    dropins = sorted(p.name for p in (lane.units / "syncd.service.d").iterdir())
    assert dropins == ["lane-log.conf"]  # the one override: no journald in the lane
    masked = {p.name for p in lane.units.iterdir() if p.is_symlink()}
    assert "systemd-tmpfiles-setup.service" in masked
    assert {Path(p).name for p in systemdlane.tmpfiles_units()} <= masked


async def test_start_credentials_metrics_reload_and_draining_stop(
    lane, password_roles, make_sources, dest
):
    (db,) = await make_sources(1)
    await _grant([db], dest, pause=True)
    deployment = Deployment(lane, dest, [db], [EQUIPES, PAUSABLE])

    # Type=notify: `systemctl start` returns once syncd said READY=1
    await anyio.to_thread.run_sync(lane.systemctl, "start", "syncd")
    shown = lane.show(
        "syncd", "ActiveState", "SubState", "Type", "StatusText", "MainPID", "ProcSubset"
    )
    assert (shown["ActiveState"], shown["SubState"], shown["Type"]) == (
        "active",
        "running",
        "notify",
    )
    assert shown["StatusText"] == "serving" and shown["ProcSubset"] == "pid"
    main_pid = shown["MainPID"]

    # LoadCredential=: every password came from a credential, none from the config
    await anyio.to_thread.run_sync(
        deployment.wait_status, lambda s: s["sources"][db.id]["state"] == "ok"
    )
    conn = await asyncpg.connect(dest.dsn)
    try:
        landed = await conn.fetchval(
            "SELECT count(*) FROM syncd_data.equipes WHERE municipio_id_sus = $1", db.id
        )
    finally:
        await conn.close()
    assert landed > 0
    code, _ = deployment.get(f"/sources/{db.id}/sync", TOKEN, "POST")  # http-token
    assert code == 202
    assert deployment.get(f"/sources/{db.id}/sync", "wrong", "POST")[0] == 401
    listing = lane.run("nsenter", "-t", main_pid, "-m", "ls", "/run/credentials/syncd.service")
    assert listing.stdout.split() == ["analytics", "http-token", f"municipios_{db.id}"]

    # the hardening (ProcSubset=pid hides /proc/stat) leaves the process metrics there
    code, metrics = deployment.get("/metrics")
    assert code == 200
    values = {
        line.split()[0]: float(line.split()[1])
        for line in metrics.splitlines()
        if line.startswith("syncd_process_")
    }
    assert set(PROCESS_SERIES) <= set(values), sorted(values)
    assert values["syncd_process_resident_memory_bytes"] > 0
    assert values["syncd_process_start_time_seconds"] > 1.7e9

    # reload applied: `systemctl reload` (ExecReload=syncd reload) succeeds once applied
    deployment.document["concurrency"] = {"sources": 8}
    deployment.write()
    await anyio.to_thread.run_sync(lane.systemctl, "reload", "syncd")
    assert "config reloaded: 1 sources" in lane.daemon_log()
    # rejected: `systemctl reload` fails, syncd keeps running the previous config. The case:
    # a municipality added with its file in /etc/syncd/credentials/municipios, which systemd
    # loads at start only: the reload names the credential, a restart would load it
    added = {**deployment.document["sources"][0], "id": "999999"}
    deployment.write(
        yaml.safe_dump({**deployment.document, "sources": [*deployment.document["sources"], added]})
    )
    rejected = await anyio.to_thread.run_sync(
        lambda: lane.systemctl("reload", "syncd", check=False)
    )
    assert rejected.returncode != 0
    assert (
        "reload rejected, still running the previous config: /etc/syncd/syncd.yaml:"
        in lane.daemon_log()
    )
    assert "no password_file and no credential 'municipios_999999'" in lane.daemon_log()
    shown = lane.show("syncd", "ActiveState", "MainPID")
    assert shown == {"ActiveState": "active", "MainPID": main_pid}
    assert "syncd_config_last_reload_successful 0.0" in deployment.get("/metrics")[1]
    deployment.write()

    # stop drains: a sync in flight finishes, then exit 0
    await _set_pause(db, 5)  # long enough to be in flight when the stop comes
    deployment.wait_status(lambda s: s["sources"][db.id]["state"] == "ok")
    assert deployment.get(f"/sources/{db.id}/sync", TOKEN, "POST")[0] == 202
    await anyio.to_thread.run_sync(
        deployment.wait_status, lambda s: s["sources"][db.id]["state"] == "running"
    )
    await anyio.to_thread.run_sync(lane.systemctl, "stop", "syncd")
    shown = lane.show("syncd", "ActiveState", "Result", "ExecMainStatus")
    assert shown == {"ActiveState": "inactive", "Result": "success", "ExecMainStatus": "0"}
    log = lane.daemon_log()
    assert "stopping: waiting up to 60s for 1 syncs in flight" in log
    assert "cancelling" not in log
    conn = await asyncpg.connect(dest.dsn)
    try:
        last = await conn.fetchval(
            "SELECT status FROM syncd.ledger WHERE source_id = $1 AND dataset = $2 "
            "ORDER BY started_at DESC LIMIT 1",
            db.id,
            PAUSABLE["name"],
        )
    finally:
        await conn.close()
    assert last == "ok"
    assert DEST_PASSWORD not in log and SOURCE_PASSWORD not in log and TOKEN not in log


@pytest.mark.parametrize("broken", ["unknown key", "missing credential"])
async def test_a_config_error_fails_the_unit_once_and_says_why(
    lane, password_roles, make_sources, dest, broken
):
    """Exit 2 is not restarted (RestartPreventExitStatus=2): the unit is failed at once, not
    in auto-restart every RestartSec."""
    (db,) = await make_sources(1)
    await _grant([db], dest)
    deployment = Deployment(lane, dest, [db], [EQUIPES])
    if broken == "unknown key":
        deployment.write(yaml.safe_dump(deployment.document) + "nonsense: 1\n")
        reason = "nonsense: unknown key"
    else:
        (lane.etc / "credentials" / "municipios" / db.id).unlink()
        reason = f"no password_file and no credential 'municipios_{db.id}'"
    lane.systemctl("reset-failed", "syncd", check=False)
    started = await anyio.to_thread.run_sync(lambda: lane.systemctl("start", "syncd", check=False))
    assert started.returncode != 0
    shown = lane.wait_for("syncd", lambda s: s["ActiveState"] != "activating")
    assert (shown["ActiveState"], shown["Result"], shown["ExecMainStatus"]) == (
        "failed",
        "exit-code",
        "2",
    ), shown
    assert shown["NRestarts"] == "0"
    assert reason in lane.daemon_log()
    lane.systemctl("reset-failed", "syncd", check=False)


async def test_watchdog_pings_and_a_stuck_daemon_is_killed(
    lane, password_roles, make_sources, dest
):
    """WatchdogSec= shortened to 8 s (a test-only drop-in: 2 min would take minutes): the pings move
    systemd's watchdog timestamp; a stopped process stops them and systemd kills it."""
    (db,) = await make_sources(1)
    await _grant([db], dest)
    Deployment(lane, dest, [db], [EQUIPES])
    dropin = lane.units / "syncd.service.d" / "lane-watchdog.conf"
    dropin.write_text("[Service]\nWatchdogSec=8s\n")
    try:
        lane.systemctl("daemon-reload")
        await anyio.to_thread.run_sync(lane.systemctl, "start", "syncd")
        first = lane.show("syncd", "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
        later = await anyio.to_thread.run_sync(
            lambda: lane.wait_for(
                "syncd",
                lambda s: (
                    lane.show("syncd", "WatchdogTimestampMonotonic")["WatchdogTimestampMonotonic"]
                    != first
                ),
                timeout=60,
            )
        )
        assert later["ActiveState"] == "active"
        main_pid = later["MainPID"]
        lane.run("kill", "-STOP", main_pid)
        shown = await anyio.to_thread.run_sync(
            lambda: lane.wait_for("syncd", lambda s: s["Result"] == "watchdog", timeout=60)
        )
        lane.run("kill", "-CONT", main_pid, check=False)  # SIGABRT is then delivered
        shown = await anyio.to_thread.run_sync(
            lambda: lane.wait_for("syncd", lambda s: s["MainPID"] != main_pid, timeout=120)
        )
        assert shown["Result"] == "watchdog"
    finally:
        lane.systemctl("stop", "syncd", check=False)
        dropin.unlink()
        lane.systemctl("daemon-reload", check=False)
        lane.systemctl("reset-failed", "syncd", check=False)


def _systemd_version() -> int:
    out = subprocess.run(["systemd-analyze", "--version"], capture_output=True, text=True).stdout
    return int(out.split()[1])


def _verify(directory: Path) -> list[str]:
    result = subprocess.run(
        ["systemd-analyze", "verify", str(directory / "syncd.service")],
        capture_output=True,
        text=True,
    )
    return [line for line in result.stderr.splitlines() if line.strip()]


def test_the_unit_and_its_drop_ins_verify(tmp_path):
    """`systemd-analyze verify`: the unit clean on 252 and newer, with the tracing drop-in
    too; the notify-reload drop-in clean on 253+, and on older systemd costing exactly the one
    line it is documented to cost."""
    if shutil.which("systemd-analyze") is None:
        _unavailable("systemd-analyze is not installed")
    unit = systemdlane.UNIT.read_text()
    syncd = shutil.which("syncd") or str(ROOT / ".venv" / "bin" / "syncd")
    (tmp_path / "syncd.service").write_text(unit.replace("/opt/syncd/.venv/bin/syncd", syncd))
    assert _verify(tmp_path) == []
    for needed in (
        "Type=notify\n",
        "ExecReload=/opt/syncd/.venv/bin/syncd reload --pid $MAINPID",
        "RuntimeDirectory=syncd",
        "Restart=on-failure",
        "RestartPreventExitStatus=2\n",
        "WatchdogSec=",
        "LoadCredential=",
        "ProtectSystem=strict",
        "User=syncd",
        "NoNewPrivileges=yes",
    ):
        assert needed in unit
    assert "\nExecStartPre=" not in unit  # its exit 2 would be restarted forever

    shipped = systemdlane.UNIT.parent / "syncd.service.d"
    dropins = tmp_path / "syncd.service.d"
    dropins.mkdir()
    tracing = (shipped / "tracing.conf.example").read_text()
    (dropins / "tracing.conf").write_text(tracing)
    assert _verify(tmp_path) == []
    # every line that is not a comment nor blank is a whole assignment: no inline comments
    for line in tracing.splitlines():
        if line and not line.startswith(("#", "[")):
            assert "#" not in line and line.startswith("Environment=OTEL_"), line
    # uncommented, the optional lines verify as well
    (dropins / "tracing.conf").write_text(tracing.replace("\n#Environment=", "\nEnvironment="))
    assert _verify(tmp_path) == []

    (dropins / "tracing.conf").unlink()
    notify_reload = shipped / "notify-reload.conf"
    (dropins / notify_reload.name).write_text(notify_reload.read_text())
    problems = _verify(tmp_path)
    if _systemd_version() < 253:
        assert len(problems) == 1 and "Failed to parse service type" in problems[0], problems
    else:
        assert problems == []
    assert "Type=notify-reload\nExecReload=\n" in notify_reload.read_text()


def test_the_tracing_drop_in_reaches_the_daemon_s_environment(lane):
    """Installed as the example says, systemd (the real manager) hands its variables over."""
    dropin = lane.units / "syncd.service.d" / "tracing.conf"
    shutil.copyfile(systemdlane.UNIT.parent / "syncd.service.d" / "tracing.conf.example", dropin)
    try:
        lane.systemctl("daemon-reload")
        environment = lane.show("syncd", "Environment")["Environment"].split()
    finally:
        dropin.unlink()
        lane.systemctl("daemon-reload")
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=http://tempo.internal:4318" in environment
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in environment


def test_systemd_analyze_security_score_is_the_documented_one(tmp_path):
    """docs/operate/systemd.md states the unit's exposure score; this keeps it true on this systemd.
    The unit alone: beside it in the checkout, systemd would read the 253+ drop-in too."""
    if shutil.which("systemd-analyze") is None:
        _unavailable("systemd-analyze is not installed")
    shutil.copyfile(systemdlane.UNIT, tmp_path / "syncd.service")
    result = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=yes",
            "--no-pager",
            str(tmp_path / "syncd.service"),
        ],
        capture_output=True,
        text=True,
    )
    overall = [line for line in result.stdout.splitlines() if "Overall exposure level" in line]
    assert overall, result.stdout + result.stderr
    score = overall[0].split("level for syncd.service:")[1].split()[0]
    docs = (ROOT / "docs" / "operate" / "systemd.md").read_text()
    if _systemd_version() == 252:  # the scoring changes between versions
        assert f"exposure level **{score}**" in docs, overall[0]


async def test_a_memory_limit_drop_in_reaches_the_cgroup(lane, password_roles, make_sources, dest):
    """The guidance in the unit (MemoryHigh=/MemoryMax= in a drop-in) takes effect, on the
    legacy and hybrid cgroup layouts of systemd 252 as on the unified one."""
    controllers = lane.run(
        "sh", "-c", "cat /sys/fs/cgroup/cgroup.controllers 2>/dev/null || ls /sys/fs/cgroup"
    )
    if "memory" not in controllers.stdout.split():
        # cgroup v2 delegates no controller below a cgroup that holds processes (the test's)
        pytest.skip("the lane's cgroup has no memory controller to limit")
    (db,) = await make_sources(1)
    await _grant([db], dest)
    Deployment(lane, dest, [db], [EQUIPES])
    dropin = lane.units / "syncd.service.d" / "memory.conf"
    dropin.write_text("[Service]\nMemoryHigh=1536M\nMemoryMax=2G\n")
    try:
        lane.systemctl("daemon-reload")
        await anyio.to_thread.run_sync(lane.systemctl, "start", "syncd")
        shown = lane.show("syncd", "MemoryMax", "ControlGroup")
        assert shown["MemoryMax"] == str(2 << 30)
        group = shown["ControlGroup"]
        limit = lane.run(
            "sh",
            "-c",
            f"cat /sys/fs/cgroup{group}/memory.max 2>/dev/null"
            f" || cat /sys/fs/cgroup/memory{group}/memory.limit_in_bytes",
        )
        assert limit.stdout.strip() == str(2 << 30)
    finally:
        lane.systemctl("stop", "syncd", check=False)
        dropin.unlink()
        lane.systemctl("daemon-reload", check=False)
