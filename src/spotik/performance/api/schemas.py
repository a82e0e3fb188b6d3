"""Shapes of the performance API, for the OpenAPI document (documentation only).

Subsystems plug their own figures into these answers (``spotik.performance.api.subsystems``), so the sections
they fill are open objects; the frame around them is fixed.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from spotik.http.openapi import Message, Timestamp, closed, open_ended

Status = Literal["healthy", "degraded", "unhealthy"]
Figure = Annotated[float | str | None, Field(description="A subsystem's figure (a number, a word, or null).")]
Section = Annotated[dict[str, Any], Field(description="A subsystem's own figures.")]


@open_ended
class ComponentHealth(TypedDict):
    """A subsystem's health, with its own details."""

    status: Status
    reasons: list[str]


@closed
class HealthReport(TypedDict):
    """Every subsystem's health; the overall status is the worst of them."""

    overall_status: Status
    health_issues: list[str]
    warning_issues: list[str]
    components: dict[str, ComponentHealth]
    timestamp: Timestamp


@closed
class MemoryFigures(TypedDict):
    current_mb: Figure
    status: Figure


@closed
class ConnectionFigures(TypedDict):
    websocket: Figure
    database: Figure


@closed
class PerformanceFigures(TypedDict):
    health_status: Status
    operations_per_hour: int


@closed
class CacheFigures(TypedDict):
    hit_rate: Figure
    total_entries: Figure


@closed
class RequestFigures(TypedDict):
    total: int
    duration_seconds_sum: float
    in_flight: float | None
    slow_total: int
    status_codes: dict[str, int]


@closed
class HealthSummary(TypedDict):
    status: Status
    components: dict[str, Status]


@closed
class PerformanceMetrics(TypedDict):
    timestamp: Timestamp
    server_time: Annotated[float, Field(description="Seconds since the epoch.")]
    uptime: Annotated[float, Field(description="Seconds since the app started.")]
    memory: MemoryFigures
    connections: ConnectionFigures
    performance: PerformanceFigures
    cache: CacheFigures
    requests: RequestFigures
    health: HealthSummary
    alerts: Annotated[int, Field(description="Active alerts.")]
    subsystems: dict[str, dict[str, Figure]]


@closed
class PerformanceMetricsResponse(TypedDict):
    """Headline figures of every subsystem and of the requests served."""

    success: Literal[True]
    metrics: PerformanceMetrics


@closed
class PerformanceHealthResponse(TypedDict):
    """Every subsystem checked now (503 when one is unhealthy)."""

    success: Literal[True]
    health: HealthReport
    timestamp: Timestamp


@closed
class RequestTotals(TypedDict):
    total: int
    avg_response_time: Annotated[float, Field(description="ms")]
    max_response_time: Annotated[float, Field(description="ms (a latency bucket's upper bound)")]
    avg_memory_usage: Annotated[int, Field(description="bytes")]
    max_memory_usage: Annotated[int, Field(description="bytes")]


@closed
class RouteFigures(TypedDict):
    count: int
    avg_time: float
    max_time: float


@closed
class HourMetrics(TypedDict, total=False):
    """The current clock hour's requests (Laravel's PerformanceMonitor shape; empty before the first request)."""

    requests: RequestTotals
    status_codes: dict[str, int]
    routes: dict[str, RouteFigures]


@closed
class ServerFigures(TypedDict):
    uptime: float
    started_at: Annotated[float, Field(description="Seconds since the epoch.")]
    python_version: str
    environment: str
    pid: int
    memory_mb: Figure
    load_average: list[float] | None
    cpu_count: int | None


@closed
class DashboardPerformance(TypedDict):
    operations_per_hour: int
    current_hour: HourMetrics


@closed
class Alert(TypedDict):
    key: str
    level: Literal["warning", "critical"]
    message: str
    since: Timestamp
    event: NotRequired[Literal["raised", "cleared"]]
    at: NotRequired[Timestamp]


@closed
class Alerts(TypedDict):
    active: list[Alert]
    recent: list[Alert]


@open_ended
class Dashboard(TypedDict):
    """Everything the dashboard shows; each subsystem adds a section under its name (``database``, …)."""

    server: ServerFigures
    performance: DashboardPerformance
    monitoring: NotRequired[Annotated[dict[str, Any], Field(description="Compression and rate limiting.")]]
    alerts: Alerts
    health: HealthReport


@closed
class PerformanceDashboardResponse(TypedDict):
    """The dashboard's figures."""

    success: Literal[True]
    data: Dashboard
    timestamp: Timestamp
    authenticated: Literal[True]


@closed
class BenchmarksResponse(TypedDict):
    """Each subsystem's micro-benchmark, one after the other."""

    success: Literal[True]
    benchmarks: dict[str, Section]
    timestamp: Timestamp


@closed
class OptimizeResponse(TypedDict):
    """What each subsystem did."""

    success: Literal[True]
    message: Message
    optimization_type: str
    results: dict[str, Section]
    timestamp: Timestamp


@closed
class CacheClearResponse(TypedDict):
    """How many entries were dropped."""

    success: Literal[True]
    message: Message
    cache_type: str
    cleared: int
    timestamp: Timestamp


@closed
class InvalidType(TypedDict):
    """An unknown optimization or cache type; ``valid_types`` lists the known ones."""

    success: Literal[False]
    error: str
    valid_types: list[str]


@closed
class ConnectionStats(TypedDict):
    total_connections: int
    room_connections: int
    rooms: int
    authenticated_users: int


@closed
class WebSocketStatus(TypedDict):
    """The WebSocket gateway's connections."""

    websocket_enabled: bool
    connection_stats: ConnectionStats
    server_time: Timestamp


@closed
class LaravelMetrics(TypedDict):
    """The current hour's request figures (Laravel's ``/api/metrics``)."""

    timestamp: Timestamp
    metrics: HourMetrics
