"""Relation names through the real `syncd` subprocess: a dataset named like one of syncd's
relations is refused, and sources named like each other's relations keep their rows."""

from __future__ import annotations

import yaml

from tests.conftest import TABLE_DATASETS
from tests.support.helpers import fingerprint, run_cli, run_pass


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
    """Syncing `ok1` alone leaves the rows of source `ok1__staging` as they were (no relation is
    named after a source, so one source's name cannot reach another's rows)."""
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
