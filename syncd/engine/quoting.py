"""Quoting for the SQL syncd has to compose: DDL and COPY take no bind parameters.

Identifiers are always double-quoted. Literals are spliced only where a statement cannot take
parameters (DDL, COPY) or where a parameter would cost a round trip on the municipal link (a
prepared statement is a second one): a validated source id, a config table name, syncd's own
numbers and the settings text a server reported; all quoted here. Values everywhere else are
bound parameters.
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


def text_literal(value: str) -> str:
    """An escape-string literal: the same value whatever standard_conforming_strings says (for
    the SQL sent to a server whose settings syncd does not own)."""
    if "\x00" in value:
        raise ValueError("literal contains NUL")
    return "E'" + value.replace("\\", "\\\\").replace("'", "''") + "'"


def table_ref(dotted: str) -> str:
    """A config table name (`schema.table` or `table`, unquoted SQL rules: folded to lowercase)."""
    return ".".join(ident(part.lower()) for part in dotted.split("."))


def shorten(name: str, room: int = MAX_IDENT_BYTES) -> str:
    """`name` itself when it fits in `room` bytes, else a prefix plus a stable hash."""
    if len(name.encode()) <= room:
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    return name.encode()[: room - 9].decode(errors="ignore") + "_" + digest
