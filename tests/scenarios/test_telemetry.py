"""Traces and the freshness view in process, and the dashboard against the metric names syncd
really exports (OTLP export, logs and alert rules through the real `syncd` and promtool in
tests/acceptance/test_telemetry.py)."""

from __future__ import annotations

import io
import json
import re

import yaml
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from syncd.commands.once import run_once
from syncd.lab import embedded
from syncd.observe import telemetry
from syncd.observe.metrics import Metrics

from tests.conftest import TABLE_DATASETS
from tests.support.helpers import ROOT


async def test_span_tree_of_a_pass(make_sources, dest, write_config):
    good = await make_sources(2)
    unreachable = {
        "id": "999001",
        "name": "Inalcançável",
        "dsn": f"postgresql://esus_leitura:hunter2@127.0.0.1:{embedded.free_port()}/esus",
    }
    query = {"name": "equipes_q", "query": "SELECT * FROM tb_dim_equipe"}
    datasets = [
        TABLE_DATASETS[0],
        TABLE_DATASETS[3],
        query,
        {"name": "falta", "table": "public.nao_ha"},
    ]
    _, config = write_config(dest, [*good, unreachable], datasets)
    exporter = InMemorySpanExporter()
    tel = telemetry.setup(install=False)
    tel.provider.add_span_processor(SimpleSpanProcessor(exporter))
    code = await run_once(config, io.StringIO(), io.StringIO(), tracer=tel.tracer)
    tel.shutdown()
    assert code == 1
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.parent is None]
    assert [s.name for s in roots] == ["sync"] * 3
    assert sorted(s.attributes["syncd.source.id"] for s in roots) == sorted(
        [good[0].id, good[1].id, "999001"]
    )
    # span names are a small fixed set (Tempo: one series per name); ids live in attributes
    assert {s.name for s in spans} == {"sync", "COPY", "commit"}
    assert_no_id_in_names(spans, good, [d["name"] for d in datasets])
    assert len({s.context.trace_id for s in roots}) == 3  # one trace per municipality
    for root in roots:
        sid = root.attributes["syncd.source.id"]
        assert root.attributes["server.address"] == "127.0.0.1"
        assert isinstance(root.attributes["server.port"], int)
        assert isinstance(root.attributes["syncd.pass.id"], int)
        children = [
            s for s in spans if s.context.trace_id == root.context.trace_id and s is not root
        ]
        if sid == "999001":
            assert root.attributes["syncd.source.name"] == "Inalcançável"
            assert root.status.status_code == StatusCode.ERROR
            assert "connection refused" in root.status.description
            assert root.attributes["error.type"] == "connection"
            assert [e.name for e in root.events].count("retry") == config.retry.attempts - 1
            assert not children
            continue
        assert root.attributes["syncd.source.name"] == f"Município {sid}"
        assert root.status.status_code == StatusCode.ERROR  # the missing table
        assert root.attributes["error.type"] == "dataset_failed"
        copies = {
            s.attributes["syncd.dataset"]: s
            for s in children
            if s.parent.span_id == root.context.span_id and s.name == "COPY"
        }
        assert set(copies) == {"cidadaos", "dim_equipe", "equipes_q", "falta"}
        cidadaos = copies["cidadaos"]
        assert cidadaos.kind == SpanKind.CLIENT
        assert cidadaos.attributes["db.system.name"] == "postgresql"
        assert cidadaos.attributes["db.operation.name"] == "COPY"
        assert cidadaos.attributes["db.collection.name"] == "public.tb_fat_cidadao_pec"
        assert cidadaos.attributes["db.namespace"] == next(g.dbname for g in good if g.id == sid)
        assert cidadaos.attributes["db.response.returned_rows"] == 60
        # Tempo's service graph: a CLIENT span naming the database draws it as a node
        assert cidadaos.attributes["peer.service"] == cidadaos.attributes["db.namespace"]
        assert cidadaos.attributes["db.name"] == cidadaos.attributes["db.namespace"]
        # a query is no collection: the dataset name is no table
        equipes = copies["equipes_q"]
        assert "db.collection.name" not in equipes.attributes
        assert equipes.attributes["syncd.dataset"] == "equipes_q"
        assert equipes.attributes["syncd.dataset.kind"] == "query"
        assert cidadaos.attributes["syncd.bytes"] > 0
        assert cidadaos.status.status_code == StatusCode.UNSET
        landing = [s for s in children if s.parent.span_id == cidadaos.context.span_id]
        assert [s.name for s in landing] == ["COPY"]
        assert landing[0].attributes["db.collection.name"] == "syncd_data.cidadaos"
        falta = copies["falta"]
        assert falta.status.status_code == StatusCode.ERROR
        assert 'relation "public.nao_ha" does not exist' in falta.status.description
        assert [e.name for e in falta.events] == ["exception"]
        commit = [s for s in children if s.name == "commit"]
        assert len(commit) == 1 and commit[0].attributes["syncd.datasets"] == 3
        assert commit[0].attributes["db.operation.name"] == "COMMIT"
    text = json.dumps([json.loads(s.to_json()) for s in spans])
    assert "hunter2" not in text


