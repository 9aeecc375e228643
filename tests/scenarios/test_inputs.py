"""Ordinary inputs land exactly or are refused with one clear line: session settings on either
side, query types with modifiers, inheritance parents, password files, hostile texts on the
terminal, huge datasets. (What the config alone refuses is in the unit lane: test_config*.py.)"""

from __future__ import annotations

import io

import asyncpg

from syncd.commands.status import run_status
from syncd.engine.destination import Destination

from tests.support.helpers import assert_dataset_exact, run_pass

VISITS = """
CREATE TABLE visitas (id int PRIMARY KEY, dia date NOT NULL, em timestamptz NOT NULL);
GRANT SELECT ON visitas TO esus_leitura;
INSERT INTO visitas
SELECT i, DATE '2024-01-01' + i, TIMESTAMPTZ '2024-01-01 22:30:00-03' + i * INTERVAL '1 day'
FROM generate_series(1, 41) AS i;  -- up to 11 February
"""


async def _admin(dsn: str, sql: str, *args) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(sql, *args)
    finally:
        await conn.close()


async def test_watermarks_round_trip_whatever_datestyle_and_timezone_either_side(
    make_sources, dest, write_config
):
    """Dates and timestamps stored as watermarks read back as the same instant, with the
    destination on `SQL, DMY` and the source on `SQL, MDY`, in two other time zones."""
    (db,) = await make_sources(1)
    await _admin(db.admin_dsn, VISITS)
    await _admin(
        db.cluster.dsn(),
        f"ALTER DATABASE \"{db.dbname}\" SET datestyle = 'SQL, MDY';"
        f"ALTER DATABASE \"{db.dbname}\" SET timezone = 'America/Sao_Paulo';"
        f"ALTER DATABASE \"{db.dbname}\" SET intervalstyle = 'sql_standard'",
    )
    await _admin(
        dest.cluster.dsn(),
        f"ALTER DATABASE \"{dest.dbname}\" SET datestyle = 'SQL, DMY';"
        f"ALTER DATABASE \"{dest.dbname}\" SET timezone = 'Asia/Kolkata';"
        f"ALTER DATABASE \"{dest.dbname}\" SET intervalstyle = 'iso_8601';"
        f'ALTER DATABASE "{dest.dbname}" SET extra_float_digits = -10',
    )
    datasets = [
        {"name": name, "table": "public.visitas", "mode": "incremental", "cursor": cursor}
        | {"key": "id", "lookback": "0d"}
        for name, cursor in (("por_dia", "dia"), ("por_instante", "em"))
    ]
    _, config = write_config(dest, [db], datasets)

    # the startup packet's settings beat ALTER DATABASE SET on the destination
    destination = Destination(config.destination, config.timeouts, pool_size=1)
    conn = await destination.connect()
    try:
        assert await conn.fetchval("SHOW DateStyle") == "ISO, YMD"
        assert await conn.fetchval("SHOW IntervalStyle") == "postgres"
    finally:
        await conn.close()

    code, out, err = await run_pass(config)  # full: watermark 11 February
    assert code == 0, out + err
    await _admin(
        db.admin_dsn,
        "INSERT INTO visitas VALUES (101, DATE '2024-02-12', TIMESTAMPTZ '2024-02-12 08:00-03'),"
        " (102, DATE '2024-02-20', TIMESTAMPTZ '2024-02-20 08:00-03')",
    )
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    await _admin(
        db.admin_dsn,
        "INSERT INTO visitas VALUES (200, DATE '2024-03-01', TIMESTAMPTZ '2024-03-01 08:00-03')",
    )
    code, out, err = await run_pass(config)
    assert code == 0, out + err

    iso = {"DateStyle": "ISO, YMD"}  # for comparing the texts of both sides here
    src = await asyncpg.connect(db.admin_dsn, server_settings=iso)
    dst = await asyncpg.connect(dest.dsn, server_settings=iso)
    try:
        for name in ("por_dia", "por_instante"):
            assert await assert_dataset_exact(src, dst, db.id, name, "SELECT * FROM visitas") == 44
        rows = await dst.fetch(
            "SELECT dataset, mode, rows, watermark FROM syncd.ledger ORDER BY pass_id, dataset"
        )
        assert [(r["mode"], r["rows"]) for r in rows] == [
            ("full_refresh", 41),
            ("full_refresh", 41),
            ("incremental", 2),
            ("incremental", 2),
            ("incremental", 1),
            ("incremental", 1),
        ]
        assert rows[-2]["watermark"] == "2024-03-01"
        marks = await dst.fetch("SELECT watermark FROM syncd.watermarks ORDER BY dataset")
        assert marks[0]["watermark"] == "2024-03-01"
        assert await dst.fetchval(
            "SELECT $1::text::timestamptz = TIMESTAMPTZ '2024-03-01 08:00-03'",
            marks[1]["watermark"],
        )
        # a watermark an older syncd stored in another DateStyle is not trusted: reloaded whole
        await dst.execute("UPDATE syncd.watermarks SET watermark = '01/03/2024'")
        code, out, err = await run_pass(config)
        assert code == 0, out + err
        last = await dst.fetch("SELECT mode, rows FROM syncd.ledger ORDER BY pass_id DESC LIMIT 2")
        assert [(r["mode"], r["rows"]) for r in last] == [("full_refresh", 44)] * 2
    finally:
        await src.close()
        await dst.close()


