"""The wheel as an operator gets it: built by `pip wheel .` (what `make wheel` runs; SYNCD_WHEEL
names one already built), its metadata and platform tag checked with twine and auditwheel,
installed into a fresh virtual environment outside the checkout (no editable install, no source
tree on the path, run from another directory), and `syncd once` from there lands a
municipality with the compiled differ."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import TABLE_DATASETS, DestDb
from tests.support.helpers import ROOT

DIM_EQUIPE = TABLE_DATASETS[3]
pytestmark = pytest.mark.slow

# a clean environment: nothing of this checkout or of the test run's venv leaks in
CLEAN_ENV = {
    k: v
    for k, v in os.environ.items()
    if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME", "SYNCD_ROWDIFF_LIBRARY")
    and not k.startswith("SYNCD_PURE")
}


def run(*command: str | Path, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    done = subprocess.run(
        [str(c) for c in command],
        cwd=cwd,
        env=CLEAN_ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, f"{command}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if os.environ.get("SYNCD_WHEEL"):
        return Path(os.environ["SYNCD_WHEEL"]).resolve()
    out = tmp_path_factory.mktemp("wheel")
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, ROOT, cwd=out)
    (built,) = out.glob("syncd-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv outside the checkout with the wheel (and its dependencies) installed."""
    home = tmp_path_factory.mktemp("server")
    assert not home.resolve().is_relative_to(ROOT)
    run(sys.executable, "-m", "venv", home / "venv", cwd=home)
    run(home / "venv" / "bin" / "python", "-m", "pip", "install", "--quiet", wheel, cwd=home)
    yield home
    shutil.rmtree(home / "venv", ignore_errors=True)


def assert_not_the_checkout(installed: Path) -> None:
    """The venv's syncd is the installed one: no editable finder, no path into the checkout."""
    python = installed / "venv" / "bin" / "python"
    code = "import json, sys, syncd; print(json.dumps([syncd.__file__, sys.path]))"
    where, path = json.loads(run(python, "-c", code, cwd=installed).stdout)
    assert Path(where).is_relative_to(installed / "venv"), where
    assert not any(p and Path(p).resolve().is_relative_to(ROOT) for p in path), path
    site = Path(where).parent.parent
    assert not list(site.glob("__editable__*"))
    assert not any(str(ROOT) in pth.read_text() for pth in site.glob("*.pth"))


def test_the_wheel_is_a_platform_wheel_with_the_compiled_differ(wheel: Path) -> None:
    assert wheel.name.startswith("syncd-") and wheel.name.endswith(".whl")
    python, abi, platform = wheel.name[:-4].split("-")[-3:]
    assert (python, abi) == ("py3", "none") and platform != "any"
    names = zipfile.ZipFile(wheel).namelist()
    assert (
        "syncd/engine/rowdiff/_rowdiff.so" in names or "syncd/engine/rowdiff/_rowdiff.dll" in names
    )
    assert "syncd/engine/rowdiff/rowdiff.c" in names  # what the library's digest is checked against
    checked = run(sys.executable, "-m", "twine", "check", "--strict", wheel, cwd=wheel.parent)
    assert "PASSED" in checked.stdout
    if sys.platform == "linux":
        shown = run(sys.executable, "-m", "auditwheel", "show", wheel, cwd=wheel.parent)
        assert "manylinux" in shown.stdout, shown.stdout


async def test_syncd_once_from_the_installed_wheel_runs_the_compiled_differ(
    installed: Path, make_sources, dest: DestDb, write_config
) -> None:
    assert_not_the_checkout(installed)
    (src,) = await make_sources(1)
    path, _ = write_config(dest, [src], [DIM_EQUIPE])
    done = run(
        installed / "venv" / "bin" / "syncd", "once", "--json", "--config", path, cwd=installed
    )
    document = json.loads(done.stdout)
    assert document["status"] == "ok", document
    assert (document["differ"], document["differ_reason"]) == ("compiled", None)
    assert document["totals"]["rows"] > 0
    assert "pure-Python" not in done.stderr
    conn = await dest.connect()
    try:
        landed = await conn.fetchval("SELECT count(*) FROM syncd_data.dim_equipe")
    finally:
        await conn.close()
    assert landed == document["totals"]["rows"]
