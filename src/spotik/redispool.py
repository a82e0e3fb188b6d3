"""The connection pool of every Redis client of Spotik (the real-time broker, the cache's Redis tier, the shared
rate limits)."""

from __future__ import annotations

from typing import Any

from redis.asyncio import BlockingConnectionPool


def bounded_pool(url: str, *, max_connections: int, wait: float, **connection: Any) -> BlockingConnectionPool:
    """At most ``max_connections`` connections; past that a caller waits up to ``wait`` seconds for a free one.

    redis-py's default pool raises ``MaxConnectionsError`` at once past 100 connections instead, and every client of
    Spotik would take that for an outage of Redis (the mixed benchmark found the cache tier of one instance going
    "down" under load, then clearing itself when it came back)."""
    return BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=wait, **connection)
