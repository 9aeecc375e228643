"""Shared checks: compare source and destination row by row and byte by byte."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg

from syncd.commands.once import run_once
from syncd.config import Config
from syncd.lab import embedded

ROOT = Path(__file__).resolve().parents[2]
SCHEMA = "syncd_data"
KEY = "municipio_id_sus"


async def run_pass(config: Config) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await run_once(config, out, err)
    return code, out.getvalue(), err.getvalue()


def run_cli(
    *args: str, timeout: float = 300, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "syncd", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )


async def binary_copy(conn: asyncpg.Connection, query: str) -> bytes:
    chunks: list[bytes] = []

    async def sink(chunk: bytes) -> None:
        chunks.append(chunk)

    await conn.copy_from_query(query, output=sink, format="binary")
    return b"".join(chunks)


async def column_names(conn: asyncpg.Connection, query: str) -> list[str]:
    stmt = await conn.prepare(f"SELECT * FROM ({query}) AS q LIMIT 0")
    return [a.name for a in stmt.get_attributes()]


def _cols(names: list[str]) -> str:
    return ", ".join('"' + n.replace('"', '""') + '"' for n in names)


async def assert_dataset_exact(
    src: asyncpg.Connection,
    dst: asyncpg.Connection,
    source_id: str,
    dataset: str,
    source_query: str,
    order: str = "1",
) -> int:
    """The destination's rows of this source are the source's rows: same text, same bytes."""
    names = await column_names(src, source_query)
    cols = _cols(names)
    src_sql = f"SELECT {cols} FROM ({source_query}) AS q ORDER BY {order}"
    literal = "'" + source_id.replace("'", "''") + "'"
    dst_sql = f'SELECT {cols} FROM {SCHEMA}."{dataset}" WHERE {KEY} = {literal} ORDER BY {order}'
    for conn in (src, dst):
        await conn.execute("SET TimeZone = 'UTC'")
    src_rows = [r[0] for r in await src.fetch(f"SELECT ROW({cols})::text FROM ({src_sql}) AS s")]
    dst_rows = [r[0] for r in await dst.fetch(f"SELECT ROW({cols})::text FROM ({dst_sql}) AS s")]
    assert len(src_rows) == len(dst_rows), (
        f"{dataset}: {len(src_rows)} rows at the source, {len(dst_rows)} landed"
    )
    for i, (a, b) in enumerate(zip(src_rows, dst_rows, strict=True)):
        assert a == b, f"{dataset} row {i} differs:\n source: {a[:300]}\n   dest: {b[:300]}"
    assert await binary_copy(src, src_sql) == await binary_copy(dst, dst_sql), (
        f"{dataset}: binary representations differ"
    )
    return len(src_rows)


async def fingerprint(
    conn: asyncpg.Connection, dataset: str, source_id: str | None = None
) -> tuple:
    """(rows, md5 of every row as text): equal fingerprints, equal contents. The row hashes
    and source fingerprints syncd keeps beside each row (`syncd_row_hash`, `syncd_src_fp`) are
    not contents."""
    where = f"WHERE {KEY} = $1" if source_id is not None else ""
    args = [source_id] if source_id is not None else []
    names = await conn.fetchval(
        "SELECT string_agg(quote_ident(attname), ', ' ORDER BY attnum) FROM pg_attribute "
        "WHERE attrelid = $1::regclass AND attnum > 0 AND NOT attisdropped "
        "AND attname NOT IN ('syncd_row_hash', 'syncd_src_fp')",
        f'{SCHEMA}."{dataset}"',
    )
    row = f"ROW({names})::text"
    return tuple(
        await conn.fetchrow(
            f"SELECT count(*), md5(coalesce(string_agg({row}, '|' ORDER BY {row}), '')) "
            f'FROM {SCHEMA}."{dataset}" AS t {where}',
            *args,
        )
    )


async def relations(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """Every relation syncd owns in the destination (tables, partitions, indexes, TOAST)."""
    rows = await conn.fetch(
        """
        SELECT n.nspname, c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('syncd', 'syncd_data')
        UNION ALL
        SELECT 'toast of', c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN pg_class t ON t.oid = c.reltoastrelid WHERE n.nspname = 'syncd_data'
        ORDER BY 1, 2
        """
    )
    return [(r[0], r[1]) for r in rows]


def config_problems(text: str, base: Path | None = None) -> list[str]:
    """The one-line problems a config text is refused with (file named `syncd.yaml`)."""
    import textwrap

    import pytest

    from syncd import config
    from syncd.config import ConfigError

    with pytest.raises(ConfigError) as info:
        config.loads(textwrap.dedent(text), base=base, file="syncd.yaml")
    return [str(p) for p in info.value.problems]


def tls_cluster(base: Path, ca, *, listen: str, auth: str, names: tuple[str, ...]):
    """Debian's PostgreSQL 15 (built with OpenSSL) accepting TLS only, on `listen`, from
    127.0.0.0/8 with `auth`, its certificate from `ca` naming `names`; started. Skips without
    it (.ci/run installs it)."""
    import pytest

    bin_dir = embedded.debian_bin_dir(15)
    if bin_dir is None:
        pytest.skip("no PostgreSQL with OpenSSL here (Debian's postgresql-15)")
    cluster = embedded.Cluster.create(
        bin_dir,
        base,
        settings={**embedded.FAST_SETTINGS, "listen_addresses": listen},
        hba=[
            "local all all trust",
            "hostnossl all all 0.0.0.0/0 reject",
            f"hostssl all all 127.0.0.0/8 {auth}",
        ],
        start=False,
    )
    cert = ca.issue_cert(*names)
    cluster.install_file("server.crt", b"".join(b.bytes() for b in cert.cert_chain_pems), 0o644)
    cluster.install_file("server.key", cert.private_key_pem.bytes(), 0o600)
    cluster.configure(
        ssl="on",
        ssl_cert_file=str(cluster.data_dir / "server.crt"),
        ssl_key_file=str(cluster.data_dir / "server.key"),
    )
    cluster.start()
    return cluster


@contextlib.asynccontextmanager
async def scratch_database(
    cluster: embedded.Cluster, name: str, schema_sql: str
) -> AsyncIterator[str]:
    """A database made afresh on `cluster` with `schema_sql` run in it,
    dropped afterwards; its DSN."""
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name}")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    conn = await asyncpg.connect(cluster.dsn(name))
    try:
        await conn.execute(schema_sql)
    finally:
        await conn.close()
    try:
        yield cluster.dsn(name)
    finally:
        admin = await asyncpg.connect(cluster.dsn())
        try:
            await admin.execute(f"DROP DATABASE {name} WITH (FORCE)")
        finally:
            await admin.close()
