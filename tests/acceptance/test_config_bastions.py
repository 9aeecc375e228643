"""`bastions:` through the real `syncd` subprocess: a bad config exits 2 with one line and no
traceback; `syncd tunnel enroll` refuses bad input with exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncd.commands import enroll

from tests.support.helpers import run_cli
from tests.unit.test_config_bastions import BASE, KEY, rendezvous


def test_check_config_exits_2_with_one_line_and_no_traceback(tmp_path: Path):
    path = tmp_path / "syncd.yaml"
    path.write_text(BASE.replace(f'    host_key: "{KEY}"\n', ""))
    done = run_cli("check-config", "--config", str(path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        f"{path}:4: bastions.hub-sp.host_key: is required: the bastion's public host key, "
        'pinned (host_key: "ssh-ed25519 AAAAC3Nza..." (from the bastion\'s ssh-keyscan)); '
        "host-key checking cannot be turned off"
    ]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--public-key", "/nonexistent.pub"], "--public-key: /nonexistent.pub:"),
        (["--bastion", "hub-rj"], "--bastion: unknown bastion 'hub-rj' (known: hub-sp)"),
        ([], None),
    ],
)
def test_enroll_refuses_bad_input_with_exit_2(tmp_path: Path, args: list[str], message):
    path = tmp_path / "syncd.yaml"
    path.write_text(rendezvous(20001))
    bad_key = tmp_path / "bad.pub"
    bad_key.write_text("not a key\n")
    done = run_cli("tunnel", "enroll", "4106902", "--config", str(path), *args)
    if message is None:  # no key given: a placeholder to replace
        assert done.returncode == 0 and enroll.KEY_PLACEHOLDER in done.stdout
        done = run_cli("tunnel", "enroll", "4106902", "-c", str(path), "--public-key", str(bad_key))
        message = "is not an OpenSSH public key"
    assert done.returncode == 2 and message in done.stderr and "Traceback" not in done.stderr
