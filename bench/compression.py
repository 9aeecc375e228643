"""(s) SSH compression on PEC-shaped rows: the bytes one binary COPY of a table puts on the wire,
counted by the fault proxy (tests/support/faultproxy.py) on the link, with compression and
without. Byte counts, not times: they do not depend on the machine or its load.

Three ways across the municipal link, each against the same table:

- **plain**: the COPY over TCP, no SSH (what the table costs as PostgreSQL sends it);
- **bastion**: syncd's side, asyncssh to a real OpenSSH sshd (syncd.lab.sshd) that reaches the
  database, `compression: true` vs `false` (what crosses the link is what the sshd sends);
- **kit**: the municipal side, OpenSSH's `ssh -R` with the kit's ssh_config (deploy/tunnel/)
  to the sshd, `Compression yes` (the kit) vs `-o Compression=no` (what crosses the link is what
  the municipality's ssh sends).

Where a PostgreSQL built with OpenSSL is at hand (Debian's postgresql-15), the bastion is also
measured with `sslmode=require` inside the compressed tunnel: TLS output is random-looking and
does not compress, which is why docs/configure/bastions.md asks for `sslmode=disable` when the
tunnel ends on the database's own host.

    python -m bench.compression [--rows 300000] [--table tb_fat_atendimento_individual]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import asyncpg

from syncd import config as config_module
from syncd.engine.tunnel import Tunnels
from syncd.lab import embedded, pec
from syncd.lab.sshd import Sshd, free_port

from .common import ROOT, table
from tests.support.faultproxy import FaultProxy

KIT_SSH_CONFIG = ROOT / "deploy" / "tunnel" / "ssh_config"
TABLE = "tb_fat_atendimento_individual"
Connector = Callable[[], Awaitable[asyncpg.Connection]]


async def copy_size(conn: asyncpg.Connection, name: str) -> int:
    size = 0

    async def sink(chunk: bytes) -> None:
        nonlocal size
        size += len(chunk)

    await conn.copy_from_table(name, output=sink, format="binary")
    return size


async def _count(proxy: FaultProxy, direction: str, connect: Connector, name: str) -> int:
    """Bytes `direction` on the proxy's one connection while a COPY of `name` runs on a
    session `connect` opens (its login and the handshakes before it not counted)."""
    conn = await connect()
    try:
        [wire] = proxy.conns
        before = wire.sent[direction]
        await copy_size(conn, name)
        return wire.sent[direction] - before
    finally:
        await conn.close()


def _no_verify() -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # sslmode=require: encrypted, nothing verified
    return context


async def plain(cluster: embedded.Cluster, name: str) -> int:
    proxy = await FaultProxy("127.0.0.1", cluster.port).start()
    try:
        return await _count(
            proxy,
            "down",
            lambda: asyncpg.connect(
                host="127.0.0.1", port=proxy.port, user="postgres", database="esus", ssl=False
            ),
            name,
        )
    finally:
        await proxy.stop()


async def bastion(
    sshd: Sshd, cluster: embedded.Cluster, name: str, compression: bool, tls: bool
) -> tuple[int, str]:
    """(bytes the sshd sent across the link, the compression negotiated)."""
    proxy = await FaultProxy("127.0.0.1", sshd.port).start()
    entry = json.dumps(sshd.bastion(proxy.port, compression=compression))
    config = config_module.loads(
        "destination: {dsn: 'postgresql://x@127.0.0.1:1/x'}\n"
        f"bastions: {{hub: {entry}}}\n"
        f"sources: [{{id: '1', dsn: 'postgresql://postgres@127.0.0.1:{cluster.port}/esus', "
        "ssh_tunnel: {bastion: hub}}]\ndatasets: [{name: a, table: t}]\n"
    )
    [source] = config.sources
    assert source.bastion is not None
    tunnels = Tunnels()
    try:
        link = tunnels.link(source.bastion)
        port = 0

        async def connect() -> asyncpg.Connection:
            nonlocal port
            port = await link.open(source.dsn.host, source.dsn.port, 30)
            return await asyncpg.connect(
                host="127.0.0.1",
                port=port,
                user="postgres",
                database="esus",
                ssl=_no_verify() if tls else False,
            )

        crossed = await _count(proxy, "down", connect, name)
        return crossed, link.compression or "?"
    finally:
        await tunnels.close()
        await proxy.stop()


def _start(command: list[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


@contextlib.asynccontextmanager
async def reverse_tunnel(
    sshd: Sshd, cluster: embedded.Cluster, directory: Path, compression: bool
) -> AsyncIterator[tuple[FaultProxy, int]]:
    """The kit's `ssh -R` (its ssh_config) through a proxy to the sshd: (the proxy, the port the
    sshd holds for it)."""
    proxy = await FaultProxy("127.0.0.1", sshd.port).start()
    listen = free_port()
    known = sshd.known_hosts(directory / f"known_hosts-{proxy.port}", proxy.port)
    command = [
        "ssh", "-N", "-T", "-F", str(KIT_SSH_CONFIG),
        *([] if compression else ["-o", "Compression=no"]),
        "-o", f"UserKnownHostsFile={known}",
        "-i", str(sshd.client_key_file),
        "-p", str(proxy.port),
        "-R", f"127.0.0.1:{listen}:127.0.0.1:{cluster.port}",
        f"{sshd.user}@127.0.0.1",
    ]  # fmt: skip
    tunnel = _start(command)
    try:
        for _ in range(600):
            if tunnel.poll() is not None:
                raise SystemExit(f"ssh -R exited: {tunnel.stderr.read()!r}")  # type: ignore[union-attr]
            try:
                _, writer = await asyncio.open_connection("127.0.0.1", listen)
            except OSError:
                await asyncio.sleep(0.05)
                continue
            writer.close()
            break
        yield proxy, listen
    finally:
        tunnel.terminate()
        tunnel.wait(10)
        await proxy.stop()


async def kit(
    sshd: Sshd, cluster: embedded.Cluster, directory: Path, name: str, compression: bool
) -> int:
    async with reverse_tunnel(sshd, cluster, directory, compression) as (proxy, listen):
        return await _count(
            proxy,
            "up",  # the municipality's ssh sends the rows up to the rendezvous host
            lambda: asyncpg.connect(
                host="127.0.0.1", port=listen, user="postgres", database="esus", ssl=False
            ),
            name,
        )


def _tls_cluster(base: Path) -> embedded.Cluster | None:
    """Debian's PostgreSQL 15 with TLS on (plain connections still allowed), or None."""
    bin_dir = embedded.debian_bin_dir(15)
    if bin_dir is None:
        return None
    import trustme

    cluster = embedded.Cluster.create(bin_dir, base / "municipal-tls", start=False)
    cert = trustme.CA().issue_cert("localhost", "127.0.0.1")
    cluster.install_file("server.crt", b"".join(b.bytes() for b in cert.cert_chain_pems), 0o644)
    cluster.install_file("server.key", cert.private_key_pem.bytes(), 0o600)
    cluster.configure(
        ssl="on",
        ssl_cert_file=str(cluster.data_dir / "server.crt"),
        ssl_key_file=str(cluster.data_dir / "server.key"),
    )
    cluster.start()
    return cluster


