"""Section 1 of ``spotik bench``: requests/s and p50 / p99 latency of Spotik's hot endpoints at several
concurrencies, against two ceilings, and cached against uncached, on SQLite and on PostgreSQL + Redis:

* the **stack ceiling**, which the target is measured against: a hello world on the same server stack, Spotik's own
  ``GET /api/ping`` on each variant (the same process, uvicorn options, FastAPI and middleware: request id, timing,
  security headers, gzip, CORS, rate limiter, error envelope);
* the **bare ceiling**: ``bench/baseline_ws_app.py``'s ``GET /ping``, Starlette on uvicorn and nothing else. The
  distance between the two is what Spotik's middleware and FastAPI cost per request.

"Cached" and "uncached" are the same ``spotik serve`` with ``CACHE_ENABLED=true`` / ``false`` and nothing else
different; a build whose settings do not know ``CACHE_ENABLED`` ignores it (unknown variables are ignored), and then
both variants run the same code. Each variant gets its own database and the same data through the REST API
(``hot_reads.make_data``). Rounds alternate the order of the variants; every figure is the median with min–max over
the rounds, and each round's ratios to the ceilings measured in that round at the same concurrency."""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from spotikbench.fixtures import expect
from spotikbench.hot_reads import HotData, make_data
from spotikbench.load import Measurement, run_httpx, run_wrk
from spotikbench.servers import ServerProcess, baseline_server, spotik_server
from spotikbench.services import create_database, delete_redis_keys, drop_database
from spotikbench.tools import say

ENDPOINTS: dict[str, str] = {  # name → path; {room} is the queue room, {track} its first track
    "ping": "/api/ping",  # the stack's ceiling: a hello world through the same process, uvicorn, FastAPI, middleware
    "room list": "/api/rooms",
    "room detail": "/api/rooms/{room}",
    "track queue": "/api/rooms/{room}/tracks",
    "vote": "/api/rooms/{room}/tracks/{track}/vote",
    "playback status": "/api/rooms/{room}/playback/status",
    "time": "/api/time",
}
HOT_READS = ("room list", "room detail", "track queue", "playback status", "time")
CEILING = "hello world"  # bare: Starlette on uvicorn, nothing else (what the stack itself costs)
STACK_CEILING = "ping"  # the same server stack: Spotik's own hello world, measured on each variant
CEILING_TARGET = 0.60  # cached hot reads keep at least this share of the stack ceiling's req/s
# wrk sends POST and DELETE in turn: a vote, then its withdrawal (both answer 200, both publish an event).
VOTE_SCRIPT = """
local n = 0
request = function()
  n = n + 1
  return wrk.format(n % 2 == 1 and "POST" or "DELETE")
end
"""


@dataclass
class Variant:
    name: str  # e.g. "sqlite, cached"
    database: str  # sqlite | postgres
    cached: bool
    server: ServerProcess
    data: HotData | None = None
    track: str = ""

    def url(self, endpoint: str) -> str:
        assert self.data is not None
        path = ENDPOINTS[endpoint].format(room=self.data.queue_room, track=self.track)
        return self.server.base_url + path


def settings(cached: bool, redis_url: str | None, prefix: str) -> dict[str, str]:
    values = {
        "CACHE_ENABLED": "true" if cached else "false",
        "RATE_LIMITING_ENABLED": "false",  # a 429 would fake throughput
        "BCRYPT_COST": "4",
        "JWT_TTL": "1440",
    }
    if redis_url:
        values |= {"REDIS_URL": redis_url, "WS_REDIS_PREFIX": f"{prefix}:ws", "RATE_LIMIT_KEY_PREFIX": f"{prefix}:rl"}
        values |= {"CACHE_REDIS_PREFIX": f"{prefix}:cache"}  # for the cache's Redis tier, once it exists
    return values


