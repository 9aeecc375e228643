"""Which row differ this process runs, and why: the compiled one (rowdiff.c, through cdiffer.py)
unless the config's `differ: python` or SYNCD_PURE_PYTHON_DIFF asks for the pure-Python one, or
the library is missing, does not load, or is stale (build.load says which). `run` and `once`
choose once at start (`use`); the warning, the gauge, `check` and the status page read `current`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from syncd.config.model import DifferMode
from syncd.engine.rowdiff.cdiffer import LOAD_ERROR

# SYNCD_PURE_PYTHON_DIFF=1: the pure-Python differ even where the compiled one loads (to compare
# the two on real data, or to rule the compiled one out)
PURE_PYTHON_VARIABLE = "SYNCD_PURE_PYTHON_DIFF"


@dataclass(frozen=True, slots=True)
class DifferChoice:
    compiled: bool
    reason: str | None = None  # why the pure-Python differ runs

    @property
    def name(self) -> str:
        return "compiled" if self.compiled else "python"

    def describe(self) -> str:
        if self.compiled:
            return "the compiled row differ"
        return f"the pure-Python row differ (several times slower): {self.reason}"


class DifferRefused(Exception):
    """`differ: compiled`, and the compiled differ cannot run: one line, exit 2."""


def choose(mode: DifferMode = DifferMode.AUTO) -> DifferChoice:
    if mode is DifferMode.PYTHON:
        return DifferChoice(False, "the config says `differ: python`")
    if os.environ.get(PURE_PYTHON_VARIABLE, "") not in ("", "0"):
        return DifferChoice(False, f"{PURE_PYTHON_VARIABLE} is set")
    if LOAD_ERROR is not None:
        return DifferChoice(False, LOAD_ERROR)
    return DifferChoice(True)


_current = choose()


def use(mode: DifferMode) -> DifferChoice:
    """The differ this process runs from now on; DifferRefused when `mode` is COMPILED and it
    cannot be had."""
    global _current
    choice = choose(mode)
    if mode is DifferMode.COMPILED and not choice.compiled:
        raise DifferRefused(f"differ: compiled, but {choice.reason}")
    _current = choice
    return choice


def current() -> DifferChoice:
    return _current
