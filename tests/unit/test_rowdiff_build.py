"""The row differ's accelerator builds without Python's headers, with the system's compiler or
with Zig's from PyPI (what a fresh Debian 12, Ubuntu 24.04 or RHEL 9 without a compiler gets
from `make`), and the library it makes loads and hashes as xxhash does."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import pytest

from syncd.engine import rowdiff
from syncd.engine.rowdiff import build

ROW = b"\x00\x01\x00\x00\x00\x03abc"


def hashes_like_xxhash(path: Path) -> None:
    lib = build.load(path)
    assert lib is not None and lib.rd_abi() == build.ABI
    buffer = ctypes.create_string_buffer(16)
    lib.rd_hash(7, ROW, len(ROW), buffer)
    assert buffer.raw == rowdiff.py_row_hash(ROW, 7)


@pytest.mark.skipif(build.system_compiler() is None, reason="no system C compiler here")
def test_the_system_compiler_builds_it(tmp_path: Path) -> None:
    target = build.build(compiler="system", target=tmp_path / "lib.so")
    hashes_like_xxhash(target)
    assert not (tmp_path / "lib.so.partial").exists()


def test_no_compiler_is_said_plainly(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """(Before the Zig test below, which installs ziglang into this environment.)"""
    monkeypatch.setenv("PATH", str(tmp_path))  # nothing to run there
    monkeypatch.delenv("CC", raising=False)
    if build.zig_compiler(fetch=False) is not None:
        pytest.skip("ziglang is installed here: there is a compiler")
    with pytest.raises(RuntimeError, match="no C compiler"):
        build.build(target=tmp_path / "lib.so")


@pytest.mark.slow
def test_zig_from_pypi_builds_it_where_there_is_no_compiler(tmp_path: Path) -> None:
    """`--fetch-compiler` with no compiler on PATH: pip installs `ziglang` and it compiles."""
    if os.environ.get("CI") != "true" and not shutil.which("pip"):
        pytest.skip("no pip to fetch Zig with (outside CI)")
    target = build.build(fetch=True, compiler="zig", target=tmp_path / "lib.so")
    hashes_like_xxhash(target)


def test_a_library_of_another_abi_is_not_loaded(tmp_path: Path) -> None:
    assert build.load(tmp_path / "missing.so") is None
    (tmp_path / "junk.so").write_bytes(b"not a library")
    assert build.load(tmp_path / "junk.so") is None
