"""A dataset's SQL text, made fit to be wrapped: `COPY (<query>) TO STDOUT`, `SELECT ... FROM
(<query>) AS q`.

psql accepts a file that starts with a UTF-8 byte order mark, ends with `;`, or ends with a
comment (`-- fim`, `; -- fim`, `/* fim */`); wrapped as is, the first is a syntax error, the
second ends the statement inside the parentheses, the third comments the closing parenthesis
out. So the text is scanned the way PostgreSQL's lexer does (quoted strings and identifiers,
dollar quotes, nested block comments) and everything after the last token that is neither a
comment nor a `;` is dropped. A `;` between two statements stays, and the server refuses it.
"""

from __future__ import annotations

import re

BOM = "\ufeff"
_DOLLAR_TAG = re.compile(r"\$(?:[A-Za-z_\u0080-\uffff][A-Za-z0-9_\u0080-\uffff]*)?\$")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]")


def clean(text: str) -> str:
    """The query without a leading BOM and without trailing comments, `;` and blank space."""
    text = text.removeprefix(BOM)
    return text[: _end_of_code(text)].strip()


def _end_of_code(text: str) -> int:
    """The index just past the last character that is SQL code, not a comment, blank or `;`.

    An unterminated string or comment counts as code to the end: the server will say what is
    wrong with it, we do not guess."""
    end = 0
    i, n = 0, len(text)
    while i < n:
        c = text[i]
        if c == "-" and text.startswith("--", i):
            newline = text.find("\n", i)
            i = n if newline < 0 else newline + 1
            continue
        if c == "/" and text.startswith("/*", i):
            close = _block_comment_end(text, i)
            if close is None:
                return n
            i = close
            continue
        if c.isspace() or c == ";":
            i += 1
            continue
        if c == "'":
            escapes = i > 0 and text[i - 1] in "eE" and (i < 2 or not _ident_char(text[i - 2]))
            close = _quoted_end(text, i, "'", backslash=escapes)
        elif c == '"':
            close = _quoted_end(text, i, '"', backslash=False)
        elif c == "$" and (i == 0 or not _ident_char(text[i - 1])):
            close = _dollar_end(text, i)
        else:
            close = i + 1
        if close is None:
            return n
        i = end = close
    return end


def _ident_char(c: str) -> bool:
    return bool(_IDENT_CHAR.match(c))


def _block_comment_end(text: str, start: int) -> int | None:
    """PostgreSQL's block comments nest."""
    depth, i = 0, start
    while i < len(text):
        if text.startswith("/*", i):
            depth += 1
            i += 2
        elif text.startswith("*/", i):
            depth -= 1
            i += 2
            if depth == 0:
                return i
        else:
            i += 1
    return None


def _quoted_end(text: str, start: int, quote: str, *, backslash: bool) -> int | None:
    i = start + 1
    while i < len(text):
        c = text[i]
        if backslash and c == "\\":
            i += 2
            continue
        if c == quote:
            if text.startswith(quote * 2, i):  # doubled: a literal quote
                i += 2
                continue
            return i + 1
        i += 1
    return None


def _dollar_end(text: str, start: int) -> int | None:
    match = _DOLLAR_TAG.match(text, start)
    if match is None:  # $1, or a $ in an operator: ordinary code
        return start + 1
    tag = match.group()
    close = text.find(tag, match.end())
    return None if close < 0 else close + len(tag)
