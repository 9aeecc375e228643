"""`syncd once --json`: one document on stdout, whatever happens; its JSON Schema is
docs/reference/once-json.schema.json, and every document here is validated against it."""

from __future__ import annotations

import json
import re
from datetime import datetime

import asyncpg
import jsonschema

from syncd.lab import embedded

from tests.conftest import ATENDIMENTOS_INCREMENTAL, TABLE_DATASETS
from tests.support.helpers import ROOT, run_cli

CIDADAOS, DIM_EQUIPE = TABLE_DATASETS[0], TABLE_DATASETS[3]
MISSING = {"name": "tabela_inexistente", "table": "public.tb_fat_nao_existe"}
ATENDIMENTOS = ATENDIMENTOS_INCREMENTAL


SCHEMA = json.loads((ROOT / "docs" / "reference" / "once-json.schema.json").read_text())
VALIDATOR = jsonschema.Draft202012Validator(
    SCHEMA, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER
)


def _document(stdout: str) -> dict:
    """stdout is one JSON document on one line, and nothing else, valid against its schema."""
    assert stdout.endswith("\n") and stdout.count("\n") == 1, stdout[:2000]
    document = json.loads(stdout)
    VALIDATOR.validate(document)
    return document


def _paths(document: dict, prefix: str = "") -> set[str]:
    """Every leaf's key path, with `<id>` and `<name>` for the keys that are data."""
    out = set()
    for key, item in document.items():
        if prefix.endswith("sources"):
            key = "<id>"
        elif prefix.endswith("datasets"):
            key = "<name>"
        path = f"{prefix}.{key}" if prefix else key
        out |= _paths(item, path) if isinstance(item, dict) else {path}
    return out


def _documented_fields() -> set[str]:
    page = (ROOT / "docs" / "reference" / "once-json.md").read_text()
    return set(re.findall(r"^\| `([^`]+)` \|", page, re.M))


def _schema_fields(schema: dict, prefix: str = "") -> set[str]:
    """Every leaf's key path the schema describes, `<id>` and `<name>` for the data keys."""
    if "$ref" in schema:
        return _schema_fields(SCHEMA["$defs"][schema["$ref"].rsplit("/", 1)[1]], prefix)
    out = set()
    for key, sub in schema.get("properties", {}).items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(sub.get("additionalProperties"), dict):  # keyed by data
            data = "<id>" if key == "sources" else "<name>"
            out |= _schema_fields(sub["additionalProperties"], f"{path}.{data}")
        elif "properties" in sub:
            out |= _schema_fields(sub, path)
        else:
            out.add(path)
    return out


def test_the_page_the_schema_and_the_document_agree_on_the_fields():
    passed, config_error = (SCHEMA["$defs"][k] for k in ("pass", "config_error"))
    assert _schema_fields(passed) | _schema_fields(config_error) == _documented_fields()


