"""The shared services of the two-instance runs: a PostgreSQL database created for the run (and dropped), Redis
(reachable? every instance subscribed? the run's keys deleted at the end)."""

from __future__ import annotations

import argparse
import asyncio
import time


async def pg_admin(statement: str, args: argparse.Namespace) -> None:
    """One statement on the server's ``postgres`` database (creating and dropping the run's database)."""
    import asyncpg

    connection = await asyncpg.connect(host=args.pg_host, port=args.pg_port, user=args.pg_user, database="postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(name: str, args: argparse.Namespace) -> None:
    await pg_admin(f'CREATE DATABASE "{name}"', args)


async def drop_database(name: str, args: argparse.Namespace) -> None:
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', args)


async def redis_subscribers(redis_url: str, channel: str, want: int, within: float = 30.0) -> int:
    """Wait until ``want`` instances are subscribed to ``channel`` (PUBSUB NUMSUB)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + within
        while True:
            counts = dict(await client.pubsub_numsub(channel))
            count = int(next(iter(counts.values()), 0))
            if count >= want or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def delete_redis_keys(redis_url: str, prefix: str) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    deleted = 0
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            deleted += int(await client.delete(*keys[start : start + 500]))
    finally:
        await client.aclose()
    return deleted


async def redis_available(redis_url: str) -> str | None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        await client.ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()
