"""Traces, logs and metrics through the real `syncd`: a real OTLP receiver, JSON logs, the
metrics textfile, and the alert rules in promtool against the metric names syncd really exports
(the span tree, the freshness view and the dashboard in tests/scenarios/test_telemetry.py)."""

from __future__ import annotations

import json
import shutil
import subprocess
from concurrent import futures

import anyio
import grpc
import pytest
import yaml
from aiohttp import web
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from prometheus_client.parser import text_string_to_metric_families

from syncd import __version__
from syncd.lab import embedded

from tests.conftest import TABLE_DATASETS
from tests.scenarios.test_telemetry import assert_no_id_in_names, exported_names, referenced
from tests.support.helpers import ROOT, run_cli


def attribute(span, key: str) -> str:
    """A string attribute of an OTLP protobuf span."""
    return next(a.value.string_value for a in span.attributes if a.key == key)


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
