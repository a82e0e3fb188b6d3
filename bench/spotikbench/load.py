"""Load generators for throughput benchmarks on loopback: ``wrk`` (when installed) for a fixed duration, or an
asyncio httpx2 loop with a fixed request count. Each run gives one ``Measurement``. Also the command-line options
every throughput bench shares."""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import Sequence
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


def run_wrk(
    url: str,
    *,
    duration: float,
    connections: int,
    threads: int,
    cpus: set[int] | None,
    headers: Sequence[str] = (),
    script: str | None = None,
) -> Measurement:
    """``wrk`` on ``url`` for ``duration`` seconds; ``headers`` as ``"Name: value"``, ``script`` a Lua file (e.g. to
    send another method)."""
    wrk = shutil.which("wrk")
    assert wrk is not None
    extra = [arg for header in headers for arg in ("-H", header)] + (["-s", script] if script else [])
    completed = subprocess.run(  # noqa: S603 - fixed arguments, loopback URL
        [
            wrk,
            f"-t{threads}",
            f"-c{connections}",
            f"-d{max(1, round(duration))}s",
            "--latency",
            "-H",
            "Accept-Encoding: gzip",
            *extra,
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


async def _httpx_load(
    url: str, requests: int, concurrency: int, headers: dict[str, str], methods: Sequence[str]
) -> Measurement:
    latencies: list[float] = []
    errors = 0
    remaining = requests

    async def worker(client: httpx2.AsyncClient) -> None:
        nonlocal remaining, errors
        while remaining > 0:
            remaining -= 1
            method = methods[remaining % len(methods)]
            started = time.perf_counter()
            response = await client.request(method, url, headers={"Accept-Encoding": "gzip", **headers})
            latencies.append((time.perf_counter() - started) * 1000)
            if response.status_code != 200:
                errors += 1

    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(limits=limits, timeout=30, trust_env=False) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    latencies.sort()

    def percentile(p: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))], 3)

    latency = {f"p{p}": percentile(p) for p in (50, 75, 90, 99)}
    return Measurement(0, "", requests / elapsed, requests, errors, latency)


def run_httpx(
    url: str,
    *,
    requests: int,
    concurrency: int,
    headers: dict[str, str] | None = None,
    methods: Sequence[str] = ("GET",),
) -> Measurement:
    """``requests`` requests, ``concurrency`` at a time, cycling through ``methods``."""
    return asyncio.run(_httpx_load(url, requests, concurrency, headers or {}, methods))


def add_load_options(parser: argparse.ArgumentParser, *, requests: int, connections: int) -> None:
    """The options every throughput bench shares: the load generator, its connections and threads, the httpx
    loop's request count, CPU pinning; ``resolve_tool`` turns ``--tool auto`` into a tool after parsing."""
    parser.add_argument("--requests", type=int, default=requests, help=f"requests per run (httpx loop; {requests})")
    parser.add_argument("--connections", type=int, default=connections, help=f"concurrent connections ({connections})")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--tool", choices=["auto", "wrk", "httpx"], default="auto", help="load generator")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers and load to CPUs")


def resolve_tool(args: argparse.Namespace) -> None:
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "httpx"
