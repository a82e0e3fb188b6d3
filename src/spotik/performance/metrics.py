"""Prometheus metric families, in a registry owned by one app (never prometheus_client's global ``REGISTRY``).

Families that other layers fill are defined here too, so their owners only increment them:

* WebSocket layer: ``ws_connections`` (set/inc/dec), ``ws_connections_opened`` / ``ws_connections_rejected``
  (``reason``), ``ws_messages_received`` / ``ws_messages_sent`` (``type``), ``ws_messages_dropped``
  (``reason``), ``ws_send_queue_depth`` (total queued frames across connections).
* Health checks: :meth:`Metrics.set_health`.

Labels never carry raw paths or ids: HTTP routes are route templates (``/api/rooms/{room}``), unmatched requests
``"<unmatched>"``.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Literal

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.pool import QueuePool

from spotik.realtime.tally import WebSocketFigures

HealthStatus = Literal["healthy", "degraded", "unhealthy"]
HEALTH_VALUES: dict[str, float] = {"healthy": 1.0, "degraded": 0.5, "unhealthy": 0.0}

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
QUERY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
QUERIES_PER_REQUEST_BUCKETS = (0, 1, 2, 3, 5, 8, 13, 21, 34, 55, 89)
RATIO_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
MEMORY_DELTA_BUCKETS = (-(1 << 20), -(64 << 10), 0, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20)

PoolStatus = Callable[[], "dict[str, int] | None"]


def pool_status(pool: object) -> dict[str, int] | None:
    """Size, checked-out, checked-in and overflow of a queue pool (``None`` for pools that have no such figures)."""
    if not isinstance(pool, QueuePool):
        return None
    return {
        "size": pool.size(),
        "checked_out": pool.checkedout(),
        "checked_in": pool.checkedin(),
        "overflow": max(pool.overflow(), 0),
    }


class LoopHistogram:
    """A Prometheus histogram for the hot paths (every request, every statement), read at scrape time.

    Observed on the event loop only (the middleware and SQLAlchemy's engine events run there), so plain lists
    need no lock: an observation is one bisect and two additions, about a quarter of prometheus_client's
    ``Histogram.observe`` (which takes a lock per bucket and per sum). The exposition is the standard one.
    """

    def __init__(self, name: str, documentation: str, labelnames: Sequence[str], buckets: Sequence[float]) -> None:
        self.name = name
        self.documentation = documentation
        self.labelnames = tuple(labelnames)
        self.bounds = tuple(sorted(float(b) for b in buckets))
        self._series: dict[tuple[str, ...], list[float]] = {}  # labels -> per-bucket counts, then +Inf, then sum

    def observe(self, value: float, labels: tuple[str, ...] = ()) -> None:
        series = self._series.get(labels)
        if series is None:
            series = self._series[labels] = [0.0] * (len(self.bounds) + 2)
        series[bisect_left(self.bounds, value)] += 1  # first bucket whose bound is >= value (+Inf past the end)
        series[-1] += value

    def describe(self) -> Iterator[Metric]:
        yield HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)

    def collect(self) -> Iterator[Metric]:
        family = HistogramMetricFamily(self.name, self.documentation, labels=self.labelnames)
        bounds = [repr(bound) for bound in self.bounds] + ["+Inf"]  # as prometheus_client writes "le"
        for labels, series in list(self._series.items()):
            cumulative = 0.0
            buckets = []
            for bound, count in zip(bounds, series[:-1], strict=True):
                cumulative += count
                buckets.append((bound, cumulative))
            family.add_metric(list(labels), buckets, series[-1])
        yield family


class _ScrapeTimeCollector:
    """Figures read when Prometheus scrapes: pool usage (from the instrumented engine) and RSS."""

    def __init__(self, process: psutil.Process, pool: PoolStatus) -> None:
        self._process = process
        self._pool = pool

    POOL_FAMILIES = (
        ("size", "Connections the database pool keeps (its configured size)."),
        ("checked_out", "Pooled database connections in use right now."),
        ("checked_in", "Idle pooled database connections."),
        ("overflow", "Connections open beyond the pool size."),
    )

    def describe(self) -> Iterator[Metric]:
        """The families without reading anything (the registry asks at registration)."""
        yield GaugeMetricFamily("spotik_memory_rss_bytes", "Resident set size of this process.")
        for key, help_text in self.POOL_FAMILIES:
            yield GaugeMetricFamily(f"spotik_db_pool_{key}", help_text)

    def collect(self) -> Iterator[Metric]:
        rss = GaugeMetricFamily("spotik_memory_rss_bytes", "Resident set size of this process.")
        rss.add_metric([], float(self._process.memory_info().rss))
        yield rss
        status = self._pool()
        for key, help_text in self.POOL_FAMILIES:
            family = GaugeMetricFamily(f"spotik_db_pool_{key}", help_text)
            if status is not None:
                family.add_metric([], float(status[key]))
            yield family


class WebSocketCollector:
    """The ``spotik_ws_*`` families, read from the gateway (``spotik.realtime.tally``) when Prometheus scrapes, so
    that writing a frame costs a dict increment instead of a labelled counter's lock. ``source`` is set once the
    gateway runs (the lifespan); before that the families have no samples."""

    COUNTERS = (  # family, help, label; in the order of the figures below
        ("spotik_ws_messages_received", "WebSocket messages received, by type.", "type"),
        ("spotik_ws_messages_sent", "WebSocket messages sent, by type.", "type"),
        (
            "spotik_ws_messages_dropped",
            "WebSocket messages dropped (full queue, slow consumer, closed), by reason.",
            "reason",
        ),
        ("spotik_ws_connections_rejected", "WebSocket connections refused, by reason.", "reason"),
    )

    def __init__(self) -> None:
        self.source: Callable[[], WebSocketFigures] | None = None

    def _families(self, figures: WebSocketFigures | None) -> Iterator[Metric]:
        connections = GaugeMetricFamily("spotik_ws_connections", "Open WebSocket connections.")
        opened = CounterMetricFamily("spotik_ws_connections_opened", "WebSocket connections accepted.")
        queued = GaugeMetricFamily(
            "spotik_ws_send_queue_depth", "Frames waiting in WebSocket send queues (all connections)."
        )
        counts: tuple[Mapping[str, int], ...] = ({}, {}, {}, {})
        if figures is not None:
            connections.add_metric([], figures["connections"])
            opened.add_metric([], figures["opened"])
            queued.add_metric([], figures["queued"])
            counts = (figures["received"], figures["sent"], figures["dropped"], figures["refused"])
        yield from (connections, opened, queued)
        for (name, help_text, label), series in zip(self.COUNTERS, counts, strict=True):
            family = CounterMetricFamily(name, help_text, labels=[label])
            for value, count in sorted(series.items()):
                family.add_metric([value], count)
            yield family

    def describe(self) -> Iterator[Metric]:
        return self._families(None)

    def collect(self) -> Iterator[Metric]:
        return self._families(self.source() if self.source is not None else None)


class InFlight:
    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0

    def read(self) -> float:
        return float(self.value)


class Metrics:
    """Every Prometheus family Spotik exports, registered in this app's own :class:`CollectorRegistry`."""

    def __init__(self, *, environment: str, version: str, pool: PoolStatus, process: psutil.Process) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry

        # HTTP
        self.http_request_duration = LoopHistogram(
            "spotik_http_request_duration_seconds",
            "HTTP request latency (until the last body byte is sent), by route template and status.",
            ["method", "route", "status"],
            LATENCY_BUCKETS,
        )
        r.register(self.http_request_duration)
        # A plain counter read at scrape time: the event loop is single-threaded, so no lock on the hot path.
        self.in_flight = InFlight()
        self.http_requests_in_flight = Gauge(
            "spotik_http_requests_in_flight", "HTTP requests being served right now.", registry=r
        )
        self.http_requests_in_flight.set_function(self.in_flight.read)
        self.http_slow_requests = Counter(
            "spotik_http_slow_requests", "Requests slower than SLOW_REQUEST_THRESHOLD.", ["route"], registry=r
        )
        self.http_compression_ratio = Histogram(
            "spotik_http_compression_ratio",
            "Compressed size / original size of gzip-encoded responses.",
            buckets=RATIO_BUCKETS,
            registry=r,
        )
        self.http_compression_bytes = Counter(
            "spotik_http_compression_bytes",
            "Bytes through the gzip layer, before (stage=in) and after (stage=out) compression.",
            ["stage"],
            registry=r,
        )

        # Database
        self.db_query_duration = LoopHistogram(
            "spotik_db_query_duration_seconds",
            "Database statement latency, by statement kind.",
            ["operation"],
            QUERY_BUCKETS,
        )
        r.register(self.db_query_duration)
        self.db_queries_per_request = LoopHistogram(
            "spotik_db_queries_per_request",
            "Database statements run by one HTTP request (requests that ran at least one).",
            [],
            QUERIES_PER_REQUEST_BUCKETS,
        )
        r.register(self.db_queries_per_request)
        self.db_slow_queries = Counter(
            "spotik_db_slow_queries", "Statements slower than SLOW_QUERY_THRESHOLD.", ["operation"], registry=r
        )
        self.db_n_plus_one = Counter(
            "spotik_db_n_plus_one",
            "Requests that ran one statement N_PLUS_ONE_THRESHOLD times or more (suspected N+1).",
            ["route"],
            registry=r,
        )

        # Memory
        self.memory_request_delta = LoopHistogram(
            "spotik_memory_request_delta_bytes",
            "RSS change across a sampled request (1 in MEMORY_SAMPLE_EVERY).",
            [],
            MEMORY_DELTA_BUCKETS,
        )
        r.register(self.memory_request_delta)
        self.memory_route_growth = Counter(
            "spotik_memory_route_growth_bytes",
            "RSS growth attributed to sampled requests, by route template.",
            ["route"],
            registry=r,
        )

        # Protection
        self.rate_limit_rejections = Counter(
            "spotik_rate_limit_rejections",
            "Requests refused by the rate limiter, by the limit that refused them and transport.",
            ["limit", "transport"],
            registry=r,
        )

        # Health (1 healthy, 0.5 degraded, 0 unhealthy)
        self.health_status = Gauge(
            "spotik_health_status",
            "Health per component: 1 healthy, 0.5 degraded, 0 unhealthy.",
            ["component"],
            registry=r,
        )

        # WebSocket layer: read from the gateway's counters at scrape time (``self.websocket.source``)
        self.websocket = WebSocketCollector()
        r.register(self.websocket)

        self.build_info = Gauge(
            "spotik_build_info",
            "Always 1; labels carry the version and environment.",
            ["version", "environment"],
            registry=r,
        )
        self.build_info.labels(version=version, environment=environment).set(1)

        r.register(_ScrapeTimeCollector(process, pool))
        # The standard process_*, python_gc_* and python_info families, in this registry only.
        ProcessCollector(registry=r)
        GCCollector(registry=r)
        PlatformCollector(registry=r)

    def set_health(self, component: str, status: HealthStatus | bool) -> None:
        """Record a component's health (a health check's callback)."""
        if isinstance(status, bool):
            value = 1.0 if status else 0.0
        else:
            value = HEALTH_VALUES[status]
        self.health_status.labels(component=component).set(value)

    def exposition(self) -> bytes:
        """The standard text exposition of every family in this registry."""
        return generate_latest(self.registry)

    def register(self, collector: Collector) -> None:
        """For layers that bring their own families (the caching service)."""
        self.registry.register(collector)
