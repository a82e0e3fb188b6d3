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
import secrets
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx2

from spotikbench.load import Measurement, add_load_options, resolve_tool, run_httpx, run_wrk
from spotikbench.report import machine, show, stamp, write
from spotikbench.servers import ServerProcess, spotik_server
from spotikbench.tools import split_cpus

ENDPOINT = "/api/ping"

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


Pair = dict[str, ServerProcess]


@contextmanager
def servers(workdir: Path, cpus: set[int] | None, pairs: int) -> Iterator[list[Pair]]:
    """``pairs`` pairs of servers (stack off, stack on). Two processes of the very same code differ by a few per
    cent in throughput (memory layout), so the rounds spread over several processes of each variant."""
    with ExitStack() as stack:
        running: list[Pair] = []
        for index in range(pairs):
            pair: Pair = {}
            for name, settings in (("stack_off", STACK_OFF), ("stack_on", STACK_ON)):
                server = spotik_server(f"{name}-{index}", workdir, cpus, secrets.token_urlsafe(48), settings)
                stack.callback(server.stop, 15)
                pair[name] = server
            running.append(pair)
        for pair in running:
            for server in pair.values():
                server.wait_until_serving(ENDPOINT)
        yield running


def check_variants(pair: Pair) -> None:
    """The two servers really differ by the stack (and nothing refuses the load)."""
    on = httpx2.get(pair["stack_on"].base_url + ENDPOINT)
    off = httpx2.get(pair["stack_off"].base_url + ENDPOINT)
    if not ("x-response-time" in on.headers and "x-frame-options" in on.headers):
        raise RuntimeError(f"the stack_on server lacks the stack's headers: {dict(on.headers)}")
    if "x-response-time" in off.headers or "x-frame-options" in off.headers:
        raise RuntimeError(f"the stack_off server still runs the stack: {dict(off.headers)}")


# -- the run -------------------------------------------------------------------------------------------------------


def measure(args: argparse.Namespace, pairs: list[Pair], load_cpus: set[int] | None) -> list[Measurement]:
    def drive(server: ServerProcess, duration: int, requests: int) -> Measurement:
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
    at = stamp()
    environment = {
        **machine(),
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
        "at": at,
        "environment": environment,
        "summary": summary,
        "rounds": [asdict(m) for m in results],
    }
    return write("middleware_overhead", at, report, markdown(args, report, results))


def markdown(args: argparse.Namespace, report: dict[str, Any], results: list[Measurement]) -> str:
    environment, summary = report["environment"], report["summary"]
    lines = [
        f"# Middleware overhead — {report['at']}",
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
    return "\n".join(lines)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=4, help="interleaved rounds (default 4)")
    parser.add_argument("--pairs", type=int, default=3, help="server pairs (stack off, stack on); default 3")
    parser.add_argument("--duration", type=int, default=3, help="seconds of load per server per round (wrk)")
    parser.add_argument("--warmup", type=int, default=2, help="seconds of warm-up per server (wrk)")
    add_load_options(parser, requests=5000, connections=32)
    parser.add_argument("--budget", type=float, default=0.15, help="allowed throughput loss (default 0.15)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the overhead is over budget")
    args = parser.parse_args(argv)
    resolve_tool(args)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    # Servers share the first CPU (only one is loaded at a time); the load generator gets the others.
    server_cpus, load_cpus = split_cpus(args.pin)
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
    show(json_path, md_path)
    if summary["errors"]:
        print("some requests failed: the figures are not comparable", file=sys.stderr)
        return 2
    if args.strict and not summary["within_budget"]:
        return 1
    return 0
