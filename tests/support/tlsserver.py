"""A TLS-only PostgreSQL for the TLS and secrets tests of both lanes (scenarios and acceptance):
Debian's PostgreSQL 15 (the wheel's server is built without OpenSSL) with our own CA's
certificate, scram-sha-256 passwords and `hostnossl ... reject`. Its fixtures are registered
for every test by tests/conftest.py (`pytest_plugins`); module-scoped, one server per module."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import asyncpg
import pytest
import trustme

from syncd.lab import pec

from tests.support.helpers import tls_cluster as start_tls_cluster

SOURCE_PASSWORD = "senha-municipal-Ç7!"
DEST_PASSWORD = "senha-analitica-9#x"


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="module")
async def tls_cluster(pg_base: Path, ca: trustme.CA):
    # its certificate names localhost and 127.0.0.1, not 127.0.0.2: the wrong-host case
    cluster = start_tls_cluster(
        pg_base / "tls",
        ca,
        listen="127.0.0.1,127.0.0.2",
        auth="scram-sha-256",
        names=("localhost", "127.0.0.1"),
    )
    admin = await asyncpg.connect(cluster.socket_dsn())
    try:
        await admin.execute(f"CREATE ROLE esus_leitura LOGIN PASSWORD '{SOURCE_PASSWORD}'")
        await admin.execute(f"CREATE ROLE syncd LOGIN PASSWORD '{DEST_PASSWORD}'")
        await admin.execute("CREATE DATABASE esus")
        await admin.execute("CREATE DATABASE analytics OWNER syncd")
        conn = await asyncpg.connect(cluster.socket_dsn("esus"))
        try:
            await pec.create_municipality(conn, pec.Municipality("351570", 50))
            await conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO esus_leitura")
        finally:
            await conn.close()
    finally:
        await admin.close()
    yield cluster
    cluster.destroy()


@pytest.fixture
async def fresh_analytics(tls_cluster):
    admin = await asyncpg.connect(tls_cluster.socket_dsn())
    await admin.execute("DROP DATABASE IF EXISTS analytics WITH (FORCE)")
    await admin.execute("CREATE DATABASE analytics OWNER syncd")
    await admin.close()
    return tls_cluster


def write(tmp_path: Path, document: dict) -> Path:
    import yaml

    path = tmp_path / "syncd.yaml"
    path.write_text(yaml.safe_dump(document, allow_unicode=True))
    path.chmod(0o600)
    return path


def tls(
    cluster,
    dbname: str,
    user: str,
    ca_file: Path,
    host: str = "127.0.0.1",
    password: str | None = None,
) -> str:
    auth = f"{user}:{quote(password, safe='')}" if password else user
    return (
        f"postgresql://{auth}@{host}:{cluster.port}/{dbname}"
        f"?sslmode=verify-full&sslrootcert={ca_file}"
    )