MODIFIERS = """
CREATE TABLE pessoas (
    id int PRIMARY KEY, cpf char(11), flags bit(3), sigla varchar(7), peso numeric(5,2),
    hora timestamp(0), ativo "char"
);
GRANT SELECT ON pessoas TO esus_leitura;
INSERT INTO pessoas VALUES
    (1, '01234567890', B'101', 'ABCDEFG', 123.45, '2024-02-11 10:11:12', 'a'),
    (2, '123', B'000', '', -0.5, NULL, NULL),
    (3, NULL, NULL, 'çã  ', 999.99, '1999-12-31 23:59:59', 'z');
"""


async def test_char_and_bit_columns_of_queries_land_byte_identical(
    make_sources, dest, write_config
):
    (db,) = await make_sources(1)
    await _admin(db.admin_dsn, MODIFIERS)
    query = (
        "SELECT id, cpf, flags, sigla, peso, hora, ativo, cpf::char(4) AS prefixo, "
        "'x'::varchar(3) AS curto, 1.5::numeric(4,1) AS meio FROM pessoas"
    )
    datasets = [
        {"name": "lista_pessoas", "query": query},
        {"name": "tabela_pessoas", "table": "public.pessoas"},
    ]
    _, config = write_config(dest, [db], datasets)
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    src = await asyncpg.connect(db.admin_dsn)
    dst = await dest.connect()
    try:
        assert await assert_dataset_exact(src, dst, db.id, "lista_pessoas", query) == 3
        # created without modifiers (a widened column needs no DDL), in the unbounded form of
        # each type: bpchar keeps the trailing blanks, bit varying the bits
        types = await dst.fetch(
            "SELECT attname::text, format_type(atttypid, atttypmod) FROM pg_attribute "
            "WHERE attrelid = 'syncd_data.lista_pessoas'::regclass AND attnum > 0 ORDER BY attnum"
        )
        assert dict(types) == {
            "id": "integer",
            "cpf": "bpchar",
            "flags": "bit varying",
            "sigla": "character varying",
            "peso": "numeric",
            "hora": "timestamp without time zone",
            "ativo": '"char"',
            "prefixo": "bpchar",
            "curto": "character varying",
            "meio": "numeric",
            "municipio_id_sus": "text",
            "syncd_row_hash": "uuid",
            "syncd_src_fp": "bigint",
        }
        table_types = await dst.fetch(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "'syncd_data.tabela_pessoas'::regclass AND attnum > 0 ORDER BY attnum"
        )
        assert [t[0] for t in table_types] == [types[i][1] for i in range(7)] + [
            "text",
            "uuid",
            "bigint",
        ]
        assert (
            await assert_dataset_exact(
                src, dst, db.id, "tabela_pessoas", "SELECT * FROM public.pessoas"
            )
            == 3
        )
    finally:
        await src.close()
        await dst.close()


INHERITANCE = """
CREATE TABLE eventos (id int, tipo text);
CREATE TABLE eventos_2023 (ano int DEFAULT 2023) INHERITS (eventos);
CREATE TABLE eventos_2024 () INHERITS (eventos);
GRANT SELECT ON eventos, eventos_2023, eventos_2024 TO esus_leitura;
INSERT INTO eventos VALUES (1, 'no pai');
INSERT INTO eventos_2023 VALUES (2, 'filho 2023'), (3, 'filho 2023');
INSERT INTO eventos_2024 VALUES (4, 'filho 2024');
"""


