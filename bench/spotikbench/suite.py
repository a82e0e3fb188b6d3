"""``spotik bench`` (or ``python bench/run.py``): every benchmark of issue 16 in one bounded run, on loopback, against
real ``spotik serve`` processes on SQLite and on PostgreSQL (+ Redis), written to ``bench/report/REPORT.md`` with its
PNG figures and ``results.json`` beside it (``--out`` for another folder).

Sections (``--sections``, all by default): ``http`` (hot endpoints vs a hello-world ceiling, cached vs uncached),
``realtime`` (``bench/realtime.py``'s figures at bounded sizes), ``growth`` (queue query vs table size, with and
without indexes; broadcast cost and memory come from ``realtime``), ``mixed`` (listeners voting, uploading, an
administrator skipping), ``sync`` (playback position spread over a delaying link).

Sizes: ``--smoke`` (CI, about 1½ minutes), ``--quick`` (under 3 minutes), the default full run (about 25 minutes on
2 CPUs); any size option given explicitly wins over the preset. Targets are reported, not enforced: ``--strict``
exits 1 when one is missed. A section that fails is reported with its error, the others go on, and the run exits 2.
Servers, client processes, databases and Redis keys are removed at the end, on failure and on Ctrl-C as well."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shlex
import signal
import sys
import tempfile
import time
import traceback
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from spotikbench import growth, mixed, plots, suite_report, sync, throughput
from spotikbench.load import resolve_tool
from spotikbench.phases import Run, spotik_settings
from spotikbench.phases import execute as realtime_execute
from spotikbench.realtime import parse_args as realtime_args
from spotikbench.realtime_report import build_report
from spotikbench.report import ROOT, busy_cpu_seconds, machine, stamp
from spotikbench.servers import ServerProcess, spotik_server
from spotikbench.services import create_database, delete_redis_keys, drop_database, redis_available, redis_subscribers
from spotikbench.tools import raise_nofile, say, split_cpus

SECTIONS = ("http", "realtime", "growth", "mixed", "sync")
PRESETS: dict[str, dict[str, Any]] = {
    "full": {
        "http_concurrency": [1, 16, 64],
        "http_rounds": 3,
        "http_seconds": 2.0,
        "http_requests": 2000,
        "http_tracks": 100,
        "http_rooms": 20,
        "realtime": "--sizes 1000,3000 --subscribers 10,100,1000 --rounds 60 --users 100 --cycles 1 --bare-size 0",
        "growth_sizes": [10, 1000, 100_000],
        "growth_repeats": 5,
        "mixed_listeners": 200,
        "mixed_rooms": 10,
        "mixed_seconds": 60.0,
        "sync_clients": 50,
        "sync_trials": 20,
    },
    "quick": {
        "http_concurrency": [16],
        "http_rounds": 2,
        "http_seconds": 1.0,
        "http_requests": 300,
        "http_tracks": 20,
        "http_rooms": 10,
        "realtime": "--sizes 100,300 --subscribers 10,100 --rounds 10 --warmup-rounds 2 --users 20 --cycles 1 "
        "--bare-size 0 --closed-settle 3",
        "growth_sizes": [10, 1000, 10_000],
        "growth_repeats": 3,
        "mixed_listeners": 40,
        "mixed_rooms": 4,
        "mixed_seconds": 15.0,
        "sync_clients": 10,
        "sync_trials": 5,
    },
    "smoke": {
        "http_concurrency": [16],
        "http_rounds": 1,
        "http_seconds": 1.0,
        "http_requests": 100,
        "http_tracks": 5,
        "http_rooms": 3,
        "realtime": "--sizes 50 --subscribers 10 --rounds 4 --warmup-rounds 2 --users 10 --cycles 1 --bare-size 0 "
        "--closed-settle 1 --clients 1",
        "growth_sizes": [10, 100, 1000],
        "growth_repeats": 2,
        "mixed_listeners": 10,
        "mixed_rooms": 2,
        "mixed_seconds": 5.0,
        "sync_clients": 5,
        "sync_trials": 3,
    },
}


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="spotik bench", description=__doc__.split("\n\n")[0] if __doc__ else None)
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_const", dest="size", const="quick", help="under 3 minutes")
    size.add_argument("--smoke", action="store_const", dest="size", const="smoke", help="CI's size, about 1½ min")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "report", help="report folder (bench/report)")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}")
    parser.add_argument("--databases", default="sqlite,postgres", help="the HTTP section's databases")
    parser.add_argument("--http-concurrency", type=int_list, help="concurrent clients (1,16,64)")
    parser.add_argument("--http-rounds", type=int, help="rounds (repeated runs) of every HTTP figure")
    parser.add_argument("--http-seconds", type=float, help="seconds per run (wrk)")
    parser.add_argument("--http-requests", type=int, help="requests per run (the httpx loop, without wrk)")
    parser.add_argument("--http-tracks", type=int, help="tracks in the queue room")
    parser.add_argument("--http-rooms", type=int, help="rooms in the list")
    parser.add_argument("--realtime", help="bench/realtime.py's options for the real-time section")
    parser.add_argument("--growth-sizes", type=int_list, help="tracks in the table (10,1000,100000)")
    parser.add_argument("--growth-repeats", type=int, help="timed queries per point")
    parser.add_argument("--mixed-listeners", type=int)
    parser.add_argument("--mixed-rooms", type=int)
    parser.add_argument("--mixed-seconds", type=float)
    parser.add_argument("--sync-clients", type=int)
    parser.add_argument("--sync-trials", type=int)
    parser.add_argument("--sync-delay", type=float, default=50.0, help="one-way delay of the link (ms)")
    parser.add_argument("--sync-jitter", type=float, default=10.0, help="± uniform jitter of the link (ms)")
    parser.add_argument("--tool", choices=["auto", "wrk", "httpx"], default="auto", help="HTTP load generator")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers and load to CPUs")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    args = parser.parse_args(argv)
    args.size = args.size or "full"
    for key, value in PRESETS[args.size].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sections = [s for s in args.sections.split(",") if s]
    if unknown := set(args.sections) - set(SECTIONS):
        parser.error(f"unknown sections: {', '.join(sorted(unknown))}")
    args.databases = [d for d in args.databases.split(",") if d]
    resolve_tool(args)
    return args


class Suite:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.tag = secrets.token_hex(4)
        self.secret = secrets.token_urlsafe(48)  # one for all: instances sharing a database accept each other's tokens
        self.results: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.services_problem: str | None = None

    async def check_services(self) -> None:
        problem = await redis_available(self.args.redis_url)
        if problem is None:
            try:
                probe = f"spotik_bench_{self.tag}_probe"
                await create_database(probe, self.args)
                await drop_database(probe, self.args)
            except Exception as exc:
                problem = f"PostgreSQL: {type(exc).__name__}: {exc}"
        else:
            problem = f"Redis: {problem}"
        self.services_problem = problem
        if problem:
            say(f"PostgreSQL + Redis unavailable, their parts are skipped: {problem}")

    async def section(self, name: str, body: Callable[[], Awaitable[Any]]) -> None:
        started = time.monotonic()
        say(f"== {name}")
        try:
            self.results[name] = await body()
        except Exception as exc:
            self.errors[name] = f"{type(exc).__name__}: {exc}"
            self.results[name] = {"failed": self.errors[name], "traceback": traceback.format_exc()[-3000:]}
            say(f"FAILED {name}: {self.errors[name]}")
        self.results.setdefault("timings", {})[name] = round(time.monotonic() - started, 1)

    def server(self, name: str, settings: dict[str, str], url: str | None = None) -> ServerProcess:
        return spotik_server(name, self.workdir, self.args.server_cpus, self.secret, settings, database_url=url)

    @contextlib.asynccontextmanager
    async def postgres(self, suffix: str) -> Any:
        """A database of the run's (dropped at the end), as a SQLAlchemy URL."""
        name = f"spotik_bench_{self.tag}_{suffix}"
        await create_database(name, self.args)
        try:
            yield f"postgresql+asyncpg://{self.args.pg_user}@{self.args.pg_host}:{self.args.pg_port}/{name}"
        finally:
            await drop_database(name, self.args)

    async def http(self) -> dict[str, Any]:
        if self.services_problem:
            self.args.databases = [d for d in self.args.databases if d != "postgres"]
        return await throughput.run(self.args, self.workdir)

    async def realtime(self) -> dict[str, Any]:
        options = [*shlex.split(self.args.realtime), "--redis-url", self.args.redis_url, "--pg-host", self.args.pg_host]
        options += ["--pg-port", str(self.args.pg_port), "--pg-user", self.args.pg_user]
        if self.services_problem:
            options.append("--no-redis")
        if not self.args.pin:
            options.append("--no-pin")
        rt = realtime_args(options)
        run = Run(rt, self.workdir, self.args.server_cpus, self.args.load_cpus)
        started, busy = time.monotonic(), busy_cpu_seconds()
        await realtime_execute(run)
        return {**build_report(run, started, busy), "argv": options}

    async def growth(self) -> dict[str, Any]:
        databases = {"sqlite": f"sqlite:///{self.workdir / 'growth.sqlite3'}"}
        if self.services_problem:
            return await growth.run(databases, self.args.growth_sizes, self.args.growth_repeats, self.workdir)
        async with self.postgres("growth") as url:
            databases["postgres"] = url
            return await growth.run(databases, self.args.growth_sizes, self.args.growth_repeats, self.workdir)

    async def mixed(self) -> dict[str, Any]:
        args = self.args
        sizes = {"listeners": args.mixed_listeners, "rooms": args.mixed_rooms, "seconds": args.mixed_seconds}
        if self.services_problem:
            server = self.server("mixed", spotik_settings())
            try:
                server.wait_until_serving("/api/ping")
                return {"database": "sqlite", **await mixed.run([server], **sizes)}
            finally:
                server.stop()
        prefix = f"spotik-bench:{self.tag}:mixed"
        servers: list[ServerProcess] = []
        try:
            async with self.postgres("mixed") as url:
                for name in ("mixed-a", "mixed-b"):  # one after the other: the first applies the migrations
                    servers.append(self.server(name, spotik_settings(args.redis_url, prefix), url))
                    servers[-1].wait_until_serving("/api/ping")
                await redis_subscribers(args.redis_url, f"{prefix}:ws:broadcast", 2)
                result = await mixed.run(servers, **sizes)
                for server in servers:
                    server.stop()
                return {"database": "postgres + redis", **result}
        finally:
            for server in servers:
                server.stop()
            await delete_redis_keys(args.redis_url, prefix)

    async def sync(self) -> dict[str, Any]:
        server = self.server("sync", spotik_settings())
        try:
            server.wait_until_serving("/api/ping")
            return await sync.run(
                server,
                clients=self.args.sync_clients,
                trials=self.args.sync_trials,
                delay_ms=self.args.sync_delay,
                jitter_ms=self.args.sync_jitter,
            )
        finally:
            server.stop()

    async def execute(self) -> None:
        await self.check_services()
        for name in self.args.sections:
            await self.section(name, getattr(self, name))


