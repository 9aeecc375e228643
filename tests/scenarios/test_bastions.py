"""The reverse-tunnel kit shipped for municipalities, read as files: the Linux unit restarts and
trusts only the pinned host key, and the Windows script runs the same ssh command line with the
same options (the tunnels themselves, with Linux OpenSSH against a real sshd, in
tests/acceptance/test_bastions.py)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

from tests.support.helpers import ROOT

KIT = ROOT / "deploy" / "tunnel"
UNIT = KIT / "syncd-tunnel.service"
SCRIPT = KIT / "syncd-tunnel.ps1"
SSH_CONFIG = KIT / "ssh_config"


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


def _ps_block(text: str, start: str) -> str:
    """The lines of the PowerShell script from `start` to the next line that closes it."""
    lines = text.splitlines()
    [i] = [n for n, line in enumerate(lines) if line.strip().startswith(start)]
    indent = len(lines[i]) - len(lines[i].lstrip())
    end = next(
        n
        for n in range(i + 1, len(lines))
        if lines[n].startswith(" " * indent + ")") or lines[n].startswith(" " * indent + "}")
    )
    return "\n".join(lines[i + 1 : end])


def _ps_strings(text: str, variables: dict[str, str]) -> list[str]:
    """PowerShell's '...' and "..." literals in order, the latter with $Name and ${Name} expanded
    (only what the script uses: no escapes, no subexpressions)."""
    words = []
    for single, double in re.findall(r"'([^']*)'|\"([^\"]*)\"", text):
        if single or not double:
            words.append(single)
            continue
        expanded = re.sub(
            r"\$\{(\w+)\}|\$(\w+)", lambda m: variables[m.group(1) or m.group(2)], double
        )
        words.append(expanded)
    return words


def script_defaults() -> dict[str, str]:
    """The script's tunnel.env defaults (`$Defaults = @{...}`)."""
    block = _ps_block(SCRIPT.read_text(), "$Defaults = @{")
    return dict(re.findall(r"^\s*(\w+)\s*=\s*'([^']*)'", block, re.MULTILINE))


def windows_command(values: dict[str, str], kit_dir: Path) -> list[str]:
    """The ssh arguments the Windows script builds (`$SshArgs`), with `values` (what tunnel.env
    holds, over the script's defaults) and the kit's folder at `kit_dir`: backslashes become
    slashes, so Linux OpenSSH can run it."""
    text = SCRIPT.read_text()
    env = {**script_defaults(), **values}
    body = text[text.index("function Get-SshArguments") :]
    variables = {"KitDir": str(kit_dir)}
    for name, key in re.findall(r"^\s*\$(\w+) = \$Values\['(\w+)'\]", body, re.MULTILINE):
        variables[name] = env[key]
    words = _ps_strings(_ps_block(body, "$SshArgs = @("), variables)
    return [w.replace("\\", "/") for w in words]


def ssh_config_options() -> dict[str, str]:
    """The kit's ssh_config as option -> value (lowercase names, as `ssh -G` prints them)."""
    options = {}
    for line in SSH_CONFIG.read_text().splitlines():
        words = line.split(None, 1)
        if words and not words[0].startswith("#") and words[0].lower() != "host":
            options[words[0].lower()] = words[1].strip()
    return options


def test_the_municipal_unit_restarts_and_trusts_only_the_pinned_host():
    text = UNIT.read_text()
    for line in ("Restart=on-failure", "StartLimitIntervalSec=0", "EnvironmentFile="):
        assert line in text
    command = unit_command({"TUNNEL_PORT": "20001", "RENDEZVOUS_HOST": "rdv.example.org"})
    assert command[:3] == ["/usr/bin/ssh", "-N", "-T"]
    assert command[command.index("-F") + 1] == "/etc/syncd-tunnel/ssh_config"
    assert "UserKnownHostsFile=/etc/syncd-tunnel/known_hosts" in command
    assert "127.0.0.1:20001:127.0.0.1:5433" in command  # the PEC's database: 127.0.0.1:5433
    assert command[-1] == "tunnel@rdv.example.org"


def test_the_kits_ssh_config_holds_every_option_the_tunnel_needs():
    options = ssh_config_options()
    for name, value in {
        "batchmode": "yes",
        "exitonforwardfailure": "yes",
        "serveraliveinterval": "15",
        "serveralivecountmax": "3",
        "stricthostkeychecking": "yes",
        "compression": "yes",
        "identitiesonly": "yes",
    }.items():
        assert options.get(name) == value, name
    # Windows Server 2019 ships OpenSSH 7.7: nothing newer in the shared file
    newer = {"sessiontype", "stdinnull", "permitremoteopen", "forkafterauthentication"}
    assert not newer & set(options)


def test_the_windows_script_runs_the_units_ssh_command_line_word_for_word(tmp_path: Path):
    values = {"TUNNEL_PORT": "23329", "RENDEZVOUS_HOST": "rdv.example.org"}
    unit = unit_command(
        {
            **values,
            "TUNNEL_SSH_CONFIG": str(tmp_path / "ssh_config"),
            "TUNNEL_KNOWN_HOSTS": str(tmp_path / "known_hosts"),
            "TUNNEL_KEY": str(tmp_path / "id_ed25519"),
        }
    )
    windows = windows_command(values, tmp_path)
    assert windows == unit[1:]  # the same arguments, in the same order, from each one's defaults
    # and so the same option set: what neither file's defaults may drift apart on
    unit_text = UNIT.read_text()
    for key, value in script_defaults().items():
        assert f"Environment={key}={value}\n" in unit_text, key
    assert "127.0.0.1:23329:127.0.0.1:5433" in windows


def test_the_windows_script_installs_a_task_that_starts_at_boot_as_system_and_restarts():
    text = SCRIPT.read_text()
    for piece in (
        "New-ScheduledTaskTrigger -AtStartup",
        "-UserId 'S-1-5-18'",  # SYSTEM, by SID: "SISTEMA" on a Windows in Portuguese
        "-RestartCount 999",
        "-ExecutionTimeLimit ([TimeSpan]::Zero)",
        "-MultipleInstances IgnoreNew",
        "$RestartSeconds = 15",
        "System32\\OpenSSH\\ssh.exe",
    ):
        assert piece in text, piece
    assert re.search(r"'key', 'install', 'status', 'uninstall', 'run'", text)
