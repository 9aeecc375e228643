"""Quoting for the SQL syncd has to compose: DDL and COPY take no bind parameters.

Identifiers are always double-quoted; the only literal ever spliced is a validated source id
(letters, digits, _), and it is quoted too. Values everywhere else are bound parameters.
"""

from __future__ import annotations

import hashlib

MAX_IDENT_BYTES = 63


def ident(name: str) -> str:
    if "\x00" in name:
        raise ValueError("identifier contains NUL")
    return '"' + name.replace('"', '""') + '"'


def qualified(schema: str, name: str) -> str:
    return f"{ident(schema)}.{ident(name)}"


def literal(value: str) -> str:
    """A string literal, for the DDL that cannot take parameters (standard_conforming_strings)."""
    if "\x00" in value:
        raise ValueError("literal contains NUL")
    return "'" + value.replace("'", "''") + "'"


def table_ref(dotted: str) -> str:
    """A config table name (`schema.table` or `table`, unquoted SQL rules: folded to lowercase)."""
    return ".".join(ident(part.lower()) for part in dotted.split("."))


def shorten(name: str, room: int = MAX_IDENT_BYTES) -> str:
    """`name` itself when it fits in `room` bytes, else a prefix plus a stable hash."""
    if len(name.encode()) <= room:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name.encode()[: room - 9].decode(errors="ignore") + "_" + digest
