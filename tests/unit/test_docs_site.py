"""The documentation site builds with `mkdocs build --strict`: no broken link or anchor, no page
left out of the nav, no snippet of a file that is gone, no warning of any kind (what `make docs`
runs). Built in-process through MkDocs' own API, with `strict` on."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from mkdocs.commands.build import build
from mkdocs.config import load_config
from mkdocs.exceptions import Abort

ROOT = Path(__file__).resolve().parents[2]


def test_the_site_builds_strict(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog):
    monkeypatch.setenv("NO_MKDOCS_2_WARNING", "1")  # mkdocs-material's end-of-life banner
    monkeypatch.chdir(ROOT)  # pymdownx.snippets' base_path is the checkout
    config = load_config(str(ROOT / "mkdocs.yml"), site_dir=str(tmp_path / "site"), strict=True)
    with caplog.at_level(logging.WARNING, logger="mkdocs"):
        try:
            build(config)
        except Abort as abort:
            warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
            pytest.fail(f"{abort}:\n" + "\n".join(warnings))
    assert (tmp_path / "site" / "index.html").exists()
    assert (tmp_path / "site" / "reference" / "configuration" / "index.html").exists()


def test_the_runbook_has_a_section_for_every_alert_and_no_other():
    """docs/operate/runbook.md maps each alert of deploy/prometheus/syncd-rules.yml to what to
    look at and what to do: an alert added without its section, or a section left behind by a
    removed alert, fails here."""
    import re

    import yaml

    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "syncd-rules.yml").read_text())
    alerts = {r["alert"] for group in rules["groups"] for r in group["rules"] if "alert" in r}
    runbook = (ROOT / "docs" / "operate" / "runbook.md").read_text()
    alerts_part = runbook[runbook.index("\n## Alerts\n") :]
    sections = set(re.findall(r"^### (Syncd\w+)\s*$", alerts_part, flags=re.M))
    assert alerts, "no alert read from the rules file"
    assert sections == alerts
