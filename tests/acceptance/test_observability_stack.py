"""deploy/observability/ with a real promtool: the Prometheus config (with the rules as the
container sees them) and every PromQL query of the trace-to-metrics links."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import yaml

from tests.support.tools import promtool
from tests.unit.test_observability_stack import (
    compose,
    datasources,
    load,
    mounts,
)


def test_prometheus_config_and_the_rules_it_loads_pass_promtool(tmp_path):
    tool = promtool()
    command = compose()["services"]["prometheus"]["command"]
    config = next(c.split("=", 1)[1] for c in command if c.startswith("--config.file="))
    assert "--web.enable-remote-write-receiver" in command  # Tempo's metrics generator
    # the container's config directory, as the mounts lay it out
    etc = Path(config).parent
    for target, source in mounts("prometheus").items():
        if isinstance(source, Path) and Path(target).parent == etc:
            shutil.copy(source, tmp_path / Path(target).name)
    result = subprocess.run(
        [tool, "check", "config", str(tmp_path / Path(config).name)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "syncd-rules.yml" in result.stdout and "SUCCESS" in result.stdout
    scrape = load(tmp_path / Path(config).name)["scrape_configs"]
    jobs = {job["job_name"]: job for job in scrape}
    assert "syncd" in jobs  # the alert rules read up{job="syncd"}
    assert jobs["syncd"]["static_configs"][0]["targets"] == ["host.docker.internal:9187"]
    assert "host.docker.internal:host-gateway" in compose()["services"]["prometheus"]["extra_hosts"]


def test_trace_to_metrics_queries_are_valid_promql(tmp_path):
    tool = promtool()
    tempo = next(s for s in datasources() if s["type"] == "tempo")["jsonData"]
    links = tempo["tracesToMetrics"]
    # the span's tags as Grafana fills them in ("$$" in a provisioning file is one "$")
    assert [t["key"] for t in links["tags"]] == ["syncd.source.id"]
    rules = [
        {"record": f"check:query_{i}", "expr": q["query"].replace("$$__tags", 'source="351570"')}
        for i, q in enumerate(links["queries"])
    ]
    assert len(rules) >= 4
    assert all("$" not in r["expr"] for r in rules)
    path = tmp_path / "queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "links", "rules": rules}]}))
    result = subprocess.run(
        [tool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
