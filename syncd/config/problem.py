"""What is wrong with a config, and where: file, line and key path, always on one line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TypeAlias

# A mapping key as YAML read it (text, a number, true/false) or a list index.
Key: TypeAlias = str | int | float
KeyPath: TypeAlias = tuple[Key, ...]


@dataclass(frozen=True, slots=True)
class Problem:
    path: str
    line: int | None
    message: str
    file: str | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}: " if self.file and self.line else ""
        if not where and self.file:
            where = f"{self.file}: "
        text = f"{where}{self.path}: {self.message}" if self.path else f"{where}{self.message}"
        # one problem, one line, whatever the YAML held
        return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


class ConfigError(Exception):
    """The config cannot be used. `problems` lists every reason, each one line."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_$-]+")


def key_path(path: KeyPath) -> str:
    """sources[3].dsn; keys that are not plain words shown quoted (they may hold anything)."""
    out = ""
    for part in path:
        if isinstance(part, int) and not isinstance(part, bool):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_KEY.fullmatch(part):
            out += f".{part}" if out else part
        else:
            out += f"[{part!r}]"
    return out
