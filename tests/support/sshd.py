"""The lab's real sshd (syncd.lab.sshd), and the rule for tests that need OpenSSH: outside CI a
machine without it skips them, saying so; CI installs openssh-server (.ci/run), and there a
missing sshd fails."""

from __future__ import annotations

import os

import pytest

from syncd.lab.sshd import SSHD, Sshd, free_port, keygen, missing_openssh

__all__ = ["SSHD", "Sshd", "free_port", "keygen", "require_openssh"]


def require_openssh() -> None:
    missing = missing_openssh()
    if not missing:
        return
    reason = f"OpenSSH not installed ({', '.join(missing)}): apt-get install openssh-server"
    if os.environ.get("CI") == "true":
        pytest.fail(reason)
    pytest.skip(reason)
