"""The cache through HTTP, against real ``spotik serve`` processes on loopback (see bench/README.md#cache-http):

1. **Throughput** of ``GET /api/rooms/{room}/tracks`` for a room of 200 tracks, on SQLite and on PostgreSQL: two
   servers of the same tree per database, one with the cache on and one with it off (``CACHE_ENABLED``), each with
   its own database filled alike through the REST API; ``wrk`` drives them in rounds, alternating which goes first,
   and the figure is the median of the per-round ratios cached / uncached (target ≥ 3).
2. **Hit rate** of a read-mostly mixed workload on the cached SQLite server: cycles of 10 reads (8 queue reads,
   2 room reads, each by one of the members at random) and 1 write (a member votes for, or withdraws their vote
   from, a random track); the hits and misses counted by the server's cache over the workload, per namespace and in
   all (target ≥ 90 %).

    .venv/bin/python bench/cache_http.py            # about 3 minutes
    .venv/bin/python bench/cache_http.py --quick    # about a minute
"""

from __future__ import annotations

import argparse
import asyncio
import random
import secrets
import shutil
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2

from spotikbench.fixtures import PASSWORD, expect, wav_bytes
from spotikbench.hot_reads import Load
from spotikbench.load import Measurement, run_wrk
from spotikbench.report import machine, show, stamp, write
from spotikbench.servers import ServerProcess, spotik_server
from spotikbench.services import create_database, drop_database
from spotikbench.tools import say, split_cpus

VARIANTS = ("uncached", "cached")
SETTINGS = {
    "RATE_LIMITING_ENABLED": "false",  # a 429 would fake throughput
    "BCRYPT_COST": "4",  # registrations are set-up, not the subject
    "JWT_TTL": "1440",
    "CACHE_STATS_INTERVAL": "3600",
}
READS_PER_WRITE = 10
QUEUE_READS = 8  # of the 10 reads; the other 2 read the room (its state)


@dataclass
class Room:
    room: str
    tracks: list[str]
    tokens: list[str]  # the owner's first, then the members'


async def fill(base_url: str, *, tracks: int, members: int) -> Room:
    """An owner and ``members`` users in one room holding ``tracks`` one-second WAV tracks, playback paused."""
    limits = httpx2.Limits(max_connections=8, max_keepalive_connections=8)
    gate = asyncio.Semaphore(8)
    async with httpx2.AsyncClient(base_url=base_url, timeout=60, limits=limits, trust_env=False) as client:

        async def register(index: int) -> str:
            name = f"cache{index}"
            payload = {"username": name, "email": f"{name}@bench.example.com"}
            payload |= {"password": PASSWORD, "password_confirmation": PASSWORD}
            async with gate:
                return str(expect(await client.post("/api/auth/register", json=payload), 201)["data"]["token"])

        tokens = list(await asyncio.gather(*(register(i) for i in range(members + 1))))
        owner = {"Authorization": f"Bearer {tokens[0]}"}
        room = str(expect(await client.post("/api/rooms", json={"name": "cache"}, headers=owner), 201)["data"]["id"])
        for token in tokens[1:]:
            expect(await client.post(f"/api/rooms/{room}/join", headers={"Authorization": f"Bearer {token}"}), 200)
        audio = wav_bytes(seconds=1.0)

        async def upload(index: int) -> str:
            files = {"audio_file": (f"track {index:03d}.wav", audio, "audio/wav")}
            async with gate:
                body = expect(await client.post(f"/api/rooms/{room}/tracks", files=files, headers=owner), 201)
            return str(body["track"]["id"])

        ids = [await upload(0)]  # starts playback: pause it, so that no track ends (and leaves the queue)
        expect(await client.post(f"/api/rooms/{room}/playback/pause", headers=owner), 200)
        ids += await asyncio.gather(*(upload(i) for i in range(1, tracks)))
        queued = expect(await client.get(f"/api/rooms/{room}/tracks", headers=owner), 200)["total_count"]
    if queued != tracks:
        raise RuntimeError(f"{base_url}: {queued} tracks queued, expected {tracks}")
    return Room(room, ids, tokens)


@dataclass
class Server:
    variant: str
    process: ServerProcess
    data: Room

    @property
    def url(self) -> str:
        return f"{self.process.base_url}/api/rooms/{self.data.room}/tracks"


