"""Server processes on loopback: ``spotik serve`` and the baseline apps (``bench/baseline_ws_app.py``), started
pinned and in a session of their own, checked for readiness, read (RSS, CPU, the warnings in their log) and
stopped."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx2
import psutil

from spotikbench.tools import KIB, clean_environment, free_port, pin_to, stop_process

BASELINE_APP = Path(__file__).resolve().parents[1] / "baseline_ws_app.py"
STARTUP_TIMEOUT = 60.0


class ServerProcess:
    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], workdir: Path, cpus: set[int] | None, port: int
    ) -> None:
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.log_path = workdir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
            argv,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin_to(cpus),  # before exec: the child has no threads yet
            start_new_session=True,  # Ctrl-C reaches the driver only; it stops the servers in order
        )
        self.ps = psutil.Process(self.process.pid)

    def wait_until_serving(self, path: str | None) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {' | '.join(self.log_tail(5))}")
            try:
                if path is None:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                elif httpx2.get(self.base_url + path, timeout=2).status_code == 200:
                    return
            except (OSError, httpx2.TransportError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {STARTUP_TIMEOUT}s; see {self.log_path}")

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def log_tail(self, count: int = 20) -> list[str]:
        with contextlib.suppress(OSError):
            self.log.flush()
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-count:]
        return []

    def log_problems(self, count: int = 20) -> list[str]:
        """The last warning/error lines of the server's log (the evidence when something was refused or failed)."""
        with contextlib.suppress(OSError):
            self.log.flush()
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            keys = ("warning", "error", "critical", "exception", "traceback", "refused", "limit")
            return [line[:400] for line in lines if any(k in line.lower() for k in keys)][-count:]
        return []

    def stop(self, timeout: float = 20.0) -> None:
        stop_process(self.process, timeout=timeout)
        self.log.close()


def spotik_server(
    name: str,
    workdir: Path,
    cpus: set[int] | None,
    secret: str,
    settings: dict[str, str],
    *,
    database_url: str | None = None,
) -> ServerProcess:
    """``spotik serve`` with production settings, its own storage and (unless ``database_url``) its own SQLite
    database under ``workdir``, and the benchmark's ``settings`` on top."""
    storage = workdir / name
    storage.mkdir(parents=True, exist_ok=True)
    env = {
        **clean_environment(),
        "SPOTIK_ENV": "production",
        "JWT_SECRET": secret,
        "STORAGE_PATH": str(storage),
        "DATABASE_URL": database_url or f"sqlite:///{storage / 'bench.sqlite3'}",
        "AUTO_MIGRATE": "true",
        "LOG_LEVEL": "warning",
        "PYTHONHASHSEED": "0",  # the same hashing in every process: one source of variance less
        **settings,
    }
    port = free_port()
    return ServerProcess(name, [sys.executable, "-m", "spotik", "serve", "--port", str(port)], env, workdir, cpus, port)


def ws_defaults() -> dict[str, float]:
    """Spotik's keepalive and frame-size defaults, so that the baselines run with the very same uvicorn options."""
    from spotik.settings import Settings

    fields = Settings.model_fields
    return {
        "ping_interval": float(fields["ws_ping_interval"].default),
        "ping_timeout": float(fields["ws_ping_timeout"].default),
        "max_size": int(fields["ws_max_message_bytes"].default),
    }


def baseline_server(
    name: str,
    kind: str,
    workdir: Path,
    cpus: set[int] | None,
    *,
    redis_url: str | None = None,
    channel: str | None = None,
) -> ServerProcess:
    port = free_port()
    defaults = ws_defaults()
    argv = [
        sys.executable,
        str(BASELINE_APP),
        "--kind",
        kind,
        "--port",
        str(port),
        "--ping-interval",
        str(defaults["ping_interval"]),
        "--ping-timeout",
        str(defaults["ping_timeout"]),
        "--max-size",
        str(int(defaults["max_size"])),
    ]
    if redis_url and channel:
        argv += ["--redis-url", redis_url, "--channel", channel]
    env = {**clean_environment(), "PYTHONHASHSEED": "0"}
    return ServerProcess(name, argv, env, workdir, cpus, port)


async def settled_rss(
    server: ServerProcess, *, interval: float = 0.5, window: int = 4, max_wait: float = 45.0, min_wait: float = 0.0
) -> dict[str, Any]:
    """RSS once it is stable over ``window`` samples (within 1 % or 512 KiB) and the server is idle (< 10 % of a
    CPU), at the earliest after ``min_wait``, bounded by ``max_wait``."""
    samples: list[int] = []
    busy: list[float] = []
    started = time.monotonic()
    cpu = server.cpu_seconds()
    while True:
        await asyncio.sleep(interval)
        now_cpu = server.cpu_seconds()
        busy.append((now_cpu - cpu) / interval)
        cpu = now_cpu
        samples.append(server.rss())
        recent, recent_busy = samples[-window:], busy[-window:]
        waited = time.monotonic() - started
        stable = (
            waited >= min_wait
            and len(recent) == window
            and max(recent) - min(recent) <= max(0.01 * max(recent), 512 * KIB)
            and max(recent_busy) < 0.10
        )
        if stable or waited >= max_wait:
            return {"rss": samples[-1], "settled": stable, "waited_s": round(waited, 1)}
