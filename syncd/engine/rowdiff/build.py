"""The row differ's accelerator: `rowdiff.c` built into a shared library beside it and loaded
with ctypes. It uses no Python headers, so any C compiler builds it: the system's (`$CC`, `cc`,
`gcc`, `clang`) or, on a machine that has none, Zig's from PyPI (`--fetch-compiler` installs
the `ziglang` package into this Python's environment first). `make` builds it; an install
elsewhere runs `python -m syncd.engine.rowdiff.build build --fetch-compiler` once. Without it syncd
runs the pure-Python differ (the same results, a few times slower).

    python -m syncd.engine.rowdiff.build build [--fetch-compiler] [--compiler zig|system]
    python -m syncd.engine.rowdiff.build status
"""

from __future__ import annotations

import ctypes
import importlib.util
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "rowdiff.c"
LIBRARY = HERE / "_rowdiff.so"
ABI = 1  # rowdiff.c's RD_ABI
FLAGS = ["-O3", "-shared", "-fPIC", "-std=c99", f"-I{HERE}"]


def system_compiler() -> list[str] | None:
    if os.environ.get("CC"):
        return shlex.split(os.environ["CC"])
    for name in ("cc", "gcc", "clang"):
        if shutil.which(name):
            return [name]
    return None


def zig_compiler(fetch: bool) -> list[str] | None:
    if importlib.util.find_spec("ziglang") is None:
        if not fetch:
            return None
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "ziglang",
            ],
            check=True,
        )
    return [sys.executable, "-m", "ziglang", "cc"]


def build(*, fetch: bool = False, compiler: str | None = None, target: Path = LIBRARY) -> Path:
    """Compile the library; raises RuntimeError saying why it could not."""
    cc = None
    if compiler in (None, "system"):
        cc = system_compiler()
    if cc is None and compiler in (None, "zig"):
        cc = zig_compiler(fetch)
    if cc is None:
        raise RuntimeError(
            "no C compiler (cc, gcc, clang or $CC); --fetch-compiler installs Zig's from PyPI"
        )
    partial = target.with_name(target.name + ".partial")
    command = [*cc, *FLAGS, "-o", str(partial), str(SOURCE)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stderr.strip()[-2000:]}")
    partial.replace(target)  # never a half-written library where syncd loads it
    return target


def load(path: Path = LIBRARY) -> ctypes.CDLL | None:
    """The built library with its functions declared, or None (not built, or another ABI)."""
    if not path.exists():
        return None
    try:
        lib = ctypes.CDLL(str(path))
    except OSError:
        return None
    if lib.rd_abi() != ABI:
        return None
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
        "rd_counts": ([vp, ctypes.POINTER(ctypes.c_longlong)], None),
        "rd_hash": ([ctypes.c_uint64, u8, size, ctypes.c_char_p], None),
    }
    for name, (args, result) in signatures.items():
        fn = getattr(lib, name)
        fn.argtypes, fn.restype = args, result
    return lib


def main(argv: list[str] | None = None) -> int:
    import argparse  # the command only: rowdiff imports this module at every start

    parser = argparse.ArgumentParser(prog="python -m syncd.engine.rowdiff.build")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="compile the row differ's accelerator")
    b.add_argument("--fetch-compiler", action="store_true", help="Zig's from PyPI if none here")
    b.add_argument("--compiler", choices=["system", "zig"], help="only this one")
    sub.add_parser("status", help="is it built, and does it load")
    args = parser.parse_args(argv)
    if args.command == "status":
        loaded = load() is not None
        print(f"{LIBRARY}: {'loads' if loaded else 'not built (the pure-Python differ runs)'}")
        return 0 if loaded else 1
    try:
        path = build(fetch=args.fetch_compiler, compiler=args.compiler)
    except (RuntimeError, subprocess.CalledProcessError) as exc:
        print(f"the row differ's accelerator was not built: {exc}", file=sys.stderr)
        return 1
    if load(path) is None:
        print(f"{path} was built but does not load", file=sys.stderr)
        return 1
    print(f"built {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
