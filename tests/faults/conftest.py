"""Fixtures of the fault-injection scenarios (docs/reliability.md): dedicated services, real server processes.

Under ``CI=true`` a dedicated service that cannot start (no ``initdb``/``pg_ctl``/``redis-server``, no ``mount``) fails
the run; otherwise the scenario is skipped with a loud reason (the rule of tests/conftest.py).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.faults.servers import Server
from tests.faults.services import LoopbackRedis, PostgresCluster, ServiceUnavailable, redis_binary


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PostgresCluster]:
    """One dedicated cluster for the session; the scenario that restarts it leaves it running again."""
    try:
        cluster = PostgresCluster()
    except (ServiceUnavailable, OSError) as exc:
        unavailable("a dedicated PostgreSQL cluster (initdb)", exc)
        raise AssertionError("unreachable") from None
    try:
        try:
            cluster.start()
        except ServiceUnavailable as exc:
            unavailable("a dedicated PostgreSQL cluster (pg_ctl start)", exc)
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture
def pg_url(pg_cluster: PostgresCluster) -> Iterator[str]:
    """A fresh database on the dedicated cluster (the server migrates it at start-up), dropped afterwards."""
    if not pg_cluster.running:
        pg_cluster.start()  # a failed scenario may have left it stopped
    name = asyncio.run(pg_cluster.create_database())
    try:
        yield pg_cluster.url(name)
    finally:
        if not pg_cluster.running:
            pg_cluster.start()
        asyncio.run(pg_cluster.drop_database(name))


@pytest.fixture
def private_redis() -> Iterator[LoopbackRedis]:
    try:
        server = LoopbackRedis(redis_binary())
        server.start()
    except (ServiceUnavailable, OSError) as exc:
        unavailable("a dedicated redis-server", exc)
        raise AssertionError("unreachable") from None
    try:
        yield server
    finally:
        server.kill()


ServerFactory = Callable[..., Server]


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[ServerFactory]:
    """Starts ``spotik serve`` processes (``servers(storage=…, **env)``); every one still running is killed at the
    end, whatever happened."""
    started: list[Server] = []

    def start(storage: Path | None = None, **env: str) -> Server:
        server = Server(storage or tmp_path / "storage", env)
        started.append(server)
        server.wait_until_serving()
        return server

    try:
        yield start
    finally:
        for number, server in enumerate(started):
            server.stop()
            (tmp_path / f"server-{number}.log").write_text(server.output())  # kept for a failure's post-mortem
