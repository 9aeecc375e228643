"""syncd's PEP 517 build backend: setuptools' own (`setuptools.build_meta`), plus one thing: on a
machine where no C compiler works, it asks pip for Zig's from PyPI (`ziglang`) as a build
requirement, so `pip install .`, `pip install -e .` and `pip wheel .` compile the row differ
everywhere with nothing to install by hand (setup.py compiles it, syncd/engine/rowdiff/build.py
says how). pyproject.toml names it (`backend-path`); docs/design/decisions.md says why.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

from setuptools import build_meta
from setuptools.build_meta import *  # noqa: F403  (every hook not changed here)

ROOT = Path(__file__).resolve().parent.parent


def rowdiff_build() -> ModuleType:
    """syncd/engine/rowdiff/build.py by its path (standard library only): importing the package
    would need its dependencies, which the build's environment does not have."""
    name = "_syncd_rowdiff_build"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            name, ROOT / "syncd" / "engine" / "rowdiff" / "build.py"
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up while it executes
        spec.loader.exec_module(module)
    return sys.modules[name]


def compiler_requirements() -> list[str]:
    build = rowdiff_build()
    if build.skipped() or build.system_compiler_works():
        return []
    return ["ziglang"]


def get_requires_for_build_wheel(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*build_meta.get_requires_for_build_wheel(config_settings), *compiler_requirements()]


def get_requires_for_build_editable(config_settings: dict[str, Any] | None = None) -> list[str]:
    return [*build_meta.get_requires_for_build_editable(config_settings), *compiler_requirements()]
