"""The connection pool of every Redis client of Spotik (the real-time broker, the cache's Redis tier, the shared
rate limits)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff


def bounded_pool(url: str, *, max_connections: int, wait: float, **connection: Any) -> BlockingConnectionPool:
    """At most ``max_connections`` connections; past that a caller waits up to ``wait`` seconds for a free one.

    redis-py's default pool raises ``MaxConnectionsError`` at once past 100 connections instead, and every client of
    Spotik would take that for an outage of Redis (the mixed benchmark found the cache tier of one instance going
    "down" under load, then clearing itself when it came back)."""
    return BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait, **connection)


def reconnecting_client(url: str, *, max_connections: int, connect_timeout: float, socket_timeout: float) -> Redis:
    """A client on a bounded pool (waiting at most ``socket_timeout`` for a connection) that never retries a failed
    call itself: its owner (the broker's link, the cache tier) notices the outage, logs it once and reconnects with
    ``backoff.backoff_delay``."""
    pool = bounded_pool(
        url,
        max_connections=max_connections,
        wait=socket_timeout,
        socket_connect_timeout=connect_timeout,
        socket_timeout=socket_timeout,
        health_check_interval=10,
        retry=Retry(NoBackoff(), 0),
    )
    return Redis.from_pool(pool)