def figures(results: dict[str, Any], out: Path) -> dict[str, list[str]]:
    """Every figure that has data, by section; a figure that fails to draw is left out, with a note on stderr."""
    drawn: dict[str, list[str]] = {}
    jobs: list[tuple[str, str, Callable[[], Any]]] = [
        ("http", "http", lambda: plots.http(results["http"], out)),
        ("growth", "growth", lambda: plots.growth_queue(results["growth"], out)),
        ("growth", "realtime", lambda: plots.growth_broadcast(results["realtime"], out)),
        ("growth", "realtime", lambda: plots.growth_memory(results["realtime"], out)),
        ("mixed", "mixed", lambda: plots.mixed(results["mixed"], out)),
        ("sync", "sync", lambda: plots.sync(results["sync"], out)),
    ]
    for section, source, draw in jobs:
        if source not in results or "failed" in results[source]:
            continue
        try:
            made = draw()
        except Exception as exc:
            print(f"figure of {source} not drawn: {type(exc).__name__}: {exc}", file=sys.stderr)
            continue
        names = made if isinstance(made, list) else [made] if made else []
        drawn.setdefault(section, []).extend(names)
    return drawn


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    args.server_cpus, args.load_cpus = split_cpus(args.pin)
    if args.load_cpus:  # this driver and its load on the others; the servers on the first CPU
        os.sched_setaffinity(0, args.load_cpus)
    say(
        f"spotik bench ({args.size}): sections {', '.join(args.sections)}; servers on CPUs {args.server_cpus or 'any'}"
        f", load on {args.load_cpus or 'any'}; report to {args.out}"
    )
    started = time.monotonic()
    busy = busy_cpu_seconds()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="spotik-bench-suite-") as workdir:
        suite = Suite(args, Path(workdir))

        async def guarded() -> None:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            await suite.execute()

        try:
            asyncio.run(guarded())
        except (KeyboardInterrupt, asyncio.CancelledError):
            interrupted = True
            print("interrupted: servers, databases and Redis keys cleaned up", file=sys.stderr)
    if interrupted:
        return 130
    args.out.mkdir(parents=True, exist_ok=True)
    for old in args.out.glob("*.png"):
        old.unlink()
    elapsed = time.monotonic() - started
    meta = {
        "at": stamp(),
        "size": args.size,
        "run_s": round(elapsed, 1),
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "other_cpu_s": round(max(0.0, busy_cpu_seconds() - busy), 1),
        "services_problem": suite.services_problem,
        "errors": suite.errors,
        "tool": args.tool,
    }
    drawn = figures(suite.results, args.out)
    targets = suite_report.targets(suite.results)
    markdown = suite_report.markdown(meta, suite.results, targets, drawn)
    (args.out / "REPORT.md").write_text(markdown, encoding="utf-8")
    public = {k: v for k, v in suite.results.items() if k != "realtime"}
    public["realtime"] = {k: v for k, v in (suite.results.get("realtime") or {}).items() if k != "results"} | {
        "results": strip_samples((suite.results.get("realtime") or {}).get("results"))
    }
    (args.out / "results.json").write_text(
        json.dumps({"meta": meta, "targets": targets, "results": public}, indent=1, default=str) + "\n",
        encoding="utf-8",
    )
    say(f"done in {elapsed:.0f} s: {args.out / 'REPORT.md'}, {sum(len(v) for v in drawn.values())} figures")
    for target in targets:
        say(f"target: {target['target']}: {target['measured']} → {target['verdict']}")
    if suite.errors:
        return 2
    if args.strict and any(t["met"] is False for t in targets):
        return 1
    return 0


def strip_samples(value: Any) -> Any:
    """The real-time results without their per-round samples (they stay in the bench's own reports)."""
    if isinstance(value, dict):
        return {k: strip_samples(v) for k, v in value.items() if k != "samples"}
    if isinstance(value, list):
        return [strip_samples(v) for v in value]
    return value
