"""Sources behind SSH bastions, against a real OpenSSH sshd (tests/support/sshd.py) with the fault
proxy in front of it, and a real `ssh -N -R` for reverse tunnels.

The bastion is 127.0.0.1 here, so a source's DSN (as the bastion sees it) is the source
cluster's own address; what goes through the tunnel is proved by the proxy's counts, by
stopping sshd, and by cutting the proxy mid-COPY.
"""

from __future__ import annotations

import asyncio
import io
import json
import re
import subprocess
from pathlib import Path

import anyio
import asyncpg
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from syncd import config as config_module
from syncd.commands.check import run_check, tls_in_tunnel_note
from syncd.commands.enroll import preferred_port
from syncd.commands.once import MetricsOutput, run_once
from syncd.config import Config
from syncd.engine.errors import Kind, classify
from syncd.engine.source import SourceSession
from syncd.engine.tunnel import Tunnels
from syncd.observe import telemetry

from tests.conftest import TABLE_DATASETS
from tests.scenarios.test_bastions import SSH_CONFIG, unit_command, windows_command
from tests.support.daemonproc import DaemonProcess, free_port
from tests.support.faultproxy import FaultProxy
from tests.support.helpers import ROOT, fingerprint, run_cli, run_pass
from tests.support.helpers import tls_cluster as start_tls_cluster
from tests.support.sshd import SSHD, Sshd, keygen, require_openssh
from tests.support.sshd import free_port as sshd_free_port

CIDADAOS, EQUIPES = TABLE_DATASETS[0], TABLE_DATASETS[3]
DATASETS = [CIDADAOS, EQUIPES]


@pytest.fixture(scope="module")
def sshd(tmp_path_factory: pytest.TempPathFactory):
    require_openssh()
    server = Sshd(tmp_path_factory.mktemp("sshd")).start()
    yield server
    server.stop()


@pytest.fixture
async def proxy(sshd: Sshd):
    """The fault proxy between syncd and sshd."""
    p = await FaultProxy("127.0.0.1", sshd.port).start()
    yield p
    await p.stop()


def tunnelled(db, bastion: str = "hub") -> dict:
    return db.source_entry(ssh_tunnel={"bastion": bastion})


async def landed(dest, dataset: str = "cidadaos") -> dict[str, int]:
    conn = await dest.connect()
    try:
        rows = await conn.fetch(
            f'SELECT municipio_id_sus AS id, count(*) AS n FROM syncd_data."{dataset}" GROUP BY 1'
        )
        return {r["id"]: r["n"] for r in rows}
    finally:
        await conn.close()


async def test_many_tunnelled_sources_land_over_one_ssh_connection(
    sshd, proxy, make_sources, dest, write_config
):
    dbs = await make_sources(4)
    _, config = write_config(
        dest,
        [tunnelled(db) for db in dbs],
        DATASETS,
        bastions={"hub": sshd.bastion(proxy.port)},
    )
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert await landed(dest) == {db.id: db.citizens for db in dbs}
    # four municipalities, two datasets each, every session a channel on one SSH connection
    assert proxy.accepted == 1
    for db in dbs:
        conn = await dest.connect()
        try:
            assert await fingerprint(conn, "dim_equipe", db.id) != (0, "")
        finally:
            await conn.close()


