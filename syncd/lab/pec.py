"""Synthetic e-SUS APS PEC databases, shared by the tests, the demo and the benchmarks.

A municipality's data is a pure function of its id and a size: the same (id, size) always gives
the same rows. Generation runs inside PostgreSQL (generate_series + a seeded random()), so a
million-row table takes seconds, not minutes.

The first rows of every table are a catalogue of awkward values, one kind per row, so even the
smallest municipality carries all of them: NULL in every nullable column, empty strings, accents
and emoji, tab / newline / carriage return / backslash / quote characters, numeric and float NaN,
+/-infinity dates and timestamps, extreme dates, 20 kB texts (compressible and not).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import asyncpg

# Column lists are the PEC's own names (tb_fat_* facts, tb_dim_* dimensions).
SCHEMA_SQL = """
CREATE TABLE tb_dim_tempo (
    co_seq_dim_tempo bigint PRIMARY KEY,
    dt_registro date,
    nu_ano integer,
    nu_mes integer,
    nu_dia integer,
    nu_dia_semana integer,
    ds_dia_semana varchar(255),
    ds_mes varchar(255),
    st_registro_valido integer NOT NULL DEFAULT 1
);
CREATE TABLE tb_dim_unidade_saude (
    co_seq_dim_unidade_saude bigint PRIMARY KEY,
    nu_cnes varchar(7),
    no_unidade_saude varchar(500),
    nu_cnpj varchar(14),
    ds_tipo_unidade varchar(255),
    st_registro_valido integer NOT NULL DEFAULT 1
);
CREATE TABLE tb_dim_equipe (
    co_seq_dim_equipe bigint PRIMARY KEY,
    nu_ine varchar(10),
    no_equipe varchar(255),
    co_dim_unidade_saude bigint,
    st_registro_valido integer NOT NULL DEFAULT 1
);
CREATE TABLE tb_fat_cidadao_pec (
    co_seq_fat_cidadao_pec bigint PRIMARY KEY,
    co_cidadao bigint,
    no_cidadao varchar(500),
    no_social_cidadao varchar(500),
    nu_cns varchar(15),
    nu_cpf_cidadao varchar(11),
    dt_nascimento date,
    co_dim_tempo_nascimento bigint,
    co_dim_sexo bigint,
    co_dim_equipe_vinc bigint,
    co_dim_unidade_saude_vinc bigint,
    st_faleceu integer,
    st_ativo boolean,
    nu_telefone_celular varchar(20),
    nu_peso numeric(7, 3),
    nu_latitude double precision,
    ds_observacao text,
    dt_atualizacao timestamp,
    dt_atualizacao_tz timestamptz,
    co_dim_municipio bigint
);
CREATE TABLE tb_fat_atendimento_individual (
    co_seq_fat_atd_ind bigint PRIMARY KEY,
    co_fat_cidadao_pec bigint,
    co_dim_tempo bigint,
    co_dim_unidade_saude_1 bigint,
    co_dim_equipe_1 bigint,
    nu_cns varchar(15),
    nu_cpf_cidadao varchar(11),
    dt_nascimento date,
    nu_peso numeric(7, 3),
    nu_altura numeric(5, 2),
    nu_imc numeric,
    ds_filtro_cids text,
    ds_filtro_ciaps text,
    st_gestante integer,
    st_ficou_em_observacao integer,
    co_dim_tipo_atendimento bigint,
    dt_inicial_atendimento timestamp,
    dt_final_atendimento timestamptz,
    nu_uuid_ficha varchar(44),
    ds_observacao text,
    co_dim_municipio bigint
);
CREATE INDEX ON tb_fat_atendimento_individual (co_fat_cidadao_pec);
CREATE TABLE tb_dim_municipio (
    co_seq_dim_municipio bigint PRIMARY KEY,
    co_ibge varchar(7),
    no_municipio varchar(255),
    sg_uf varchar(2)
);
"""

PEC_TABLES = (
    "tb_dim_municipio",
    "tb_dim_tempo",
    "tb_dim_unidade_saude",
    "tb_dim_equipe",
    "tb_fat_cidadao_pec",
    "tb_fat_atendimento_individual",
)

# One row per kind of awkward value; ids 1..len(AWKWARD) of the fact tables.
# Columns: (text, short varchar (CNS, 15), numeric, float, date, timestamp, timestamptz, bool)
AWKWARD_SQL = r"""
SELECT * FROM (VALUES
  (1, NULL::text, NULL::text, NULL::numeric, NULL::float8, NULL::date, NULL::timestamp,
      NULL::timestamptz, NULL::boolean),
  (2, '', '', 0, 0, DATE '2000-01-01', TIMESTAMP '2000-01-01 00:00', TIMESTAMPTZ '2000-01-01 00:00Z',
      false),
  (3, 'Conceição Araújo Ñandú 👩🏽‍⚕️ 🏥 São João d''Ávila', 'ção🏥', 12.345, -0.0::float8,
      DATE '1969-07-20', TIMESTAMP '1999-12-31 23:59:59.999999',
      TIMESTAMPTZ '2024-02-29 12:00:00.123456-03', true),
  (4, E'tab\there\nnew line\r\ncarriage \\ back\\slash "double" ''single'' \\N \\.', E'\t\n\\"''x',
      9999.999, 1e-310::float8, DATE '2024-02-29', TIMESTAMP '2024-02-29 12:34:56.789',
      TIMESTAMPTZ '2038-01-19 03:14:08Z', false),
  (5, 'NaN', 'NaN', 'NaN'::numeric, 'NaN'::float8, DATE 'infinity', TIMESTAMP 'infinity',
      TIMESTAMPTZ 'infinity', true),
  (6, '-Infinity', '-inf', -9999.999, '-Infinity'::float8, DATE '-infinity',
      TIMESTAMP '-infinity', TIMESTAMPTZ '-infinity', false),
  (7, repeat('Atenção à saúde 🩺 ', 1200), repeat('9', 15), 0.001, 'Infinity'::float8,
      DATE '4713-01-01 BC', TIMESTAMP '4713-01-01 00:00:00 BC', TIMESTAMPTZ '4713-01-01 00:00:00Z BC',
      NULL),
  (8, (SELECT string_agg(md5(i::text), '') FROM generate_series(1, 640) i), '   ', 1e-3,
      1.7976931348623157e308::float8, DATE '5874897-12-31', TIMESTAMP '294276-12-31 23:59:59.999999',
      TIMESTAMPTZ '294276-12-31 23:59:59.999999Z', true),
  (9, ' leading and trailing spaces ', 'NULL', -0.0, -1.5e-7::float8, DATE '1900-01-01',
      TIMESTAMP '1900-01-01 00:00:00', TIMESTAMPTZ '1900-01-01 00:00:00+03:06', false),
  (10, E'\\x00 \u00a0 \u200b \ufeff \u2028 \U0001F600', 'a,b;c|d', 1.1, 3.141592653589793::float8,
      DATE '2026-11-27', TIMESTAMP '2026-11-27 03:00:00', TIMESTAMPTZ '2026-11-27 03:00:00-03', true)
) AS awkward(n, txt, short, num, flt, dt, ts, tstz, flag)
"""


@dataclass(frozen=True)
class Municipality:
    """A synthetic municipality: its IBGE-like id and how many citizens it has."""

    id: str
    citizens: int
    version: int = 1  # 2: nu_telefone_celular renamed nu_celular, no_mae_cidadao added

    @property
    def seed(self) -> float:
        digest = hashlib.sha256(self.id.encode()).digest()
        return int.from_bytes(digest[:4], "big") / 2**32  # setseed takes [-1, 1]


def municipality_ids(count: int, start: int = 0) -> list[str]:
    """Deterministic, IBGE-looking 6-digit ids."""
    return [str(110000 + (start + i) * 137 % 890000) for i in range(count)]


async def create_schema(conn: asyncpg.Connection, version: int = 1) -> None:
    await conn.execute(SCHEMA_SQL)
    if version >= 2:  # a newer PEC: one column renamed, one added
        await conn.execute(
            "ALTER TABLE tb_fat_cidadao_pec RENAME COLUMN nu_telefone_celular TO nu_celular;"
            "ALTER TABLE tb_fat_cidadao_pec ADD COLUMN no_mae_cidadao varchar(500)"
        )


async def fill(conn: asyncpg.Connection, municipality: Municipality) -> None:
    """Generate the rows of every PEC table. Deterministic for (id, citizens, version)."""
    n = max(municipality.citizens, 1)
    units = max(2, n // 800)
    teams = max(3, n // 300)
    async with conn.transaction():
        await conn.execute("SELECT setseed($1)", municipality.seed)
        await conn.execute(
            "INSERT INTO tb_dim_municipio VALUES (1, $1, $2, 'SP')",
            municipality.id,
            f"Município {municipality.id}",
        )
        await conn.execute(_TEMPO_SQL)
        await conn.execute(_UNIDADE_SQL, units, municipality.id)
        await conn.execute(_EQUIPE_SQL, teams, units)
        await conn.execute(_CIDADAO_SQL, n, teams, units)
        await conn.execute(_ATENDIMENTO_SQL, n * 3, n, teams, units, 1)
        if municipality.version >= 2:
            await conn.execute(
                "UPDATE tb_fat_cidadao_pec SET no_mae_cidadao = 'Mãe de ' || no_cidadao "
                "WHERE co_seq_fat_cidadao_pec % 3 = 0"
            )
    await conn.execute("ANALYZE")


async def create_municipality(conn: asyncpg.Connection, municipality: Municipality) -> None:
    await create_schema(conn, municipality.version)
    await fill(conn, municipality)


async def append_atendimentos(
    conn: asyncpg.Connection, municipality: Municipality, count: int
) -> tuple[int, int]:
    """New consultations after the last one (ids max+1..max+count), as a day's work brings.
    Deterministic for (municipality, the ids). Returns the first and last new id."""
    n = max(municipality.citizens, 1)
    async with conn.transaction():
        first = await conn.fetchval(
            "SELECT coalesce(max(co_seq_fat_atd_ind), 0) + 1 FROM tb_fat_atendimento_individual"
        )
        await conn.execute("SELECT setseed($1)", (municipality.seed + first % 1000 / 1000) % 1)
        await conn.execute(_ATENDIMENTO_SQL, count, n, max(3, n // 300), max(2, n // 800), first)
    return first, first + count - 1


_TEMPO_SQL = """
INSERT INTO tb_dim_tempo
SELECT to_char(d, 'YYYYMMDD')::bigint, d, extract(year FROM d), extract(month FROM d),
       extract(day FROM d), extract(isodow FROM d),
       (ARRAY['Segunda', 'Terça', 'Quarta', 'Quinta', 'Sexta', 'Sábado', 'Domingo'])
           [extract(isodow FROM d)],
       (ARRAY['Janeiro', 'Fevereiro', 'Março', 'Abril', 'Maio', 'Junho', 'Julho', 'Agosto',
              'Setembro', 'Outubro', 'Novembro', 'Dezembro'])[extract(month FROM d)], 1
