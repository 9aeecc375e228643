"""The reverse-tunnel unit shipped for municipalities: it restarts and trusts only the pinned
host key (the bastions themselves, against a real sshd, in tests/acceptance/test_bastions.py)."""

from __future__ import annotations

import re
import shlex

from tests.support.helpers import ROOT

UNIT = ROOT / "deploy" / "tunnel" / "syncd-tunnel.service"


def unit_command(values: dict[str, str]) -> list[str]:
    """The shipped unit's ExecStart, its ${VARIABLES} from its Environment= lines and `values`
    (what tunnel.env would hold), as systemd expands them."""
    text = UNIT.read_text().replace("\\\n", " ")
    env = {}
    for line in text.splitlines():
        if line.startswith("Environment="):
            key, _, value = line.removeprefix("Environment=").partition("=")
            env[key] = value
    env.update(values)
    [command] = [x for x in text.splitlines() if x.startswith("ExecStart=")]
    return [
        re.sub(r"\$\{(\w+)\}", lambda m: env[m.group(1)], word)
        for word in shlex.split(command.removeprefix("ExecStart="))
    ]


def test_the_municipal_unit_restarts_and_trusts_only_the_pinned_host():
    text = UNIT.read_text()
    for line in ("Restart=on-failure", "StartLimitIntervalSec=0", "EnvironmentFile="):
        assert line in text
    command = unit_command({"TUNNEL_PORT": "20001", "RENDEZVOUS_HOST": "rdv.example.org"})
    options = [command[i + 1] for i, word in enumerate(command) if word == "-o"]
    for option in (
        "ExitOnForwardFailure=yes",
        "ServerAliveInterval=15",
        "StrictHostKeyChecking=yes",
        "BatchMode=yes",
    ):
        assert option in options
    assert command[:3] == ["/usr/bin/ssh", "-N", "-T"]
    assert "127.0.0.1:20001:localhost:5433" in command
    assert command[-1] == "tunnel@rdv.example.org"
