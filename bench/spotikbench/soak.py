"""``python bench/soak.py`` (``make soak``): the soak test of issue 15, scenario 7. The mixed workload of the
benchmark's ``mixed`` section at a **steady** rate, for ``--minutes`` (10), on two ``spotik serve`` instances sharing
one PostgreSQL database (created for the run, dropped at the end) through Redis (the run's own key prefix, its keys
deleted at the end).

The load is open-loop: each kind of operation has a pacer that fires at fixed instants (start + k / rate), so the
rate holds whatever the latency; a tick that finds ``--max-in-flight`` requests outstanding is counted as *missed*,
not queued. Listeners keep a WebSocket joined to their room on the instance of their index (half on each) and read
every frame; now and then one is closed and reopened (a reconnect). Votes and withdrawals, queue / room / playback
reads and uploads go from random listeners to their own instance; each room's administrator skips.

Every ``--interval`` seconds a sample: requests, errors and p50 / p99 latency of the interval, WebSocket frames
received, and per server RSS (``/proc/<pid>/status``), open descriptors (``/proc/<pid>/fd``) and CPU; the run
database's connections (``pg_stat_activity``), Redis ``used_memory`` (the whole server's) and the run's Redis keys.
At the end: the least-squares slopes of RSS and descriptors over the last half with the verdict, the acknowledged
writes checked against the database, and the report (``bench/reports/soak-<stamp>/``: REPORT.md, results.json,
PNG figures; ``soak_report``)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from spotikbench import soak_report
from spotikbench.fixtures import expect, register_users
from spotikbench.mixed import UPLOAD
from spotikbench.phases import spotik_settings
from spotikbench.report import REPORTS, busy_cpu_seconds, machine, stamp
from spotikbench.servers import ServerProcess, spotik_server
from spotikbench.services import (
    create_database,
    delete_redis_keys,
    drop_database,
    redis_available,
    redis_subscribers,
)
from spotikbench.tools import percentile, raise_nofile, say, split_cpus

# Answers that are part of the game: a skip when the room's queue has just run dry.
EXPECTED = {
    "vote": {200},
    "unvote": {200},
    "upload": {201},
    "skip": {200, 400},
    "queue": {200},
    "room": {200},
    "playback": {200},
    "reconnect": {0},  # not HTTP: 0 = the socket reopened and its join was answered
}
SEED_TRACKS = 4  # per room, so that skips and uploads at the same rate keep a queue of a few tracks


@dataclass
class Window:
    """What happened since the last sample."""

    latencies: list[float] = field(default_factory=list)
    requests: int = 0
    errors: int = 0
    frames: int = 0
    missed: int = 0


@dataclass
class Tally:
    window: Window = field(default_factory=Window)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)  # op → status → count
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    frames: int = 0
    missed: dict[str, int] = field(default_factory=dict)

    def record(self, op: str, status: int | str, ms: float | None) -> bool:
        counts = self.counts.setdefault(op, {})
        counts[str(status)] = counts.get(str(status), 0) + 1
        self.window.requests += 1
        good = status in EXPECTED[op]
        if ms is not None:
            self.latencies.setdefault(op, []).append(ms)
            self.window.latencies.append(ms)
        if not good:
            self.error(f"{op}: {status}")
        return good

    def error(self, text: str) -> None:
        self.window.errors += 1
        if len(self.errors) < 200:
            self.errors.append(text)

    def miss(self, op: str) -> None:
        self.missed[op] = self.missed.get(op, 0) + 1
        self.window.missed += 1

    def swap(self) -> Window:
        window, self.window = self.window, Window()
        return window


@dataclass
class Room:
    id: str
    admin: str  # token
    members: list[int] = field(default_factory=list)  # listener indexes
    queue: list[str] = field(default_factory=list)  # track ids, as last read or uploaded


@dataclass
class Listener:
    index: int
    name: str
    token: str
    room: Room
    server: ServerProcess
    client: httpx2.AsyncClient
    ws: ClientConnection | None = None
    reconnecting: bool = False
    reconnect_started: float = 0.0
    reopened: asyncio.Event = field(default_factory=asyncio.Event)
    busy: bool = False  # a vote of theirs in flight: the next waits, so that acknowledged states are ordered
    votes: dict[str, bool] = field(default_factory=dict)  # track → voted, as last acknowledged
    unsure: set[str] = field(default_factory=set)  # tracks whose last vote request failed: state unknown

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class Soak:
    def __init__(self, args: argparse.Namespace, workdir: Path) -> None:
        self.args = args
        self.workdir = workdir
        self.tag = secrets.token_hex(4)
        self.secret = secrets.token_urlsafe(48)
        self.database = f"spotik_bench_{self.tag}_soak"
        self.prefix = f"spotik-bench:{self.tag}:soak"
        self.rng = random.Random(args.seed)
        self.tally = Tally()
        self.servers: list[ServerProcess] = []
        self.clients: list[httpx2.AsyncClient] = []
        self.listeners: list[Listener] = []
        self.rooms: list[Room] = []
        self.samples: list[dict[str, Any]] = []
        self.uploads: list[str] = []  # acknowledged track ids
        self.in_flight = 0
        self.stopping = False
        self.started = 0.0
        self.setup_s = 0.0

    # --- set-up -------------------------------------------------------------------------------------------------

    @property
    def database_url(self) -> str:
        a = self.args
        return f"postgresql+asyncpg://{a.pg_user}@{a.pg_host}:{a.pg_port}/{self.database}"

    def settings(self) -> dict[str, str]:
        settings = spotik_settings(self.args.redis_url, self.prefix)
        settings["CACHE_REDIS_PREFIX"] = f"{self.prefix}:cache:"  # so that the clean-up finds the cache's keys too
        return settings

    async def start_servers(self) -> None:
        for name in ("soak-a", "soak-b"):  # one after the other: the first applies the migrations
            server = spotik_server(
                name, self.workdir, self.args.server_cpus, self.secret, self.settings(), database_url=self.database_url
            )
            self.servers.append(server)
            await asyncio.to_thread(server.wait_until_serving, "/api/ping")
        subscribed = await redis_subscribers(self.args.redis_url, f"{self.prefix}:ws:broadcast", 2)
        if subscribed < 2:
            raise RuntimeError(f"only {subscribed} instance(s) subscribed to the Redis broadcast channel")
        limits = httpx2.Limits(max_connections=64, max_keepalive_connections=64)
        self.clients = [
            httpx2.AsyncClient(base_url=s.base_url, timeout=self.args.timeout, limits=limits, trust_env=False)
            for s in self.servers
        ]

    async def populate(self) -> None:
        a, first = self.args, self.clients[0]
        gate = asyncio.Semaphore(16)
        admins = await register_users(first, gate, [f"soakadmin{r}" for r in range(a.rooms)])
        names = [f"soakuser{i}" for i in range(a.listeners)]
        tokens = await register_users(first, gate, names)
        for index, token in enumerate(admins):
            auth = {"Authorization": f"Bearer {token}"}
            body = expect(await first.post("/api/rooms", json={"name": f"soak {index}"}, headers=auth), 201)
            room = Room(str(body["data"]["id"]), token)
            for n in range(SEED_TRACKS):
                files = {"audio_file": (f"seed {n}.wav", UPLOAD, "audio/wav")}
                track = expect(await first.post(f"/api/rooms/{room.id}/tracks", files=files, headers=auth), 201)
                room.queue.append(str(track["track"]["id"]))
            self.rooms.append(room)
        for index, (name, token) in enumerate(zip(names, tokens, strict=True)):
            room = self.rooms[index % a.rooms]
            room.members.append(index)
            side = index % len(self.servers)
            self.listeners.append(Listener(index, name, token, room, self.servers[side], self.clients[side]))

        async def join(listener: Listener) -> None:
            async with gate:
                path = f"/api/rooms/{listener.room.id}/join"
                expect(await first.post(path, headers=listener.auth), 200, 201)

        await asyncio.gather(*(join(listener) for listener in self.listeners))

    # --- sockets ------------------------------------------------------------------------------------------------

    async def open_socket(self, listener: Listener) -> ClientConnection:
        """Connects and joins ``listener``'s room; returns once ``room_joined`` has arrived."""
        ws = await connect(f"{listener.server.ws_url}?token={listener.token}", compression=None, open_timeout=30)
        await ws.send(json.dumps({"type": "join_room", "data": {"room_id": listener.room.id}}))
        async with asyncio.timeout(30):
            while True:
                message = json.loads(await ws.recv())
                self.count_frame(message)
                if message.get("type") == "room_joined":
                    return ws

    def count_frame(self, message: dict[str, Any]) -> None:
        self.tally.frames += 1
        self.tally.window.frames += 1
        if message.get("type") == "error":
            self.tally.error(f"error frame: {str(message.get('data'))[:200]}")

    async def hold_socket(self, listener: Listener) -> None:
        """Keeps ``listener``'s socket open and read until the end; when a reconnect closed it, opens it again."""
        while not self.stopping and listener.ws is not None:
            try:
                async for raw in listener.ws:
                    self.count_frame(json.loads(raw))
                closed = "closed by the server"
            except ConnectionClosed as exc:
                closed = f"closed: {exc}"
            if self.stopping:
                break
            if not listener.reconnecting:
                self.tally.error(f"socket of {listener.name} {closed}")
                listener.ws = None
                break
            try:
                listener.ws = await self.open_socket(listener)
                self.tally.record("reconnect", 0, (time.monotonic() - listener.reconnect_started) * 1000)
            except (OSError, TimeoutError, ConnectionClosed) as exc:
                self.tally.record("reconnect", type(exc).__name__, None)
                listener.ws = None
            finally:
                listener.reconnecting = False
                listener.reopened.set()
        listener.reopened.set()

    async def reconnect(self) -> None:
        """Closes a random listener's socket and waits until ``hold_socket`` has it joined again."""
        listener = self.rng.choice(self.listeners)
        if listener.reconnecting or listener.ws is None:
            self.tally.miss("reconnect")
            return
        listener.reconnecting = True
        listener.reopened = asyncio.Event()
        listener.reconnect_started = time.monotonic()
        await listener.ws.close()
        await listener.reopened.wait()

    # --- requests -----------------------------------------------------------------------------------------------

    async def request(
        self, op: str, client: httpx2.AsyncClient, method: str, path: str, **kw: Any
    ) -> httpx2.Response | None:
        started = time.monotonic()
        try:
            response = await client.request(method, path, **kw)
        except httpx2.HTTPError as exc:
            self.tally.record(op, type(exc).__name__, None)
            return None
        self.tally.record(op, response.status_code, (time.monotonic() - started) * 1000)
        return response

    async def vote(self) -> None:
        for _ in range(3):  # a listener whose previous vote is still in flight waits: try another
            listener = self.rng.choice(self.listeners)
            if not listener.busy and listener.room.queue:
                break
        else:
            self.tally.miss("vote")
            return
        track = self.rng.choice(listener.room.queue)
        voted = listener.votes.get(track, False)
        op, method = ("unvote", "DELETE") if voted else ("vote", "POST")
        listener.busy = True
        try:
            path = f"/api/rooms/{listener.room.id}/tracks/{track}/vote"
            response = await self.request(op, listener.client, method, path, headers=listener.auth)
        finally:
            listener.busy = False
        if response is not None and response.status_code == 200:
            listener.votes[track] = bool(response.json().get("user_has_voted"))
            listener.unsure.discard(track)
        else:
            listener.unsure.add(track)

    async def read(self) -> None:
        listener = self.rng.choice(self.listeners)
        room = listener.room
        kind = self.rng.choices(("queue", "room", "playback"), weights=(3, 1, 1))[0]
        path = {
            "queue": f"/api/rooms/{room.id}/tracks",
            "room": f"/api/rooms/{room.id}",
            "playback": f"/api/rooms/{room.id}/playback/status",
        }[kind]
        response = await self.request(kind, listener.client, "GET", path, headers=listener.auth)
        if kind == "queue" and response is not None and response.status_code == 200:
            room.queue = [str(t["id"]) for t in response.json().get("tracks") or []]

    async def upload(self) -> None:
        listener = self.rng.choice(self.listeners)
        files = {"audio_file": ("soak.wav", UPLOAD, "audio/wav")}
        path = f"/api/rooms/{listener.room.id}/tracks"
        response = await self.request("upload", listener.client, "POST", path, files=files, headers=listener.auth)
        if response is not None and response.status_code == 201:
            track = str(response.json()["track"]["id"])
            self.uploads.append(track)
            listener.room.queue.append(track)

    async def skip(self) -> None:
        room = self.rng.choice(self.rooms)
        client = self.rng.choice(self.clients)
        headers = {"Authorization": f"Bearer {room.admin}"}
        response = await self.request("skip", client, "POST", f"/api/rooms/{room.id}/playback/skip", headers=headers)
        if response is not None and response.status_code == 200:
            skipped = response.json().get("data", {}).get("skipped_track_id")
            if skipped in room.queue:
                room.queue.remove(skipped)

    async def pace(self, op: str, per_second: float, until: float) -> None:
        """Fires ``op`` at ``per_second`` on a fixed schedule (open loop), each in a task of its own; a tick that
        finds ``--max-in-flight`` requests outstanding is missed."""
        if per_second <= 0:
            return
        period = 1.0 / per_second
        tick = self.started + self.rng.random() * period  # kinds out of phase with each other
        tasks: set[asyncio.Task[None]] = set()
        actions: dict[str, Callable[[], Awaitable[None]]] = {
            "vote": self.vote,
            "read": self.read,
            "upload": self.upload,
            "skip": self.skip,
            "reconnect": self.reconnect,
        }
        while tick < until:
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
            tick += period
            if self.in_flight >= self.args.max_in_flight:
                self.tally.miss(op)
                continue
            task = asyncio.create_task(self.tracked(actions[op]()))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.gather(*tasks)

    async def tracked(self, work: Awaitable[None]) -> None:
        self.in_flight += 1
        try:
            await work
        except Exception as exc:  # a bug of the driver's must not stop the pacer: count it
            self.tally.error(f"driver: {type(exc).__name__}: {exc}")
        finally:
            self.in_flight -= 1

    # --- sampling -----------------------------------------------------------------------------------------------

    async def sample(self, until: float) -> None:
        import asyncpg
        from redis.asyncio import Redis

        a = self.args
        pg = await asyncpg.connect(host=a.pg_host, port=a.pg_port, user=a.pg_user, database="postgres")
        redis = Redis.from_url(a.redis_url)
        cpu = {s.name: s.cpu_seconds() for s in self.servers}
        last = time.monotonic()
        self.tally.swap()
        try:
            index = 1
            while (tick := self.started + index * a.interval) <= until + 0.01:
                await asyncio.sleep(max(0.0, tick - time.monotonic()))
                index += 1
                now = time.monotonic()
                window = self.tally.swap()
                row: dict[str, Any] = {
                    "t": round(now - self.started, 2),
                    "requests": window.requests,
                    "errors": window.errors,
                    "missed": window.missed,
                    "rps": round(window.requests / (now - last), 2),
                    "p50_ms": round(percentile(window.latencies, 50), 2) if window.latencies else None,
                    "p99_ms": round(percentile(window.latencies, 99), 2) if window.latencies else None,
                    "frames": window.frames,
                    "in_flight": self.in_flight,
                    "servers": {},
                }
                for server in self.servers:
                    used = server.cpu_seconds()
                    row["servers"][server.name] = {
                        "rss_kib": proc_rss_kib(server.process.pid),
                        "fds": proc_fds(server.process.pid),
                        "fd_kinds": fd_kinds(server.process.pid),
                        "cpu": round((used - cpu[server.name]) / (now - last), 3),
                    }
                    cpu[server.name] = used
                states = await pg.fetch(
                    "SELECT coalesce(state, '?') AS state, count(*) AS n FROM pg_stat_activity "
                    "WHERE datname = $1 GROUP BY 1",
                    self.database,
                )
                row["db_connections"] = {str(r["state"]): int(r["n"]) for r in states}
                row["db_connections_total"] = sum(row["db_connections"].values())
                info = await redis.info("memory")
                row["redis_used_memory"] = int(info["used_memory"])
                row["redis_run_keys"] = len([k async for k in redis.scan_iter(match=f"{self.prefix}:*", count=1000)])
                last = now
                self.samples.append(row)
                if len(self.samples) % max(1, int(60 / a.interval)) == 0 or len(self.samples) == 1:
                    rss = " ".join(
                        f"{n} {v['rss_kib'] / 1024:.1f} MiB/{v['fds']} fds" for n, v in row["servers"].items()
                    )
                    say(
                        f"[soak] t={row['t']:.0f}s {row['rps']:.1f} req/s, {row['errors']} errors, "
                        f"p50/p99 {row['p50_ms']}/{row['p99_ms']} ms, {rss}, db {row['db_connections_total']}, "
                        f"redis {row['redis_used_memory'] / 1024 / 1024:.1f} MiB"
                    )
        finally:
            await pg.close()
            await redis.aclose()

    # --- the run ------------------------------------------------------------------------------------------------

    async def load(self) -> None:
        a = self.args
        for listener in self.listeners:
            listener.ws = await self.open_socket(listener)
        say(f"[soak] {len(self.listeners)} sockets joined; {a.minutes:g} min of steady load")
        self.started = time.monotonic()
        until = self.started + a.minutes * 60
        holders = [asyncio.create_task(self.hold_socket(listener)) for listener in self.listeners]
        rates = self.rates()
        pacers = [self.pace(op, per_second, until) for op, per_second in rates.items()]
        await asyncio.gather(self.sample(until), *pacers)
        self.stopping = True
        for listener in self.listeners:
            if listener.ws is not None:
                await listener.ws.close()
        await asyncio.gather(*holders, return_exceptions=True)

    def rates(self) -> dict[str, float]:
        """Operations per second of each kind."""
        a = self.args
        return {
            "vote": a.votes,
            "read": a.reads,
            "upload": a.uploads / 60,
            "skip": a.skips / 60,
            "reconnect": a.reconnects / 60,
        }

    async def check(self) -> dict[str, Any]:
        """The acknowledged writes against the database: every 201 upload's row; for every (listener, track) whose
        last vote request was answered, a vote row exactly when the answer said ``user_has_voted``; every track's
        ``vote_score`` equal to its vote rows."""
        import asyncpg

        a = self.args
        pg = await asyncpg.connect(host=a.pg_host, port=a.pg_port, user=a.pg_user, database=self.database)
        try:
            found = await pg.fetchval("SELECT count(*) FROM tracks WHERE id = ANY($1::uuid[])", [*self.uploads])
            rows = await pg.fetch(
                "SELECT u.username, v.track_id::text AS track FROM track_votes v JOIN users u ON u.id = v.user_id"
            )
            drifted = await pg.fetchval(
                "SELECT count(*) FROM tracks t WHERE t.vote_score <> "
                "(SELECT count(*) FROM track_votes v WHERE v.track_id = t.id)"
            )
            tracks = await pg.fetchval("SELECT count(*) FROM tracks")
        finally:
            await pg.close()
        stored = {(str(r["username"]), str(r["track"])) for r in rows}
        missing = extra = checked = unsure = 0
        for listener in self.listeners:
            unsure += len(listener.unsure)
            for track, voted in listener.votes.items():
                if track in listener.unsure:
                    continue
                checked += 1
                present = (listener.name, track) in stored
                missing += voted and not present
                extra += present and not voted
        return {
            "uploads_acknowledged": len(self.uploads),
            "uploads_found": int(found),
            "vote_states_checked": checked,
            "votes_acknowledged": sum(v for listener in self.listeners for v in listener.votes.values()),
            "vote_rows_missing": missing,
            "vote_rows_unexpected": extra,
            "vote_states_unknown": unsure,
            "vote_score_drift": int(drifted),
            "tracks_in_database": int(tracks),
            "consistent": int(found) == len(self.uploads) and missing == 0 and extra == 0 and drifted == 0,
        }

    async def execute(self) -> dict[str, Any]:
        a = self.args
        for problem in (
            await redis_available(a.redis_url),
            await pg_problem(a),
        ):
            if problem:
                raise RuntimeError(f"the soak needs PostgreSQL and Redis: {problem}")
        begun = time.monotonic()
        await create_database(self.database, a)
        try:
            await self.start_servers()
            await self.populate()
            self.setup_s = time.monotonic() - begun
            say(f"[soak] {a.listeners} listeners in {a.rooms} rooms on 2 instances ready in {self.setup_s:.1f} s")
            await self.load()
            drain_started = time.monotonic()
            consistency = await self.check()
            rss_end = {s.name: proc_rss_kib(s.process.pid) for s in self.servers}
            problems = {s.name: s.log_problems(10) for s in self.servers}
            say(f"[soak] consistency: {consistency} ({time.monotonic() - drain_started:.1f} s)")
            return {"consistency": consistency, "rss_end_kib": rss_end, "server_log_problems": problems}
        finally:
            for client in self.clients:
                await client.aclose()
            for server in self.servers:
                await asyncio.to_thread(server.stop)
            await drop_database(self.database, a)
            deleted = await delete_redis_keys(a.redis_url, self.prefix)
            say(f"[soak] cleaned up: servers stopped, database {self.database} dropped, {deleted} Redis keys deleted")