FROM generate_series(DATE '2018-01-01', DATE '2026-12-31', INTERVAL '1 day') AS g(d)
UNION ALL
SELECT 30001231, DATE '3000-12-31', 3000, 12, 31, NULL, 'Não informado', 'Não informado', 0
"""

_UNIDADE_SQL = """
INSERT INTO tb_dim_unidade_saude
SELECT u, lpad((2000000 + u * 7919 % 999999)::text, 7, '0'),
       CASE u WHEN 1 THEN 'UBS Central "Dr. José D''Ávila" 🏥' ELSE 'UBS ' || $2 || ' ' || u END,
       CASE WHEN u % 2 = 0 THEN NULL ELSE lpad((u * 104729)::text, 14, '0') END,
       'UNIDADE BASICA DE SAUDE', 1
FROM generate_series(1, $1::int) AS u
"""

_EQUIPE_SQL = r"""
INSERT INTO tb_dim_equipe
SELECT e, lpad((1000 + e)::text, 10, '0'),
       CASE e WHEN 1 THEN E'ESF Vila\tNova \\ Sul' ELSE 'ESF ' || e END,
       1 + e % $2::int, CASE WHEN e % 17 = 0 THEN 0 ELSE 1 END
FROM generate_series(1, $1::int) AS e
"""

_CIDADAO_SQL = rf"""
WITH awkward AS ({AWKWARD_SQL})
INSERT INTO tb_fat_cidadao_pec  -- by position: a version 2 PEC renames one column, adds one last
SELECT g,
       1000000 + g,
       coalesce(left(a.txt, 500),
                CASE WHEN a.n IS NULL
                     THEN (ARRAY['Maria', 'José', 'Ana', 'João', 'Antônia', 'Francisco',
                                 'Conceição', 'Raimundo'])[1 + floor(random() * 8)::int]
                          || ' ' ||
                          (ARRAY['da Silva', 'dos Santos', 'de Oliveira', 'Sousa', 'Araújo',
                                 'Gonçalves', 'Ribeiro'])[1 + floor(random() * 7)::int]
                END),
       CASE WHEN a.n IS NOT NULL THEN left(a.txt, 500)
            WHEN random() < 0.02 THEN 'Social ' || g END,
       CASE WHEN a.n IS NOT NULL THEN a.short ELSE lpad((700000000000000 + g * 7)::text, 15, '0') END,
       CASE WHEN a.n IS NOT NULL THEN left(a.short, 11) ELSE lpad((g * 13)::text, 11, '0') END,
       CASE WHEN a.n IS NOT NULL THEN a.dt
            ELSE DATE '1930-01-01' + floor(random() * 33000)::int END,
       CASE WHEN a.n IS NOT NULL THEN 30001231 ELSE 20180101 END,
       1 + g % 3,
       CASE WHEN a.n = 1 THEN NULL ELSE 1 + g % $2::int END,
       CASE WHEN a.n = 1 THEN NULL ELSE 1 + g % $3::int END,
       CASE WHEN a.n = 1 THEN NULL WHEN random() < 0.01 THEN 1 ELSE 0 END,
       CASE WHEN a.n IS NOT NULL THEN a.flag ELSE random() < 0.95 END,
       CASE WHEN a.n IS NOT NULL THEN left(a.short, 20)
            ELSE '(12) 9' || lpad(floor(random() * 99999999)::text, 8, '0') END,
       CASE WHEN a.n IS NOT NULL THEN a.num ELSE round((3 + random() * 120)::numeric, 3) END,
       CASE WHEN a.n IS NOT NULL THEN a.flt ELSE -23.0 - random() END,
       CASE WHEN a.n IS NOT NULL THEN a.txt
            WHEN random() < 0.1 THEN E'Observação\tlinha 1\nlinha 2' END,
       CASE WHEN a.n IS NOT NULL THEN a.ts
            ELSE TIMESTAMP '2020-01-01' + random() * INTERVAL '2000 days' END,
       CASE WHEN a.n IS NOT NULL THEN a.tstz
            ELSE TIMESTAMPTZ '2020-01-01Z' + random() * INTERVAL '2000 days' END,
       1
