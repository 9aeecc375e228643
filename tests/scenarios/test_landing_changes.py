"""Writing only what changed, on real PostgreSQL: a pass writes only what changed (nothing when
nothing did), rows are a multiset, a changed shape rewrites, a source column may be named like
a keyword, and DDL runs before the pass holds any dataset table. `syncd verify` after hand
changes is test_compare.py; tables without row hashes gaining them, test_upgrade.py."""

from __future__ import annotations

import asyncpg

from syncd.commands.verify import run_verify

from tests.conftest import TABLE_DATASETS, DestDb
from tests.support.helpers import assert_dataset_exact, run_pass

CIDADAOS = TABLE_DATASETS[0]
SCHEMA = "syncd_data"
TABLE = "public.tb_fat_cidadao_pec"
DUPS = {"name": "repetidas", "table": "public.repetidas"}


async def last_writes(dst: asyncpg.Connection, source_id: str) -> dict[str, tuple]:
    rows = await dst.fetch(
        "SELECT DISTINCT ON (dataset) dataset, status, rows, inserted, deleted, mode "
        "FROM syncd.ledger WHERE source_id = $1 ORDER BY dataset, pass_id DESC",
        source_id,
    )
    return {r["dataset"]: tuple(r)[1:] for r in rows}


async def ctids(dst: asyncpg.Connection, dataset: str) -> list[str]:
    return [r[0] for r in await dst.fetch(f"SELECT ctid::text FROM {SCHEMA}.{dataset} ORDER BY 1")]


async def verify(config) -> tuple[int, str]:
    import io

    out, err = io.StringIO(), io.StringIO()
    code = await run_verify(config, out, err)
    return code, out.getvalue() + err.getvalue()


async def test_an_unchanged_municipality_writes_nothing(make_sources, dest: DestDb, write_config):
    (src,) = await make_sources(1, citizens=300)
    _, config = write_config(dest, [src], [CIDADAOS])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    dst = await dest.connect()
    try:
        before = await ctids(dst, "cidadaos")
        await dst.execute("CHECKPOINT")
        lsn = await dst.fetchval("SELECT pg_current_wal_lsn()")
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        wal = await dst.fetchval("SELECT pg_current_wal_lsn() - $1::pg_lsn", lsn)
        assert await ctids(dst, "cidadaos") == before  # not one row version written
        status, rows, inserted, deleted, mode = (await last_writes(dst, src.id))["cidadaos"]
        assert (status, rows, inserted, deleted, mode) == ("ok", 300, 0, 0, "snapshot")
        # the ledger's own rows (and their pages' first images after the checkpoint) only
        assert wal < 96 * 1024, wal
    finally:
        await dst.close()


async def test_a_pass_writes_about_what_changed(make_sources, dest: DestDb, write_config):
    (src,) = await make_sources(1, citizens=400)
    _, config = write_config(dest, [src], [CIDADAOS])
    assert (await run_pass(config))[0] == 0
    admin = await asyncpg.connect(src.admin_dsn)
    dst = await dest.connect()
    try:
        await admin.execute(
            f"UPDATE {TABLE} SET no_cidadao = coalesce(no_cidadao, '') || ' (atualizado)' "
            "WHERE co_seq_fat_cidadao_pec % 50 = 1"  # 8 rows
        )
        await admin.execute(f"DELETE FROM {TABLE} WHERE co_seq_fat_cidadao_pec % 100 = 7")  # 4
        await admin.execute(
            f"CREATE TEMP TABLE novos AS SELECT * FROM {TABLE} WHERE co_seq_fat_cidadao_pec <= 3;"
            "UPDATE novos SET co_seq_fat_cidadao_pec = co_seq_fat_cidadao_pec + 100000;"
            f"INSERT INTO {TABLE} SELECT * FROM novos"
        )  # 3 new rows
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        status, rows, inserted, deleted, _ = (await last_writes(dst, src.id))["cidadaos"]
        # updated rows: the new version in, the old out
        assert (status, rows) == ("ok", 399)
        assert (inserted, deleted) == (8 + 3, 8 + 4)
        await assert_dataset_exact(admin, dst, src.id, "cidadaos", f"SELECT * FROM {TABLE}")
        assert (await run_pass(config))[0] == 0
        assert (await last_writes(dst, src.id))["cidadaos"][2:4] == (0, 0)
        await assert_dataset_exact(admin, dst, src.id, "cidadaos", f"SELECT * FROM {TABLE}")
        code, text = await verify(config)
        assert code == 0 and "1 of 1 datasets equal" in text, text
    finally:
        await admin.close()
        await dst.close()


