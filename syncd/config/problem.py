"""What is wrong with a config, and where: file, line and key path, always on one line."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TypeAlias

from syncd.safetext import printable

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
        return printable(text)  # one problem, one line, whatever the YAML held


def did_you_mean(word: str, choices: Sequence[str]) -> str:
    """` (did you mean 'sslmode'?)` for a close choice, else nothing."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


@dataclass(frozen=True, slots=True)
class Notice:
    """A warning about one thing: `kind` and `subject` name it (source 351570, or a key path
    alone), `message` says what, alike for every thing it concerns, with `{}` where this one's
    `detail` (a path) goes. Alike notices are told once, counted (`summarize`)."""

    subject: str
    message: str
    detail: str = ""
    kind: str = ""

    @property
    def who(self) -> str:
        return f"{self.kind} {self.subject}" if self.kind else self.subject

    def __str__(self) -> str:
        return printable(f"{self.who}: {self.message.replace('{}', self.detail)}")


def summarize(notices: Iterable[Notice], shown: int = 3) -> list[str]:
    """One line per kind of warning about many things: 650 sources whose password file is
    missing are one line naming the count and the first few, not 650 lines. A few alike (up to
    `shown`), and notices without a kind (a key path), are told one by one."""
    groups: dict[tuple[str, str, int], list[Notice]] = {}
    for i, notice in enumerate(notices):
        key = (notice.kind, notice.message, 0 if notice.kind else i)
        groups.setdefault(key, []).append(notice)
    lines: list[str] = []
    for (kind, message, _), alike in groups.items():
        if len(alike) <= shown:
            lines.extend(str(n) for n in alike)
            continue
        details = {n.detail for n in alike}
        text = message.replace("{}", details.pop() if len(details) == 1 else "…")
        names = ", ".join(n.subject for n in alike[:shown])
        if len(alike) > shown:
            names += f" and {len(alike) - shown} more"
        who = f"{len(alike)} {kind}s ({names})"
        lines.append(printable(f"{who}: {text}"))
    return lines


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
