"""The real-time bench's run: its state (``Run``), one phase per app and set-up (Spotik on one instance with
SQLite, two instances through PostgreSQL and Redis, the baseline likewise, the bare ``websockets`` server), each
starting and stopping its own servers, and ``execute``, which runs the phases that apply in order; a phase that
fails is recorded with the servers' last warning/error lines and the run goes on."""

from __future__ import annotations

import argparse
import contextlib
import math
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from spotikbench.apps import (
    GcPauses,
    MakeTrigger,
    Target,
    baseline_target,
    baseline_trigger,
    spotik_gc_pauses,
    spotik_target,
    spotik_vote_trigger,
)
from spotikbench.clients import SourceAddresses, Workers
from spotikbench.fixtures import spotik_setup
from spotikbench.latency import latency_phase, probe_spotik
from spotikbench.memory import memory_phase
from spotikbench.servers import ServerProcess, baseline_server, spotik_server
from spotikbench.services import (
    create_database,
    delete_redis_keys,
    drop_database,
    redis_available,
    redis_subscribers,
)
from spotikbench.tools import say


def spotik_settings(redis_url: str | None = None, prefix: str | None = None) -> dict[str, str]:
    """Spotik's settings in this bench, over production's: rate limiting off, room for 12,000 sockets (2,000 per
    room), cheap password hashing for the users of the set-up; with Redis, the run's own key prefixes."""
    settings = {
        "RATE_LIMITING_ENABLED": "false",
        "WS_MAX_CONNECTIONS": "12000",
        "WS_MAX_CONNECTIONS_PER_ROOM": "2000",
        "BCRYPT_COST": "4",
    }
    if redis_url:
        settings["REDIS_URL"] = redis_url
        settings["WS_REDIS_PREFIX"] = f"{prefix}:ws"
        settings["RATE_LIMIT_KEY_PREFIX"] = f"{prefix}:ratelimit"
    return settings


@dataclass
class Run:
    args: argparse.Namespace
    workdir: Path
    server_cpus: set[int] | None
    client_cpus: set[int] | None
    tag: str = field(default_factory=lambda: secrets.token_hex(4))
    addresses: SourceAddresses = field(default_factory=SourceAddresses)
    results: dict[str, Any] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    servers: list[ServerProcess] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    baseline_serial: list[int] = field(default_factory=lambda: [1])
    own_cpu_s: float = 0.0  # CPU seconds of the servers and client processes (the driver is added at the end)

    def start(self, server: ServerProcess, ready: str | None) -> ServerProcess:
        self.servers.append(server)
        server.wait_until_serving(ready)
        return server

    def stop(self, server: ServerProcess) -> None:
        started = time.monotonic()
        with contextlib.suppress(psutil.Error):
            self.own_cpu_s += server.cpu_seconds()
        server.stop()
        say(f"stopped {server.name} ({time.monotonic() - started:.1f} s)")
        if server in self.servers:
            self.servers.remove(server)

    def record_failure(self, section: str, exc: BaseException, servers: list[ServerProcess]) -> None:
        message = f"{section}: {type(exc).__name__}: {exc}"
        say(f"FAILED {message}")
        self.errors.append(message)
        self.results.setdefault("failures", {})[section] = {
            "error": message,
            "traceback": traceback.format_exc()[-4000:],
            "server_logs": {s.name: s.log_problems() for s in servers},
        }


def spotik_frame_bytes(run: Run) -> int:
    if run.args.frame_bytes:
        return int(run.args.frame_bytes)
    single = run.results.get("spotik", {}).get("latency", {})
    sizes = [v.get("frame_bytes", 0) for v in single.values()]
    return max(sizes, default=0) or 800


async def memory_section(run: Run, workers: Workers, app: str, target: Target, server: ServerProcess) -> None:
    """``app``'s memory figures on one instance; when they fail, the failure is recorded, every socket closed,
    and the phase goes on."""
    args = run.args
    try:
        run.results[app]["memory"] = await memory_phase(workers, target, server, args.sizes, args, run.addresses)
    except Exception as exc:
        run.record_failure(f"{app} memory", exc, [server])
        await workers.call_all("close_all", concurrency=args.concurrency * 2)


