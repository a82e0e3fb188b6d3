"""Every Redis client of Spotik (broker, cache tier, rate limits) shares one kind of pool: bounded, and past its
bound a call waits for a free connection instead of failing (redis-py's default pool raises MaxConnectionsError,
which the clients would take for an outage of Redis). Against the real Redis."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from redis.asyncio import ConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError

from spotik.redispool import bounded_pool
from tests.integration.test_rate_limit import redis_url  # the fixture: 127.0.0.1:6379, or skip / fail in CI

__all__ = ["redis_url"]
pytestmark = pytest.mark.redis
HOLD = 0.2  # s each call holds its connection (a blocking pop on an empty list)


async def holders(client: Redis, count: int) -> list[object]:
    key = f"spotik-test:pool:{uuid.uuid4().hex}"
    return await asyncio.gather(*(client.blpop([key], timeout=HOLD) for _ in range(count)), return_exceptions=True)


async def test_past_its_bound_a_call_waits_for_a_free_connection(redis_url: str) -> None:
    client = Redis.from_pool(bounded_pool(redis_url, max_connections=2, wait=5))
    try:
        outcomes = await holders(client, 6)  # three turns of two
    finally:
        await client.aclose()
    assert outcomes == [None] * 6


async def test_the_wait_is_bounded(redis_url: str) -> None:
    client = Redis.from_pool(bounded_pool(redis_url, max_connections=1, wait=HOLD / 4))
    try:
        outcomes = await holders(client, 2)
    finally:
        await client.aclose()
    assert outcomes[0] is None and isinstance(outcomes[1], RedisConnectionError), outcomes


async def test_what_redis_py_does_by_default(redis_url: str) -> None:
    """Why the pool exists: the default pool refuses the third concurrent call at once."""
    client = Redis.from_pool(ConnectionPool.from_url(redis_url, max_connections=2))
    try:
        outcomes = await holders(client, 3)
    finally:
        await client.aclose()
    assert sum(isinstance(outcome, RedisConnectionError) for outcome in outcomes) == 1, outcomes
