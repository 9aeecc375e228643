"""The external programs the acceptance lane drives (Debian's chromium, promtool): a test that
needs one is skipped where it is absent, and fails in CI (CI=true), where .ci/run installs it."""

from __future__ import annotations

import os
import shutil

import pytest


def require(*names: str, package: str) -> str:
    """The first of `names` on PATH; else skip (fail under CI=true) naming the Debian package."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    reason = f"{names[0]} absent (Debian: {package})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: .ci/run installs it in CI")
    pytest.skip(reason)


def chromium() -> str:
    return require("chromium", "chromium-browser", package="chromium")


def promtool() -> str:
    return require("promtool", package="prometheus")
