"""Traces (OpenTelemetry, for Grafana Tempo) and logs that point at them.

Configured only by the standard variables: OTEL_EXPORTER_OTLP_ENDPOINT (or ..._TRACES_ENDPOINT),
OTEL_EXPORTER_OTLP_PROTOCOL (grpc or http/protobuf, the default), OTEL_EXPORTER_OTLP_HEADERS,
OTEL_SERVICE_NAME (default `syncd`), OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG].
With no endpoint set there is no exporter: spans are still made (log lines carry their ids) but
nothing is sent, and a span costs a few microseconds against a COPY of seconds.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass
from datetime import UTC, datetime

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from . import __version__
from .errors import redact
from .safetext import json_printable, printable

log = logging.getLogger("syncd.telemetry")

PROTOCOLS = ("grpc", "http/protobuf")


class TelemetryError(ValueError):
    pass


def tracer() -> trace.Tracer:
    """The global provider's tracer, its instrumentation scope named and versioned."""
    return trace.get_tracer("syncd", __version__)


def exporter_wanted(env: dict[str, str] | None = None) -> bool:
    env = dict(os.environ) if env is None else env
    if env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "none":
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        or env.get("OTEL_TRACES_EXPORTER", "").strip().lower() == "otlp"
    )


def protocol(env: dict[str, str] | None = None) -> str:
    env = dict(os.environ) if env is None else env
    value = (
        (
            env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
            or env.get("OTEL_EXPORTER_OTLP_PROTOCOL")
            or "http/protobuf"
        )
        .strip()
        .lower()
    )
    if value not in PROTOCOLS:
        raise TelemetryError(
            f"OTEL_EXPORTER_OTLP_PROTOCOL={value!r}: syncd exports traces over grpc or http/protobuf"
        )
    return value


def make_exporter(kind: str) -> SpanExporter:
    # the exporters read endpoint, headers, timeout and TLS settings from OTEL_* themselves
    if kind == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    return OTLPSpanExporter()


@dataclass
class Telemetry:
    provider: TracerProvider
    exporting: bool

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer("syncd", __version__)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Send what is buffered, then stop (called on every exit, `syncd once` included)."""
        try:
            self.provider.force_flush(int(timeout_s * 1000))
            self.provider.shutdown()
        except Exception as exc:  # telemetry must never fail the job it observes
            log.warning("flushing traces: %s", redact(str(exc)))


def setup(exporter: SpanExporter | None = None, *, install: bool = True) -> Telemetry:
    """A tracer provider from the environment; `exporter` overrides (tests)."""
    attributes = {"service.version": __version__}
    if not os.environ.get("OTEL_SERVICE_NAME"):
        attributes["service.name"] = "syncd"
    provider = TracerProvider(resource=Resource.create(attributes), shutdown_on_exit=False)
    exporting = False
    if exporter is None and exporter_wanted():
        exporter = make_exporter(protocol())
    if exporter is not None:
        provider.add_span_processor(BatchSpanProcessor(exporter))
        exporting = True
    if install:
        trace.set_tracer_provider(provider)
    return Telemetry(provider, exporting)


# -- logs ----------------------------------------------------------------------------------------

FIELDS = ("source", "dataset", "pass_id", "rows", "bytes", "seconds", "attempt", "reason")


def _trace_ids() -> dict[str, str]:
    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {
        "trace_id": format(context.trace_id, "032x"),
        "span_id": format(context.span_id, "016x"),
    }


class JsonFormatter(logging.Formatter):
    """One JSON object per line; inside a sync it carries trace_id and span_id (Tempo links)."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        entry.update(_trace_ids())
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json_printable(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = printable(redact(super().format(record)), keep_newlines=True)
        ids = _trace_ids()
        return f"{text} trace_id={ids['trace_id']}" if ids else text


def setup_logging(level: str, fmt: str = "json") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper()))
    for noisy in ("asyncio", "aiohttp.access", "opentelemetry"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# -- span helpers --------------------------------------------------------------------------------


def span(tracer: trace.Tracer, name: str, attributes: dict, *, client: bool = True, **kwargs):
    """A span that records nothing by itself on exceptions: `failed` does, redacted."""
    return tracer.start_as_current_span(
        name,
        kind=trace.SpanKind.CLIENT if client else trace.SpanKind.INTERNAL,
        attributes=attributes,
        record_exception=False,
        set_status_on_exception=False,
        **kwargs,
    )


def source_failed(span: trace.Span, aborted: bool) -> None:
    """A municipality's root span failed by its datasets (not by its connection, which
    `failed` already typed): error.type tells the two apart in TraceQL."""
    attributes = getattr(span, "attributes", None) or {}
    if "error.type" not in attributes:
        span.set_attribute("error.type", "aborted" if aborted else "dataset_failed")


def failed(span: trace.Span, failure) -> None:
    """ERROR status, and the exception as an event, with the redacted one-line reason only
    (record_exception would put the raw message and a stack trace in the trace)."""
    span.set_status(trace.Status(trace.StatusCode.ERROR, failure.reason))
    span.set_attribute("error.type", failure.code)
    span.add_event(
        "exception", {"exception.type": failure.code, "exception.message": failure.reason}
    )


def retried(span: trace.Span, failure, attempt: int, delay: float) -> None:
    span.add_event(
        "retry",
        {
            "syncd.retry.attempt": attempt,
            "syncd.retry.reason": failure.reason,
            "syncd.retry.delay_s": round(delay, 3),
            "error.type": failure.code,
        },
    )


def db_attributes(dsn, operation: str, collection: str | None = None) -> dict:
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
    attributes = {
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
