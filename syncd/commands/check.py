"""`syncd check --online`: before onboarding a municipality (or hundreds), ask each one what a
sync would meet, and the destination whether it can hold what syncd will land.

Per source, in the same read-only snapshot session a sync opens (`SourceSession`), nothing ever
written: reachable and how fast, authenticated, TLS mode and whether the certificate was
verified, server version, whether the role could write (privileges only, asked inside the
read-only transaction, which is rolled back), every dataset described as a sync would (the
variant its probes choose, columns and types) with the planner's row estimate. Catalog queries
stay valid on PostgreSQL 9.6, the PEC's bundled server.

Per destination: version (hash partitioning needs 12), the rights syncd needs, and whether the
shared lock table suits the layout (docs/configure/many-municipalities.md, "Sizing the lock table").

A source behind a bastion shows each hop on the way: bastion reachable, host key matches,
authenticated, forward accepted (a reverse tunnel that is down fails here: "municipal tunnel
not connected"), database answered, TLS verified. The bastions' connections are shared by
their sources, as in a sync.

Sources are checked `concurrency.sources` at a time and `per_host` per server; every step has
its own timeout. Exit 0 when everything passes (warnings allowed), 1 when anything fails.
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, TextIO

import anyio
import asyncpg

from syncd.commands.checkreport import as_json_document, report
from syncd.commands.checkresult import (
    DEFAULT_SSLMODE,
    DatasetCheck,
    DestinationCheck,
    SourceCheck,
)
from syncd.config import Config, Dataset, DifferMode, Source
from syncd.config.values import is_loopback
from syncd.engine import rowdiff
from syncd.engine.connect import connect_password
from syncd.engine.errors import Failure, Kind, Side, classify
from syncd.engine.limits import Limits
from syncd.engine.shape import Shape
from syncd.engine.source import SourceSession
from syncd.engine.tunnel import HOPS, TunnelError, Tunnels

CHECK_TIMEOUT = 30.0  # seconds per check, by default
DESTINATION_MIN_VERSION = 12  # hash partitioning of the dataset tables
FIT_MIN = 10  # whole-country queries that must fit in the lock table beside syncd


# -- sources -------------------------------------------------------------------------------------

_TLS_SQL = "SELECT ssl, version FROM pg_catalog.pg_stat_ssl WHERE pid = pg_catalog.pg_backend_pid()"

_ROLE_SQL = """
SELECT r.rolsuper,
       pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE') AS create_db,
       EXISTS (SELECT 1 FROM pg_catalog.pg_namespace n
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema')
                 AND n.nspname NOT LIKE 'pg\\_%'
                 AND pg_catalog.has_schema_privilege(n.oid, 'CREATE')) AS create_schema,
       (SELECT pg_catalog.array_agg(q.name ORDER BY q.name) FROM (
            SELECT n.nspname || '.' || c.relname AS name
            FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'p')
              AND n.nspname NOT IN ('pg_catalog', 'information_schema')
              AND n.nspname NOT LIKE 'pg\\_%'
              AND pg_catalog.has_table_privilege(c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE')
            LIMIT 6) q) AS writable
FROM pg_catalog.pg_roles r WHERE r.rolname = current_user
"""

_RELTUPLES_SQL = """
SELECT c.reltuples::float8 FROM pg_catalog.pg_class c
JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2
"""


def tls_mode(source: Source) -> str:
    return dict(source.dsn.params).get("sslmode") or os.environ.get("PGSSLMODE") or DEFAULT_SSLMODE


DATABASE_ANSWERED, TLS_VERIFIED = "database answered", "TLS verified"


def _hops(result: SourceCheck, exc: BaseException | None, failure: Failure | None) -> None:
    """Each hop of a tunnelled source: those before the failing one passed."""
    names = [*HOPS, DATABASE_ANSWERED, TLS_VERIFIED]
    if exc is None:
        failed_at = len(names)
    elif isinstance(exc, TunnelError):
        failed_at = names.index(exc.hop)
    elif failure is not None and failure.kind == Kind.TLS:
        failed_at = names.index(TLS_VERIFIED)
    elif failure is not None and failure.sqlstate is not None:
        failed_at = len(names)  # the database answered: with a refusal, shown as an error
    else:
        failed_at = names.index(DATABASE_ANSWERED)
    result.hops = {
        name: "ok" if i < failed_at else "FAILED" if i == failed_at else "-"
        for i, name in enumerate(names)
    }


async def check_source(
    source: Source,
    datasets: list[Dataset],
    config: Config,
    timeout: float,
    tunnels: Tunnels | None = None,
) -> SourceCheck:
    result = SourceCheck(source.id, source.name, source.dsn.host_key, tls_mode=tls_mode(source))
    if source.bastion is not None:
        result.bastion = source.bastion.name
    started = time.monotonic()
    try:
        with anyio.fail_after(2 * config.timeouts.connect + 1):  # the bastion, then the database
            session = await SourceSession.open(source, config.timeouts, tunnels)
    except Exception as exc:
        failure = classify(exc, Side.SOURCE)
        state = failure.sqlstate or ""
        if state.startswith("28") or state == "3D000":  # reached, but refused us
            result.reachable, result.authenticated = True, False
        result.errors.append(failure.reason)
        result.error_kind = str(failure.kind)
        if source.bastion is not None:
            _hops(result, exc, failure)
        return result
    result.connect_ms = round((time.monotonic() - started) * 1000, 1)
    result.reachable = result.authenticated = True
    conn = session.conn
    try:
        # the session's transaction is READ ONLY and is rolled back by close(): nothing written
        await conn.execute(
            "SELECT pg_catalog.set_config('statement_timeout', $1, true)", str(int(timeout * 1000))
        )
        with anyio.fail_after(timeout):
            t0 = time.monotonic()
            await conn.fetchval("SELECT 1")
            result.round_trip_ms = round((time.monotonic() - t0) * 1000, 1)
            result.server_version = await conn.fetchval("SHOW server_version")
            tls = await conn.fetchrow(_TLS_SQL)
        if tls is not None and tls["ssl"]:
            result.tls = tls["version"] or "TLS"
            result.tls_verified = {"verify-full": "host and CA", "verify-ca": "CA only"}.get(
                result.tls_mode, "no"
            )
        if source.bastion is not None and result.tls is not None and is_loopback(source.dsn.host):
            result.notes.append(tls_in_tunnel_note(source.bastion.name))
        if source.bastion is not None:
            _hops(result, None, None)
            if result.tls_verified == "no":  # not asked for: not a failure, not a pass
                result.hops[TLS_VERIFIED] = f"not asked (sslmode={result.tls_mode})"
        await _check_role(conn, result, timeout)
        for dataset in datasets:
            result.datasets.append(await _check_dataset(session, dataset, timeout))
    except Exception as exc:
        result.errors.append(classify(exc, Side.SOURCE).reason)
    finally:
        with anyio.CancelScope(shield=True):
            await session.close()
    return result


def tls_in_tunnel_note(bastion: str) -> str:
    return (
        f"TLS inside bastion {bastion}'s tunnel, which ends on the database's own host: TLS "
        "output does not compress, so SSH compression saves nothing on this source; "
        "sslmode=disable would put about a third of the bytes on the link, still encrypted by "
        "SSH (docs/configure/bastions.md, Compression)"
    )


async def _check_role(conn: asyncpg.Connection, result: SourceCheck, timeout: float) -> None:
    with anyio.fail_after(timeout):
        row = await _one_row(conn, _ROLE_SQL)
    could = []
    if row["rolsuper"]:
        could.append("is a superuser")
    if row["create_db"]:
        could.append("may CREATE schemas in the database")
    if row["create_schema"]:
        could.append(
            "may CREATE tables in a schema (before PostgreSQL 15 everyone may in public: "
            "REVOKE CREATE ON SCHEMA public FROM PUBLIC)"
        )
    if row["writable"]:
        could.append(f"may write to tables ({', '.join(row['writable'][:5])}...)")
    result.read_only = not could
    if could:
        result.warnings.append("role is not read-only: it " + "; ".join(could))


async def _check_dataset(session: SourceSession, dataset: Dataset, timeout: float) -> DatasetCheck:
    check = DatasetCheck(dataset.name)
    try:
        async with session.savepoint():
            with anyio.fail_after(timeout):
                shape = await session.describe(dataset)
                check.variant = shape.variant
                check.columns = [{"name": c.name, "type": c.type} for c in shape.columns]
                check.estimated_rows = await _estimate(session.conn, shape)
        check.ok = True
    except Exception as exc:
        check.error = classify(exc, Side.SOURCE).reason
    return check


async def _estimate(conn: asyncpg.Connection, shape: Shape) -> int | None:
    if shape.table is not None:
        tuples = await conn.fetchval(_RELTUPLES_SQL, *shape.table)
        if tuples is not None and tuples >= 0:  # -1: never analyzed (PostgreSQL 14+)
            return int(tuples)
    # a query, a view, or a table never analyzed: the planner's estimate (EXPLAIN runs nothing)
    plan = await conn.fetchval(f"EXPLAIN (FORMAT JSON) {shape.select}")
    plan = json.loads(plan) if isinstance(plan, str) else plan
    return int(plan[0]["Plan"]["Plan Rows"])


# -- destination ---------------------------------------------------------------------------------

_LOCKS_SQL = """
SELECT current_setting('max_locks_per_transaction')::int AS max_locks,
       current_setting('max_connections')::int AS max_connections,
       current_setting('max_prepared_transactions')::int AS max_prepared,
       current_setting('max_parallel_workers_per_gather')::int AS parallel_workers
