"""The compiled row differ builds without Python's headers, with the system's compiler or with
Zig's from PyPI (which the build backend asks pip for where no C compiler works), carries the
digest of the source it was built from, and a library that is missing, broken, of another ABI or
built from another rowdiff.c is never loaded: `load` says why, in one line."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from syncd.engine import rowdiff
from syncd.engine.rowdiff import build

from tests.support.helpers import ROOT

ROW = b"\x00\x01\x00\x00\x00\x03abc"
needs_cc = pytest.mark.skipif(not build.system_compiler_works(), reason="no C compiler here")


def hashes_like_xxhash(path: Path, source: Path = build.SOURCE) -> None:
    lib = build.load(path, source=source).lib
    assert lib.rd_abi() == build.ABI
    buffer = ctypes.create_string_buffer(16)
    lib.rd_hash(7, ROW, len(ROW), buffer)
    assert buffer.raw == rowdiff.py_row_hash(ROW, 7)


def source_copy(tmp_path: Path, change: str = "") -> Path:
    """rowdiff.c and its header in a temporary tree, `change` appended to rowdiff.c."""
    tree = tmp_path / "src"
    shutil.copytree(build.HERE / "vendor", tree / "vendor")
    source = tree / "rowdiff.c"
    source.write_text(build.SOURCE.read_text() + change)
    return source


@needs_cc
def test_the_system_compiler_builds_it(tmp_path: Path) -> None:
    target = build.compile_library(tmp_path / "lib.so", compiler="system")
    hashes_like_xxhash(target)
    assert not (tmp_path / "lib.so.partial").exists()
    assert build.load(target).lib.rd_source() == build.source_digest().encode()


def test_no_compiler_is_said_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to run there
    monkeypatch.delenv("CC", raising=False)
    if build.zig_compiler() is not None:
        pytest.skip("ziglang is installed here: there is a compiler")
    with pytest.raises(RuntimeError, match="no C compiler"):
        build.compile_library(tmp_path / "lib.so")


@needs_cc
def test_a_library_built_from_another_rowdiff_c_is_not_loaded(tmp_path: Path) -> None:
    """What an upgrade may leave behind: a library that loads and answers, but was compiled
    from an older rowdiff.c than the one shipped beside it."""
    older = source_copy(tmp_path, "\n/* an older version */\n")
    target = build.compile_library(tmp_path / "old.so", source=older)
    hashes_like_xxhash(target, source=older)  # a good library, of its own source
    with pytest.raises(build.NotLoaded, match=r"built from another rowdiff\.c"):
        build.load(target)


@needs_cc
def test_a_library_from_before_the_digest_is_not_loaded(tmp_path: Path) -> None:
    """A library built before it carried its source's digest (no rd_source)."""
    source = source_copy(tmp_path)
    text = source.read_text()
    line = "RD_EXPORT const char *rd_source(void) { return RD_SOURCE; }"
    assert line in text
    source.write_text(text.replace(line, ""))
    target = build.compile_library(tmp_path / "older.so", source=source)
    with pytest.raises(build.NotLoaded, match="not this syncd's row differ"):
        build.load(target)


def test_a_missing_or_broken_library_is_not_loaded(tmp_path: Path) -> None:
    with pytest.raises(build.NotLoaded, match="missing"):
        build.load(tmp_path / "missing.so")
    (tmp_path / "junk.so").write_bytes(b"not a library")
    with pytest.raises(build.NotLoaded, match="does not load"):
        build.load(tmp_path / "junk.so")


def _backend_asks_for(env: dict[str, str]) -> list[str]:
    """What the in-tree build backend asks pip to install before building a wheel."""
    code = (
        "import sys; sys.path.insert(0, 'build_backend'); import syncd_build; "
        "print(' '.join(syncd_build.compiler_requirements()))"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    )
    return done.stdout.split()


@needs_cc
def test_the_build_asks_for_zig_only_where_no_c_compiler_works(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "CC"}
    assert "ziglang" not in _backend_asks_for(env)
    assert "ziglang" in _backend_asks_for({**env, "PATH": str(tmp_path)})  # no cc there
    # a `cc` that does not work counts as none
    assert "ziglang" in _backend_asks_for({**env, "CC": "false"})
    assert "ziglang" not in _backend_asks_for(
        {**env, "PATH": str(tmp_path), build.SKIP_VARIABLE: "1"}
    )


@pytest.mark.slow
def test_a_machine_without_a_c_compiler_builds_the_wheel_with_zig(tmp_path: Path) -> None:
    """`pip wheel .` with no compiler on PATH: the backend asks for `ziglang`, pip installs it
    into the build's environment, and the wheel carries a library that loads."""
    env = {k: v for k, v in os.environ.items() if k != "CC"}
    env["PATH"] = str(tmp_path / "empty")
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(tmp_path),
            str(ROOT),
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (wheel,) = tmp_path.glob("syncd-*.whl")
    shutil.unpack_archive(wheel, tmp_path / "unpacked", "zip")
    package = tmp_path / "unpacked" / "syncd" / "engine" / "rowdiff"
    hashes_like_xxhash(package / build.NAME, source=package / "rowdiff.c")
    assert b"Linker: LLD" in (package / build.NAME).read_bytes()  # Zig's clang made it, not gcc