async def latency_section(
    run: Run,
    workers: Workers,
    app: str,
    target: Target,
    server: ServerProcess,
    trigger: MakeTrigger,
    gc_pauses: GcPauses | None = None,
) -> None:
    """``app``'s latency figures on one instance; when they fail, the failure is recorded and the phase goes on."""
    args = run.args
    try:
        run.results[app]["latency"] = await latency_phase(
            workers, target, [server], args.subscribers, trigger, args, run.addresses, "1 instance", gc_pauses
        )
    except Exception as exc:
        run.record_failure(f"{app} latency", exc, [server])


async def phase_spotik(run: Run, workers: Workers) -> None:
    args = run.args
    section = run.results.setdefault("spotik", {})
    secret = secrets.token_urlsafe(48)
    server = run.start(spotik_server("spotik", run.workdir, run.server_cpus, secret, spotik_settings()), "/api/ping")
    try:
        started = time.monotonic()
        rooms = math.ceil(max(args.sizes) / args.room_size) if args.sizes else 0
        fixture = await spotik_setup(server.base_url, users=args.users, rooms=rooms, tag=run.tag)
        section["setup"] = {"users": args.users, "rooms": rooms, "rest_joins": fixture.rest_joins, "s": fixture.setup_s}
        say(
            f"[spotik] setup: {args.users} users, {rooms} rooms, {fixture.rest_joins} REST joins in {fixture.setup_s} s"
        )
        if args.sizes:
            await memory_section(run, workers, "spotik", spotik_target(fixture, args.room_size, memory=True), server)
        try:
            section["probe"] = await probe_spotik(server, fixture)
            say(
                "[spotik] one request at a time (p50 ms): "
                + ", ".join(f"{name} {d.get('p50')}" for name, d in section["probe"].items())
            )
        except Exception as exc:
            run.record_failure("spotik probe", exc, [server])
        if args.subscribers:
            await latency_section(
                run,
                workers,
                "spotik",
                spotik_target(fixture, args.room_size, memory=False),
                server,
                spotik_vote_trigger(server, fixture),
                spotik_gc_pauses(server, fixture),
            )
        section["server_log_problems"] = server.log_problems()
        run.timings["spotik single instance"] = round(time.monotonic() - started, 1)
    finally:
        run.stop(server)


async def phase_spotik_redis(run: Run, workers: Workers) -> None:
    args = run.args
    section = run.results.setdefault("spotik", {})
    database = f"spotik_bench_{run.tag}"
    prefix = f"spotik-bench:{run.tag}"
    started = time.monotonic()
    await create_database(database, args)
    servers: list[ServerProcess] = []
    try:
        url = f"postgresql+asyncpg://{args.pg_user}@{args.pg_host}:{args.pg_port}/{database}"
        secret = secrets.token_urlsafe(48)
        for name in ("spotik-a", "spotik-b"):  # one after the other: the first applies the migrations
            settings = spotik_settings(args.redis_url, prefix)
            server = spotik_server(name, run.workdir, run.server_cpus, secret, settings, database_url=url)
            servers.append(server)
            run.start(server, "/api/ping")
        subscribed = await redis_subscribers(args.redis_url, f"{prefix}:ws:broadcast", 2)
        if subscribed < 2:
            raise RuntimeError(f"only {subscribed} Spotik instance(s) subscribed to Redis")
        fixture = await spotik_setup(servers[0].base_url, users=args.users, rooms=0, tag=run.tag + "r")
        target = spotik_target(fixture, args.room_size, memory=False)
        section["latency_redis"] = await latency_phase(
            workers,
            target,
            servers,
            args.subscribers,
            spotik_vote_trigger(servers[0], fixture),
            args,
            run.addresses,
            "2 instances",
            spotik_gc_pauses(servers[0], fixture),  # the instance that takes the vote
        )
        section["redis_log_problems"] = {s.name: s.log_problems() for s in servers}
    except Exception as exc:
        run.record_failure("spotik two instances", exc, servers)
    finally:
        for server in servers:
            run.stop(server)
        with contextlib.suppress(Exception):
            await drop_database(database, args)
        with contextlib.suppress(Exception):
            section["redis_keys_deleted"] = await delete_redis_keys(args.redis_url, prefix)
        run.timings["spotik two instances"] = round(time.monotonic() - started, 1)