async def test_identical_rows_are_a_multiset(make_sources, dest: DestDb, write_config):
    (src,) = await make_sources(1)
    admin = await asyncpg.connect(src.admin_dsn)
    dst = await dest.connect()
    try:
        await admin.execute(
            "CREATE TABLE repetidas (a int, b text); GRANT SELECT ON repetidas TO PUBLIC;"
            "INSERT INTO repetidas VALUES (1, 'x'), (1, 'x'), (1, 'x'), (2, 'y'), (NULL, NULL)"
        )
        _, config = write_config(dest, [src], [DUPS])
        for change in (
            "DELETE FROM repetidas WHERE ctid = (SELECT min(ctid) FROM repetidas WHERE a = 1)",
            "INSERT INTO repetidas VALUES (2, 'y'), (NULL, NULL)",
            "DELETE FROM repetidas WHERE a = 1",
            None,
        ):
            code, out, err = await run_pass(config)
            assert code == 0, out + err
            await assert_dataset_exact(admin, dst, src.id, "repetidas", "SELECT * FROM repetidas")
            if change:
                await admin.execute(change)
    finally:
        await admin.close()
        await dst.close()


async def test_a_column_added_at_the_source_rewrites_with_the_new_shape(
    make_sources, dest: DestDb, write_config
):
    (src,) = await make_sources(1, citizens=100)
    _, config = write_config(dest, [src], [CIDADAOS])
    assert (await run_pass(config))[0] == 0
    admin = await asyncpg.connect(src.admin_dsn)
    dst = await dest.connect()
    try:
        await admin.execute(f"ALTER TABLE {TABLE} ADD COLUMN nu_novo integer DEFAULT 7")
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        _, rows, inserted, deleted, _ = (await last_writes(dst, src.id))["cidadaos"]
        assert (rows, inserted, deleted) == (100, 100, 100)  # every row has a new field
        await assert_dataset_exact(admin, dst, src.id, "cidadaos", f"SELECT * FROM {TABLE}")
        assert (await run_pass(config))[0] == 0
        assert (await last_writes(dst, src.id))["cidadaos"][2:4] == (0, 0)
    finally:
        await admin.close()
        await dst.close()


async def test_a_source_column_named_like_a_keyword(make_sources, dest: DestDb, write_config):
    (src,) = await make_sources(1, citizens=50)
    _, config = write_config(
        dest, [src], [CIDADAOS], destination={"dsn": dest.dsn, "source_column": "order"}
    )
    for _ in range(2):
        code, out, err = await run_pass(config)
        assert code == 0, out + err
    dst = await dest.connect()
    try:
        assert (
            await dst.fetchval(f'SELECT count(*) FROM {SCHEMA}.cidadaos WHERE "order" = $1', src.id)
            == 50
        )
    finally:
        await dst.close()


async def test_ddl_runs_before_the_pass_holds_any_dataset_table(
    make_sources, dest: DestDb, write_config
):
    """A column a newer PEC added is added to its dataset table before the municipality's
    landing opens: an event trigger on the destination counts, at each of syncd's DDL, the
    dataset tables a syncd session holds for writing (the landing would hold `cidadaos`, the
    first dataset, changed in this pass, when `dim_equipe`'s column came to be added)."""
    (src,) = await make_sources(1, citizens=60)
    _, config = write_config(dest, [src], [CIDADAOS, TABLE_DATASETS[3]])
    assert (await run_pass(config))[0] == 0
    admin = await asyncpg.connect(src.admin_dsn)
    dst = await dest.connect()
    try:
        await dst.execute(
            """
            CREATE TABLE public.ddl_seen (held int);
            CREATE FUNCTION public.note_ddl() RETURNS event_trigger LANGUAGE plpgsql AS $$
            BEGIN
              INSERT INTO public.ddl_seen
              SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
              WHERE a.application_name = 'syncd' AND l.pid <> pg_backend_pid()
                AND l.mode = 'RowExclusiveLock'
                AND l.relation IN (SELECT c.oid FROM pg_class c JOIN pg_namespace n
                                   ON n.oid = c.relnamespace WHERE n.nspname = 'syncd_data');
            END $$;
            CREATE EVENT TRIGGER note_ddl ON ddl_command_end EXECUTE FUNCTION public.note_ddl();
            """
        )
        await admin.execute(
            "ALTER TABLE tb_dim_equipe ADD COLUMN nu_novo integer DEFAULT 1;"
            f"UPDATE {TABLE} SET no_cidadao = 'mudou' WHERE co_seq_fat_cidadao_pec = 1"
        )
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        assert (
            await dst.fetchval(
                "SELECT count(*) FROM pg_attribute WHERE attrelid = 'syncd_data.dim_equipe'::regclass "
                "AND attname = 'nu_novo'"
            )
            == 1
        )
        seen = [r[0] for r in await dst.fetch("SELECT held FROM public.ddl_seen")]
        assert seen and set(seen) == {0}, seen
    finally:
        await dst.execute("DROP EVENT TRIGGER IF EXISTS note_ddl")
        await admin.close()
        await dst.close()