async def test_an_inheritance_parent_lands_what_select_returns(make_sources, dest, write_config):
    (db,) = await make_sources(1)
    await _admin(db.admin_dsn, INHERITANCE)
    _, config = write_config(dest, [db], [{"name": "eventos", "table": "public.eventos"}])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    src = await asyncpg.connect(db.admin_dsn)
    dst = await dest.connect()
    try:
        assert await assert_dataset_exact(src, dst, db.id, "eventos", "SELECT * FROM eventos") == 4
    finally:
        await src.close()
        await dst.close()


async def test_a_missing_or_unreadable_password_file_fails_that_source_at_once(
    make_sources, dest, write_config, tmp_path
):
    missing, directory, fine = await make_sources(3)
    (tmp_path / "a-directory").mkdir()
    sources = [
        missing.source_entry(password_file=str(tmp_path / "nowhere")),
        directory.source_entry(password_file=str(tmp_path / "a-directory")),
        fine,
    ]
    _, config = write_config(dest, sources, [{"name": "equipes", "table": "tb_dim_equipe"}])
    code, out, err = await run_pass(config)
    assert code == 1
    assert f"{missing.id} equipes: password_file {tmp_path / 'nowhere'} not found" in out
    assert f"{directory.id} equipes: password_file {tmp_path / 'a-directory'} is a directory" in out
    assert "network error" not in out + err
    dst = await dest.connect()
    try:
        rows = await dst.fetch("SELECT source_id, status, attempts FROM syncd.ledger")
    finally:
        await dst.close()
    assert {(r["source_id"], r["status"], r["attempts"]) for r in rows} == {
        (missing.id, "failed", 1),  # not retried as if the network had failed
        (directory.id, "failed", 1),
        (fine.id, "ok", 1),
    }


HOSTILE_ERROR = r"""
CREATE FUNCTION boom() RETURNS int LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION E'bad\x1b[2J\x1b[31m news\nforged line\r\u202eevil\x07';
END $$;
"""


async def test_server_errors_and_names_reach_the_terminal_escaped(make_sources, dest, write_config):
    bad, good = await make_sources(2)
    await _admin(bad.admin_dsn, HOSTILE_ERROR)
    sources = [
        bad.source_entry(name="Vila\x1b]0;pwned\x07\nNova\u202e"),
        good.source_entry(name="São José\tdos Campos"),
    ]
    datasets = [{"name": "explode", "query": "SELECT boom() AS b"}]
    _, config = write_config(dest, sources, datasets)
    code, out, _ = await run_pass(config)
    assert code == 1

    status_out, status_err = io.StringIO(), io.StringIO()
    assert await run_status(config, status_out, status_err) == 0
    for text in (out, status_out.getvalue()):
        assert not any(c in text for c in "\x1b\x07\r\u202e"), repr(text)
        assert "bad\\x1b[2J\\x1b[31m news forged line \\u202eevil\\x07" in text
    lines = out.splitlines()
    assert len(lines) == 2 + 2 + 2 + 1 + 2  # header, rule, two rows; blank, total; failures
    assert "Vila\\x1b]0;pwned\\x07\\nNova\\u202e" in lines[2] + lines[3]
    assert "São José\\tdos Campos" in lines[2] + lines[3]
    assert len(status_out.getvalue().splitlines()) == 2 + 2


async def test_1600_columns_says_the_source_column_is_the_one_too_many(
    make_sources, dest, write_config
):
    (db,) = await make_sources(1)
    columns = ", ".join(f"c{i} int" for i in range(1600))
    await _admin(
        db.admin_dsn,
        f"CREATE TABLE larga ({columns}); INSERT INTO larga (c0) VALUES (1);"
        "GRANT SELECT ON larga TO esus_leitura",
    )
    datasets = [
        {"name": "larga", "table": "public.larga"},
        {"name": "equipes", "table": "tb_dim_equipe"},
    ]
    _, config = write_config(dest, [db], datasets)
    code, out, _ = await run_pass(config)
    assert code == 1
    (line,) = [line for line in out.splitlines() if " larga: " in line]
    assert "tables can have at most 1600 columns" in line
    assert "syncd adds its own source column, destination.source_column" in line
    assert "at most 1599 columns" in line
    assert "1 of 1 sources ok" not in out and "1/2" in out  # the other dataset landed
