"""Small tools every benchmark shares: loopback ports, CPU pinning, a server environment without the caller's
database/Redis/secret settings, stopping a server process, the open-file limit, progress lines, distributions."""

from __future__ import annotations

import math
import os
import resource
import socket
import statistics
import subprocess
import time
from collections.abc import Callable

KIB = 1024
MIB = 1024 * 1024


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def pin_to(cpus: set[int] | None) -> Callable[[], None] | None:
    """A ``preexec_fn`` keeping the child (and every thread it starts) on ``cpus``."""
    if not cpus or not hasattr(os, "sched_setaffinity"):
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def split_cpus(pin: bool) -> tuple[set[int] | None, set[int] | None]:
    """(the first CPU, the others) of this process's CPUs, or (None, None) when not pinning or with fewer than two."""
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if pin and len(cpus) >= 2:
        return {cpus[0]}, set(cpus[1:])
    return None, None


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


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress on stdout, stamped with the time since the start."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p90": round(percentile(values, 90), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


def num(value: float | None, digits: int = 1) -> str:
    """A figure for a report or a progress line; ``—`` when it was not measured."""
    return "—" if value is None else f"{value:,.{digits}f}"
