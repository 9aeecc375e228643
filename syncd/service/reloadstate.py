"""The reload acknowledgement: what the daemon writes after each reload attempt and `syncd reload`
waits for.

A small file in the service's runtime directory (`RuntimeDirectory=syncd`, so
`$RUNTIME_DIRECTORY=/run/syncd`): after each reload attempt the daemon replaces `reload-state`
with one line, `<pid> <generation> <outcome> <message>`. It lives here, below the commands,
because the daemon writes it; it imports nothing heavy, so `syncd reload` starts fast.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

STATE_FILE = "reload-state"


class ReloadOutcome(StrEnum):
    """How a reload went: in the state file and in `syncd_config_reloads_total{outcome}`."""

    SUCCESS = "success"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class ReloadState:
    pid: int
    generation: int
    outcome: ReloadOutcome
    message: str


def state_dir(explicit: str | None = None) -> Path | None:
    value = explicit or os.environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return Path(value) if value else None


class ReloadRecorder:
    """The daemon's side: one line per reload attempt, replaced atomically."""

    def __init__(self, directory: Path | None):
        self.directory = directory
        self.generation = 0

    def record(self, outcome: ReloadOutcome, message: str) -> None:
        self.generation += 1
        if self.directory is None:
            return
        line = f"{os.getpid()} {self.generation} {outcome} {' '.join(message.split())}\n"
        path = self.directory / STATE_FILE
        tmp = path.with_name(f".{STATE_FILE}.tmp")
        try:
            tmp.write_text(line, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:  # the reload itself happened; only its acknowledgement is lost
            print(f"syncd: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)


def read_state(directory: Path) -> ReloadState | None:
    """`syncd reload`'s side: the last acknowledgement, or None when there is none (yet)."""
    try:
        pid, generation, outcome, *message = (
            (directory / STATE_FILE).read_text(encoding="utf-8").split(" ", 3)
        )
        return ReloadState(
            int(pid), int(generation), ReloadOutcome(outcome), " ".join(message).strip()
        )
    except (OSError, ValueError):
        return None