FROM generate_series(1, $1::int) AS g
LEFT JOIN awkward a ON a.n = g
ORDER BY g
"""  # noqa: S608 - constant SQL, no input

_ATENDIMENTO_SQL = rf"""
WITH awkward AS ({AWKWARD_SQL})
INSERT INTO tb_fat_atendimento_individual
SELECT g,
       1 + (g::bigint * 7919) % $2::int,
       CASE WHEN a.n IS NOT NULL THEN 30001231
            ELSE to_char(DATE '2019-01-01' + floor(random() * 2800)::int, 'YYYYMMDD')::bigint END,
       CASE WHEN a.n = 1 THEN NULL ELSE 1 + g % $4::int END,
       CASE WHEN a.n = 1 THEN NULL ELSE 1 + g % $3::int END,
       CASE WHEN a.n IS NOT NULL THEN a.short ELSE lpad((700000000000000 + g)::text, 15, '0') END,
       CASE WHEN a.n IS NOT NULL THEN left(a.short, 11) END,
       CASE WHEN a.n IS NOT NULL THEN a.dt
            ELSE DATE '1930-01-01' + floor(random() * 33000)::int END,
       CASE WHEN a.n IS NOT NULL THEN a.num ELSE round((3 + random() * 120)::numeric, 3) END,
       CASE WHEN a.n IS NOT NULL THEN round(a.num / 1000, 2)
            ELSE round((0.4 + random() * 1.6)::numeric, 2) END,
       CASE WHEN a.n IS NOT NULL THEN a.num * 1e30 ELSE (random() * 40)::numeric END,
       CASE WHEN a.n IS NOT NULL THEN a.txt
            ELSE '|' || (ARRAY['I10', 'E11', 'E119', 'Z34', 'J069', 'O80', 'K29', 'J00', 'M545',
                                'R51', 'Z000', 'N390', 'I15', 'A09', 'Z001', 'J029', 'R05', 'F41',
                                'L309', 'H100'])[1 + floor(random() * 20)::int]
                 || CASE WHEN random() < 0.3 THEN '|E66' ELSE '' END || '|' END,
       CASE WHEN a.n IS NOT NULL THEN a.short
            ELSE '|' || (ARRAY['K86', 'T90', 'W78', 'A98', 'R74', 'A97', 'L03', 'P76', 'R05',
                                'D01', 'S18', 'Y06', 'A03', 'N01', 'K87', 'F70', 'U71', 'L02',
                                'R21', 'T82'])[1 + floor(random() * 20)::int] || '|' END,
       CASE WHEN a.n = 1 THEN NULL WHEN random() < 0.05 THEN 1 ELSE 0 END,
       CASE WHEN a.n = 1 THEN NULL ELSE (random() < 0.02)::int END,
       1 + floor(random() * 6)::int,
       CASE WHEN a.n IS NOT NULL THEN a.ts
            ELSE TIMESTAMP '2019-01-01' + random() * INTERVAL '2800 days' END,
       CASE WHEN a.n IS NOT NULL THEN a.tstz
            ELSE TIMESTAMPTZ '2019-01-01Z' + random() * INTERVAL '2800 days' END,
       CASE WHEN a.n IS NOT NULL THEN left(a.txt, 44)
            ELSE md5(g::text || $2::text) END,
       CASE WHEN a.n IS NOT NULL THEN a.txt WHEN random() < 0.05 THEN 'Retorno em 30 dias' END,
       1
FROM generate_series($5::int, $5::int + $1::int - 1) AS g
LEFT JOIN awkward a ON a.n = g
ORDER BY g
"""  # noqa: S608 - constant SQL, no input
