"""Traces, logs and metrics: the span tree, a real OTLP receiver, JSON logs, the freshness view,
and the dashboard and alert rules against the metric names syncd really exports."""

from __future__ import annotations

import io
import json
import re
import shutil
import subprocess
from concurrent import futures

import anyio
import grpc
import pytest
import yaml
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.parser import text_string_to_metric_families

from syncd import __version__
from syncd.lab import embedded
from syncd.observe import telemetry
from syncd.observe.metrics import Metrics
from syncd.service.once import run_once

from conftest import TABLE_DATASETS
from helpers import ROOT, run_cli


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


def attribute(span, key: str) -> str:
    """A string attribute of an OTLP protobuf span."""
    return next(a.value.string_value for a in span.attributes if a.key == key)


def assert_no_id_in_names(spans, sources, datasets: list[str]) -> None:
    """No span name carries a source id or a dataset name, whatever the span."""
    for span in spans:
        for word in [*(s.id for s in sources), *datasets]:
            assert word not in span.name, f"span name {span.name!r} carries {word!r}"


async def once_exporting_to(path, port: int, protocol: str, service: str):
    """`syncd once` in a subprocess, configured only by the OTEL_* variables."""
    env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
        "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
        "OTEL_SERVICE_NAME": service,
    }
    return await anyio.to_thread.run_sync(lambda: run_cli("once", "--config", str(path), env=env))


class OtlpHttpReceiver:
    """An OTLP/HTTP trace receiver: decodes ExportTraceServiceRequest protobufs."""

    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []

    async def handle(self, request: web.Request) -> web.Response:
        assert request.headers["Content-Type"] == "application/x-protobuf"
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(await request.read())
        self.requests.append(message)
        reply = trace_service_pb2.ExportTraceServiceResponse()
        return web.Response(body=reply.SerializeToString(), content_type="application/x-protobuf")

    def spans(self) -> list[tuple[dict, object]]:
        found = []
        for req in self.requests:
            for rs in req.resource_spans:
                resource = {a.key: a.value.string_value for a in rs.resource.attributes}
                for ss in rs.scope_spans:
                    assert (ss.scope.name, ss.scope.version) == ("syncd", __version__)
                    found += [(resource, span) for span in ss.spans]
        return found


class GrpcReceiver(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.requests: list = []

    def Export(self, request, context):
        self.requests.append(request)
        return trace_service_pb2.ExportTraceServiceResponse()


async def test_otlp_http_export_from_the_environment_and_flush_on_exit(
    make_sources, dest, write_config
):
    sources = await make_sources(2)
    path, _ = write_config(dest, sources, [TABLE_DATASETS[3]])
    receiver = OtlpHttpReceiver()
    app = web.Application()
    app.router.add_post("/v1/traces", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    port = embedded.free_port()
    site = web.TCPSite(runner, "127.0.0.1", port)
    await site.start()
    try:
        result = await once_exporting_to(path, port, "http/protobuf", service="")
    finally:
        await runner.cleanup()
    assert result.returncode == 0, result.stderr
    spans = receiver.spans()
    assert_no_id_in_names([span for _, span in spans], sources, ["dim_equipe"])
    names = sorted(span.name for _, span in spans)
    assert names.count("sync") == 2 and names.count("COPY") == 4  # source and landing sides
    roots = [span for _, span in spans if span.name == "sync"]
    assert sorted(attribute(span, "syncd.source.id") for span in roots) == sorted(
        s.id for s in sources
    )
    assert {resource["service.name"] for resource, _ in spans} == {"syncd"}
    # JSON logs on stderr; the lines inside a sync carry its trace id (Grafana: log -> trace)
    trace_ids = {span.trace_id.hex() for _, span in spans}
    lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
    dataset_lines = [line for line in lines if line.get("dataset") == "dim_equipe"]
    assert len(dataset_lines) == 2
    for line in dataset_lines:
        assert line["trace_id"] in trace_ids and len(line["span_id"]) == 16
        assert line["level"] == "info" and line["rows"] > 0 and line["source"]


async def test_otlp_grpc_export(make_sources, dest, write_config):
    sources = await make_sources(1)
    path, _ = write_config(dest, sources, [TABLE_DATASETS[3]])
    receiver = GrpcReceiver()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(receiver, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        result = await once_exporting_to(path, port, "grpc", service="syncd-test")
    finally:
        server.stop(0)
    assert result.returncode == 0, result.stderr
    names = [
        span.name
        for req in receiver.requests
        for rs in req.resource_spans
        for ss in rs.scope_spans
        for span in ss.spans
    ]
    assert set(names) == {"sync", "COPY", "commit"}


def test_a_bad_otlp_protocol_is_a_config_error(tmp_path):
    result = run_cli(
        "once",
        "--config",
        str(ROOT / "config" / "syncd.example.yaml"),
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:1",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "thrift",
        },
    )
    assert result.returncode == 2
    assert "grpc or http/protobuf" in result.stderr and "Traceback" not in result.stderr


async def test_once_writes_a_metrics_textfile(make_sources, dest, write_config, tmp_path):
    sources = await make_sources(2)
    path, _ = write_config(dest, sources, [TABLE_DATASETS[3]])
    textfile = tmp_path / "syncd.prom"
    result = run_cli("once", "--config", str(path), "--metrics-textfile", str(textfile))
    assert result.returncode == 0, result.stderr
    families = {f.name: f for f in text_string_to_metric_families(textfile.read_text())}
    assert families["syncd_syncs"].samples[0].value == 2
    assert {
        s.labels["source"] for s in families["syncd_last_success_timestamp_seconds"].samples
    } == {s.id for s in sources}


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


def test_alert_rules_parse_and_use_real_metrics(tmp_path):
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "syncd-rules.yml").read_text())
    names = exported_names()
    alerts = {}
    for group in rules["groups"]:
        for rule in group["rules"]:
            assert referenced(rule["expr"]) <= names, rule
            if "alert" in rule:
                alerts[rule["alert"]] = rule
                assert rule["labels"]["severity"] in ("warning", "critical")
                assert rule["annotations"]["summary"]
    assert "48 * 3600" in alerts["SyncdMunicipalityLate"]["expr"]
    assert "72 * 3600" in alerts["SyncdMunicipalityCritical"]["expr"]
    assert {"SyncdFailureRatioHigh", "SyncdDown", "SyncdWatchdogFailed"} <= set(alerts)
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run(
            [promtool, "check", "rules", str(ROOT / "deploy" / "prometheus" / "syncd-rules.yml")],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stdout + result.stderr


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


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_log_lines_never_show_a_password(fmt, tmp_path):
    config = tmp_path / "c.yaml"
    port = embedded.free_port()
    config.write_text(
        f"destination: {{dsn: 'postgresql://syncd:hunter2@127.0.0.1:{port}/x'}}\n"
        "sources: [{id: a, dsn: 'postgresql://u:hunter3@127.0.0.1:1/e'}]\n"
        "datasets: [{name: d, table: t}]\n"
    )
    config.chmod(0o644)
    result = run_cli("--log-format", fmt, "once", "--config", str(config))
    assert result.returncode == 1
    assert "hunter2" not in result.stderr + result.stdout
    assert "hunter3" not in result.stderr + result.stdout
    assert "readable by every user" in result.stderr
    # the warning names its event in either format
    if fmt == "json":
        lines = [json.loads(line) for line in result.stderr.splitlines() if line.startswith("{")]
        assert "config_warning" in {line.get("event") for line in lines}, result.stderr
    else:
        warning = next(line for line in result.stderr.splitlines() if "every user" in line)
        assert warning.endswith("event=config_warning"), warning