def assert_no_id_in_names(spans, sources, datasets: list[str]) -> None:
    """No span name carries a source id or a dataset name, whatever the span."""
    for span in spans:
        for word in [*(s.id for s in sources), *datasets]:
            assert word not in span.name, f"span name {span.name!r} carries {word!r}"


async def test_freshness_view(make_sources, dest, write_config):
    good = await make_sources(2)
    never = {"id": "999003", "dsn": f"postgresql://x@127.0.0.1:{embedded.free_port()}/esus"}
    _, config = write_config(dest, [*good, never], [TABLE_DATASETS[3]])
    assert await run_once(config, io.StringIO(), io.StringIO()) == 1
    dst = await dest.connect()
    try:
        await dst.execute(
            "UPDATE syncd.latest SET last_success = now() - interval '50 hours' "
            "WHERE source_id = $1",
            good[1].id,
        )
        states = dict(await dst.fetch("SELECT source_id, state FROM syncd.freshness"))
        assert states == {good[0].id: "ok", good[1].id: "late", "999003": "never"}
        await dst.execute(
            "UPDATE syncd.latest SET last_success = now() - interval '73 hours' "
            "WHERE source_id = $1",
            good[1].id,
        )
        assert (
            await dst.fetchval("SELECT state FROM syncd.freshness WHERE source_id = $1", good[1].id)
            == "critical"
        )
    finally:
        await dst.close()


# -- dashboard and alert rules -----------------------------------------------------------------


def exported_names() -> set[str]:
    names = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        if family.type == "histogram":
            names |= {family.name + suffix for suffix in ("_bucket", "_sum", "_count")}
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "syncd-rules.yml").read_text())
    recorded = {r["record"] for g in rules["groups"] for r in g["rules"] if "record" in r}
    return names | recorded


def referenced(expr: str) -> set[str]:
    return {m for m in re.findall(r"\b(syncd[:_][a-z_:]+)", expr)}


def test_dashboard_uses_real_metrics_and_has_the_tempo_panel():
    dashboard = json.loads((ROOT / "deploy" / "grafana" / "syncd.json").read_text())
    names = exported_names()
    exprs = [t.get("expr", "") for p in dashboard["panels"] for t in p["targets"]]
    assert all(referenced(e) <= names for e in exprs), [e for e in exprs if referenced(e) - names]
    traceql = [t["query"] for p in dashboard["panels"] for t in p["targets"] if "query" in t]
    assert '{ resource.service.name = "syncd" && status = error }' in traceql
    titles = " ".join(p["title"] for p in dashboard["panels"]).lower()
    for topic in ("freshness", "throughput", "fail", "limiter"):
        assert topic in titles
