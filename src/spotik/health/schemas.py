"""Shapes of the health endpoints, for the OpenAPI document (documentation only)."""

from __future__ import annotations

from typing import Annotated, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from spotik.http.openapi import Timestamp, closed

CheckStatus = Literal["healthy", "unhealthy"]
Milliseconds = Annotated[float, Field(description="How long the check took (ms).")]


@closed
class Ping(TypedDict):
    """The server answers."""

    status: Literal["ok"]
    timestamp: Timestamp


@closed
class ServerTime(TypedDict):
    """The server's clock (clients sync playback with it)."""

    timestamp: Timestamp
    unix_timestamp: Annotated[int, Field(description="Seconds since the epoch.")]
    timezone: Literal["UTC"]


@closed
class DatabaseCheck(TypedDict):
    status: CheckStatus
    response_time: Milliseconds
    connection: Literal["ok", "failed"]
    driver: Annotated[str, Field(examples=["postgresql", "sqlite"])]
    error: NotRequired[Annotated[str, Field(description="The exception's class name.")]]


@closed
class StorageCheck(TypedDict):
    status: CheckStatus
    response_time: Milliseconds
    read_write: Annotated[bool, Field(description="Whether a probe file could be written and read back.")]
    error: NotRequired[Annotated[str, Field(description="The exception's class name.")]]


RedisStatus = Literal["healthy", "degraded"]


@closed
class RedisBrokerCheck(TypedDict):
    status: RedisStatus
    connected: Annotated[bool, Field(description="Whether the real-time fan-out is subscribed to Redis now.")]
    outages: Annotated[int, Field(description="Redis outages this instance has seen since it started.")]
    error: NotRequired[Annotated[str, Field(description="The last failure's class name, while degraded.")]]


@closed
class RedisRateLimiterCheck(TypedDict):
    status: RedisStatus
    connected: Annotated[bool, Field(description="Whether Redis answered a ping just now.")]
    limits: Annotated[
        Literal["shared", "per-instance"],
        Field(description="Shared by every instance through Redis, or counted by this instance alone meanwhile."),
    ]


@closed
class RedisCheck(TypedDict):
    """Only when ``REDIS_URL`` is set. Degraded while Redis is unreachable: each instance then serves its own sockets
    and counts rate limits per instance; it reconnects by itself."""

    status: RedisStatus
    response_time: Milliseconds
    broker: NotRequired[RedisBrokerCheck]
    rate_limiter: NotRequired[RedisRateLimiterCheck]


@closed
class CacheCheck(TypedDict):
    """The cache (informational: it never makes the overall status unhealthy)."""

    status: Literal["healthy", "degraded", "disabled"]
    enabled: bool
    redis: Annotated[
        Literal["ok", "degraded", "disabled"],
        Field(description="The shared Redis tier: disabled without REDIS_URL, degraded while unreachable."),
    ]
    hit_rate: Annotated[float | None, Field(description="Hits per lookup since start (null before any lookup).")]
    entries: int
    bytes: int
    reasons: list[str]


@closed
class HealthChecks(TypedDict):
    database: DatabaseCheck
    storage: StorageCheck
    cache: CacheCheck
    redis: NotRequired[RedisCheck]


@closed
class Health(TypedDict):
    """The database and the storage checked now (200 when both are healthy, else 503), Redis when it is configured
    (``degraded``, still 200, while it is unreachable), and the cache's state."""

    status: Literal["healthy", "degraded", "unhealthy"]
    timestamp: Timestamp
    checks: HealthChecks


@closed
class Liveness(TypedDict):
    """The process answers (no dependency is checked)."""

    alive: Literal[True]
    timestamp: Timestamp
    uptime: Annotated[float, Field(description="Seconds since the app started.")]


@closed
class ReadinessChecks(TypedDict):
    database: CheckStatus
    storage: CheckStatus


@closed
class Readiness(TypedDict):
    """Whether the database is reachable and the storage writable (200 when ready, else 503)."""

    ready: bool
    timestamp: Timestamp
    checks: ReadinessChecks
