"""The SQL a DBA may want to read, in files: the ledger's migrations (`migrations/NNNN_*.sql`)
and its queries (`ledger.sql`), each query under a `-- name: <query_name>` header.

`load("ledger")` reads and parses a file once and answers its queries by name. Values in them are
bind parameters ($1, $2...); nothing is ever spliced into them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import cache
from importlib import resources
from types import MappingProxyType

HEADER = re.compile(r"--\s*name:\s*(\w+)\s*")


def parse(text: str, origin: str = "<sql>") -> dict[str, str]:
    """Queries by name. Before the first header only comments and blank lines may stand; a name
    given twice, or a query with nothing but comments, is an error."""
    bodies: dict[str, list[str]] = {}
    current: list[str] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if header := HEADER.fullmatch(line.strip()):
            name = header[1]
            if name in bodies:
                raise ValueError(f"{origin}:{number}: query {name!r} is defined twice")
            bodies[name] = current = []
        elif current is not None:
            current.append(line)
        elif line.strip() and not line.lstrip().startswith("--"):
            raise ValueError(f"{origin}:{number}: SQL before the first `-- name:` header")
    queries = {}
    for name, lines in bodies.items():
        if not any(line.strip() and not line.lstrip().startswith("--") for line in lines):
            raise ValueError(f"{origin}: query {name!r} has no SQL")
        queries[name] = "\n".join(lines).strip()
    return queries


@cache
def load(name: str) -> Mapping[str, str]:
    """`syncd/sql/<name>.sql`'s queries by name, read and parsed once."""
    text = resources.files(__name__).joinpath(f"{name}.sql").read_text(encoding="utf-8")
    return MappingProxyType(parse(text, f"syncd/sql/{name}.sql"))


def migrations() -> list[str]:
    """`syncd/sql/migrations/NNNN_*.sql`, in order: a DBA reads the schema there."""
    folder = resources.files(__name__).joinpath("migrations")
    return [
        f.read_text(encoding="utf-8")
        for f in sorted(folder.iterdir(), key=lambda f: f.name)
        if f.name.endswith(".sql")
    ]