async def prepare(cluster: embedded.Cluster, rows: int, name: str) -> int:
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute("CREATE DATABASE esus")
    finally:
        await admin.close()
    conn = await asyncpg.connect(cluster.dsn("esus"))
    try:
        # three consultations per citizen; a citizen table of rows/3 alongside, as in PEC
        await pec.create_municipality(conn, pec.Municipality("351570", -(-rows // 3)))
        if name == TABLE:
            await conn.execute(f"DELETE FROM {TABLE} WHERE co_seq_fat_atd_ind > $1", rows)
        await conn.execute("VACUUM ANALYZE")
        return int(await conn.fetchval(f"SELECT count(*) FROM {name}"))
    finally:
        await conn.close()


async def measure(base: Path, rows: int, name: str) -> dict[str, Any]:
    cluster = _tls_cluster(base) or embedded.Cluster.create(
        embedded.wheel_bin_dir(), base / "municipal"
    )
    sshd = Sshd(base / "sshd").start()
    try:
        count = await prepare(cluster, rows, name)
        conn = await asyncpg.connect(cluster.dsn("esus"))
        try:
            copied = await copy_size(conn, name)
        finally:
            await conn.close()
        result: dict[str, Any] = {"table": name, "rows": count, "copy_bytes": copied}
        result["plain"] = await plain(cluster, name)
        for on in (True, False):
            crossed, negotiated = await bastion(sshd, cluster, name, on, tls=False)
            result[f"bastion_{'on' if on else 'off'}"] = crossed
            result[f"bastion_{'on' if on else 'off'}_negotiated"] = negotiated
            result[f"kit_{'on' if on else 'off'}"] = await kit(sshd, cluster, base, name, on)
        if cluster.data_dir.name == "municipal-tls":
            crossed, _ = await bastion(sshd, cluster, name, True, tls=True)
            result["bastion_on_tls"] = crossed
        return result
    finally:
        sshd.stop()
        cluster.destroy()


def report(r: dict[str, Any]) -> str:
    copy = r["copy_bytes"]

    def row(what: str, key: str) -> list[str]:
        n = r[key]
        return [what, f"{n / 1e6:.1f} MB", f"{n / copy:.2f}", f"{r['bastion_off'] / n:.1f}x"]

    rows = [
        row("plain TCP (no SSH)", "plain"),
        row("bastion, compression off (asyncssh)", "bastion_off"),
        row(f"bastion, compression on ({r['bastion_on_negotiated']})", "bastion_on"),
        row("reverse-tunnel kit, Compression=no (ssh -R)", "kit_off"),
        row("reverse-tunnel kit, Compression yes (ssh -R)", "kit_on"),
    ]
    if "bastion_on_tls" in r:
        rows.append(row("bastion, compression on, sslmode=require inside", "bastion_on_tls"))
    return (
        f"(s) SSH compression: one binary COPY of {r['table']} ({r['rows']:,} rows, "
        f"{copy / 1e6:.1f} MB as PostgreSQL sends it), bytes on the municipal link\n"
        + table(["path", "bytes on the link", "of the COPY", "smaller than SSH uncompressed"], rows)
    )


def run(base: Path, rows: int, name: str = TABLE) -> dict[str, Any]:
    return asyncio.run(measure(base, rows, name))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.compression")
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--table", default=TABLE, choices=pec.PEC_TABLES)
    args = parser.parse_args()
    base = embedded.make_base_dir("syncd-bench-compression-")
    try:
        print(report(run(base, args.rows, args.table)))
    finally:
        import shutil

        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    main()
