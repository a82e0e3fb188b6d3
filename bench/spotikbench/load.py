"""Load generators for throughput benchmarks on loopback: ``wrk`` (when installed) for a fixed duration, or an
asyncio httpx2 loop with a fixed request count. Each run gives one ``Measurement``."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field

import httpx2

from spotikbench.tools import pin_to


@dataclass
class Measurement:
    round: int
    variant: str
    requests_per_second: float
    requests: int
    errors: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    pair: int = 0


WRK_RPS = re.compile(r"Requests/sec:\s+([\d.]+)")
WRK_TOTAL = re.compile(r"(\d+) requests in")
WRK_NON_2XX = re.compile(r"Non-2xx or 3xx responses:\s+(\d+)")
WRK_SOCKET_ERRORS = re.compile(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
WRK_PERCENTILE = re.compile(r"^\s+(50|75|90|99)%\s+([\d.]+)(us|ms|s)\s*$", re.MULTILINE)
UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def run_wrk(url: str, *, duration: float, connections: int, threads: int, cpus: set[int] | None) -> Measurement:
    wrk = shutil.which("wrk")
    assert wrk is not None
    completed = subprocess.run(  # noqa: S603 - fixed arguments, loopback URL
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-H",
            "Accept-Encoding: gzip",
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
        preexec_fn=pin_to(cpus),  # before exec: the child has no threads yet
    )
    out = completed.stdout
    rps = WRK_RPS.search(out)
    total = WRK_TOTAL.search(out)
    if rps is None or total is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}\n{completed.stderr}")
    errors = int(m.group(1)) if (m := WRK_NON_2XX.search(out)) else 0
    if m := WRK_SOCKET_ERRORS.search(out):
        errors += sum(int(g) for g in m.groups())
    latency = {f"p{p}": round(float(v) * UNIT_MS[u], 3) for p, v, u in WRK_PERCENTILE.findall(out)}
    return Measurement(0, "", float(rps.group(1)), int(total.group(1)), errors, latency)


async def _httpx_load(url: str, requests: int, concurrency: int) -> Measurement:
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def worker(client: httpx2.AsyncClient) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            started = time.perf_counter()
            response = await client.get(url, headers={"Accept-Encoding": "gzip"})
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors += 1

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=30) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 3)

    latency = {f"p{p}": percentile(p) for p in (50, 75, 90, 99)}
    return Measurement(0, "", requests / elapsed, requests, errors, latency)


def run_httpx(url: str, *, requests: int, concurrency: int) -> Measurement:
    return asyncio.run(_httpx_load(url, requests, concurrency))