async def pg_problem(args: argparse.Namespace) -> str | None:
    import asyncpg

    try:
        connection = await asyncpg.connect(
            host=args.pg_host, port=args.pg_port, user=args.pg_user, database="postgres", timeout=5
        )
    except Exception as exc:
        return f"PostgreSQL: {type(exc).__name__}: {exc}"
    await connection.close()
    return None


def proc_rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def proc_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def fd_kinds(pid: int) -> dict[str, int]:
    """The open descriptors by kind: socket, pipe, anon_inode (eventfd, epoll …), file."""
    kinds: dict[str, int] = {}
    folder = f"/proc/{pid}/fd"
    for fd in os.listdir(folder):
        try:
            target = os.readlink(f"{folder}/{fd}")
        except OSError:  # closed meanwhile
            continue
        kind = target.split(":", 1)[0] if ":" in target and not target.startswith("/") else "file"
        kinds[kind] = kinds.get(kind, 0) + 1
    return dict(sorted(kinds.items()))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="bench/soak.py", description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the steady load (10)")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples (5)")
    parser.add_argument("--listeners", type=int, default=100, help="users with a joined socket (100)")
    parser.add_argument("--rooms", type=int, default=10, help="rooms the listeners are spread over (10)")
    parser.add_argument("--votes", type=float, default=15.0, help="votes and withdrawals per second (15)")
    parser.add_argument(
        "--reads", type=float, default=15.0, help="reads per second: 3 queue : 1 room : 1 playback (15)"
    )
    parser.add_argument("--uploads", type=float, default=12.0, help="uploads of a 60 KB WAV per minute (12)")
    parser.add_argument("--skips", type=float, default=12.0, help="skips per minute, by the rooms' admins (12)")
    parser.add_argument("--reconnects", type=float, default=12.0, help="sockets closed and reopened per minute (12)")
    parser.add_argument(
        "--rate", type=float, default=1.0, help="multiplies every rate above (1.0): the same mix, faster or slower"
    )
    parser.add_argument("--max-in-flight", type=int, default=200, help="outstanding operations before ticks miss")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds before a request counts as failed")
    parser.add_argument("--seed", type=int, default=15)
    parser.add_argument("--out", type=Path, help="report folder (bench/reports/soak-<stamp>/)")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers and load to CPUs")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    args = parser.parse_args(argv)
    for name in ("votes", "reads", "uploads", "skips", "reconnects"):
        setattr(args, name, getattr(args, name) * args.rate)
    if args.minutes <= 0 or args.interval <= 0 or args.interval * 4 > args.minutes * 60:
        parser.error("--minutes must hold at least four --interval samples")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    args.server_cpus, args.load_cpus = split_cpus(args.pin)
    if args.load_cpus:  # the driver on the others; the servers on the first CPU
        os.sched_setaffinity(0, args.load_cpus)
    at = stamp()
    out: Path = args.out or REPORTS / f"soak-{at}"
    say(
        f"soak: {args.minutes:g} min, sample every {args.interval:g} s; {args.listeners} listeners in {args.rooms} "
        f"rooms; {args.votes:g} votes/s, {args.reads:g} reads/s, {args.uploads:g} uploads/min, {args.skips:g} "
        f"skips/min, {args.reconnects:g} reconnects/min; servers on CPUs {args.server_cpus or 'any'}; report to {out}"
    )
    busy, begun = busy_cpu_seconds(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="spotik-soak-") as workdir:
        soak = Soak(args, Path(workdir))

        async def guarded() -> dict[str, Any]:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            return await soak.execute()

        try:
            ending = asyncio.run(guarded())
        except (KeyboardInterrupt, asyncio.CancelledError):
            print("interrupted: servers, database and Redis keys cleaned up", file=sys.stderr)
            return 130
    meta = {
        "at": at,
        "argv": sys.argv[1:] if argv is None else argv,
        "machine": machine(),
        "run_s": round(time.monotonic() - begun, 1),
        "setup_s": round(soak.setup_s, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "rates": soak.rates(),
        "listeners": args.listeners,
        "rooms": args.rooms,
        "minutes": args.minutes,
        "interval_s": args.interval,
        "database": soak.database,
        "redis_prefix": soak.prefix,
    }
    meta["machine_busy_cpu_s"] = round(busy_cpu_seconds() - busy, 1)  # every process's, the soak's included
    result = soak_report.build(meta, soak.samples, soak.tally, ending)
    soak_report.write(out, result)
    say(f"[soak] report: {out / 'REPORT.md'}")
    verdict = result["verdict"]
    say(f"[soak] verdict: {verdict['summary']}")
    return 0 if verdict["ok"] else 1