async def start(args: argparse.Namespace, stack: AsyncExitStack, workdir: Path, cpus: set[int] | None) -> list[Any]:
    """The ceiling and every variant, serving, each variant with its data; everything stopped, dropped and deleted
    by ``stack``."""
    tag = secrets.token_hex(4)
    prefix = f"spotik-bench:{tag}"
    ceiling = baseline_server("hello", "starlette", workdir, cpus)
    stack.callback(ceiling.stop)
    variants: list[Variant] = []
    for database in args.databases:
        for cached in (False, True):
            name = f"{database}, {'cached' if cached else 'uncached'}"
            url = None
            if database == "postgres":
                db_name = f"spotik_bench_{tag}_{'c' if cached else 'u'}"
                await create_database(db_name, args)
                stack.push_async_callback(drop_database, db_name, args)
                url = f"postgresql+asyncpg://{args.pg_user}@{args.pg_host}:{args.pg_port}/{db_name}"
            redis = args.redis_url if database == "postgres" else None
            server = spotik_server(
                name.replace(", ", "-"),
                workdir,
                cpus,
                secrets.token_urlsafe(48),
                settings(cached, redis, prefix),
                database_url=url,
            )
            stack.callback(server.stop)
            variants.append(Variant(name, database, cached, server))
    if "postgres" in args.databases:
        stack.push_async_callback(delete_redis_keys, args.redis_url, prefix)
    ceiling.wait_until_serving("/ping")
    for variant in variants:
        variant.server.wait_until_serving("/api/ping")
        variant.data = await make_data(
            variant.server.base_url, rooms=args.http_rooms, tracks=args.http_tracks, members=4, limit_s=300
        )
        async with httpx2.AsyncClient(base_url=variant.server.base_url, trust_env=False, timeout=30) as client:
            auth = {"Authorization": f"Bearer {variant.data.token}"}
            queue = expect(await client.get(f"/api/rooms/{variant.data.queue_room}/tracks", headers=auth), 200)
        variant.track = str(queue["tracks"][-1]["id"])  # not the current (paused) one
        say(f"[http] {variant.name}: {args.http_rooms} rooms, {args.http_tracks} tracks ready")
    return [ceiling, variants]


def settle(server: ServerProcess, *, quiet_s: float = 0.2, limit_s: float = 60.0) -> None:
    """Wait until ``server`` has worked off what the load generator left in flight: its CPU time stands still for
    ``quiet_s``. The servers share one CPU, and a slow server (uncached, 64 clients) still owes seconds of work when
    the load stops, which would otherwise be taken from the next server's measurement."""
    deadline = time.monotonic() + limit_s
    last = server.ps.cpu_times()
    while time.monotonic() < deadline:
        time.sleep(quiet_s)
        now = server.ps.cpu_times()
        if (now.user + now.system) - (last.user + last.system) < quiet_s * 0.05:  # under 5 % of a CPU
            return
        last = now


def drive(url: str, concurrency: int, args: argparse.Namespace, *, token: str | None, vote: bool) -> Measurement:
    headers = [f"Authorization: Bearer {token}"] if token else []
    if args.tool == "wrk":
        script = None
        if vote:
            script = str(Path(tempfile.gettempdir()) / "spotik-bench-vote.lua")
            Path(script).write_text(VOTE_SCRIPT, encoding="utf-8")
        return run_wrk(
            url,
            duration=args.http_seconds,
            connections=concurrency,
            threads=1,
            cpus=args.load_cpus,
            headers=headers,
            script=script,
        )
    return run_httpx(
        url,
        requests=args.http_requests,
        concurrency=concurrency,
        headers=dict(h.split(": ", 1) for h in headers),
        methods=("POST", "DELETE") if vote else ("GET",),
    )


def measure(args: argparse.Namespace, ceiling: ServerProcess, variants: list[Variant]) -> list[dict[str, Any]]:
    """Every round: at each concurrency, the ceiling, then each endpoint on every variant (in turn, the order
    reversed every other round so that a drift of the machine's speed cancels out)."""
    samples: list[dict[str, Any]] = []

    def record(round_number: int, concurrency: int, endpoint: str, variant: str, m: Measurement) -> None:
        samples.append(
            {
                "round": round_number,
                "concurrency": concurrency,
                "endpoint": endpoint,
                "variant": variant,
                "rps": round(m.requests_per_second, 1),
                "p50_ms": m.latency_ms.get("p50"),
                "p99_ms": m.latency_ms.get("p99"),
                "requests": m.requests,
                "errors": m.errors,
            }
        )

    for round_number in range(1, args.http_rounds + 1):
        order = variants if round_number % 2 else list(reversed(variants))
        for concurrency in args.http_concurrency:
            hello = drive(ceiling.base_url + "/ping", concurrency, args, token=None, vote=False)
            record(round_number, concurrency, CEILING, CEILING, hello)
            for endpoint in ENDPOINTS:
                for variant in order:
                    assert variant.data is not None
                    m = drive(
                        variant.url(endpoint), concurrency, args, token=variant.data.token, vote=endpoint == "vote"
                    )
                    record(round_number, concurrency, endpoint, variant.name, m)
                    settle(variant.server)
            say(
                f"[http] round {round_number}/{args.http_rounds}, {concurrency} clients: hello "
                f"{hello.requests_per_second:,.0f} req/s; queue "
                + ", ".join(
                    f"{s['variant']} {s['rps']:,.0f}"
                    for s in samples[-len(variants) * len(ENDPOINTS) :]
                    if s["endpoint"] == "track queue"
                )
            )
    return samples


