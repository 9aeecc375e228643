#!/usr/bin/env python3
"""municipios.csv (ibge,host,port[,name]) -> a sources_file for syncd.

    python3 csv2sources.py municipios.csv > /etc/syncd/municipios.yaml

Standard library only, so it runs wherever the CSV is. Ids stay text (quoted), accents stay as
they are, an IPv6 host is bracketed, an empty port is the PEC's bundled PostgreSQL (5433).
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator

PEC_PORT = 5433  # the PEC's bundled PostgreSQL


def sources_yaml(path: str) -> Iterator[str]:
    """The sources_file's lines; SystemExit naming the CSV line for a row that cannot be one."""
    seen: set[str] = set()
    yield f"# generated from {path} by csv2sources.py: edit the CSV, not this file"
    with open(path, newline="", encoding="utf-8-sig") as f:
        for line, row in enumerate(csv.DictReader(f), start=2):
            ibge, host = (row.get("ibge") or "").strip(), (row.get("host") or "").strip()
            port = (row.get("port") or "").strip() or str(PEC_PORT)
            if not ibge.isdigit() or ibge in seen or not host or not port.isdigit():
                sys.exit(
                    f"{path}:{line}: empty, repeated or non-numeric ibge {ibge!r}, no host, or a bad port"
                )
            seen.add(ibge)
            if ":" in host:  # an IPv6 address
                host = f"[{host}]"
            # json.dumps writes a double-quoted YAML string
            yield f"- id: {json.dumps(ibge)}"
            if (row.get("name") or "").strip():
                yield f"  name: {json.dumps(row['name'].strip(), ensure_ascii=False)}"
            yield f"  dsn: {json.dumps(f'postgresql://esus_leitura@{host}:{port}/esus')}"


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: csv2sources.py municipios.csv > municipios.yaml")
    for text in sources_yaml(sys.argv[1]):
        print(text)
