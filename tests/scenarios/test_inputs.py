"""Ordinary inputs land exactly or are refused with one clear line: session settings
on either side, query types with modifiers, inheritance parents, odd SQL files, YAML numbers,
password files, hostile texts on the terminal, empty selections, huge datasets."""

from __future__ import annotations

import io
import textwrap

import asyncpg
import pytest

from syncd import config
from syncd.commands.status import run_status
from syncd.config import ConfigError, clean_query
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
        }
        table_types = await dst.fetch(
            "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = "
            "'syncd_data.tabela_pessoas'::regclass AND attnum > 0 ORDER BY attnum"
        )
        assert [t[0] for t in table_types] == [types[i][1] for i in range(7)] + ["text", "uuid"]
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


ODD_ENDINGS = {
    "comentario": "SELECT id, tipo FROM eventos -- the end, no newline",
    "ponto_e_virgula_comentario": "SELECT id, tipo FROM eventos; -- fim\n\n",
    "bom": "\ufeffSELECT id, tipo FROM eventos;\n",
    "bloco": "SELECT id, tipo FROM eventos /* a /* nested */ block */ ;\n/* fim */",
    "texto_com_tracos": "SELECT id, tipo || ' -- ; /* ' AS tipo FROM eventos -- c\n;\n-- fim",
    "dolar": "SELECT id, $x$ -- ; $x$ || tipo || $$;--$$ AS tipo FROM eventos;;  -- fim",
    "escape": "SELECT id, E'\\\\' || tipo || E'\\' -- ' AS tipo FROM eventos -- fim",
}


def test_clean_query_cuts_only_what_follows_the_last_token():
    assert clean_query(ODD_ENDINGS["comentario"]) == "SELECT id, tipo FROM eventos"
    assert clean_query(ODD_ENDINGS["bom"]) == "SELECT id, tipo FROM eventos"
    assert clean_query(ODD_ENDINGS["bloco"]) == "SELECT id, tipo FROM eventos"
    assert clean_query("SELECT 1 /* a */ AS um /* b */") == "SELECT 1 /* a */ AS um"
    assert clean_query(ODD_ENDINGS["dolar"]).endswith("FROM eventos")
    assert clean_query(ODD_ENDINGS["escape"]).endswith("FROM eventos")
    assert clean_query("SELECT 1; SELECT 2;") == "SELECT 1; SELECT 2"  # the server refuses it
    assert clean_query("SELECT 'unterminated -- x") == "SELECT 'unterminated -- x"
    assert clean_query("-- only a comment\n;") == ""


def _problems(text: str, base=None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        config.loads(textwrap.dedent(text), base=base, file="syncd.yaml")
    return [str(p) for p in info.value.problems]


BASE = """\
destination:
  dsn: postgresql://syncd@analytics.internal/impulso
datasets:
  - name: cidadaos
    table: public.tb_fat_cidadao_pec
"""


def test_ids_yaml_would_change_are_refused_with_their_line():
    text = BASE + textwrap.dedent(
        """\
        sources:
          - id: 012345
            dsn: postgresql://esus@10.0.0.1/esus
          - id: 3_549_904
            dsn: postgresql://esus@10.0.0.2/esus
          - id: 351570
            name: 0755
            dsn: postgresql://esus@10.0.0.3/esus
            params: {co_ibge: 03549904, peso: 1.50, ok: 7, ativo: true}  # 8, 9: not octal, a string
        """
    )
    found = _problems(text)
    assert found == [
        "syncd.yaml:7: sources[0].id: YAML reads 012345 as the number 5349, not as text; "
        'quote it to keep it as written: "012345"',
        "syncd.yaml:9: sources[1].id: YAML reads 3_549_904 as the number 3549904, not as text; "
        'quote it to keep it as written: "3_549_904"',
        "syncd.yaml:12: sources[2].name: YAML reads 0755 as the number 493, not as text; "
        'quote it to keep it as written: "0755"',
        "syncd.yaml:14: sources[2].params.peso: YAML reads 1.50 as the number 1.5, not as "
        'text; quote it to keep it as written: "1.50"',
    ]
    # a plain number YAML reads as written stays as written; quoted ids are strings anyway
    fine = text.replace("012345", '"012345"').replace("3_549_904", '"3_549_904"')
    fine = fine.replace("0755", '"0755"')
    c = config.loads(fine.replace("1.50", '"1.50"'))
    assert [s.id for s in c.sources] == ["012345", "3_549_904", "351570"]
    assert dict(c.sources[2].params) == {
        "co_ibge": "03549904",
        "peso": "1.50",
        "ok": "7",
        "ativo": "true",
    }
    assert c.sources[2].name == "0755"


@pytest.mark.parametrize(
    "schema", ["pg_temp", "pg_toast", "pg_catalog", "information_schema", "pg_anything"]
)
def test_postgresql_schemas_are_refused_as_the_data_schema(schema):
    text = BASE.replace("impulso\n", f"impulso\n  schema: {schema}\n") + textwrap.dedent(
        """\
        sources:
          - id: "1"
            dsn: postgresql://esus@10.0.0.1/esus
        """
    )
    (problem,) = _problems(text)
    assert problem.startswith(f"syncd.yaml:3: destination.schema: '{schema}'")


def test_sources_file_problems_carry_their_file_and_line(tmp_path):
    (tmp_path / "sources.yaml").write_text(
        textwrap.dedent(
            """\
            - id: "351570"
              dsn: postgresql://esus@10.0.0.1/esus
            - id: "bad id!"
              dsn: postgresql://esus@10.0.0.2/esus
            - id: 012345
              dsn: postgresql://esus@10.0.0.3/esus
              colour: blue
            - id: "351570"
              dsn: nope://x
            """
        )
    )
    found = _problems(BASE + "sources_file: sources.yaml\n", base=tmp_path)
    where = str(tmp_path / "sources.yaml")
    assert found == [
        f"{where}:3: sources[1].id: 'bad id!' is not an id of letters, digits and _ (up to 32)",
        f"{where}:5: sources[2].id: YAML reads 012345 as the number 5349, not as text; "
        'quote it to keep it as written: "012345"',
        f"{where}:7: sources[2].colour: unknown key",  # nothing close
        f"{where}:9: sources[3].dsn: must start with postgresql:// (key=value strings are "
        "not supported)",
    ]


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