def spread(values: list[float], digits: int = 3) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def summarise(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Per (variant, endpoint, concurrency): req/s, p50, p99 (median, min–max over rounds), the per-round ratios to
    the bare ceiling and to the variant's own ``ping`` (the stack ceiling, which the target is measured against)
    and, for cached variants, the per-round ratio to the uncached one of the same database."""
    by_key = {(s["round"], s["concurrency"], s["endpoint"], s["variant"]): s for s in samples}
    rows: list[dict[str, Any]] = []
    keys = sorted({(s["variant"], s["endpoint"], s["concurrency"]) for s in samples}, key=lambda k: (k[1], k[2], k[0]))

    def per_round(variant: str, endpoint: str, concurrency: int, of: Callable[[dict[str, Any]], Any]) -> list[float]:
        return [
            of(s)
            for (r, c, e, v), s in by_key.items()
            if (v, e, c) == (variant, endpoint, concurrency) and of(s) is not None
        ]

    for variant, endpoint, concurrency in keys:
        mine = [s for (r, c, e, v), s in sorted(by_key.items()) if (v, e, c) == (variant, endpoint, concurrency)]
        to_ceiling = [
            s["rps"] / hello["rps"]
            for s in mine
            if (hello := by_key.get((s["round"], concurrency, CEILING, CEILING))) and hello["rps"]
        ]
        to_stack = [
            s["rps"] / ping["rps"]
            for s in mine
            if endpoint != STACK_CEILING
            and (ping := by_key.get((s["round"], concurrency, STACK_CEILING, variant)))
            and ping["rps"]
        ]
        uncached = variant.replace("cached", "uncached") if variant.endswith(", cached") else None
        to_uncached = [
            s["rps"] / other["rps"]
            for s in mine
            if uncached and (other := by_key.get((s["round"], concurrency, endpoint, uncached))) and other["rps"]
        ]
        rows.append(
            {
                "variant": variant,
                "endpoint": endpoint,
                "concurrency": concurrency,
                "rps": spread([s["rps"] for s in mine], 1),
                "p50_ms": spread(per_round(variant, endpoint, concurrency, lambda s: s["p50_ms"]), 2),
                "p99_ms": spread(per_round(variant, endpoint, concurrency, lambda s: s["p99_ms"]), 2),
                "to_ceiling": spread(to_ceiling) if variant != CEILING else None,
                "to_stack": spread(to_stack),
                "to_uncached": spread(to_uncached),
                "errors": sum(s["errors"] for s in mine),
            }
        )
    cached_reads = [r for r in rows if r["variant"].endswith(", cached") and r["endpoint"] in HOT_READS]
    worst = min((r for r in cached_reads if r["to_stack"]), key=lambda r: r["to_stack"]["median"], default=None)
    worst_bare = min(
        (r for r in cached_reads if r["to_ceiling"]), key=lambda r: r["to_ceiling"]["median"], default=None
    )
    return {
        "rows": rows,
        "errors": sum(r["errors"] for r in rows),
        "worst_cached_read": worst,
        "worst_cached_read_bare": worst_bare,
        "target_met": None if worst is None else worst["to_stack"]["median"] >= CEILING_TARGET,
    }


async def run(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    async with AsyncExitStack() as stack:
        ceiling, variants = await start(args, stack, workdir, args.server_cpus)
        samples = await asyncio.to_thread(measure, args, ceiling, variants)  # the httpx loop runs its own loop
        problems = {v.name: v.server.log_problems(5) for v in variants}
        cache_setting = cache_setting_known()
    return {
        "samples": samples,
        "summary": summarise(samples),
        "server_log_problems": problems,
        "cache_setting_known": cache_setting,
        "tool": args.tool,
    }


def cache_setting_known() -> bool:
    """Whether this build's settings have ``cache_enabled`` (else both variants run the same code)."""
    from spotik.settings import Settings

    return "cache_enabled" in Settings.model_fields
