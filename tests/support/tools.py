"""The external programs the tests drive (Debian's chromium, promtool; npm for older PostgreSQL
majors): a test that needs one is skipped where it is absent, and fails in CI (CI=true), where
.ci/run (or `make test`) installs it."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest


def require(*names: str, package: str) -> str:
    """The first of `names` on PATH; else skip (fail under CI=true) naming the Debian package."""
    for name in names:
        path = shutil.which(name)
        if path is not None:
            return path
    skip_or_fail(f"{names[0]} absent (Debian: {package})")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip the test for want of a tool; under CI=true, where the tool must be there, fail it."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}: .ci/run installs it in CI")
    pytest.skip(reason)


def chromium() -> str:
    return require("chromium", "chromium-browser", package="chromium")


def promtool() -> str:
    return require("promtool", package="prometheus")


@contextmanager
def chromium_profile() -> Iterator[str]:
    """A fresh profile directory, removed once every Chromium process writing to it is gone."""
    profile = tempfile.mkdtemp(prefix="syncd-chromium-")
    try:
        yield profile
    finally:
        # a helper that outlived its group's kill (seen in CI: 'Default' not empty) gets a moment
        # (a file vanishing under the walk raises FileNotFoundError: try again, the profile is there)
        for _ in range(50):
            try:
                shutil.rmtree(profile)
            except OSError:
                if not os.path.exists(profile):
                    break
                time.sleep(0.1)
            else:
                break
        else:
            shutil.rmtree(profile, ignore_errors=True)


def start_chromium(profile: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    """Chromium in its own process group, so that stop_chromium reaches its helpers too."""
    return subprocess.Popen(
        [chromium(), f"--user-data-dir={profile}", *args],
        start_new_session=True,
        text=True,
        **popen,  # type: ignore[call-overload]
    )


def stop_chromium(proc: subprocess.Popen[str]) -> None:
    """The whole group: the browser, then whatever of its zygote, renderers and crash handler
    the browser's own exit left behind."""
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait(timeout=10)
    _signal_group(proc, signal.SIGKILL)


def _signal_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass  # the group is empty