async def phase_baseline(run: Run, workers: Workers) -> None:
    args = run.args
    section = run.results.setdefault("baseline", {})
    started = time.monotonic()
    server = run.start(baseline_server("baseline", "starlette", run.workdir, run.server_cpus), "/ping")
    try:
        target = baseline_target("baseline")
        if args.sizes:
            await memory_section(run, workers, "baseline", target, server)
        if args.subscribers:
            trigger = baseline_trigger(server, lambda: spotik_frame_bytes(run), run.baseline_serial)
            await latency_section(run, workers, "baseline", target, server, trigger)
        section["server_log_problems"] = server.log_problems()
    finally:
        run.stop(server)
        run.timings["baseline single instance"] = round(time.monotonic() - started, 1)


async def phase_baseline_redis(run: Run, workers: Workers) -> None:
    args = run.args
    section = run.results.setdefault("baseline", {})
    started = time.monotonic()
    channel = f"baseline-bench:{run.tag}:broadcast"
    servers: list[ServerProcess] = []
    try:
        for name in ("baseline-a", "baseline-b"):
            server = baseline_server(
                name, "starlette", run.workdir, run.server_cpus, redis_url=args.redis_url, channel=channel
            )
            servers.append(server)
            run.start(server, "/ping")
        subscribed = await redis_subscribers(args.redis_url, channel, 2)
        if subscribed < 2:
            raise RuntimeError(f"only {subscribed} baseline instance(s) subscribed to Redis")
        section["latency_redis"] = await latency_phase(
            workers,
            baseline_target("baseline"),
            servers,
            args.subscribers,
            baseline_trigger(servers[0], lambda: spotik_frame_bytes(run), run.baseline_serial),
            args,
            run.addresses,
            "2 instances",
        )
    except Exception as exc:
        run.record_failure("baseline two instances", exc, servers)
    finally:
        for server in servers:
            run.stop(server)
        run.timings["baseline two instances"] = round(time.monotonic() - started, 1)


async def phase_bare_websockets(run: Run, workers: Workers) -> None:
    args = run.args
    started = time.monotonic()
    server = run.start(baseline_server("websockets", "websockets", run.workdir, run.server_cpus), None)
    try:
        target = baseline_target("websockets")
        run.results["websockets"] = {
            "memory": await memory_phase(workers, target, server, [args.bare_size], args, run.addresses)
        }
    except Exception as exc:
        run.record_failure("bare websockets memory", exc, [server])
    finally:
        run.stop(server)
        run.timings["bare websockets"] = round(time.monotonic() - started, 1)


async def execute(run: Run) -> None:
    args = run.args
    workers = Workers(args.clients, run.client_cpus)
    try:
        workers.attach()
        redis_problem = await redis_available(args.redis_url) if args.redis else "switched off (--no-redis)"
        if redis_problem is None:
            try:
                await create_database(f"spotik_bench_{run.tag}_probe", args)
                await drop_database(f"spotik_bench_{run.tag}_probe", args)
            except Exception as exc:
                redis_problem = f"PostgreSQL unavailable: {type(exc).__name__}: {exc}"
        if redis_problem is not None:
            run.results["two_instances_skipped"] = redis_problem
            say(f"two-instance runs skipped: {redis_problem}")
        phases: list[tuple[str, Callable[[Run, Workers], Awaitable[None]]]] = []
        if "spotik" in args.apps:
            phases.append(("Spotik, one instance (SQLite)", phase_spotik))
            if redis_problem is None and args.subscribers:
                phases.append(("Spotik, two instances (PostgreSQL + Redis)", phase_spotik_redis))
        if "baseline" in args.apps:
            phases.append(("baseline Starlette app, one instance", phase_baseline))
            if redis_problem is None and args.subscribers:
                phases.append(("baseline Starlette app, two instances (Redis)", phase_baseline_redis))
            if args.bare_size:
                phases.append((f"bare websockets server, {args.bare_size} idle connections", phase_bare_websockets))
        for title, phase in phases:
            say(f"== {title}")
            try:
                await phase(run, workers)
            except Exception as exc:
                run.record_failure(title, exc, list(run.servers))
    finally:
        for server in list(run.servers):
            run.stop(server)
        run.own_cpu_s += workers.cpu_seconds()
        workers.close()