async def test_host_key_mismatch_is_refused_as_a_security_failure_and_not_retried(
    sshd, proxy, make_sources, dest, write_config, tmp_path
):
    [db] = await make_sources(1)
    other = keygen(tmp_path / "impostor", "impostor")  # not the bastion's key
    _, config = write_config(
        dest,
        [tunnelled(db)],
        DATASETS,
        bastions={"hub": sshd.bastion(proxy.port, host_key=other)},
        retry={"attempts": 4, "backoff": "10ms", "max_backoff": "20ms"},
    )
    exporter = InMemorySpanExporter()
    tel = telemetry.setup(install=False)
    tel.provider.add_span_processor(SimpleSpanProcessor(exporter))
    out = io.StringIO()
    code = await run_once(config, out, io.StringIO(), tracer=tel.tracer)
    tel.shutdown()
    assert code == 1
    assert "bastion hub (host_key_mismatch)" in out.getvalue() and "SECURITY" in out.getvalue()
    [root] = [s for s in exporter.get_finished_spans() if s.parent is None]
    assert root.attributes["error.type"] == "host_key_mismatch"
    assert root.attributes["syncd.bastion"] == "hub"
    assert root.attributes["server.address"] == "127.0.0.1"  # the database's, not the bastion's
    assert root.attributes["server.port"] == db.cluster.port
    assert not [e for e in root.events if e.name == "retry"]
    assert proxy.accepted == 1  # one handshake, refused, never tried again
    conn = await dest.connect()
    try:
        errors = await conn.fetch("SELECT error, attempts FROM syncd.ledger")
    finally:
        await conn.close()
    assert errors and all("host key" in r["error"] for r in errors)
    assert all(r["attempts"] == 1 for r in errors)


async def test_a_mismatch_latches_on_the_engine_and_is_a_final_failure_kind(sshd, tmp_path):
    other = keygen(tmp_path / "impostor2", "impostor")

    config = config_module.loads(
        f"""
destination: {{dsn: "postgresql://x@127.0.0.1:1/x"}}
bastions:
  hub: {json.dumps(sshd.bastion(host_key=other))}
sources:
  - {{id: "1", dsn: "postgresql://x@127.0.0.1:5/x", ssh_tunnel: {{bastion: hub}}}}
datasets: [{{name: a, table: t}}]
"""
    )
    tunnels = Tunnels()
    try:
        for _ in range(2):
            with pytest.raises(Exception) as info:
                await SourceSession.open(config.sources[0], config.timeouts, tunnels)
            failure = classify(info.value)
            assert failure.kind == Kind.HOST_KEY_MISMATCH and not failure.retryable
        assert tunnels.links()["hub"].opened == 0
    finally:
        await tunnels.close()


async def test_a_bastion_down_fails_its_sources_fast_naming_it_others_land_then_it_comes_back(
    sshd, proxy, make_sources, dest, write_config, tmp_path
):
    behind, direct = await make_sources(2)
    _, config = write_config(
        dest,
        [tunnelled(behind), direct.source_entry()],
        DATASETS,
        bastions={"hub": sshd.bastion(proxy.port)},
        retry={"attempts": 5, "backoff": "10ms", "max_backoff": "20ms"},
        timeouts={"connect": "3s"},
    )
    await proxy.stop()  # nothing listens there now: the bastion is down
    textfile = tmp_path / "pass.prom"
    out = io.StringIO()
    code = await run_once(config, out, io.StringIO(), MetricsOutput(str(textfile)))
    assert code == 1
    assert "bastion hub" in out.getvalue(), out.getvalue()
    assert 'syncd_retries_total{reason="bastion_unreachable"} 1.0' in textfile.read_text()
    assert await landed(dest) == {direct.id: direct.citizens}
    conn = await dest.connect()
    try:
        row = await conn.fetchrow(
            "SELECT error, attempts FROM syncd.ledger WHERE source_id = $1 LIMIT 1", behind.id
        )
    finally:
        await conn.close()
    assert "bastion hub (bastion_unreachable)" in row["error"]
    assert row["attempts"] == 2  # one retry, not five
    # back up (a proxy on the same port again): the next pass lands
    back = FaultProxy("127.0.0.1", sshd.port)
    back._server = await asyncio.start_server(back._accept, "127.0.0.1", proxy.port)
    try:
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        assert await landed(dest) == {behind.id: behind.citizens, direct.id: direct.citizens}
    finally:
        await back.stop()


async def test_the_daemons_status_page_counts_filters_and_groups_by_bastion(
    sshd, make_sources, dest, write_config
):
    behind, direct = await make_sources(2)
    port = free_port()
    path, _ = write_config(
        dest,
        [tunnelled(behind), direct.source_entry()],
        DATASETS,
        bastions={"hub": sshd.bastion()},
        http={"listen": f"127.0.0.1:{port}"},
        schedule={"interval": "24h", "jitter": "0s"},
    )
    daemon = DaemonProcess(path, port)
    try:
        daemon.wait_ready()
        daemon.wait_status(lambda s: all(v["state"] == "ok" for v in s["sources"].values()))
        code, page = daemon.get("/")
        assert code == 200
        assert '<a href="?q=hub"><b>1</b> via hub</a>' in page  # the config's bastion, counted
        assert page.count('<span class="via">via hub</span>') == 1
        code, only = daemon.get("/?q=hub")
        assert code == 200
        assert re.findall(r'<tr class="ok" data-id="(\w+)"', only) == [behind.id]
        code, grouped = daemon.get("/?group=bastion")
        assert code == 200
        assert re.findall(r'scope="rowgroup">([^<]*)<', grouped) == ["direct", "via hub"]
        assert daemon.get("/?group=nothing")[0] == 400
    finally:
        daemon.stop()


@pytest.mark.slow
async def test_a_tunnel_cut_mid_copy_rolls_back_and_lands_on_a_new_connection(
    sshd, proxy, make_sources, dest, write_config
):
    [db] = await make_sources(1, citizens=3000)
    _, config = write_config(
        dest,
        [tunnelled(db)],
        [CIDADAOS],
        bastions={"hub": sshd.bastion(proxy.port)},
    )
    proxy.cut_next(after=150_000, direction="down")  # mid-COPY: the SSH link dies
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert proxy.cut_count == 1 and proxy.accepted == 2  # a new SSH connection for the retry
    assert await landed(dest) == {db.id: db.citizens}  # all of it once: nothing partial
    conn = await dest.connect()
    try:
        attempts = await conn.fetchval("SELECT max(attempts) FROM syncd.ledger")
    finally:
        await conn.close()
    assert attempts == 2


@pytest.mark.slow
async def test_blackholed_traffic_is_detected_by_ssh_keepalive(
    sshd, proxy, make_sources, dest, write_config
):
    [db] = await make_sources(1, citizens=3000)
    _, config = write_config(
        dest,
        [tunnelled(db)],
        [CIDADAOS],
        bastions={"hub": sshd.bastion(proxy.port, keepalive_interval="1s", keepalive_count_max=2)},
        # the idle stream would notice only after an hour, TCP after minutes: the keepalive must
        timeouts={"idle_stream": "1h", "connect": "5s"},
        retry={"attempts": 1},
    )
    proxy.bandwidth = 200_000  # slow enough to be mid-COPY when the hole opens

    async def blackhole_mid_copy() -> None:
        while not proxy.conns or sum(c.sent["down"] for c in proxy.conns) < 100_000:
            await anyio.sleep(0.02)
        proxy.blackhole = True

    async with anyio.create_task_group() as tg:
        tg.start_soon(blackhole_mid_copy)
        with anyio.fail_after(120):  # a bound for a broken test, not a measure
            code, out, err = await run_pass(config)
    assert code == 1 and proxy.blackhole
    assert "closed in the middle of operation" in out, out  # a lost connection: retryable
    assert await landed(dest) == {}
    proxy.clear()
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    assert await landed(dest) == {db.id: db.citizens}


# -- reverse tunnels: `syncd tunnel enroll`, a real `ssh -N -R`, check --online -----------------


