"""What the benchmark scripts share: loopback ports, CPU pinning, a server environment without the caller's
database/Redis/secret settings, stopping a server process. Imported by path (``python bench/<script>.py`` puts
bench/ on ``sys.path``)."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Callable


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pin_to(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` keeping the child (and every thread it starts) on ``cpus``."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def clean_environment() -> dict[str, str]:
    """This process's environment minus every setting a benchmark server must get from the benchmark only."""
    prefixes = ("DB_", "DATABASE_", "REDIS_", "JWT_", "SPOTIK_", "WS_", "RATE_LIMIT")
    return {k: v for k, v in os.environ.items() if not k.startswith(prefixes)}


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM (the server's graceful shutdown), then SIGKILL if it has not exited within ``timeout`` seconds."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
