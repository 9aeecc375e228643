"""The compiled row differ: `rowdiff.c` compiled into a shared library beside it by the
package's own build, and loaded with ctypes. `pip install .`, `pip install -e .` and `pip wheel .`
compile it (setup.py's build_ext calls `compile_library` here); nothing is compiled after install.

It uses no Python headers, so any C compiler builds it: the system's (`$CC`, `cc`, `gcc`, `clang`)
or, on a machine that has none, Zig's from PyPI (the in-tree build backend,
build_backend/syncd_build.py, then asks pip for the `ziglang` package as a build requirement).

The library carries the digest of the sources it was built from (`rd_source()`, set with
`-DRD_SOURCE` at build time); `load` refuses one whose digest is not that of the `rowdiff.c`
shipped beside it (a library that survived an upgrade, or an editable install whose C source
changed since), as it refuses one of another ABI: a stale library never runs.

This module is imported by setup.py by its path, in the build's own environment: standard
library only.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "rowdiff.c"
HEADERS = (Path("vendor") / "xxhash.h",)  # relative to rowdiff.c
NAME = "_rowdiff.dll" if sys.platform == "win32" else "_rowdiff.so"
LIBRARY = HERE / NAME
ABI = 2  # rowdiff.c's RD_ABI
FLAGS = ["-O3", "-shared", "-fPIC", "-std=c99", "-fvisibility=hidden"]
# the library another path than the one beside this file (a test's stale or broken copy)
LIBRARY_VARIABLE = "SYNCD_ROWDIFF_LIBRARY"
# set at build time: a package without the compiled differ (a platform no compiler reaches);
# syncd then says at every start that the pure-Python one runs
SKIP_VARIABLE = "SYNCD_BUILD_WITHOUT_DIFFER"
PROBE = (
    "#include <stdint.h>\n#include <stdlib.h>\n#include <string.h>\nint probe(void) { return 1; }\n"
)


def skipped() -> bool:
    return os.environ.get(SKIP_VARIABLE, "") not in ("", "0")


def source_digest(source: Path = SOURCE) -> str:
    """The digest of rowdiff.c and the header it includes: what a library says it was built
    from."""
    digest = hashlib.sha256()
    for path in (source, *(source.parent / h for h in HEADERS)):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:32]


def system_compiler() -> list[str] | None:
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def system_compiler_works() -> bool:
    """The system's compiler builds a shared library with the headers rowdiff.c includes (a
    `cc` without the C library's headers does not count)."""
    import tempfile

    cc = system_compiler()
    if cc is None:
        return False
    with tempfile.TemporaryDirectory() as tmp:
        probe = Path(tmp) / "probe.c"
        probe.write_text(PROBE)
        try:
            done = subprocess.run(
                [*cc, *FLAGS, "-o", str(Path(tmp) / "probe.so"), str(probe)],
                capture_output=True,
            )
        except OSError:
            return False
        return done.returncode == 0


def zig_compiler() -> list[str] | None:
    """Zig's C compiler, where the `ziglang` package is installed in this Python."""
    import importlib.util

    if importlib.util.find_spec("ziglang") is None:
        return None
    return [sys.executable, "-m", "ziglang", "cc"]


def compile_library(target: Path, *, source: Path = SOURCE, compiler: str | None = None) -> Path:
    """Compile `source` into `target` with the system's compiler, else Zig's (`compiler`:
    only that one); raises RuntimeError saying why it could not."""
    candidates = []
    if compiler in (None, "system"):
        candidates.append(system_compiler())
    if compiler in (None, "zig"):
        candidates.append(zig_compiler())
    found = [cc for cc in candidates if cc is not None]
    if not found:
        raise RuntimeError(
            "no C compiler (cc, gcc, clang or $CC) and no Zig (the `ziglang` package) to build "
            "the row differ with"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".partial")
    define = f'-DRD_SOURCE="{source_digest(source)}"'
    failures = []
    for cc in found:
        command = [*cc, *FLAGS, f"-I{source.parent}", define, "-o", str(partial), str(source)]
        try:
            done = subprocess.run(command, capture_output=True, text=True)
        except OSError as exc:
            failures.append(f"{shlex.join(command)}: {exc}")
            continue
        if done.returncode == 0:
            partial.replace(target)  # never a half-written library where syncd loads it
            return target
        failures.append(f"{shlex.join(command)} failed:\n{done.stderr.strip()[-2000:]}")
    raise RuntimeError("\n".join(failures))


class NotLoaded(Exception):
    """Why the compiled differ does not run: one line, said at start, in `check` and on the
    status page."""


@dataclass(frozen=True)
class Library:
    lib: ctypes.CDLL
    path: Path


def library_path() -> Path:
    return Path(os.environ.get(LIBRARY_VARIABLE) or LIBRARY)


def load(path: Path | None = None, *, source: Path = SOURCE) -> Library:
    """The library with its functions declared; NotLoaded says why not (missing, does not load,
    another ABI, or built from another rowdiff.c than `source`)."""
    path = path or library_path()
    if not path.exists():
        raise NotLoaded(f"{path} is missing (syncd was installed without its build step)")
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as exc:
        raise NotLoaded(f"{path} does not load: {exc}") from None
    try:
        abi, built_from = lib.rd_abi, lib.rd_source
    except AttributeError:
        raise NotLoaded(f"{path} is not this syncd's row differ (an older build?)") from None
    built_from.restype = ctypes.c_char_p
    if abi() != ABI:
        raise NotLoaded(f"{path} is of ABI {abi()}, this syncd needs {ABI}")
    try:
        expected = source_digest(source)
    except OSError as exc:
        raise NotLoaded(f"cannot read the differ's source to check the library: {exc}") from None
    if built_from().decode() != expected:
        raise NotLoaded(
            f"{path} was built from another rowdiff.c than this syncd's (left from another "
            "version): install syncd again"
        )
    vp, u8, size = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_ssize_t
    signatures = {
        "rd_new": ([ctypes.c_uint64, ctypes.c_int], vp),
        "rd_free": ([vp], None),
        "rd_error": ([vp], ctypes.c_char_p),
        "rd_add": ([vp, ctypes.c_int, u8, size], ctypes.c_int),
        "rd_seal": ([vp], ctypes.c_int),
        "rd_feed": ([vp, u8, size], ctypes.c_int),
        "rd_out": ([vp, ctypes.POINTER(size)], ctypes.c_void_p),
        "rd_finish": ([vp], ctypes.c_int),
        "rd_keys": ([vp, ctypes.c_int, ctypes.c_void_p], size),
        "rd_places": ([vp, ctypes.c_int, ctypes.c_void_p], size),
        "rd_locate": ([vp, u8, size], ctypes.c_int),
        "rd_counts": ([vp, ctypes.POINTER(ctypes.c_longlong)], None),
        "rd_hash": ([ctypes.c_uint64, u8, size, ctypes.c_char_p], None),
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return Library(lib, path)
