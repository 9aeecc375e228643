"""The engine's spans: one per municipality, its datasets, COPYs and commit, with database
attributes and failures recorded redacted. Exporting them is `syncd.observe.telemetry`'s job."""

from __future__ import annotations

from contextlib import AbstractContextManager
from enum import StrEnum

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.util.types import AttributeValue

from syncd import __version__
from syncd.config.dsn import Dsn
from syncd.engine.errors import Failure

Attributes = dict[str, AttributeValue]
TRACER_SCOPE = "syncd"  # the instrumentation scope, with syncd's version


class SpanName(StrEnum):
    """Every span name syncd makes: a small fixed set, never an id or a dataset (Tempo's span
    metrics and service graph make a series per name). Which municipality, dataset or table a
    span is about is in its attributes: syncd.source.id, syncd.dataset, db.collection.name."""

    SYNC = "sync"  # the root: one municipality's pass
    COPY = "COPY"  # a dataset read from the source, and its landing in the destination
    COMMIT = "commit"  # the destination transaction that makes a municipality's rows visible


def tracer() -> trace.Tracer:
    """The global provider's tracer, its instrumentation scope named and versioned."""
    return trace.get_tracer(TRACER_SCOPE, __version__)


def span(
    tracer: trace.Tracer,
    name: SpanName,
    attributes: Attributes,
    *,
    client: bool = True,
    context: Context | None = None,
) -> AbstractContextManager[trace.Span]:
    """A span that records nothing by itself on exceptions: `failed` does, redacted."""
    return tracer.start_as_current_span(
        name,
        kind=trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
        context=context,
    )


def source_failed(span: trace.Span, aborted: bool) -> None:
    """A municipality's root span failed by its datasets (not by its connection, which
    `failed` already typed): error.type tells the two apart in TraceQL."""
    attributes = getattr(span, "attributes", None) or {}
    if "error.type" not in attributes:
        span.set_attribute("error.type", "aborted" if aborted else "dataset_failed")


def failed(span: trace.Span, failure: Failure) -> None:
    """ERROR status, and the exception as an event, with the redacted one-line reason only
    (record_exception would put the raw message and a stack trace in the trace). `error.type` is
    the failure's kind; a server's SQLSTATE goes in `db.response.status_code`."""
    span.set_status(trace.Status(trace.StatusCode.ERROR, failure.reason))
    span.set_attribute("error.type", str(failure.kind))
    if failure.sqlstate:
        span.set_attribute("db.response.status_code", failure.sqlstate)
    span.add_event(
        "exception", {"exception.type": str(failure.kind), "exception.message": failure.reason}
    )


def interrupted(span: trace.Span, failure: Failure) -> None:
    """This span's work was cut short because its whole pass starts again (a lost or stalled
    snapshot): not an error of its own, and the retry is recorded on the pass's root span."""
    span.add_event("interrupted", {"syncd.reason": failure.reason, "error.type": str(failure.kind)})


def retried(span: trace.Span, failure: Failure, attempt: int, delay: float) -> None:
    span.add_event(
        "retry",
        {
            "syncd.retry.attempt": attempt,
            "syncd.retry.reason": failure.reason,
            "syncd.retry.delay_s": round(delay, 3),
            "error.type": str(failure.kind),
        },
    )


def db_attributes(dsn: Dsn, operation: str, collection: str | None = None) -> Attributes:
    """PostgreSQL database-client attributes (OpenTelemetry database semantic conventions,
    stable since 1.33: db.system.name, db.namespace, db.collection.name, db.operation.name,
    server.address/port), on CLIENT spans.

    `collection` is a table, never a dataset name: query datasets have none.

    For Grafana Tempo's service graph, whose metrics-generator draws an uninstrumented
    database as a virtual node from a CLIENT span's `peer_attributes` (by default peer.service,
    db.name, db.system): `peer.service` names the node after the database (every PEC is
    `esus`, the analytical one its own name), so the graph shows syncd -> esus and
    syncd -> the destination instead of 650 nodes; `db.name`, deprecated by db.namespace, is
    still emitted with the same value because Tempo's defaults read it."""
    database = dsn.database or "postgresql"
    attributes: Attributes = {
        "db.system.name": "postgresql",
        "db.operation.name": operation,
        "server.address": dsn.host,
        "server.port": dsn.port,
        "peer.service": database,
        "db.name": database,
    }
    if dsn.database:
        attributes["db.namespace"] = dsn.database
    if collection:
        attributes["db.collection.name"] = collection
    return attributes
