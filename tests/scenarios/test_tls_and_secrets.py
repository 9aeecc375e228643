"""TLS verify-full for source and destination, in process, and DSN redaction. The TLS-only
server is tests/support/tlsserver.py; wrong CA or host, passwords never shown and `syncd check
--online`, through the real `syncd`, are in tests/acceptance/test_tls_and_secrets.py."""

from __future__ import annotations

import asyncpg

from syncd import config as config_module

from tests.conftest import TABLE_DATASETS
from tests.support.helpers import run_pass
from tests.support.tlsserver import DEST_PASSWORD, SOURCE_PASSWORD, tls, write

EQUIPES = TABLE_DATASETS[3]


async def test_verify_full_for_source_and_destination(fresh_analytics, ca, tmp_path):
    cluster = fresh_analytics
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    secret = tmp_path / "351570.pass"
    secret.write_text(SOURCE_PASSWORD + "\n")
    secret.chmod(0o600)
    path = write(
        tmp_path,
        {
            "destination": {
                "dsn": tls(cluster, "analytics", "syncd", ca_file, password=DEST_PASSWORD)
            },
            "sources": [
                {
                    "id": "351570",
                    "dsn": tls(cluster, "esus", "esus_leitura", ca_file),
                    "password_file": str(secret),
                }
            ],
            "datasets": [EQUIPES],
        },
    )
    config = config_module.load(path)
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    conn = await asyncpg.connect(cluster.socket_dsn("analytics"))
    try:
        assert await conn.fetchval("SELECT count(*) FROM syncd_data.dim_equipe") > 0
    finally:
        await conn.close()


def test_dsn_redaction():
    from syncd.config.dsn import Dsn

    dsn = Dsn.parse("postgresql://u:p%40ss@h:5433/db?sslmode=verify-full&password=x")
    assert str(dsn) == "postgresql://u:***@h:5433/db?sslmode=verify-full&password=***"
    assert "p%40ss" not in repr(dsn) and "p@ss" not in repr(dsn)
    assert dsn.host_key == "h:5433" and dsn.database == "db" and dsn.user == "u"
