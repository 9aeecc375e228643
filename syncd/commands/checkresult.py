"""What `syncd check --online` found, per source (and each of its datasets) and for the
destination: filled in by `check`, shown by `checkreport`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

DEFAULT_SSLMODE = "prefer"  # what libpq and asyncpg use when neither the DSN nor PGSSLMODE says


@dataclass
class DatasetCheck:
    name: str
    ok: bool = False
    variant: str | None = None
    columns: list[dict[str, str]] = field(default_factory=list)
    estimated_rows: int | None = None
    error: str | None = None


@dataclass
class SourceCheck:
    id: str
    name: str | None
    server: str
    reachable: bool = False
    connect_ms: float | None = None
    round_trip_ms: float | None = None
    authenticated: bool | None = None
    tls_mode: str = DEFAULT_SSLMODE
    tls: str | None = None  # e.g. TLSv1.3, None when not encrypted
    tls_verified: str = "no"  # "host and CA", "CA only", "no"
    server_version: str | None = None
    read_only: bool | None = None
    bastion: str | None = None  # the bastion a tunnelled source is reached through
    # tunnelled sources: each hop in order, "ok", "FAILED" or "-" (not reached)
    hops: dict[str, str] = field(default_factory=dict)
    error_kind: str | None = None  # errors.Kind of the failure that stopped the check
    datasets: list[DatasetCheck] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # worth knowing; neither a warning nor a fail
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and all(d.ok for d in self.datasets)


@dataclass
class DestinationCheck:
    server: str
    reachable: bool = False
    server_version: str | None = None
    rights: str | None = None
    locks: dict[str, Any] = field(default_factory=dict)  # check.lock_budget: JSON numbers
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors
