"""Text from outside (municipal servers' error messages, names in the config) made safe to show.

A PostgreSQL error text or a source `name` can hold ESC sequences, newlines, or bidirectional
overrides; printed raw they would recolour, clear or rewrite the operator's terminal, or break
a table into lines that look like other rows. Everything that is not printable is shown as its
Python escape (`\\x1b`, `\\n`, `\\u202e`) instead.
"""

from __future__ import annotations


def printable(text: str, *, keep_newlines: bool = False) -> str:
    """`text` with every non-printable character escaped (newlines kept if asked)."""
    if text.isprintable():
        return text
    return "".join(
        c if c.isprintable() or (keep_newlines and c == "\n") else repr(c)[1:-1] for c in text
    )


def json_printable(text: str) -> str:
    """A JSON document with the non-printable characters JSON leaves raw (C1 controls, bidi
    overrides...) written as \\u escapes: the same JSON, safe on a terminal (`journalctl | jq`)."""
    if text.isprintable():
        return text
    out = []
    for c in text:
        if c.isprintable():
            out.append(c)
        elif ord(c) > 0xFFFF:
            high, low = divmod(ord(c) - 0x10000, 0x400)
            out.append(f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}")
        else:
            out.append(f"\\u{ord(c):04x}")
    return "".join(out)
