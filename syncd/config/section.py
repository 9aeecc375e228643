"""One mapping of the document being validated: typed getters that record every problem with
its key path and line, and fall back to a default so that validation goes on."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import overload

from syncd.config.document import Document
from syncd.config.problem import Key, KeyPath, Problem, did_you_mean, key_path
from syncd.config.values import (
    MIN_RATE,
    format_duration,
    format_rate,
    format_size,
    parse_duration,
    parse_rate,
    parse_size,
)


class Section:
    """One mapping of the document being validated: typed getters that record problems."""

    def __init__(self, doc: Document, path: KeyPath, problems: list[Problem], value: object = None):
        self.doc = doc
        self.path = path
        self.problems = problems
        self.value = doc.data if value is None and not path else value
        self.used: set[str] = set()

    def problem(self, key: Key | None, message: str) -> None:
        path = (*self.path, key) if key is not None else self.path
        line = self.doc.lines.get(path) or self.doc.lines.get(self.path)
        self.problems.append(Problem(key_path(path), line, message, self.doc.file))

    def is_mapping(self, what: str) -> bool:
        if not isinstance(self.value, dict):
            self.problem(None, f"must be a mapping ({what})")
            return False
        return True

    @property
    def mapping(self) -> dict[Key, object]:
        """The keys and values, or none when the section is not a mapping (`is_mapping` says so)."""
        return self.value if isinstance(self.value, dict) else {}

    def has(self, key: str) -> bool:
        return self.mapping.get(key) is not None

    def raw(self, key: str) -> object:
        self.used.add(key)
        return self.mapping.get(key)

    def sub(self, key: str) -> Section:
        return Section(self.doc, (*self.path, key), self.problems, self.raw(key) or {})

    def each(self, key: str) -> Iterator[Section]:
        """The entries of the list under `key` that are mappings; the others are problems."""
        value = self.raw(key)
        if value is None:
            return
        if not isinstance(value, list):
            self.problem(key, "must be a list")
            return
        for i, item in enumerate(value):
            section = Section(self.doc, (*self.path, key, i), self.problems, item)
            if section.is_mapping("one entry"):
                yield section

    @overload
    def string(
        self,
        key: str,
        default: str,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str: ...

    @overload
    def string(
        self,
        key: str,
        default: None = None,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None: ...

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        what: str = "",
    ) -> str | None:
        """The text under `key`; `default` when it is absent or wrong (a problem then)."""
        value = self.raw(key)
        if value is None:
            if required:
                self.problem(key, "is required")
            return default
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            written = self.written((*self.path, key), value)
            if written is None:
                return default
            value = written
        if not isinstance(value, str):
            self.problem(key, "must be a string")
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(key, f"{value!r} is not {what}")
            return default
        return value

    def written(self, path: KeyPath, value: int | float) -> str | None:
        """A number where text was wanted: kept when YAML read it as written (`351570`),
        refused when it did not (`012345` is octal 5349, `3_549_904` is 3549904, `1.50` is
        1.5): quoting it says what was meant."""
        text = self.doc.texts.get(path)
        if isinstance(value, int) and (text is None or text == str(value)):
            return str(value)
        shown = text if text is not None else str(value)
        self.problems.append(
            Problem(
                key_path(path),
                self.doc.lines.get(path),
                f"YAML reads {shown} as the number {value!r}, not as text; "
                f'quote it to keep it as written: "{shown}"',
                self.doc.file,
            )
        )
        return None

    def boolean(self, key: str) -> bool | None:
        """true or false; None when absent or wrong (a problem then)."""
        value = self.raw(key)
        if value is None:
            return None
        if not isinstance(value, bool):
            self.problem(key, "must be true or false")
            return None
        return value

    def integer(self, key: str, default: int, *, minimum: int = 1, maximum: int = 100_000) -> int:
        value = self.raw(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            self.problem(key, "must be a whole number")
            return default
        if not minimum <= value <= maximum:
            self.problem(key, f"must be between {minimum} and {maximum}")
            return default
        return value

    @overload
    def duration(self, key: str, default: float, *, minimum: float = 0.0) -> float: ...

    @overload
    def duration(self, key: str, default: None = None, *, minimum: float = 0.0) -> float | None: ...

    def duration(
        self, key: str, default: float | None = None, *, minimum: float = 0.0
    ) -> float | None:
        """Seconds, from text like 1h30m; `default` when absent or wrong (a problem then)."""
        value = self.raw(key)
        if value is None:
            return default
        seconds = parse_duration(value)
        if seconds is None:
            self.problem(key, f"{value!r} is not a duration (like 90s, 15m, 24h, 7d)")
            return default
        if seconds < minimum:
            self.problem(key, f"must be at least {format_duration(minimum)}")
            return default
        return seconds

    def rate(self, key: str) -> float | None:
        """Bytes per second, from text like 2MB/s or 20Mbit/s; None when absent or wrong."""
        value = self.raw(key)
        if value is None:
            return None
        rate = parse_rate(value)
        if isinstance(rate, str):
            self.problem(key, rate)
            return None
        if rate < MIN_RATE:
            self.problem(key, f"must be at least {format_rate(MIN_RATE)}")
            return None
        return rate

    def size(self, key: str, *, minimum: int = 1) -> int | None:
        """Bytes, from text like 400GB or 500MB; None when absent or wrong (a problem then)."""
        value = self.raw(key)
        if value is None:
            return None
        size = parse_size(value)
        if size is None:
            self.problem(key, f"{value!r} is not a size (like 500MB, 400GB, 2TB)")
            return None
        if size < minimum:
            self.problem(key, f"must be at least {format_size(minimum)}")
            return None
        return size

    def path_value(self, key: str, base: Path | None) -> Path | None:
        value = self.string(key)
        if value is None:
            return None
        path = Path(value)
        return path if path.is_absolute() or base is None else base / path

    def check_unknown(self) -> None:
        """Every key no getter asked for is a problem; a close one it asked for is named."""
        known = sorted(self.used)
        for key in self.mapping:
            if key not in self.used:
                hint = did_you_mean(key, known) if isinstance(key, str) else ""
                self.problem(key, f"unknown key{hint}")
