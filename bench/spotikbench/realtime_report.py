"""The real-time bench's report: the targets and how each was met, the Markdown summary (every figure for Spotik
and the baseline with their ratio, then the details), and the JSON with every figure."""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path
from typing import Any

from spotikbench.latency import describe_gc
from spotikbench.memory import describe_heap
from spotikbench.phases import Run
from spotikbench.report import busy_cpu_seconds, machine, stamp, write
from spotikbench.tools import MIB, num

TARGETS = {
    "kib_per_connection": 20.0,
    "held_connections": 10_000,
    "p99_single_ms": 50.0,
    "p99_single_subscribers": 1000,
    "p99_redis_ms": 100.0,
    "p99_redis_subscribers": 1000,
    "rss_return": 0.10,
}


def _get(data: dict[str, Any], *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def memory_step(results: dict[str, Any], app: str, size: int) -> dict[str, Any] | None:
    steps = _get(results, app, "memory", "steps") or []
    return next((s for s in steps if s["connections"] == size), None)


def _ratio(a: float | None, b: float | None) -> str:
    return "—" if a is None or not b else f"{a / b:.2f}×"


def evaluate(args: argparse.Namespace, results: dict[str, Any]) -> list[dict[str, Any]]:
    """The targets, each with what was measured and whether it passed (None: not measured in this run)."""
    checks: list[dict[str, Any]] = []
    largest = max(args.sizes) if args.sizes else None
    step = memory_step(results, "spotik", largest) if largest else None
    kib = step["kib_per_connection"] if step else None
    checks.append(
        {
            "target": f"≤ {TARGETS['kib_per_connection']:g} KiB RSS per idle joined connection (at {largest or '—'})",
            "measured": "—" if kib is None else f"{kib:.2f} KiB",
            "passed": None if kib is None else kib <= TARGETS["kib_per_connection"],
        }
    )
    held = int(TARGETS["held_connections"])
    step = memory_step(results, "spotik", held)
    checks.append(
        {
            "target": f"{held:,} idle connections held in one process (all open and joined)",
            "measured": "not measured at this size"
            if step is None
            else f"{step['alive']:,} / {held:,} ({step['open']['failed']} failed)",
            "passed": None if step is None else step["alive"] == held and step["open"]["failed"] == 0,
        }
    )
    for key, label in (("latency", "one process"), ("latency_redis", "two instances via Redis")):
        limit_key = "p99_single" if key == "latency" else "p99_redis"
        subscribers = TARGETS[f"{limit_key}_subscribers"]
        limit = TARGETS[f"{limit_key}_ms"]
        outcome = _get(results, "spotik", key, str(subscribers))
        p99 = _get(outcome or {}, "latency_ms", "p99")
        incomplete = (outcome or {}).get("incomplete_rounds", 0)
        connected = (outcome or {}).get("subscribers", subscribers)
        shortfall = f" ({connected:,} of {subscribers:,} subscribers connected)" if connected != subscribers else ""
        checks.append(
            {
                "target": f"p99 < {limit:g} ms, {subscribers:,} subscribers, {label}",
                "measured": "not measured"
                if outcome is None
                else f"{num(p99, 2)} ms" + (f" ({incomplete} incomplete rounds)" if incomplete else "") + shortfall,
                "passed": None if outcome is None else p99 is not None and p99 < limit and not incomplete,
            }
        )
    memory = _get(results, "spotik", "memory")
    returned = memory.get("rss_return") if memory else None
    checks.append(
        {
            "target": f"RSS within {TARGETS['rss_return'] * 100:g} % of the start once the connections are gone"
            f" ({largest or '—'})",
            "measured": "—" if returned is None else f"{returned * 100:+.1f} %",
            "passed": None if returned is None else abs(returned) <= TARGETS["rss_return"],
        }
    )
    within = f"within {TARGETS['rss_return'] * 100:g} % of"
    informational = (  # beside the target: what is live, and RSS once warm
        (
            f"(not a target: what is live) Python's allocated blocks {within} the start once the connections are gone",
            (memory.get("heap_return") or {}).get("python_blocks") if memory else None,
        ),
        (
            f"(not a target: the same once warm) RSS after the last cycle {within} the RSS after the first one",
            memory.get("rss_return_warm") if memory else None,
        ),
    )
    for target, change in informational:
        if change is not None:
            checks.append(
                {
                    "target": target,
                    "measured": f"{change * 100:+.1f} %",
                    "passed": abs(change) <= TARGETS["rss_return"],
                    "informational": True,
                }
            )
    return checks


def markdown(args: argparse.Namespace, report: dict[str, Any]) -> str:
    results = report["results"]
    env = report["environment"]
    lines = [
        f"# Real-time (/ws) — {report['at']}",
        "",
        f"Python {env['python']}, {env['cpus']} CPUs; servers on CPUs {env['server_cpus'] or 'any'}, "
        f"{args.clients} client processes on CPUs {env['client_cpus'] or 'any'}; rooms of {args.room_size}, "
        f"{args.users} users; {args.rounds} measured rounds (+{args.warmup_rounds} warm-up) per latency figure; "
        f"run time {report['run_time_s']:.0f} s; CPU used by other processes meanwhile (PostgreSQL and Redis "
        f"included): {env['other_processes_cpu_s']:.0f} s, by the bench's own: {env['own_cpu_s']:.0f} s.",
        "",
        "| figure | Spotik | baseline (Starlette) | Spotik / baseline |",
        "|---|---:|---:|---:|",
    ]
    for size in args.sizes:
        spotik, baseline = memory_step(results, "spotik", size), memory_step(results, "baseline", size)
        a = spotik["kib_per_connection"] if spotik else None
        b = baseline["kib_per_connection"] if baseline else None
        lines.append(f"| RSS per idle joined connection, {size:,} (KiB) | {num(a, 2)} | {num(b, 2)} | {_ratio(a, b)} |")
    if args.sizes:
        largest = max(args.sizes)
        cells = []
        for app in ("spotik", "baseline"):
            step = memory_step(results, app, largest)
            cells.append("—" if step is None else f"{step['alive']:,} / {largest:,}")
        lines.append(f"| connections held (open and joined), {largest:,} | {cells[0]} | {cells[1]} | |")
        returns = [_get(results, app, "memory", "rss_return") for app in ("spotik", "baseline")]
        cells = ["—" if r is None else f"{r * 100:+.1f} %" for r in returns]
        lines.append(f"| RSS after all closed vs start | {cells[0]} | {cells[1]} | |")
    for key, label in (("latency", "one instance"), ("latency_redis", "two instances (Redis)")):
        for size in args.subscribers:
            a = _get(results, "spotik", key, str(size), "latency_ms") or {}
            b = _get(results, "baseline", key, str(size), "latency_ms") or {}
            lines.append(
                f"| broadcast to the last of {size:,} subscribers, {label}, p50 / p99 (ms) "
                f"| {num(a.get('p50'), 2)} / {num(a.get('p99'), 2)} "
                f"| {num(b.get('p50'), 2)} / {num(b.get('p99'), 2)} "
                f"| {_ratio(a.get('p50'), b.get('p50'))} / {_ratio(a.get('p99'), b.get('p99'))} |"
            )
    bare = memory_step(results, "websockets", args.bare_size) if args.bare_size else None
    if bare is not None:
        spotik = memory_step(results, "spotik", args.bare_size)
        a = spotik["kib_per_connection"] if spotik else None
        lines.append(
            f"| bare `websockets` echo server, RSS per idle connection, {args.bare_size:,} (KiB) | "
            f"{num(a, 2)} (Spotik) | {num(bare['kib_per_connection'], 2)} | {_ratio(a, bare['kib_per_connection'])} |"
        )
    lines += [
        "",
        "Latency = when the round's frame reached the last subscriber's socket (the kernel's receive timestamp) − t0, "
        "taken right before the request; *handled* (details) = when the client process had read and parsed it; "
        "*first subscriber* "
        "= the earliest arrival, about the server's time to handle the request before fanning out.",
    ]
    lines += ["", "| target | measured | result |", "|---|---:|:---:|"]
    for check in report["targets"]:
        verdict = {True: "PASS", False: "**FAIL**", None: "n/a"}[check["passed"]]
        lines.append(f"| {check['target']} | {check['measured']} | {verdict} |")
    lines += ["", "## Details", ""]
    for app in ("spotik", "baseline", "websockets"):
        memory = _get(results, app, "memory")
        if not memory:
            continue
        lines.append(
            f"**{app}**, memory: RSS₀ {memory['rss0'] / MIB:.1f} MiB{describe_heap(memory.get('heap0'))}; after all "
            f"closed {memory['rss_after_close'] / MIB:.1f} MiB (closing took {memory['close_elapsed_s']:.1f} s)"
            + describe_heap(memory.get("heap_after_close"), memory.get("heap_return"))
            + "".join(
                f"; cycle {c['cycle']}: {c['rss_open'] / MIB:.1f} MiB open, {c['rss_closed'] / MIB:.1f} MiB closed"
                for c in memory.get("cycles", [])[1:]
            )
            + "."
        )
        lines += [
            "",
            "| connections | open | failed | open time (s) | connect p50 / join p50 / join p99 (ms) "
            "| server CPU (ms/conn) | presence frames | server fds | RSS (MiB) | KiB/conn | settled |",
            "|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|:---:|",
        ]
        for step in memory["steps"]:
            opening = step["open"]
            lines.append(
                f"| {step['connections']:,} | {step['alive']:,} | {opening['failed']} | {opening['elapsed_s']:.1f} "
                f"| {num(opening['connect_ms'].get('p50'))} / {num(opening['join_ms'].get('p50'))} "
                f"/ {num(opening['join_ms'].get('p99'))} "
                f"| {step['server_cpu_ms_per_connection']:.2f} | {opening['presence_frames']:,} "
                f"| {step.get('server_fds', 0):,} "
                f"| {step['rss'] / MIB:.1f} | {num(step['kib_per_connection'], 2)} "
                f"| {'yes' if step['settle']['settled'] else 'no'} ({step['settle']['waited_s']} s) |"
            )
            if opening["failures"]:
                lines.append(f"| | failures: {json.dumps(opening['failures'])} | | | | | | | | | |")
        lines.append("")
    for app in ("spotik", "baseline"):
        for key, label in (("latency", "one instance"), ("latency_redis", "two instances")):
            block = _get(results, app, key)
            if not block:
                continue
            lines += [
                f"**{app}**, latency, {label}:",
                "",
                "| subscribers | rounds | incomplete | p50 | p90 | p99 | max | first subscriber p50 | "
                "handled p50 / p99 | request p50 | client CPU / round p50 | frame (B) |",
                "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
            ]
            for outcome in block.values():
                lat = outcome["latency_ms"]
                lines.append(
                    f"| {outcome['subscribers']:,} ({'+'.join(str(n) for n in outcome['per_process'])}) "
                    f"| {outcome['rounds']} | {outcome['incomplete_rounds']} | {num(lat.get('p50'), 2)} "
                    f"| {num(lat.get('p90'), 2)} | {num(lat.get('p99'), 2)} | {num(lat.get('max'), 2)} "
                    f"| {num(outcome['first_subscriber_ms'].get('p50'), 2)} "
                    f"| {num(outcome['handled_ms'].get('p50'), 2)} / {num(outcome['handled_ms'].get('p99'), 2)} "
                    f"| {num(outcome['response_ms'].get('p50'), 2)} "
                    f"| {num(outcome['client_cpu_ms'].get('p50'), 2)} | {outcome['frame_bytes']} |"
                )
            for outcome in block.values():
                if "server_gc" in outcome:
                    lines.append(
                        f"| {outcome['subscribers']:,}, server collections during the rounds | "
                        + describe_gc(outcome["server_gc"])
                        + " | | | | | | | | | | |"
                    )
            for outcome in block.values():
                if len(outcome["by_kind"]) > 1:
                    lines.append(
                        f"| {outcome['subscribers']:,}, by round | "
                        + "; ".join(
                            f"{kind}: p50 {num(v['latency_ms'].get('p50'), 2)}, p99 "
                            f"{num(v['latency_ms'].get('p99'), 2)}, first subscriber p50 "
                            f"{num(v['first_subscriber_ms'].get('p50'), 2)}"
                            for kind, v in outcome["by_kind"].items()
                        )
                        + " | | | | | | | | | | |"
                    )
            lines.append("")
    probe = _get(results, "spotik", "probe")
    if probe:
        lines += [
            "**spotik**, one request at a time on the idle server (after the memory phase):",
            "",
            "| request | p50 (ms) | p90 (ms) | max (ms) |",
            "|---|---:|---:|---:|",
        ]
        lines += [f"| {name} | {d['p50']:.2f} | {d['p90']:.2f} | {d['max']:.2f} |" for name, d in probe.items()]
        lines.append("")
    setup = _get(results, "spotik", "setup")
    if setup:
        lines.append(
            f"Spotik setup: {setup['users']} users, {setup['rooms']} rooms, {setup['rest_joins']:,} REST joins, "
            f"{setup['s']} s."
        )
    if results.get("two_instances_skipped"):
        lines.append(f"Two-instance runs skipped: {results['two_instances_skipped']}.")
    lines.append("Phase times: " + ", ".join(f"{k} {v:.0f} s" for k, v in report["timings"].items()) + ".")
    if report["errors"]:
        lines += ["", "## Failures", ""]
        for section, failure in (results.get("failures") or {}).items():
            lines += [f"- **{section}**: {failure['error']}"]
            for name, problems in failure["server_logs"].items():
                for line in problems[-10:]:
                    lines.append(f"  - `{name}`: `{line}`")
    for app in ("spotik", "baseline"):
        problems = _get(results, app, "server_log_problems")
        if problems:
            lines += ["", f"Last warning/error lines of the {app} server:", ""]
            lines += [f"- `{line}`" for line in problems[-10:]]
    return "\n".join(lines) + "\n"


def write_report(run: Run, started: float, busy_at_start: float) -> tuple[Path, Path, dict[str, Any]]:
    report = build_report(run, started, busy_at_start)
    json_path, md_path = write("realtime", report["at"], report, markdown(run.args, report))
    return json_path, md_path, report


def build_report(run: Run, started: float, busy_at_start: float) -> dict[str, Any]:
    args = run.args
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = run.own_cpu_s + usage.ru_utime + usage.ru_stime
    foreign = max(0.0, busy_cpu_seconds() - busy_at_start - own)
    at = stamp()
    options = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    report: dict[str, Any] = {
        "benchmark": "realtime",
        "at": at,
        "run_time_s": round(time.monotonic() - started, 1),
        "environment": {
            **machine(),
            "server_cpus": sorted(run.server_cpus) if run.server_cpus else None,
            "client_cpus": sorted(run.client_cpus) if run.client_cpus else None,
            "load_average_at_end": os.getloadavg(),
            "own_cpu_s": round(own, 1),
            "other_processes_cpu_s": round(foreign, 1),
            "nofile": resource.getrlimit(resource.RLIMIT_NOFILE),
        },
        "options": options,
        "timings": run.timings,
        "errors": run.errors,
        "results": run.results,
    }
    report["targets"] = evaluate(args, run.results)
    return report
