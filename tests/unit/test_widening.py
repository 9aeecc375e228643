"""The common-type rules of a mixed fleet (engine/widening.py), on their own."""

from __future__ import annotations

import pytest

from syncd.engine import retype, widening
from syncd.engine.errors import FinalError
from syncd.engine.tables import Tables

TS, TSTZ = "timestamp without time zone", "timestamp with time zone"


@pytest.mark.parametrize(
    ("a", "b", "common"),
    [
        ("smallint", "integer", "integer"),
        ("integer", "bigint", "bigint"),
        ("smallint", "bigint", "bigint"),
        ("integer", "numeric", "numeric"),
        ("bigint", "double precision", "numeric"),  # 2^53 + 1 is no double
        ("integer", "real", "numeric"),
        ("real", "double precision", "double precision"),
        ("double precision", "numeric", "numeric"),  # EXTRACT before and after PostgreSQL 14
        ("character varying", "text", "text"),
        ("bpchar", "character varying", "text"),
        ("bpchar", "bpchar", "bpchar"),
        ("text", "integer", None),
        (TS, TSTZ, None),
        ("date", TS, None),
        ("numeric", "text", None),
    ],
)
def test_common_type_holds_both_or_there_is_none(a: str, b: str, common: str | None) -> None:
    assert widening.common_type(a, b) == common
    assert widening.common_type(b, a) == common  # the order municipalities land in is no matter


def test_conversions_cast_on_the_source_except_where_the_bytes_are_the_same() -> None:
    columns = [
        ("id", "bigint", "integer"),  # (name, table type, sent type)
        ("nome", "text", "bpchar"),  # same bytes: the blanks are kept, nothing cast
        ("idade", "numeric", "double precision"),
        ("same", "date", "date"),
    ]
    assert widening.conversions(columns, "d.t", "readers held it", 30) == (
        ("id", "integer", "bigint"),
        ("idade", "double precision", "numeric"),
    )


def test_while_the_table_is_not_widened_integers_narrow_exactly_and_numeric_waits() -> None:
    # the table is still integer; a newer PEC sends bigint: cast down, failing on overflow
    assert widening.conversions([("id", "integer", "bigint")], "d.t", "readers held it", 30) == (
        ("id", "bigint", "integer"),
    )
    assert widening.convert("x", "bigint", "integer") == "x::integer"
    # numeric into double precision has no exact way: that municipality waits, told why
    with pytest.raises(FinalError, match=r"'idade' is numeric .* waits \(tried again within 30s"):
        widening.conversions(
            [("idade", "double precision", "numeric")], "d.t", "readers held it", 30
        )


def test_conflicts_name_both_types_and_a_cast() -> None:
    tables = Tables("syncd_data", "municipio_id_sus")
    with pytest.raises(FinalError) as caught:
        widening.changes([("codigo", "integer", "text")], tables, "doses")
    assert str(caught.value) == (
        "column 'codigo' is text on the source but integer in syncd_data.doses: no common type; "
        'cast it in the dataset\'s query so every municipality sends one, e.g. "codigo"::integer'
    )
    with pytest.raises(FinalError, match=r"a time zone question .* AT TIME ZONE"):
        widening.changes([("em", TS, TSTZ)], tables, "doses")


def test_a_change_alters_with_the_same_conversion_a_source_would_apply() -> None:
    tables = Tables("syncd_data", "municipio_id_sus")
    changes = widening.changes(
        [("id", "integer", "bigint"), ("nome", "bpchar", "text"), ("v", "numeric", "numeric")],
        tables,
        "doses",
    )
    assert [c.alter() for c in changes] == [
        'ALTER COLUMN "id" TYPE bigint USING "id"::bigint',
        # bpchar::text would strip the trailing blanks the rows were landed with
        'ALTER COLUMN "nome" TYPE text USING pg_catalog.textin(pg_catalog.bpcharout("nome"))',
    ]
    assert widening.fits([("id", "integer", "bigint")], retry_ddl=False)  # waits, lands
    assert not widening.fits([("id", "integer", "bigint")], retry_ddl=True)  # time to try
    assert not widening.fits([("c", "integer", "text")], retry_ddl=False)  # say so


def test_one_alter_changes_the_columns_and_which_changes_rewrite_the_table() -> None:
    tables = Tables("syncd_data", "municipio_id_sus")
    changes = widening.changes(
        [("id", "integer", "bigint"), ("nome", "character varying", "text")], tables, "doses"
    )
    assert widening.alter(tables, changes) == (
        'SET LOCAL extra_float_digits = 3;ALTER TABLE "syncd_data"."doses" '
        'ALTER COLUMN "id" TYPE bigint USING "id"::bigint, ALTER COLUMN "nome" TYPE text'
    )
    # varchar into text is the catalog's alone; everything else converts each stored value
    assert [retype.rewrites(c) for c in changes] == [True, False]
    padded = widening.changes([("c", "bpchar", "text")], tables, "doses")
    floats = widening.changes([("x", "double precision", "numeric")], tables, "doses")
    assert retype.rewrites(padded[0]) and retype.rewrites(floats[0])
