"""What syncd creates in the data schema is named so that nothing can collide: no two
(dataset, source) pairs map to one relation, and no dataset is named like syncd's own."""

from __future__ import annotations

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from syncd.config import LOWER_IDENT
from syncd.engine.layout import base_type, relation_names

from tests.conftest import TABLE_DATASETS
from tests.support.helpers import fingerprint, run_cli, run_pass

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


def test_a_dataset_named_like_a_relation_of_syncd_is_refused(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "destination": {"dsn": "postgresql://x@127.0.0.1/db"},
                "sources": [{"id": "ok1", "dsn": "postgresql://x@127.0.0.1/a"}],
                "datasets": [
                    {"name": "m", "table": "public.t"},
                    {"name": "m__ok1", "table": "public.u"},
                ],
            }
        )
    )
    result = run_cli("check-config", "--config", str(path))
    assert result.returncode == 2
    assert "datasets[1].name" in result.stderr + result.stdout
    assert "'m__ok1' contains '__'" in result.stderr + result.stdout


async def test_sources_named_like_each_others_relations_keep_their_rows(
    make_sources, dest, write_config
):
    """v1 repro: syncing `ok1` alone dropped the partition of source `ok1__staging`."""
    a, b = await make_sources(2, citizens=100)
    entries = [
        {"id": "ok1", "dsn": a.dsn},
        {"id": "ok1__staging", "dsn": b.dsn},
    ]
    _, config = write_config(dest, entries, [TABLE_DATASETS[0]])
    code, out, err = await run_pass(config)
    assert code == 0, out + err
    dst = await dest.connect()
    try:
        before = await fingerprint(dst, "cidadaos", "ok1__staging")
        assert before[0] == 100
        result = run_cli("once", "--config", str(config.path), "--source", "ok1")
        assert result.returncode == 0, result.stdout + result.stderr
        assert await fingerprint(dst, "cidadaos", "ok1__staging") == before
        assert (await fingerprint(dst, "cidadaos", "ok1"))[0] == 100
    finally:
        await dst.close()


def test_types_are_created_without_modifiers() -> None:
    assert base_type("character varying(15)") == "character varying"
    assert base_type("numeric(5,2)") == "numeric"
    assert base_type("character(11)") == "bpchar"
    assert base_type("bit(3)") == "bit varying"
    assert base_type("bit(3)[]") == "bit varying[]"
    assert base_type("timestamp(3) without time zone") == "timestamp without time zone"
    assert base_type("interval day to second(3)") == "interval"
    assert base_type("text") == "text"