async def start(variant: str, database: str, workdir: Path, cpus: set[int] | None, args: argparse.Namespace) -> Server:
    settings = {**SETTINGS, "CACHE_ENABLED": "true" if variant == "cached" else "false"}
    url = None
    if database == "postgresql":
        name = f"spotik_bench_cache_{variant}_{secrets.token_hex(3)}"
        await create_database(name, args)
        url = f"postgresql+asyncpg://{args.pg_user}@{args.pg_host}:{args.pg_port}/{name}"
        args.databases.append(name)
    secret = secrets.token_urlsafe(48)
    process = spotik_server(f"{database}-{variant}", workdir, cpus, secret, settings, database_url=url)
    process.wait_until_serving("/api/ping")
    return Server(variant, process, await fill(process.base_url, tracks=args.tracks, members=args.members))


def _wrk(server: Server, load: Load, seconds: float) -> Measurement:
    return run_wrk(
        server.url,
        duration=seconds,
        connections=load.connections,
        threads=load.threads,
        cpus=load.cpus,
        headers=[f"Authorization: Bearer {server.data.tokens[0]}"],
    )


def throughput(servers: dict[str, Server], load: Load, args: argparse.Namespace, database: str) -> dict[str, Any]:
    for server in servers.values():  # warm-up: first connections, the cache's first fill, the allocator
        _wrk(server, load, 1)
    rounds: list[dict[str, float]] = []
    for number in range(args.rounds):
        order = VARIANTS if number % 2 == 0 else tuple(reversed(VARIANTS))
        figures = {}
        for variant in order:
            server = servers[variant]
            run = _wrk(server, load, load.seconds)
            if run.errors:
                raise RuntimeError(f"{server.process.name}: {run.errors} failed requests")
            figures[variant] = run.requests_per_second
        rounds.append(figures)
        say(
            f"{database} round {number + 1}: uncached {figures['uncached']:8.1f} req/s  cached "
            f"{figures['cached']:8.1f} req/s  ratio {figures['cached'] / figures['uncached']:.2f}"
        )
    ratios = [r["cached"] / r["uncached"] for r in rounds]
    return {
        "rounds": rounds,
        "uncached_rps": round(statistics.median(r["uncached"] for r in rounds), 1),
        "cached_rps": round(statistics.median(r["cached"] for r in rounds), 1),
        "ratio": round(statistics.median(ratios), 2),
        "ratios": [round(r, 2) for r in ratios],
    }


async def cache_counters(client: httpx2.AsyncClient, token: str) -> dict[str, tuple[int, int]]:
    response = await client.get("/api/performance/dashboard", headers={"Authorization": f"Bearer {token}"})
    spaces = expect(response, 200)["data"]["cache"]["namespaces"]
    return {name: (ns["hits"] + ns["redis_hits"], ns["misses"] - ns["redis_hits"]) for name, ns in spaces.items()}


async def hit_rate(server: Server, cycles: int, seed: int) -> dict[str, Any]:
    """``cycles`` × (10 reads by random members, then one vote or unvote by a random member): the server's own
    hit and miss counts over the workload."""
    rng = random.Random(seed)
    data = server.data
    members = data.tokens[1:]
    voted: set[tuple[str, str]] = set()
    base = server.process.base_url
    async with httpx2.AsyncClient(base_url=base, timeout=30, trust_env=False) as client:
        before = await cache_counters(client, data.tokens[0])
        started = time.perf_counter()
        for _ in range(cycles):
            for read in range(READS_PER_WRITE):
                headers = {"Authorization": f"Bearer {rng.choice(members)}"}
                path = f"/api/rooms/{data.room}" + ("/tracks" if read < QUEUE_READS else "")
                expect(await client.get(path, headers=headers), 200)
            who, track = rng.choice(members), rng.choice(data.tracks)
            method = client.delete if (who, track) in voted else client.post
            path = f"/api/rooms/{data.room}/tracks/{track}/vote"
            vote = await method(path, headers={"Authorization": f"Bearer {who}"})
            expect(vote, 200)
            voted ^= {(who, track)}
        elapsed = time.perf_counter() - started
        after = await cache_counters(client, data.tokens[0])
    spaces: dict[str, Any] = {}
    for name in after:
        hits, misses = (after[name][i] - before.get(name, (0, 0))[i] for i in (0, 1))
        if hits + misses:
            spaces[name] = {"hits": hits, "misses": misses, "hit_rate": round(hits / (hits + misses), 4)}
    hits = sum(s["hits"] for s in spaces.values())
    lookups = hits + sum(s["misses"] for s in spaces.values())
    # The dashboard request itself (1 user lookup) is not part of the workload: it is counted once in ``after``.
    return {
        "cycles": cycles,
        "requests": cycles * (READS_PER_WRITE + 1),
        "seconds": round(elapsed, 2),
        "namespaces": spaces,
        "hit_rate": round(hits / lookups, 4),
        "hit_rate_without_user_data": round(
            sum(s["hits"] for n, s in spaces.items() if n != "user_data")
            / sum(s["hits"] + s["misses"] for n, s in spaces.items() if n != "user_data"),
            4,
        ),
    }


def markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    lines = [
        f"# Cache through HTTP — {report['at']}",
        "",
        f"`GET /api/rooms/{{room}}/tracks`, {env['tracks']} tracks, {env['members']} members; one `spotik serve` per "
        f"variant (production settings, rate limiting off, 1 worker) on CPUs {env['server_cpus'] or 'any'}; "
        f"`wrk -t1 -c{env['connections']} -d{env['seconds']}s` on {env['load_cpus'] or 'any'}, {env['rounds']} "
        f"rounds alternating which variant goes first; Python {env['python']}, {env['cpus']} CPUs.",
        "",
        "| database | uncached req/s | cached req/s | ratio (median of rounds) | per-round ratios |",
        "|---|---:|---:|---:|---|",
    ]
    for database, figures in report["throughput"].items():
        lines.append(
            f"| {database} | {figures['uncached_rps']} | {figures['cached_rps']} | **{figures['ratio']}×** "
            f"| {', '.join(map(str, figures['ratios']))} |"
        )
    rate = report["hit_rate"]
    lines += [
        "",
        f"Read-mostly workload ({rate['cycles']} cycles of {READS_PER_WRITE} reads + 1 vote/unvote, "
        f"{rate['requests']} requests): hit rate **{rate['hit_rate']:.1%}** "
        f"({rate['hit_rate_without_user_data']:.1%} without the token users).",
        "",
        "| namespace | hits | misses | hit rate |",
        "|---|---:|---:|---:|",
    ]
    for name, ns in rate["namespaces"].items():
        lines.append(f"| {name} | {ns['hits']} | {ns['misses']} | {ns['hit_rate']:.1%} |")
    return "\n".join(lines) + "\n"


def options(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--databases", nargs="+", default=["sqlite", "postgresql"], dest="wanted")
    parser.add_argument("--tracks", type=int, default=200)
    parser.add_argument("--members", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--cycles", type=int, default=200)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--quick", action="store_true", help="2 rounds of 2 s, 50 cycles")
    parser.add_argument("--no-pin", action="store_true")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.seconds, args.cycles = 2, 2.0, 50
    args.databases = []  # the PostgreSQL databases created for the run
    return args


def main(argv: list[str] | None = None) -> int:
    args = options(argv)
    if not shutil.which("wrk"):
        raise SystemExit("wrk is needed (apt-get install -y wrk)")
    server_cpus, load_cpus = split_cpus(not args.no_pin)
    load = Load("wrk", args.seconds, 0, args.connections, 1, load_cpus)
    workdir = Path(tempfile.mkdtemp(prefix="spotik-bench-cache-"))
    report: dict[str, Any] = {"at": stamp(), "throughput": {}}
    servers: list[Server] = []
    try:
        for database in args.wanted:
            pair = {}
            for variant in VARIANTS:
                pair[variant] = asyncio.run(start(variant, database, workdir, server_cpus, args))
                servers.append(pair[variant])
            say(f"{database}: servers up, {args.tracks} tracks each")
            report["throughput"][database] = throughput(pair, load, args, database)
            if database == args.wanted[0]:
                report["hit_rate"] = asyncio.run(hit_rate(pair["cached"], args.cycles, args.seed))
                say(f"hit rate {report['hit_rate']['hit_rate']:.1%}")
            for server in pair.values():
                server.process.stop()
    finally:
        for server in servers:
            server.process.stop()
        for name in args.databases:
            asyncio.run(drop_database(name, args))
        shutil.rmtree(workdir, ignore_errors=True)
    report["environment"] = {
        **machine(),
        "tracks": args.tracks,
        "members": args.members,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "connections": args.connections,
        "server_cpus": sorted(server_cpus or []),
        "load_cpus": sorted(load_cpus or []),
    }
    show(*write("cache-http", report["at"], report, markdown(report)))
    return 0
