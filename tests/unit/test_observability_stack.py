"""deploy/observability/ checked offline (no image can be pulled here): every file parses, every
file compose mounts exists, every data source a link or the dashboard names is provisioned,
and Tempo's config has the keys it needs (the Prometheus config and the PromQL queries of the
trace-to-metrics links in a real promtool: tests/acceptance/test_observability_stack.py)."""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml
from opentelemetry.sdk.trace import TracerProvider

from syncd.observe.telemetry import JsonFormatter

from tests.support.helpers import ROOT

STACK = ROOT / "deploy" / "observability"
COMPOSE = STACK / "compose.yaml"
PROVISIONING = STACK / "grafana" / "provisioning"
DATASOURCES = PROVISIONING / "datasources" / "syncd.yaml"
# Tempo 2.x's top-level configuration blocks (a misspelt one is an error at Tempo's start)
TEMPO_KEYS = {
    "target", "http_api_prefix", "server", "internal_server", "distributor", "ingester",
    "metrics_generator", "querier", "query_frontend", "compactor", "storage", "memberlist",
    "overrides", "usage_report", "cache", "multitenancy_enabled", "stream_over_http_enabled",
}  # fmt: skip
PER_SOURCE = {"syncd.source.id", "syncd.source.name", "server.address", "server.port"}


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def compose() -> dict[str, Any]:
    return dict(load(COMPOSE))


def mounts(service: str) -> dict[str, Path | str]:
    """Container path -> host path (bind mounts) or volume name."""
    found: dict[str, Path | str] = {}
    for entry in compose()["services"][service].get("volumes", []):
        source, target = entry.split(":")[:2]
        local = source.startswith((".", "/"))
        found[target] = (STACK / source).resolve() if local else source
    return found


def test_every_file_parses():
    files = [p for p in STACK.rglob("*") if p.suffix in (".yaml", ".yml")]
    assert len(files) >= 5
    for path in files:
        assert isinstance(load(path), dict), path
    json.loads((ROOT / "deploy" / "grafana" / "syncd.json").read_text())


def test_every_mounted_file_exists_and_every_volume_is_declared():
    doc = compose()
    for name in doc["services"]:
        for target, source in mounts(name).items():
            if isinstance(source, Path):
                if str(source).startswith(("/var/log", "/run/log", "/etc/machine-id")):
                    continue  # the host's journal, read by Alloy
                assert source.exists(), f"{name}: {source} (mounted at {target}) is missing"
            else:
                assert source in doc["volumes"], f"{name}: volume {source} is not declared"


def test_every_image_is_pinned_and_every_port_is_on_loopback():
    for name, service in compose()["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
        for port in service.get("ports", []):
            assert port.startswith("127.0.0.1:"), (name, port)


def datasources() -> list[dict[str, Any]]:
    return list(load(DATASOURCES)["datasources"])


def uids_referenced(node: Any) -> list[str]:
    """Every datasourceUid anywhere in a data source's settings."""
    if isinstance(node, dict):
        here = [node["datasourceUid"]] if "datasourceUid" in node else []
        return here + [u for value in node.values() for u in uids_referenced(value)]
    if isinstance(node, list):
        return [u for value in node for u in uids_referenced(value)]
    return []


def test_every_linked_data_source_is_provisioned_and_reachable_in_compose():
    sources = datasources()
    uids = {s["uid"] for s in sources}
    assert len(uids) == len(sources)
    assert {s["type"] for s in sources} >= {"prometheus", "tempo", "loki"}
    services = compose()["services"]
    for source in sources:
        for uid in uids_referenced(source.get("jsonData", {})):
            assert uid in uids, f"{source['name']} links to {uid!r}, which is not provisioned"
        host = urlsplit(source["url"]).hostname
        assert host in services, f"{source['name']}: {host} is no service of compose.yaml"
    tempo = next(s for s in sources if s["type"] == "tempo")["jsonData"]
    assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
    assert tempo["tracesToMetrics"]["datasourceUid"] == "prometheus"
    assert tempo["serviceMap"]["datasourceUid"] == "prometheus"


def test_the_dashboard_is_provisioned_and_its_data_sources_exist():
    provider = load(PROVISIONING / "dashboards" / "syncd.yaml")["providers"][0]
    where = Path(provider["options"]["path"])
    grafana = mounts("grafana")
    dashboards = [Path(t) for t, s in grafana.items() if Path(t).parent == where]
    assert [grafana[str(d)] for d in dashboards] == [ROOT / "deploy" / "grafana" / "syncd.json"]
    assert grafana["/etc/grafana/provisioning"] == PROVISIONING

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "syncd.json").read_text())
    variables = {
        v["name"]: v["query"] for v in dashboard["templating"]["list"] if v["type"] == "datasource"
    }
    provisioned = {s["uid"]: s["type"] for s in datasources()}
    used = []
    for panel in dashboard["panels"]:
        used += [panel.get("datasource")] + [t.get("datasource") for t in panel.get("targets", [])]
    used = [d for d in used if d]
    assert used
    for ref in used:
        uid = ref["uid"]
        if match := re.fullmatch(r"\$\{(\w+)\}", uid):
            # a data source variable picks a provisioned data source of its type
            assert match.group(1) in variables, uid
            assert variables[match.group(1)] == ref["type"] in provisioned.values(), ref
        else:
            assert provisioned.get(uid) == ref["type"], ref


