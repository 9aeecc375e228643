"""Prometheus metrics. Every name starts with `syncd_`; label sets are bounded.

Per-source labels appear on three gauges only: `syncd_last_success_timestamp_seconds` (sources
that succeeded), `syncd_source_pending_since_timestamp_seconds` (the others: since when they are
configured without a success) and `syncd_source_consecutive_failures`. 5,570 municipalities make
11,140 series, not a cardinality explosion. Everything else is labelled by dataset (tens),
outcome, reason or limiter.

Every counter exists from the start at 0 with every label value it can take (outcomes, reload
results, retry reasons, configured datasets): a counter that appears at its first increment
hides that increment from rate() and increase(), so a first pass would count for nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from datetime import datetime

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from syncd import __version__
from syncd.engine import rowdiff
from syncd.engine.errors import Failure, Kind
from syncd.engine.limits import Usage
from syncd.engine.progress import Progress
from syncd.engine.results import SourceResult
from syncd.ledger import Status
from syncd.observe.process import ProcessMetrics

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series: they double the series count for nothing
DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200, 14400, 28800)

# every label value each counter can take, exported at 0 from the start
SYNC_OUTCOMES = (Status.OK, Status.FAILED, Status.ABORTED, Status.SKIPPED)
DATASET_OUTCOMES = (Status.OK, Status.FAILED, Status.ABORTED)


RETRY_REASONS = (
    "connection",
    "timeout",
    "tls",
    "idle_stream",
    "statement_timeout",
    "lock_timeout",
    "server_restart",
    "server_resources",
    "conflict",
    "bastion_unreachable",
    "tunnel_not_connected",
    "forward_refused",
    "other",
)


def retry_reason(failure: Failure) -> str:
    """A bounded label for why something was retried."""
    if failure.kind in (Kind.CONNECTION, Kind.TIMEOUT, Kind.TLS):
        return str(failure.kind)
    if failure.kind == Kind.STALLED:
        return "idle_stream"
    if failure.kind == Kind.BUSY:
        return "lock_timeout"
    if failure.kind in (Kind.BASTION_UNREACHABLE, Kind.TUNNEL_NOT_CONNECTED, Kind.FORWARD_REFUSED):
        return str(failure.kind)
    state = failure.sqlstate or ""
    if state == "57014":
        return "statement_timeout"
    if state == "55P03":
        return "lock_timeout"
    if state[:2] in ("08", "57"):
        return "server_restart" if state in ("57P01", "57P02", "57P03") else "connection"
    if state[:2] == "53":
        return "server_resources"
    if state in ("40001", "40P01"):
        return "conflict"
    return "other"


class Metrics(Progress):
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        # every configured dataset (the daemon keeps it): a pass of only some of them (the
        # ones a reload added) is no "last sync in which every dataset succeeded"
        self.all_datasets: frozenset[str] = frozenset()
        r = self.registry
        # process_* as syncd_process_*: start time (restarts), memory, open files
        r.register(ProcessMetrics("syncd"))
        self.build = Gauge("syncd_build_info", "syncd version", ["version"], registry=r)
        self.build.labels(__version__).set(1)
        self.differ = Gauge(
            "syncd_row_differ_compiled",
            "1: the compiled row differ runs; 0: the pure-Python one (several times slower; "
            "the start's differ_pure_python warning and `syncd check` say why)",
            registry=r,
        )
        self.differ.set_function(lambda: float(rowdiff.current().compiled))
        self.duration = Histogram(
            "syncd_sync_duration_seconds",
            "Duration of one municipality sync",
            ["outcome"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.syncs = Counter(
            "syncd_syncs_total", "Municipality syncs by outcome", ["outcome"], registry=r
        )
        self.datasets = Counter(
            "syncd_dataset_syncs_total",
            "Dataset syncs by outcome",
            ["dataset", "outcome"],
            registry=r,
        )
        self.rows = Counter(
            "syncd_rows_total", "Rows landed in the destination", ["dataset"], registry=r
        )
        self.bytes = Counter(
            "syncd_bytes_total", "Binary COPY bytes landed", ["dataset"], registry=r
        )
        self.streamed = Counter(
            "syncd_streamed_bytes_total",
            "Bytes through the COPY pipe, counted as they move",
            registry=r,
        )
        self.retries = Counter("syncd_retries_total", "Retries by reason", ["reason"], registry=r)
        self.reloads = Counter(
            "syncd_config_reloads_total", "Config reloads by outcome", ["outcome"], registry=r
        )
        self.reload_ok = Gauge(
            "syncd_config_last_reload_successful",
            "1 if the last reload applied, 0 if it was rejected",
            registry=r,
        )
        self.reload_ok.set(1)
        self.in_flight = Gauge(
            "syncd_syncs_in_flight", "Municipality syncs running now", registry=r
        )
        self.sources = Gauge("syncd_sources", "Sources in the config", registry=r)
        self.due = Gauge("syncd_sources_due", "Sources due and waiting to start", registry=r)
        self.ready = Gauge(
            "syncd_ready", "1 once the config is loaded and the destination answers", registry=r
        )
        self.last_success = Gauge(
            "syncd_last_success_timestamp_seconds",
            "Unix time of the last sync of the source in which every dataset succeeded",
            ["source"],
            registry=r,
        )
        self.pending_since = Gauge(
            "syncd_source_pending_since_timestamp_seconds",
            "Sources without a complete sync yet: Unix time since when they are configured so",
            ["source"],
            registry=r,
        )
        self.failures_in_row = Gauge(
            "syncd_source_consecutive_failures",
            "Consecutive failed syncs of the source",
            ["source"],
            registry=r,
        )
        self._limits: Callable[[], dict[str, Usage]] | None = None
        self._last: dict[str, float] = {}
        self._pending: dict[str, float] = {}
        self._datasets: set[str] = set()
        r.register(_LimiterCollector(self))
        for outcome in SYNC_OUTCOMES:
            self.syncs.labels(outcome)
            self.duration.labels(outcome)
        for reason in RETRY_REASONS:
            self.retries.labels(reason)

    def configure(self, datasets: Iterable[str], sources: Iterable[str]) -> None:
        """At start and after each reload: every configured dataset's counters at 0 (removed
        datasets' series dropped), every source's failure count at 0 until it fails."""
        wanted = set(datasets)
        for name in wanted - self._datasets:
            for outcome in DATASET_OUTCOMES:
                self.datasets.labels(name, outcome)
            self.rows.labels(name)
            self.bytes.labels(name)
        for name in self._datasets - wanted:
            for outcome in DATASET_OUTCOMES:
                self.datasets.remove(name, outcome)
            self.rows.remove(name)
            self.bytes.remove(name)
        self._datasets = wanted
        sources = list(sources)
        self.forget_sources(sources)
        for sid in sources:
            self.failures_in_row.labels(sid)

    def seed_failures(self, counts: dict[str, int]) -> None:
        """At start: failures in a row as the ledger has them (a restart must not reset 6 to 0)."""
        for source_id, count in counts.items():
            self.failures_in_row.labels(source_id).set(count)

    def seed_pending(self, since: dict[str, datetime]) -> None:
        """Sources the ledger knows no complete sync of, and since when they are configured
        (`syncd.catalog.added_at`): exported until their first success, so that a municipality
        that never worked ages like any other and reaches the 48 h and 72 h alerts."""
        for source_id, when in since.items():
            if source_id in self._last:
                continue
            self._pending[source_id] = when.timestamp()
            self.pending_since.labels(source_id).set(when.timestamp())

    def watch_limits(self, usage: Callable[[], dict[str, Usage]]) -> None:
        self._limits = usage

    def seed(self, successes: dict[str, datetime]) -> None:
        """Last successes known to the ledger (at start, and what other instances did)."""
        for source_id, when in successes.items():
            self._succeeded(source_id, when.timestamp())

    def _succeeded(self, source_id: str, timestamp: float) -> None:
        if timestamp > self._last.get(source_id, 0.0):
            self._last[source_id] = timestamp
            self.last_success.labels(source_id).set(timestamp)
        if self._pending.pop(source_id, None) is not None:
            self.pending_since.remove(source_id)

    def forget_sources(self, keep: Iterable[str]) -> None:
        """After a reload: drop the series of removed sources."""
        keep = set(keep)
        self._last = {k: v for k, v in self._last.items() if k in keep}
        self._pending = {k: v for k, v in self._pending.items() if k in keep}
        for gauge in (self.last_success, self.pending_since, self.failures_in_row):
            # each has the one label `source`; collect() lists the series it holds
            held = {s.labels["source"] for m in gauge.collect() for s in m.samples}
            for source_id in held - keep:
                gauge.remove(source_id)

    # Progress hooks

    def source_started(self, source_id: str) -> None:
        self.in_flight.inc()

    def source_finished(self, result: SourceResult) -> None:
        self.in_flight.dec()
        self.syncs.labels(result.status).inc()
        if result.ended_at is not None:
            seconds = (result.ended_at - result.started_at).total_seconds()
            self.duration.labels(result.status).observe(seconds)
        for d in result.datasets.values():
            if d.status in (Status.PENDING, Status.LOADED):
                continue
            self.datasets.labels(d.name, d.status).inc()
            if d.status == Status.OK:
                self.rows.labels(d.name).inc(d.rows)
                self.bytes.labels(d.name).inc(d.bytes)
        complete = self.all_datasets <= result.datasets.keys()
        if result.status == Status.OK and result.ended_at is not None and complete:
            self._succeeded(result.source_id, result.ended_at.timestamp())
            self.failures_in_row.labels(result.source_id).set(0)
        elif result.status in (Status.FAILED, Status.ABORTED):
            self.failures_in_row.labels(result.source_id).inc()

    def bytes_moved(self, count: int) -> None:
        self.streamed.inc(count)

    def retried(self, source_id: str | None, dataset: str | None, failure: Failure) -> None:
        self.retries.labels(retry_reason(failure)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _LimiterCollector(Collector):
    """In use, waiting and capacity of each limiter, read at scrape time."""

    def __init__(self, metrics: Metrics):
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        in_use = GaugeMetricFamily("syncd_limiter_in_use", "Slots taken", labels=["limiter"])
        waiting = GaugeMetricFamily(
            "syncd_limiter_waiting", "Tasks waiting for a slot", labels=["limiter"]
        )
        capacity = GaugeMetricFamily("syncd_limiter_capacity", "Slots in all", labels=["limiter"])
        usage = self.metrics._limits() if self.metrics._limits else {}
        for name, u in usage.items():
            in_use.add_metric([name], u.in_use)
            waiting.add_metric([name], u.waiting)
            capacity.add_metric([name], u.total)
        yield from (in_use, waiting, capacity)

    def describe(self) -> list[Metric]:
        return []
