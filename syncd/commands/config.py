"""`syncd check-config` and `syncd config print`: the config read, judged and shown offline."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from syncd import config as config_module
from syncd.config.dsn import world_readable
from syncd.config.render import to_yaml
from syncd.engine import rowdiff
from syncd.exitstatus import EXIT_OK
from syncd.service.runtime import read_config


def secret_files(config: config_module.Config) -> list[config_module.Notice]:
    """The secret files the config names that this process cannot use, as warnings."""
    files: list[tuple[Path, str, str]] = []  # path, kind, subject
    if config.destination.password_file:
        files.append((config.destination.password_file, "", "destination.password_file"))
    if config.http.token_file:
        files.append((config.http.token_file, "", "http.token_file"))
    files += [(s.password_file, "source", s.id) for s in config.sources if s.password_file]
    notices = []
    for path, kind, subject in files:
        key = "password_file " if kind else ""
        if not path.exists():
            message = f"{key}{{}} does not exist here (fine if only the service sees it, e.g. a systemd credential)"
        elif world_readable(path):
            message = f"{key}{{}} is readable by every user"
        else:
            continue
        notices.append(config_module.Notice(subject, message, str(path), kind))
    return notices


def differ_finding(mode: config_module.DifferMode) -> str | None:
    """What `check` says about the row differ on this machine: nothing when the compiled one
    runs; ConfigError (exit 2, as `run` would) when the config demands it and it cannot."""
    choice = rowdiff.choose(mode)
    if choice.compiled:
        return None
    if mode is config_module.DifferMode.COMPILED:
        raise config_module.ConfigError(
            [config_module.Problem("", None, f"differ: compiled, but {choice.reason}")]
        )
    return f"the pure-Python row differ would run (several times slower): {choice.reason}"


def check_config(
    given: str | None,
    credentials_dir: Path | None = None,
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    # a missing credential is an error here whenever there is a credentials directory
    config = read_config(given, credentials_dir, strict_credentials=True)
    notices = [*config.warnings, *secret_files(config)]
    for line in config_module.summarize(notices):
        print(f"warning: {line}", file=err)
    differ_line = differ_finding(config.differ)
    if differ_line:
        print(f"warning: {differ_line}", file=err)
    where = config.path or given
    print(f"{where}: ok ({len(config.sources)} sources, {len(config.datasets)} datasets)", file=out)
    return EXIT_OK


def print_config(
    given: str | None, credentials_dir: Path | None = None, out: TextIO = sys.stdout
) -> int:
    out.write(to_yaml(read_config(given, credentials_dir)))
    return EXIT_OK
