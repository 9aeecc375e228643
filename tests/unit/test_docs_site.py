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