async def test_the_document_has_every_source_and_dataset_and_the_ledger_agrees(
    make_sources, dest, write_config
):
    a, b = await make_sources(2, citizens=100)
    path, _ = write_config(dest, [a, b], [CIDADAOS, ATENDIMENTOS, MISSING])
    result = run_cli("once", "--config", str(path), "--json")
    assert result.returncode == 1, result.stderr
    doc = _document(result.stdout)
    assert '"version"' not in result.stderr  # logs and messages stay on stderr

    assert (doc["version"], doc["status"], doc["exit_code"], doc["error"]) == (1, "failed", 1, None)
    assert datetime.fromisoformat(doc["started_at"]) <= datetime.fromisoformat(doc["ended_at"])
    assert list(doc["sources"]) == [a.id, b.id]  # the config's order
    dst = await dest.connect()
    try:
        ledger = {
            (r["source_id"], r["dataset"]): r for r in await dst.fetch("SELECT * FROM syncd.ledger")
        }
    finally:
        await dst.close()
    for db in (a, b):
        source = doc["sources"][db.id]
        assert source["name"] == f"Município {db.id}" and source["status"] == "failed"
        assert source["error"] is None  # its datasets failed, not the source as a whole
        assert source["seconds"] >= 0 and source["rows"] == 100 + 300
        for name, d in source["datasets"].items():
            row = ledger[(db.id, name)]
            assert d["status"] == row["status"] and d["attempts"] == row["attempts"]
            assert (d["rows"], d["bytes"], d["error"]) == (row["rows"], row["bytes"], row["error"])
            assert source["pass_id"] == row["pass_id"]
        cidadaos, atendimentos, missing = (source["datasets"][n] for n in source["datasets"])
        assert cidadaos["mode"] == "snapshot" and cidadaos["watermark"] is None
        assert cidadaos["bytes"] > 0 and cidadaos["seconds"] >= 0
        assert atendimentos["mode"] == "full_refresh" and atendimentos["watermark"] == "300"
        assert missing["status"] == "failed" and "does not exist" in missing["error"]
        assert missing["rows"] is None and missing["mode"] is None
    assert doc["totals"] == {
        "sources": 2,
        "sources_ok": 0,
        "sources_failed": 2,
        "sources_aborted": 0,
        "sources_skipped": 0,
        "datasets": 6,
        "datasets_ok": 4,
        "datasets_failed": 2,
        "datasets_skipped": 0,
        "rows": 800,
        "bytes": sum(s["bytes"] for s in doc["sources"].values()),
    }
    # the reference page documents exactly these fields
    assert _paths(doc) == _documented_fields() - {"errors"}

    result = run_cli("once", "--config", str(path), "--json", "--dataset", "atendimentos")
    assert result.returncode == 0, result.stderr
    doc = _document(result.stdout)
    assert (doc["status"], doc["exit_code"]) == ("ok", 0)
    atendimentos = doc["sources"][a.id]["datasets"]["atendimentos"]
    assert atendimentos["mode"] == "incremental" and atendimentos["rows"] == 0
    assert atendimentos["watermark"] == "300"
    assert doc["totals"]["sources_ok"] == 2 and doc["totals"]["datasets"] == 2


async def test_a_bad_config_is_a_json_document_too_exit_2(make_sources, dest, write_config):
    (a,) = await make_sources(1)
    path, _ = write_config(dest, [a], [DIM_EQUIPE])
    result = run_cli("once", "--config", str(path), "--json", "--source", "nope")
    assert result.returncode == 2
    doc = _document(result.stdout)
    assert doc == {
        "version": 1,
        "status": "config_error",
        "exit_code": 2,
        "error": "the config cannot be used",
        "errors": ["--source: unknown source id 'nope'"],
    }
    assert result.stderr.strip() == "--source: unknown source id 'nope'"

    path.write_text(path.read_text() + "surprise: 1\n")
    result = run_cli("once", "--config", str(path), "--json")
    assert result.returncode == 2
    (problem,) = _document(result.stdout)["errors"]
    assert problem.endswith("surprise: unknown key") and problem in result.stderr

    result = run_cli("once", "--config", str(path))  # without --json: nothing on stdout
    assert result.returncode == 2 and result.stdout == ""


async def test_an_unreachable_destination_is_a_document_with_its_reason(
    make_sources, dest, write_config
):
    (a,) = await make_sources(1)
    path, _ = write_config(dest, [a], [DIM_EQUIPE])
    path.write_text(
        path.read_text().replace(
            dest.dsn, f"postgresql://syncd:s3nha@127.0.0.1:{embedded.free_port()}/x"
        )
    )
    result = run_cli("once", "--config", str(path), "--json")
    assert result.returncode == 1
    doc = _document(result.stdout)
    assert doc["status"] == "failed" and doc["sources"] == {}
    assert doc["error"].endswith("connection refused") and doc["totals"]["sources"] == 0
    assert "s3nha" not in result.stdout + result.stderr


async def test_the_document_tells_a_skipped_source(make_sources, dest, write_config):
    """Another syncd holds the source: exit 1, and the document says why."""
    from syncd.engine.synclock import SourceLocks

    (a,) = await make_sources(1)
    path, _ = write_config(dest, [a], [DIM_EQUIPE])
    assert run_cli("once", "--config", str(path)).returncode == 0  # the ledger exists
    holder = await asyncpg.connect(dest.dsn)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", SourceLocks.key(a.id))
        result = run_cli("once", "--config", str(path), "--json")
    finally:
        await holder.close()
    assert result.returncode == 1
    doc = _document(result.stdout)
    source = doc["sources"][a.id]
    assert source["status"] == "skipped" and "another syncd instance" in source["error"]
    assert source["datasets"]["dim_equipe"]["status"] == "skipped"
    assert doc["totals"]["sources_skipped"] == 1 and doc["totals"]["datasets_skipped"] == 1
