"""How `syncd check --online` shows what it found: a table with one line per source, or JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from syncd.service.check import DestinationCheck, SourceCheck


def as_json_document(sources: list[SourceCheck], destination: DestinationCheck, ok: bool) -> dict:
    return {
        "ok": ok,
        "sources": [{**asdict(s), "ok": s.ok} for s in sources],
        "destination": {**asdict(destination), "ok": destination.ok},
    }


def report(sources: list[SourceCheck], destination: DestinationCheck) -> str:
    head = (
        "source",
        "server",
        "connect",
        "auth",
        "tls",
        "version",
        "read-only",
        "datasets",
        "est. rows",
        "result",
    )
    table = [head]
    for s in sources:
        good = sum(d.ok for d in s.datasets)
        rows = sum(d.estimated_rows or 0 for d in s.datasets if d.ok)
        tls = (
            "off"
            if s.tls is None
            else f"{s.tls}"
            + (f" verified ({s.tls_verified})" if s.tls_verified != "no" else " unverified")
        )
        table.append(
            (
                s.id,
                s.server,
                f"{s.connect_ms:.0f} ms"
                if s.connect_ms is not None
                else "unreachable"
                if not s.reachable
                else "-",
                {True: "ok", False: "FAILED", None: "-"}[s.authenticated],
                f"{tls} [{s.tls_mode}]" if s.reachable else "-",
                s.server_version or "-",
                {True: "yes", False: "NO", None: "-"}[s.read_only],
                f"{good}/{len(s.datasets)}" if s.datasets else "-",
                f"{rows:,}" if s.datasets else "-",
                "FAIL" if not s.ok else "warn" if s.warnings else "ok",
            )
        )
    widths = [max(len(str(r[i])) for r in table) for i in range(len(head))]
    lines = [
        "  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table
    ]
    for s in sources:
        for e in s.errors:
            lines.append(f"{s.id}: error: {e}")
        for d in s.datasets:
            if not d.ok:
                lines.append(f"{s.id}: dataset {d.name}: {d.error}")
            elif d.variant and d.variant != "default":
                lines.append(f"{s.id}: dataset {d.name}: variant {d.variant}")
        for w in s.warnings:
            lines.append(f"{s.id}: warning: {w}")
    d = destination
    locks = d.locks
    lines.append("")
    lines.append(
        f"destination {d.server}: "
        + ("FAIL" if not d.ok else "warn" if d.warnings else "ok")
        + (f", PostgreSQL {d.server_version}" if d.server_version else "")
        + (f", rights: {d.rights}" if d.rights else "")
        + (
            f", lock slots {locks['lock_slots']}, whole-country joins that fit "
            f"{locks['country_joins_that_fit']}"
            if locks
            else ""
        )
    )
    lines += [f"destination: error: {e}" for e in d.errors]
    lines += [f"destination: warning: {w}" for w in d.warnings]
    failed = sum(not s.ok for s in sources)
    lines.append(
        f"{len(sources)} sources: {len(sources) - failed} pass, {failed} fail; destination "
        + ("passes" if d.ok else "fails")
    )
    return "\n".join(lines) + "\n"
