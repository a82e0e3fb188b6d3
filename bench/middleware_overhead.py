"""What the monitoring middleware stack costs: servers side by side, one run, interleaved rounds.

Pairs of ``spotik serve`` processes run on loopback from the same code and settings, except that in each pair one
has the stack (request timing + DB timing, security headers, rate limiting, memory sampler, gzip) switched on and
the other has it switched off. Each round drives every server, alternating which of a pair goes first, with the
same bounded load on ``GET /api/ping`` (a small JSON endpoint): ``wrk`` when it is installed, else an asyncio
httpx2 loop with a fixed request count. Several pairs, because two processes of the very same code differ by a
few per cent (memory layout). The report gives every measurement, the medians and their ratio; the budget is an
overhead of at most 15 % (``--budget``).

    .venv/bin/python bench/middleware_overhead.py            # report only
    .venv/bin/python bench/middleware_overhead.py --strict   # exit 1 when over budget

Reports go to bench/reports/ (git-ignored) as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from spotikbench.tools import clean_environment, free_port, pin_to, stop_process

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "bench" / "reports"
ENDPOINT = "/api/ping"
STARTUP_TIMEOUT = 60.0

# The stack under test, switched on or off through the settings' environment variables. With it on, the limits
# are set so high that the limiter runs on every request but never refuses one (a 429 would fake throughput).
STACK_ON = {
    "ENABLE_PERFORMANCE_MONITORING": "true",
    "SECURITY_HEADERS_ENABLED": "true",
    "RATE_LIMITING_ENABLED": "true",
    "MAX_REQUESTS_PER_HOUR": "1000000000",
    "RATE_LIMIT_BURST": "1000000000/second",
    "GZIP_ENABLED": "true",
}
STACK_OFF = {
    "ENABLE_PERFORMANCE_MONITORING": "false",
    "SECURITY_HEADERS_ENABLED": "false",
    "RATE_LIMITING_ENABLED": "false",
    "GZIP_ENABLED": "false",
}


@dataclass
class Measurement:
    round: int
    variant: str
    requests_per_second: float
    requests: int
    errors: int
    latency_ms: dict[str, float] = field(default_factory=dict)
    pair: int = 0


class Server:
    def __init__(self, name: str, stack: dict[str, str], workdir: Path, cpus: set[int] | None) -> None:
        self.name = name
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        storage = workdir / name
        storage.mkdir(parents=True)
        inherited = clean_environment()
        env = {
            **inherited,
            "SPOTIK_ENV": "production",
            "JWT_SECRET": secrets.token_urlsafe(48),
            "STORAGE_PATH": str(storage),
            "DATABASE_URL": f"sqlite:///{storage / 'bench.sqlite3'}",
            "AUTO_MIGRATE": "true",
            "LOG_LEVEL": "warning",
            "PYTHONHASHSEED": "0",  # the same hashing in every process: one source of variance less
            **stack,
        }
        self.log = (storage / "server.log").open("w")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "spotik", "serve", "--port", str(self.port)],
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin_to(cpus),  # before exec: the child has no threads yet
        )

    def wait_until_serving(self) -> httpx2.Response:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} server exited with {self.process.returncode}; see {self.log.name}")
            try:
                response = httpx2.get(self.base_url + ENDPOINT, timeout=2)
                if response.status_code == 200:
                    return response
            except httpx2.TransportError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} server did not answer within {STARTUP_TIMEOUT}s; see {self.log.name}")

    def stop(self) -> None:
        stop_process(self.process, timeout=15)
        self.log.close()


Pair = dict[str, Server]


@contextmanager
def servers(workdir: Path, cpus: set[int] | None, pairs: int) -> Iterator[list[Pair]]:
    """``pairs`` pairs of servers (stack off, stack on). Two processes of the very same code differ by a few per
    cent in throughput (memory layout), so the rounds spread over several processes of each variant."""
    with ExitStack() as stack:
        running: list[Pair] = []
        for index in range(pairs):
            pair: Pair = {}
            for name, settings in (("stack_off", STACK_OFF), ("stack_on", STACK_ON)):
                server = Server(f"{name}-{index}", settings, workdir, cpus)
                stack.callback(server.stop)
                pair[name] = server
            running.append(pair)
        for pair in running:
            for server in pair.values():
                server.wait_until_serving()
        yield running


def check_variants(pair: Pair) -> None:
    """The two servers really differ by the stack (and nothing refuses the load)."""
    on = httpx2.get(pair["stack_on"].base_url + ENDPOINT)
    off = httpx2.get(pair["stack_off"].base_url + ENDPOINT)
    if not ("x-response-time" in on.headers and "x-frame-options" in on.headers):
        raise RuntimeError(f"the stack_on server lacks the stack's headers: {dict(on.headers)}")
    if "x-response-time" in off.headers or "x-frame-options" in off.headers:
        raise RuntimeError(f"the stack_off server still runs the stack: {dict(off.headers)}")


# -- load generators ----------------------------------------------------------------------------------------------

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


# -- the run -------------------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, pairs: list[Pair], load_cpus: set[int] | None) -> list[Measurement]:
    def drive(server: Server, duration: int, requests: int) -> Measurement:
        url = server.base_url + ENDPOINT
        if args.tool == "wrk":
            return run_wrk(url, duration=duration, connections=args.connections, threads=args.threads, cpus=load_cpus)
        return run_httpx(url, requests=requests, concurrency=args.connections)

    for pair in pairs:  # warm-up: imports, first connections, caches
        for server in pair.values():
            drive(server, args.warmup, max(args.requests // 5, 200))
    results: list[Measurement] = []
    order = ["stack_off", "stack_on"]
    for round_number in range(1, args.rounds + 1):
        for pair_number, pair in enumerate(pairs):
            # Alternate which variant goes first, so that slow drifts in the machine's load cancel out.
            first_off = (round_number + pair_number) % 2
            for name in order if first_off else reversed(order):
                measurement = drive(pair[name], args.duration, args.requests)
                measurement.round, measurement.pair, measurement.variant = round_number, pair_number, name
                results.append(measurement)
                print(
                    f"round {round_number} pair {pair_number} {name:9s} {measurement.requests_per_second:9.1f} req/s"
                    f"  p50 {measurement.latency_ms.get('p50', 0):.2f} ms"
                    f"  p99 {measurement.latency_ms.get('p99', 0):.2f} ms"
                    + (f"  ERRORS {measurement.errors}" if measurement.errors else ""),
                    flush=True,
                )
    return results


def summarise(results: list[Measurement], budget: float) -> dict[str, Any]:
    by_variant: dict[str, list[float]] = {"stack_off": [], "stack_on": []}
    by_slot: dict[tuple[int, int], dict[str, float]] = {}
    for m in results:
        by_variant[m.variant].append(m.requests_per_second)
        by_slot.setdefault((m.round, m.pair), {})[m.variant] = m.requests_per_second
    off = statistics.median(by_variant["stack_off"])
    on = statistics.median(by_variant["stack_on"])
    paired = [slot["stack_on"] / slot["stack_off"] for _, slot in sorted(by_slot.items())]
    ratio = on / off
    return {
        "median_rps_stack_off": round(off, 1),
        "median_rps_stack_on": round(on, 1),
        "ratio_on_over_off": round(ratio, 4),
        "overhead": round(1 - ratio, 4),
        "paired_ratios": [round(r, 4) for r in paired],
        "median_paired_ratio": round(statistics.median(paired), 4),
        "budget": budget,
        "within_budget": 1 - ratio <= budget,
        "errors": sum(m.errors for m in results),
    }


def write_report(args: argparse.Namespace, results: list[Measurement], summary: dict[str, Any]) -> tuple[Path, Path]:
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    environment = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "tool": args.tool,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.splitlines()[0]  # noqa: S607
        if args.tool == "wrk"
        else None,
        "endpoint": ENDPOINT,
        "rounds": args.rounds,
        "pairs": args.pairs,
        "duration_s": args.duration if args.tool == "wrk" else None,
        "requests_per_round": args.requests if args.tool == "httpx" else None,
        "connections": args.connections,
        "pinning": args.pin,
        "stack_on": STACK_ON,
        "stack_off": STACK_OFF,
    }
    report = {
        "benchmark": "middleware_overhead",
        "at": stamp,
        "environment": environment,
        "summary": summary,
        "rounds": [asdict(m) for m in results],
    }
    json_path = REPORTS / f"middleware_overhead-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    lines = [
        f"# Middleware overhead — {stamp}",
        "",
        f"`GET {ENDPOINT}` on {args.pairs} pairs of `spotik serve` processes (SQLite, production settings, "
        f"1 worker each), {args.rounds} interleaved rounds, {args.tool}"
        + (f" -c{args.connections} -d{args.duration}s" if args.tool == "wrk" else f", {args.requests} requests")
        + f"; Python {environment['python']}, {environment['cpus']} CPUs.",
        "",
        "| round | pair | stack off (req/s) | stack on (req/s) | on / off |",
        "|---:|---:|---:|---:|---:|",
    ]
    slots = sorted({(m.round, m.pair) for m in results})
    for (round_number, pair_number), ratio in zip(slots, summary["paired_ratios"], strict=True):
        off = next(m for m in results if (m.round, m.pair, m.variant) == (round_number, pair_number, "stack_off"))
        on = next(m for m in results if (m.round, m.pair, m.variant) == (round_number, pair_number, "stack_on"))
        lines.append(
            f"| {round_number} | {pair_number} | {off.requests_per_second:.1f} | {on.requests_per_second:.1f} "
            f"| {ratio:.3f} |"
        )
    verdict = "within" if summary["within_budget"] else "OVER"
    lines += [
        f"| **median** | | **{summary['median_rps_stack_off']}** | **{summary['median_rps_stack_on']}** | "
        f"**{summary['ratio_on_over_off']:.3f}** |",
        "",
        f"Overhead of the stack: **{summary['overhead'] * 100:.1f} %** of throughput "
        f"({verdict} the {summary['budget'] * 100:.0f} % budget); median of the paired ratios "
        f"{summary['median_paired_ratio']:.3f}; failed requests: {summary['errors']}.",
        "",
    ]
    md_path = REPORTS / f"middleware_overhead-{stamp}.md"
    md_path.write_text("\n".join(lines), encoding="utf-8")
    return json_path, md_path


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--pairs", type=int, default=3, help="server pairs (stack off, stack on); default 3")
    parser.add_argument("--duration", type=int, default=3, help="seconds of load per server per round (wrk)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (wrk)")
    parser.add_argument("--requests", type=int, default=5000, help="requests per server per round (httpx loop)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections")
    parser.add_argument("--threads", type=int, default=1, help="wrk threads")
    parser.add_argument("--tool", choices=["auto", "wrk", "httpx"], default="auto", help="load generator")
    parser.add_argument("--budget", type=float, default=0.15, help="allowed throughput loss (default 0.15)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers and load to CPUs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the overhead is over budget")
    args = parser.parse_args(argv)
    if args.tool == "auto":
        args.tool = "wrk" if shutil.which("wrk") else "httpx"
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpus = load_cpus = None
    if args.pin and len(cpus) >= 2:
        # Servers share the first CPU (only one is loaded at a time); the load generator gets the others.
        server_cpus, load_cpus = {cpus[0]}, set(cpus[1:])
    print(
        f"middleware overhead: {args.pairs} server pairs, {args.rounds} rounds, tool {args.tool}, "
        f"servers on CPUs {server_cpus or 'any'}"
    )
    with (
        tempfile.TemporaryDirectory(prefix="spotik-bench-") as workdir,
        servers(Path(workdir), server_cpus, args.pairs) as pairs,
    ):
        for pair in pairs:
            check_variants(pair)
        results = measure(args, pairs, load_cpus)
    summary = summarise(results, args.budget)
    json_path, md_path = write_report(args, results, summary)
    print(md_path.read_text(encoding="utf-8"))
    print(f"reports: {json_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}")
    if summary["errors"]:
        print("some requests failed: the figures are not comparable", file=sys.stderr)
        return 2
    if args.strict and not summary["within_budget"]:
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