def test_the_rendezvous_sshd_snippet_is_valid_for_this_openssh(tmp_path: Path):
    require_openssh()
    keygen(tmp_path / "hk")
    (tmp_path / "sshd_config").write_text(
        f"HostKey {tmp_path / 'hk'}\nUsePAM no\n"
        f"Include {ROOT / 'deploy' / 'tunnel' / 'rendezvous-sshd.conf'}\n"
    )
    done = subprocess.run(
        [
            str(SSHD),
            "-T",
            "-f",
            str(tmp_path / "sshd_config"),
            "-C",
            "user=tunnel,host=m,addr=10.0.0.1",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert "allowtcpforwarding remote" in done.stdout and "permitopen none" in done.stdout


def ssh_reverse(sshd: Sshd, key: Path, known: Path, listen: int, db) -> subprocess.Popen[bytes]:
    """The municipal side: the shipped unit's command, with this test's values."""
    command = unit_command(
        {
            "TUNNEL_PORT": str(listen),
            "RENDEZVOUS_HOST": "127.0.0.1",
            "RENDEZVOUS_PORT": str(sshd.port),
            "RENDEZVOUS_USER": sshd.user,
            "DB_HOST": db.cluster.host,
            "DB_PORT": str(db.cluster.port),
            "TUNNEL_KEY": str(key),
            "TUNNEL_KNOWN_HOSTS": str(known),
            "TUNNEL_SSH_CONFIG": str(SSH_CONFIG),
        }
    )
    command[0] = "ssh"  # wherever it is here
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


async def port_open(port: int) -> bool:
    try:
        stream = await anyio.connect_tcp("127.0.0.1", port)
    except OSError:
        return False
    await stream.aclose()
    return True


async def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> bool:
    """True once something listens on 127.0.0.1:port; False if `proc` exited first."""
    with anyio.fail_after(30):
        while proc.poll() is None:
            try:
                stream = await anyio.connect_tcp("127.0.0.1", port)
            except OSError:
                await anyio.sleep(0.05)
                continue
            await stream.aclose()
            return True
    return False


async def check_json(config: Config) -> tuple[int, dict]:
    out = io.StringIO()
    code = await run_check(config, out, as_json=True, timeout=10)
    return code, json.loads(out.getvalue())


@pytest.mark.slow
async def test_enroll_then_a_real_reverse_tunnel_checks_and_lands_and_its_absence_reads_clearly(
    sshd, make_sources, dest, write_config, tmp_path
):
    [db] = await make_sources(1)
    muni_key = tmp_path / "muni_ed25519"
    keygen(muni_key, "municipio")
    known = sshd.known_hosts(tmp_path / "known_hosts")
    already = {  # an enrolled neighbour holds the port the scheme would give first
        "id": "other",
        "dsn": f"postgresql://esus_leitura@127.0.0.1:{preferred_port(db.id)}/esus",
        "ssh_tunnel": {"bastion": "rdv"},
    }
    path, _ = write_config(dest, [already], DATASETS, bastions={"rdv": sshd.bastion()})
    enrolled = run_cli(
        "tunnel", "enroll", db.id, "--config", str(path), "--public-key", f"{muni_key}.pub"
    )
    assert enrolled.returncode == 0, enrolled.stderr
    again = run_cli(
        "tunnel", "enroll", db.id, "--config", str(path), "--public-key", f"{muni_key}.pub"
    )
    assert again.stdout == enrolled.stdout  # deterministic
    [line] = [x for x in enrolled.stdout.splitlines() if x.startswith("restrict,")]
    port = int(line.split('permitlisten="127.0.0.1:')[1].split('"')[0])
    assert 20000 <= port < 30000 and port != preferred_port(db.id)
    assert line.startswith(f'restrict,port-forwarding,permitlisten="127.0.0.1:{port}" ssh-ed25519 ')
    assert f"dsn: postgresql://esus_leitura@127.0.0.1:{port}/esus" in enrolled.stdout
    assert "ssh_tunnel: {bastion: rdv}" in enrolled.stdout
    sshd.authorize(line)

    # the restricted key may not hold another port: sshd refuses, ssh exits
    other_port = port + 1 if port < 29999 else port - 1
    refused = ssh_reverse(sshd, muni_key, known, other_port, db)
    assert not await wait_listening(other_port, refused)
    assert refused.wait(30) != 0
    assert b"forwarding failed" in refused.stderr.read()  # type: ignore[union-attr]

    source = db.source_entry(ssh_tunnel={"bastion": "rdv"})
    source["dsn"] = f"postgresql://esus_leitura@127.0.0.1:{port}/{db.dbname}"
    _, config = write_config(dest, [source], DATASETS, bastions={"rdv": sshd.bastion()})

    code, report = await check_json(config)  # the municipality has not dialled in yet
    assert code == 1
    [checked] = report["sources"]
    assert checked["error_kind"] == "tunnel_not_connected"
    assert "municipal tunnel not connected" in checked["errors"][0]
    assert checked["hops"]["bastion reachable"] == "ok"
    assert checked["hops"]["authenticated"] == "ok"
    assert checked["hops"]["forward accepted"] == "FAILED"
    assert checked["hops"]["database answered"] == "-"

    tunnel = ssh_reverse(sshd, muni_key, known, port, db)
    try:
        assert await wait_listening(port, tunnel), tunnel.stderr.read()  # type: ignore[union-attr]
        code, report = await check_json(config)
        [checked] = report["sources"]
        assert code == 0, checked
        assert checked["bastion"] == "rdv"
        assert checked["notes"] == []  # no TLS inside the tunnel: nothing to say
        assert [checked["hops"][h] for h in list(checked["hops"])[:5]] == ["ok"] * 5
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        assert await landed(dest) == {db.id: db.citizens}
    finally:
        tunnel.terminate()
        tunnel.wait(10)


def locked_key(sshd: Sshd, directory: Path, passphrase: str) -> tuple[Path, Path, str]:
    """A key with a passphrase, authorized on sshd: (key, passphrase file, a piece of the key)."""
    key = directory / "locked_ed25519"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", "locked", "-f", str(key)],
        check=True,
    )
    sshd.authorize(Path(f"{key}.pub").read_text())
    secret_file = directory / "passphrase"
    secret_file.write_text(passphrase + "\n")
    return key, secret_file, "".join(key.read_text().splitlines()[1:-1])[:40]


async def test_secrets_of_the_bastion_never_show(sshd, make_sources, dest, write_config, tmp_path):
    [db] = await make_sources(1)
    passphrase = "frase-secreta-Ç9!"
    key, secret_file, key_body = locked_key(sshd, tmp_path, passphrase)
    bastion = sshd.bastion(private_key_file=str(key), passphrase_file=str(secret_file))
    path, config = write_config(dest, [tunnelled(db)], DATASETS, bastions={"hub": bastion})
    outputs = [repr(config), str(config.sources[0])]
    for args in (["once", "--json"], ["check", "--online", "--json"], ["status"]):
        done = run_cli(*args, "--config", str(path))
        assert done.returncode == 0, done.stdout + done.stderr
        outputs += [done.stdout, done.stderr]
    # a wrong passphrase: the failure names the file, not what is in it
    secret_file.write_text("not-the-passphrase\n")
    done = run_cli("once", "--json", "--config", str(path))
    assert done.returncode == 1 and "private_key_file" in done.stdout
    outputs += [done.stdout, done.stderr]
    for text in outputs:
        assert passphrase not in text and key_body not in text
        assert "not-the-passphrase" not in text


# -- TLS through the tunnel -----------------------------------------------------------------------


@pytest.fixture(scope="module")
async def tls_source(pg_base: Path, tmp_path_factory: pytest.TempPathFactory):
    """Debian's PostgreSQL 15 with TLS only, its certificate naming `localhost` alone."""
    import trustme

    from syncd.lab import pec

    ca = trustme.CA()
    # its certificate names `localhost` only, not 127.0.0.1: the loopback end of the tunnel
    cluster = start_tls_cluster(
        pg_base / "tunnel-tls", ca, listen="127.0.0.1", auth="trust", names=("localhost",)
    )
    admin = await asyncpg.connect(cluster.socket_dsn())
    try:
        await admin.execute("CREATE ROLE esus_leitura LOGIN")
        await admin.execute("CREATE DATABASE esus")
        conn = await asyncpg.connect(cluster.socket_dsn("esus"))
        try:
            await pec.create_municipality(conn, pec.Municipality("351570", 20))
            await conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO esus_leitura")
        finally:
            await conn.close()
    finally:
        await admin.close()
    ca_file = tmp_path_factory.mktemp("tunnel-ca") / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    yield cluster, ca_file
    cluster.destroy()


async def test_tls_verify_full_checks_the_database_name_through_the_tunnel(
    sshd, tls_source, dest, write_config
):
    cluster, ca_file = tls_source

    def source(host: str) -> dict:
        return {
            "id": "351570",
            "dsn": f"postgresql://esus_leitura@{host}:{cluster.port}/esus"
            f"?sslmode=verify-full&sslrootcert={ca_file}",
            "ssh_tunnel": {"bastion": "hub"},
        }

    # `localhost` is what the certificate names; asyncpg connects to 127.0.0.1 (the tunnel)
    _, config = write_config(
        dest, [source("localhost")], DATASETS, bastions={"hub": sshd.bastion()}
    )
    code, report = await check_json(config)
    [checked] = report["sources"]
    assert code == 0, checked
    assert checked["tls"] and checked["tls_verified"] == "host and CA"
    assert checked["hops"]["TLS verified"] == "ok"
    # TLS in a tunnel that ends on the database's host: said, not failed (nothing compresses)
    assert checked["notes"] == [tls_in_tunnel_note("hub")]
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    # the DSN names 127.0.0.1, which the certificate does not: refused, through the tunnel too
    _, config = write_config(
        dest, [source("127.0.0.1")], DATASETS, bastions={"hub": sshd.bastion()}
    )
    code, report = await check_json(config)
    [checked] = report["sources"]
    assert code == 1 and checked["error_kind"] == "tls", checked
    assert checked["hops"]["database answered"] == "ok"
    assert checked["hops"]["TLS verified"] == "FAILED"


# -- SSH compression --------------------------------------------------------------------------


async def copy_bytes(conn: asyncpg.Connection, table: str) -> int:
    """A binary COPY of `table` read to the end: the bytes PostgreSQL sent."""
    size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    await conn.copy_from_table(table, output=sink, format="binary")
    return size


@pytest.fixture(scope="module")
def sshd_debug(tmp_path_factory: pytest.TempPathFactory):
    """An sshd that logs, for each connection, the algorithms it agreed on."""
    require_openssh()
    server = Sshd(tmp_path_factory.mktemp("sshd-debug"), log_level="DEBUG").start()
    yield server
    server.stop()


@pytest.mark.parametrize("compression", [True, False])
async def test_a_bastion_connection_negotiates_compression_and_the_copy_crosses_smaller(
    sshd_debug, make_sources, compression
):
    sshd = sshd_debug
    [db] = await make_sources(1, citizens=2000)
    proxy = await FaultProxy("127.0.0.1", sshd.port).start()  # counts what crosses the link
    logged = sshd.log.stat().st_size
    bastion = json.dumps(sshd.bastion(proxy.port, compression=compression))
    config = config_module.loads(
        f"""
destination: {{dsn: "postgresql://x@127.0.0.1:1/x"}}
bastions: {{hub: {bastion}}}
sources: [{json.dumps(tunnelled(db))}]
datasets: [{{name: a, table: t}}]
"""
    )
    [source] = config.sources
    assert source.bastion is not None and source.bastion.compression is compression
    tunnels = Tunnels()
    try:
        link = tunnels.link(source.bastion)
        assert link.compression is None  # not connected yet
        port = await link.open(source.dsn.host, source.dsn.port, 10)
        # what asyncssh and OpenSSH's sshd agreed on for what the bastion sends, as each says
        algorithm = "zlib@openssh.com" if compression else "none"
        assert link.compression == algorithm
        with sshd.log.open("rb") as log:
            log.seek(logged)
            said = log.read().decode(errors="replace")
        assert re.search(
            rf"kex: server->client cipher: \S+ MAC: \S+ compression: {algorithm}", said
        )
        conn = await asyncpg.connect(
            host="127.0.0.1", port=port, user=source.dsn.user, database=db.dbname, ssl=False
        )
        try:
            [wire] = proxy.conns  # the SSH connection, as the link carries it
            before = wire.sent["down"]
            copied = await copy_bytes(conn, "tb_fat_atendimento_individual")
            crossed = wire.sent["down"] - before
        finally:
            await conn.close()
    finally:
        await tunnels.close()
        await proxy.stop()
    if compression:
        assert crossed < copied / 2, (crossed, copied)  # PEC's rows shrink: bytes, not time
    else:
        assert crossed > copied, (crossed, copied)  # every byte, and SSH's framing on top


# -- the Windows kit's ssh command line, run by Linux OpenSSH -------------------------------------


def windows_kit(
    sshd: Sshd, kit: Path, listen: int, db, port: int
) -> tuple[list[str], dict[str, str]]:
    """C:\\ProgramData\\syncd-tunnel as `kit`, the rendezvous host at 127.0.0.1:`port`: the shipped ssh_config, a key enrolled for
    `listen` alone, the pinned known_hosts; the ssh command line syncd-tunnel.ps1 builds."""
    kit.mkdir()
    (kit / "ssh_config").write_bytes(SSH_CONFIG.read_bytes())
    public = keygen(kit / "id_ed25519", "municipio-windows")
    sshd.authorize(f'restrict,port-forwarding,permitlisten="127.0.0.1:{listen}" {public}')
    sshd.known_hosts(kit / "known_hosts", port)
    values = {
        "TUNNEL_PORT": str(listen),
        "RENDEZVOUS_HOST": "127.0.0.1",
        "RENDEZVOUS_PORT": str(port),  # the sshd, or a proxy in front of it
        "RENDEZVOUS_USER": sshd.user,
        "DB_PORT": str(db.cluster.port),  # DB_HOST: the script's default, 127.0.0.1
    }
    return ["ssh", *windows_command(values, kit)], values


async def test_the_windows_kits_ssh_command_holds_the_forward_and_refuses_another_host_key(
    sshd, proxy, make_sources, tmp_path
):
    [db] = await make_sources(1, citizens=2000)
    listen = sshd_free_port()
    command, _ = windows_kit(sshd, tmp_path / "kit", listen, db, proxy.port)
    # what that command line makes of the shared ssh_config (`ssh -G`: nothing connects)
    effective = subprocess.run(
        [command[0], "-G", *command[1:]], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    for line in (
        "batchmode yes",
        "compression yes",
        "exitonforwardfailure yes",
        "serveraliveinterval 15",
        "serveralivecountmax 3",
        "stricthostkeychecking true",
        f"userknownhostsfile {tmp_path / 'kit' / 'known_hosts'}",
        f"remoteforward [127.0.0.1]:{listen} [127.0.0.1]:{db.cluster.port}",
    ):
        assert line in effective, line

    tunnel = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert await wait_listening(listen, tunnel), tunnel.stderr.read()  # type: ignore[union-attr]
        # a PostgreSQL session through the reverse forward, as syncd's would come
        conn = await asyncpg.connect(
            host="127.0.0.1", port=listen, user="esus_leitura", database=db.dbname, ssl=False
        )
        try:
            assert await conn.fetchval("SELECT current_database()") == db.dbname
            assert await conn.fetchval("SELECT count(*) FROM tb_fat_cidadao_pec") == db.citizens
            # Compression yes: the rows go up the municipality's link compressed
            [wire] = proxy.conns
            before = wire.sent["up"]
            copied = await copy_bytes(conn, "tb_fat_atendimento_individual")
            assert wire.sent["up"] - before < copied / 2, (wire.sent["up"] - before, copied)
        finally:
            await conn.close()
    finally:
        tunnel.terminate()
        tunnel.wait(10)
    with anyio.fail_after(30):  # sshd lets the port go once it sees the connection end
        while proxy.conns or await port_open(listen):
            await anyio.sleep(0.05)

    # the rendezvous host presents a key other than the pinned one: refused, no forward
    (tmp_path / "kit" / "known_hosts").write_text(
        f"[127.0.0.1]:{proxy.port} {keygen(tmp_path / 'impostor', 'impostor')}\n"
    )
    refused = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert not await wait_listening(listen, refused)
    assert refused.wait(30) == 255
    assert b"Host key verification failed" in refused.stderr.read()  # type: ignore[union-attr]