"""

_RIGHTS_SQL = """
SELECT s.name, n.oid IS NOT NULL AS exists,
       n.oid IS NOT NULL AND pg_catalog.has_schema_privilege(n.oid, 'CREATE')
                         AND pg_catalog.has_schema_privilege(n.oid, 'USAGE') AS usable
FROM unnest($1::text[]) AS s(name) LEFT JOIN pg_catalog.pg_namespace n ON n.nspname = s.name
"""

_INDEXES_SQL = """
SELECT coalesce(max(k.n), 0) FROM (
    SELECT count(i.indexrelid) AS n FROM pg_catalog.pg_class c
    JOIN pg_catalog.pg_namespace ns ON ns.oid = c.relnamespace
    LEFT JOIN pg_catalog.pg_index i ON i.indrelid = c.oid
    WHERE ns.nspname = $1 AND c.relname = ANY($2::text[]) GROUP BY c.oid) k
"""


def lock_budget(
    max_locks: int,
    max_connections: int,
    max_prepared: int,
    parallel_workers: int,
    buckets: int,
    indexes: int,
    datasets: int,
    writers: int,
) -> dict[str, Any]:
    """The shared lock table against what the layout asks of it
    (docs/configure/many-municipalities.md: "Sizing the lock table"). A join of two datasets locks, in each backend that runs it, both parents and
    every bucket and its indexes; each parallel worker takes the same locks again."""
    slots = max_locks * (max_connections + max_prepared)
    per_query = 2 * (1 + buckets * (1 + indexes)) * (1 + parallel_workers)
    syncd = writers * datasets * (1 + 2 + indexes)
    fit = max(slots - syncd, 0) // per_query if per_query else 0
    return {
        "max_locks_per_transaction": max_locks,
        "max_connections": max_connections,
        "max_prepared_transactions": max_prepared,
        "max_parallel_workers_per_gather": parallel_workers,
        "buckets": buckets,
        "indexes_per_dataset": indexes,
        "lock_slots": slots,
        "locks_per_country_join": per_query,
        "locks_syncd_peak": syncd,
        "country_joins_that_fit": fit,
    }


async def check_destination(config: Config, timeout: float) -> DestinationCheck:
    dest = config.destination
    result = DestinationCheck(dest.dsn.host_key)
    try:
        conn = await asyncpg.connect(
            dest.dsn.raw,
            password=connect_password(dest.password_file),
            timeout=config.timeouts.connect,
            statement_cache_size=0,
            server_settings={"application_name": "syncd check"},
        )
    except Exception as exc:
        result.errors.append(classify(exc, Side.DESTINATION).reason)
        return result
    result.reachable = True
    try:
        async with conn.transaction(readonly=True):  # asks only; rolled back below
            with anyio.fail_after(timeout):
                result.server_version = await conn.fetchval("SHOW server_version")
                if conn.get_server_version().major < DESTINATION_MIN_VERSION:
                    result.errors.append(
                        f"PostgreSQL {result.server_version}: syncd needs 12 or newer "
                        "(hash-partitioned dataset tables)"
                    )
                await _check_rights(conn, config, result)
                row = await _one_row(conn, _LOCKS_SQL)
                names = [d.name for d in config.datasets]
                indexes = await conn.fetchval(_INDEXES_SQL, dest.schema, names)
            budget = lock_budget(
                row["max_locks"],
                row["max_connections"],
                row["max_prepared"],
                row["parallel_workers"],
                dest.buckets,
                int(indexes),
                len(names),
                config.concurrency.writers,
            )
            result.locks = budget
            if budget["country_joins_that_fit"] < FIT_MIN:
                result.warnings.append(
                    f"lock table is tight: {budget['lock_slots']} slots "
                    f"(max_locks_per_transaction {budget['max_locks_per_transaction']} x "
                    f"(max_connections + max_prepared_transactions)); a whole-country join of "
                    f"two datasets takes ~{budget['locks_per_country_join']} with its parallel "
                    f"workers and syncd up to {budget['locks_syncd_peak']}: only "
                    f"{budget['country_joins_that_fit']} such queries fit at once. Raise "
                    "max_locks_per_transaction (restart needed) or lower destination.buckets"
                )
            raise _Rollback
    except _Rollback:
        pass
    except Exception as exc:
        result.errors.append(classify(exc, Side.DESTINATION).reason)
    finally:
        await conn.close(timeout=5)
    return result


class _Rollback(Exception):
    pass


async def _one_row(conn: asyncpg.Connection, query: str) -> asyncpg.Record:
    """The row of a catalog query that always returns one."""
    row = await conn.fetchrow(query)
    if row is None:
        raise LookupError(f"no row from: {' '.join(query.split())[:60]}")
    return row


async def _check_rights(conn: asyncpg.Connection, config: Config, result: DestinationCheck) -> None:
    create_db = await conn.fetchval(
        "SELECT pg_catalog.has_database_privilege(pg_catalog.current_database(), 'CREATE')"
    )
    rows = await conn.fetch(_RIGHTS_SQL, ["syncd", config.destination.schema])
    missing = [
        r["name"] if not r["exists"] else f"{r['name']} (exists, no CREATE/USAGE)"
        for r in rows
        if not r["usable"] and not (create_db and not r["exists"])
    ]
    if missing:
        result.rights = "missing"
        result.errors.append(
            "syncd needs CREATE on the database, or schemas it may use and create in: "
            + ", ".join(missing)
        )
    else:
        result.rights = "CREATE on database" if create_db else "schemas usable"


# -- the whole check -----------------------------------------------------------------------------


async def run_check(
    config: Config,
    out: TextIO = sys.stdout,
    as_json: bool = False,
    timeout: float = CHECK_TIMEOUT,
) -> int:
    sources: list[SourceCheck | None] = [None] * len(config.sources)
    limits = Limits(config.concurrency)
    datasets = list(config.datasets)
    tunnels = Tunnels()

    async def one(i: int, source: Source) -> None:
        async with limits.source_slot(source.host_key):
            sources[i] = await check_source(source, datasets, config, timeout, tunnels)

    destination: list[DestinationCheck] = []

    async def dest() -> None:
        destination.append(await check_destination(config, timeout))

    try:
        async with anyio.create_task_group() as tg:
            tg.start_soon(dest)
            for i, source in enumerate(config.sources):
                tg.start_soon(one, i, source)
    finally:
        with anyio.CancelScope(shield=True):
            await tunnels.close()
    checked = [s for s in sources if s is not None]
    differ = rowdiff.choose(config.differ)
    differ_ok = differ.compiled or config.differ is not DifferMode.COMPILED
    ok = all(s.ok for s in checked) and destination[0].ok and differ_ok
    if as_json:
        document = as_json_document(checked, destination[0], ok)
        document["differ"] = {"compiled": differ.compiled, "reason": differ.reason, "ok": differ_ok}
        out.write(json.dumps(document, ensure_ascii=False, indent=2))
        out.write("\n")
    else:
        out.write(report(checked, destination[0]))
        verdict = "ok" if differ.compiled else "warning" if differ_ok else "FAIL"
        out.write(f"row differ: {verdict}: {differ.describe()}\n")
    return 0 if ok else 1
