"""The build's one compiled part (everything else is in pyproject.toml): the row differ,
syncd/engine/rowdiff/rowdiff.c, compiled into a plain shared library inside the package and
loaded with ctypes. It uses no Python headers and no PyInit, so one wheel per platform serves
every Python 3.11+ (`py3-none-<platform>`). The compiler is the system's, else Zig's from PyPI
(build_backend/syncd_build.py asks pip for it when no system compiler works).
"""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_ext import build_ext

sys.path.insert(0, str(Path(__file__).resolve().parent / "build_backend"))
from syncd_build import rowdiff_build

ROWDIFF = rowdiff_build()


class BuildDiffer(build_ext):
    """rowdiff.c into `syncd/engine/rowdiff/_rowdiff.so` (`.dll` on Windows) with build.py's
    compile_library, which embeds the digest of the source it compiled."""

    def get_ext_filename(self, fullname: str) -> str:
        *package, _ = fullname.split(".")
        return str(Path(*package, ROWDIFF.NAME))

    def build_extension(self, ext: Extension) -> None:
        target = Path(self.get_ext_fullpath(ext.name))
        if ROWDIFF.skipped():
            print(f"{ROWDIFF.SKIP_VARIABLE} is set: syncd is built without its compiled differ")
            return
        try:
            ROWDIFF.compile_library(target, source=Path(ext.sources[0]).resolve())
        except RuntimeError as exc:
            sys.exit(f"the row differ could not be compiled: {exc}")


class PlatformWheel(bdist_wheel):
    """Any Python 3 on this platform: the library does not use Python's ABI."""

    def get_tag(self) -> tuple[str, str, str]:
        _, _, platform = super().get_tag()
        return "py3", "none", platform


setup(
    ext_modules=[
        Extension(
            "syncd.engine.rowdiff._rowdiff",
            sources=["syncd/engine/rowdiff/rowdiff.c"],
            depends=["syncd/engine/rowdiff/vendor/xxhash.h"],
        )
    ],
    cmdclass={"build_ext": BuildDiffer, "bdist_wheel": PlatformWheel},
)