def test_tempo_receives_otlp_and_feeds_prometheus():
    tempo = load(STACK / "tempo.yaml")
    assert set(tempo) <= TEMPO_KEYS, set(tempo) - TEMPO_KEYS
    protocols = tempo["distributor"]["receivers"]["otlp"]["protocols"]
    assert protocols["grpc"]["endpoint"] == "0.0.0.0:4317"  # inside the container
    assert protocols["http"]["endpoint"] == "0.0.0.0:4318"
    service = compose()["services"]["tempo"]
    assert {"127.0.0.1:4317:4317", "127.0.0.1:4318:4318"} <= set(service["ports"])
    port = tempo["server"]["http_listen_port"]
    assert next(s for s in datasources() if s["type"] == "tempo")["url"] == f"http://tempo:{port}"

    generator = tempo["metrics_generator"]
    assert [w["url"] for w in generator["storage"]["remote_write"]] == [
        "http://prometheus:9090/api/v1/write"
    ]
    processors = tempo["overrides"]["defaults"]["metrics_generator"]["processors"]
    assert {"service-graphs", "span-metrics"} <= set(processors)
    assert "local-blocks" not in processors or "traces_storage" in generator
    dimensions = set(generator["processor"]["span_metrics"]["dimensions"])
    assert not dimensions & PER_SOURCE  # one series per municipality is what span names fixed
    assert {"peer.service", "db.name"} <= set(
        generator["processor"]["service_graphs"]["peer_attributes"]
    )

    # everything Tempo writes is on its volume, which tempo-init handed to Tempo's uid
    data = next(t for t, s in mounts("tempo").items() if s == "tempo-data")
    paths = [
        generator["storage"]["path"],
        generator["traces_storage"]["path"],
        tempo["storage"]["trace"]["wal"]["path"],
        tempo["storage"]["trace"]["local"]["path"],
    ]
    assert all(p.startswith(data + "/") for p in paths), paths
    assert mounts("tempo-init") == {data: "tempo-data"}
    assert "tempo-init" in service["depends_on"]


def test_alloy_reads_only_syncds_journal_into_the_provisioned_loki():
    text = (STACK / "alloy.alloy").read_text()
    assert 'matches       = "_SYSTEMD_UNIT=syncd.service"' in text
    assert 'url = "http://loki:3100/loki/api/v1/push"' in text
    loki = next(s for s in datasources() if s["type"] == "loki")
    assert loki["url"] == "http://loki:3100"
    # the label the trace-to-logs query selects on is the one Alloy sets
    tempo = next(s for s in datasources() if s["type"] == "tempo")["jsonData"]
    assert tempo["tracesToLogsV2"]["query"].startswith('{service_name="syncd"}')
    assert 'service_name = "syncd"' in text
    # the derived field finds the trace id in a log line as syncd writes it inside a sync
    pattern = loki["jsonData"]["derivedFields"][0]["matcherRegex"]
    record = logging.LogRecord("syncd.sync", logging.INFO, __file__, 1, "synced", None, None)
    with TracerProvider().get_tracer("test").start_as_current_span("sync") as span:
        line = JsonFormatter().format(record)
        trace_id = format(span.get_span_context().trace_id, "032x")
    match = re.search(pattern, line)
    assert match and match.group(1) == trace_id, (pattern, line)
