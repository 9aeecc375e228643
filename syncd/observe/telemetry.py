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

from syncd import __version__
from syncd.engine.errors import redact
from syncd.engine.spans import TRACER_SCOPE
from syncd.logevents import Event
from syncd.safetext import json_printable, printable

log = logging.getLogger(__name__)

PROTOCOLS = ("grpc", "http/protobuf")


class TelemetryError(ValueError):
    pass


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
        from opentelemetry.exporter.otlp.proto.grpc import trace_exporter as grpc

        return grpc.OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http import trace_exporter as http

    return http.OTLPSpanExporter()


@dataclass
class Telemetry:
    provider: TracerProvider
    exporting: bool

    @property
    def tracer(self) -> trace.Tracer:
        return self.provider.get_tracer(TRACER_SCOPE, __version__)

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Send what is buffered, then stop (called on every exit, `syncd once` included)."""
        try:
            self.provider.force_flush(int(timeout_s * 1000))
            self.provider.shutdown()
        except Exception as exc:  # telemetry must never fail the job it observes
            log.warning(
                "flushing traces: %s", redact(str(exc)), extra={"event": Event.TRACE_FLUSH_FAILED}
            )


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

FIELDS = (
    "source",
    "dataset",
    "pass_id",
    "rows",
    "bytes",
    "seconds",
    "attempt",
    "reason",
    "error_type",
)


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
        event = getattr(record, "event", None)
        if event is not None:
            entry["event"] = str(event)
        for key in FIELDS:
            value = getattr(record, key, None)
            if value is not None:
                entry[key] = value
        entry.update(_trace_ids())
        if record.exc_info:
            entry["exc"] = redact(self.formatException(record.exc_info))
        return json_printable(json.dumps(entry, ensure_ascii=False, default=str))


class TextFormatter(logging.Formatter):
    """`... LEVEL logger: message event=NAME trace_id=...`: the fields to filter on at the end."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = printable(redact(super().format(record)), keep_newlines=True)
        event = getattr(record, "event", None)
        if event is not None:
            text += f" event={event}"
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
