"""What syncd creates in the data schema is named so that nothing can collide: no two
(dataset, source) pairs map to one relation, and no dataset is named like syncd's own."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import LOWER_IDENT
from syncd.engine.layout import base_type, relation_names

# names the config accepts: lowercase identifiers without `__`, up to 63 bytes
dataset_names = st.from_regex(LOWER_IDENT, fullmatch=True).filter(lambda n: "__" not in n)


@settings(max_examples=300, derandomize=True)
@given(st.lists(dataset_names, min_size=2, max_size=6, unique=True), st.integers(1, 256))
def test_no_two_datasets_share_a_relation(names: list[str], buckets: int) -> None:
    owner: dict[str, str] = {}
    for name in names:
        for relation in relation_names(name, buckets):
            assert len(relation.encode()) <= 63
            assert owner.setdefault(relation, name) == name, (
                f"{relation} belongs to both {owner[relation]} and {name}"
            )
    # and no dataset table is another dataset's partition or index; source ids appear in no
    # name at all, so two (dataset, source) pairs differ by dataset (relations) or by rows
    for name in names:
        assert owner[name] == name


def test_types_are_created_without_modifiers() -> None:
    assert base_type("character varying(15)") == "character varying"
    assert base_type("numeric(5,2)") == "numeric"
    assert base_type("character(11)") == "bpchar"
    assert base_type("bit(3)") == "bit varying"
    assert base_type("bit(3)[]") == "bit varying[]"
    assert base_type("timestamp(3) without time zone") == "timestamp without time zone"
    assert base_type("interval day to second(3)") == "interval"
    assert base_type("text") == "text"
