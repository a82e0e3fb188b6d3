"""Dedicated services for the fault-injection tests: a PostgreSQL cluster and redis-servers of their own, on free
loopback ports, that the tests stop, kill and restart. The shared PostgreSQL (5432) and Redis (6379) are never
touched.

The PostgreSQL cluster runs as the unprivileged ``postgres`` user when the tests run as root (PostgreSQL refuses to
run as root), with trust authentication on 127.0.0.1 only and ``fsync=off`` (a test cluster: the faults here kill the
server, not the machine). Its folder is created outside pytest's private temporary directory so that user can reach it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg

from tests.e2e.server import free_port
from tests.integration.test_websocket_redis import RedisProcess

PG_BIN_CANDIDATES = ("/usr/local/bin", "/usr/lib/postgresql/15/bin")
POSTGRES_USER = "postgres"


class ServiceUnavailable(RuntimeError):
    """A dedicated service could not be started (missing binaries, no unprivileged user …)."""


def _pg_binary(name: str) -> str:
    found = shutil.which(name)
    if found:
        return found
    for folder in PG_BIN_CANDIDATES:
        candidate = Path(folder) / name
        if candidate.is_file():
            return str(candidate)
    raise ServiceUnavailable(f"{name} not found (PostgreSQL server binaries)")


def _as_postgres() -> list[str]:
    if os.geteuid() != 0:
        return []
    runuser = shutil.which("runuser")
    if runuser is None:
        raise ServiceUnavailable("running as root without runuser: cannot start PostgreSQL unprivileged")
    return [runuser, "-u", POSTGRES_USER, "--"]


def wait_for_port(port: int, within: float) -> None:
    deadline = time.monotonic() + within
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class PostgresCluster:
    """``initdb`` + ``pg_ctl`` on a free port; ``stop``/``start``/``kill`` inject the faults."""

    def __init__(self) -> None:
        self.initdb = _pg_binary("initdb")
        self.pg_ctl = _pg_binary("pg_ctl")
        self.prefix = _as_postgres()
        self.root = Path(tempfile.mkdtemp(prefix="spotik-faults-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self.port = free_port()
        if self.prefix:
            os.chmod(self.root, 0o755)  # noqa: S103 - the postgres user must reach its data folder
            shutil.chown(self.root, user=POSTGRES_USER)
        self._run([self.initdb, "-D", str(self.data), "-A", "trust", "-U", POSTGRES_USER, "--no-sync", "-E", "UTF8"])

    def _run(self, command: list[str], timeout: float = 60) -> None:
        result = subprocess.run([*self.prefix, *command], capture_output=True, text=True, timeout=timeout, check=False)
        if result.returncode != 0:
            raise ServiceUnavailable(f"{Path(command[0]).name} failed: {result.stderr.strip() or result.stdout}")

    def start(self) -> None:
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=200"
        )
        self._run([self.pg_ctl, "-D", str(self.data), "-o", options, "-l", str(self.log), "-w", "-t", "30", "start"])

    def stop(self, mode: str = "fast") -> None:
        """``fast`` closes every session (what a restart for maintenance does); ``immediate`` is a crash."""
        self._run([self.pg_ctl, "-D", str(self.data), "-m", mode, "-w", "-t", "30", "stop"])

    @property
    def running(self) -> bool:
        return (self.data / "postmaster.pid").exists()

    def url(self, database: str) -> str:
        return f"postgresql://{POSTGRES_USER}@127.0.0.1:{self.port}/{database}"

    async def _admin(self, statement: str) -> None:
        connection = await asyncpg.connect(self.url("postgres"), timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def create_database(self) -> str:
        name = f"faults_{uuid.uuid4().hex[:10]}"
        await self._admin(f'CREATE DATABASE "{name}"')
        return name

    async def drop_database(self, name: str) -> None:
        await self._admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def destroy(self) -> None:
        if self.running:
            try:
                self.stop("immediate")
            except (ServiceUnavailable, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.root, ignore_errors=True)


class LoopbackRedis(RedisProcess):
    """The integration tests' private redis-server, bound to loopback only, started and waited for."""

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                self.binary,
                *("--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
                *("--daemonize", "no", "--dir", tempfile.gettempdir()),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, 10)


def redis_binary() -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable("redis-server not on PATH")
    return binary
