"""How `syncd check --online` shows what it found: a table with one line per source, or JSON."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from syncd.commands.checkresult import DestinationCheck, SourceCheck


def as_json_document(
    sources: list[SourceCheck], destination: DestinationCheck, ok: bool
) -> dict[str, Any]:
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
        if s.bastion is not None:
            hops = ", ".join(f"{hop} {state}" for hop, state in s.hops.items())
            lines.append(f"{s.id}: via bastion {s.bastion}: {hops}")
        for e in s.errors:
            lines.append(f"{s.id}: error: {e}")
        for ds in s.datasets:
            if not ds.ok:
                lines.append(f"{s.id}: dataset {ds.name}: {ds.error}")
            elif ds.variant and ds.variant != "default":
                lines.append(f"{s.id}: dataset {ds.name}: variant {ds.variant}")
        for w in s.warnings:
            lines.append(f"{s.id}: warning: {w}")
        for n in s.notes:
            lines.append(f"{s.id}: note: {n}")
    locks = destination.locks
    lines.append("")
    lines.append(
        f"destination {destination.server}: "
        + ("FAIL" if not destination.ok else "warn" if destination.warnings else "ok")
        + (f", PostgreSQL {destination.server_version}" if destination.server_version else "")
        + (f", rights: {destination.rights}" if destination.rights else "")
        + (
            f", lock slots {locks['lock_slots']}, whole-country joins that fit "
            f"{locks['country_joins_that_fit']}"
            if locks
            else ""
        )
    )
    lines += [f"destination: error: {e}" for e in destination.errors]
    lines += [f"destination: warning: {w}" for w in destination.warnings]
    failed = sum(not s.ok for s in sources)
    lines.append(
        f"{len(sources)} sources: {len(sources) - failed} pass, {failed} fail; destination "
        + ("passes" if destination.ok else "fails")
    )
    return "\n".join(lines) + "\n"
