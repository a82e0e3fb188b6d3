"""Real-time figures of Spotik's ``/ws`` next to a minimal app on the same server stack, in one run.

For ``spotik serve`` and for a minimal Starlette app served by uvicorn with the same options
(``bench/baseline_ws_app.py``), all on loopback:

1. **memory per idle connection**: server RSS before any socket, then after 1,000 / 5,000 / 10,000 connections
   opened cumulatively, each authenticated and joined to a room (rooms of 100), once RSS has settled; per
   connection = (RSS_k − RSS_0) / k; then every socket closes and RSS is compared with RSS_0;
2. **broadcast latency**: a REST vote (Spotik) or ``POST /broadcast`` (baseline) to the *last* of S subscribers
   of one room, S = 100 and 1,000, p50 / p99 over R rounds; t0 is taken right before the request, each
   subscriber takes the kernel's receive timestamp of the read that completed the round's frame (``SO_TIMESTAMPNS``,
   so the client's own CPU time does not count; ``time.monotonic()`` at the read elsewhere);
3. the same latency **across two instances through Redis** (subscribers half on each, the request to the first);
   Spotik's two instances share a PostgreSQL database created for the run;
4. a bare ``websockets`` echo server's memory per idle connection at 1,000, a second anchor.

Subscribers live in client processes (``multiprocessing``, one asyncio loop each, every socket read by a reader
callback with ``recvmsg`` and the ``websockets`` sans-I/O client protocol),
pinned to other CPUs than the servers (``--no-pin`` to switch that off). Targets (``--strict`` exits 1 when one
is missed): ≤ 20 KiB per idle joined connection, 10,000 connections held by one process, p99 < 50 ms for 1,000
subscribers on one instance, p99 < 100 ms across two instances, RSS back within 10 % once all are gone.

    .venv/bin/python bench/realtime.py            # full size, about 16 minutes on 2 CPUs
    .venv/bin/python bench/realtime.py --quick    # small sizes, a couple of minutes

Reports go to bench/reports/ (git-ignored) as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import io
import json
import math
import multiprocessing as mp
import os
import platform
import resource
import secrets
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
import traceback
import wave
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from multiprocessing.connection import Connection as Pipe
from pathlib import Path
from typing import Any

import httpx2
import psutil
from benchtools import clean_environment, free_port, pin_to, stop_process
from websockets.asyncio.client import ClientConnection, connect
from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosed, InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

ROOT = Path(__file__).resolve().parents[1]
REPORTS = ROOT / "bench" / "reports"
BASELINE_APP = Path(__file__).resolve().with_name("baseline_ws_app.py")
STARTUP_TIMEOUT = 60.0
KIB = 1024
MIB = 1024 * 1024
PASSWORD = "bench-Passw0rd!"  # noqa: S105 - throwaway users of a throwaway database

CLOSED_SETTLE_S = 25.0  # after closing: two ticks of the server's memory monitor (which trims the heap) at least

TARGETS = {
    "kib_per_connection": 20.0,
    "held_connections": 10_000,
    "p99_single_ms": 50.0,
    "p99_single_subscribers": 1000,
    "p99_redis_ms": 100.0,
    "p99_redis_subscribers": 1000,
    "rss_return": 0.10,
}

# Frames the bench looks for (substrings of the server's compact JSON).
SPOTIK_HELLO = '"type":"connection_established"'
SPOTIK_JOINED = '"type":"room_joined"'
BASELINE_JOIN = '{"type":"join_room","data":{"room_id":"bench"}}'
BASELINE_JOINED = '"type":"join_room"'  # the echo
VOTE_NEEDLES = ['"type":"track_voted"', '"vote_added":true']
UNVOTE_NEEDLES = ['"type":"track_unvoted"']


def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


class SourceAddresses:
    """A fresh loopback source address per batch of connections (127.0.0.2, 127.0.0.3, …): 10,000 sockets opened
    and closed per phase never compete for the ephemeral ports (or TIME_WAIT) of an earlier phase."""

    def __init__(self) -> None:
        self.next = 2

    def take(self) -> str:
        value = self.next
        self.next += 1
        return f"127.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def distribution(values: list[float]) -> dict[str, float]:
    if not values:
        return {"n": 0}
    return {
        "n": len(values),
        "p50": round(statistics.median(values), 3),
        "p90": round(percentile(values, 90), 3),
        "p99": round(percentile(values, 99), 3),
        "max": round(max(values), 3),
        "mean": round(statistics.fmean(values), 3),
    }


STARTED = time.monotonic()


def say(message: str) -> None:
    """Progress on stdout, stamped with the time since the start."""
    print(f"[{time.monotonic() - STARTED:6.1f}s] {message}", flush=True)


# -- client processes ---------------------------------------------------------------------------------------------


class Refused(Exception):
    """The server answered with an ``error`` frame instead of the expected one."""


# Kernel receive timestamps (Linux): recvmsg returns, with the data, the instant its last segment reached the
# subscriber's socket (CLOCK_REALTIME). The instant of arrival, independent of how busy the client process is.
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35 if sys.platform.startswith("linux") else None)
STAMP_SPACE = socket.CMSG_SPACE(16)  # struct timespec
RECV_BYTES = 256 * KIB


@dataclass(slots=True)
class Round:
    index: int
    serial: int
    needles: list[bytes]
    expected: int
    count: int = 0
    first: float = math.inf
    last: float = 0.0
    last_handled: float = 0.0
    size: int = 0


class Subscriber:
    """One client socket: a non-blocking socket read with ``recvmsg`` and the ``websockets`` sans-I/O client
    protocol (which answers the server's pings and closing handshake). Cheaper than an asyncio connection with a
    reader task, and each frame is stamped with the kernel's receive time of the read that completed it."""

    __slots__ = ("closed", "inbox", "protocol", "seen", "sock", "waiter")

    def __init__(self, sock: socket.socket, protocol: ClientProtocol) -> None:
        self.sock = sock
        self.protocol = protocol
        self.seen = -1  # serial of the last round this socket saw
        self.closed = False
        self.inbox: deque[bytes] | None = deque()  # while opening: the frames received, for ``_await_frame``
        self.waiter: asyncio.Future[None] | None = None

    def flush(self) -> None:
        """Send what the protocol has to say (handshake, join, pongs, close) — a few bytes, so a non-blocking send
        of all of it is fine; a socket that cannot take them is broken anyway."""
        out = self.protocol.data_to_send()
        if out and not self.closed:
            with contextlib.suppress(OSError):
                self.sock.sendall(b"".join(out))


class ClientWorker:
    """One client process: opens sockets on command, reads every socket from one reader callback each, and reports
    when each of its sockets has seen the frame of the current round."""

    def __init__(self, pipe: Pipe) -> None:
        self.pipe = pipe
        self.subs: list[Subscriber] = []
        self.frames = 0
        self.presence_frames = 0
        self.unexpected_closes: Counter[str] = Counter()
        self.closing = False
        self.plan: list[list[bytes]] = []
        self.round: Round | None = None
        self.serial = 0
        self.stopped: asyncio.Event | None = None
        self.tasks: set[asyncio.Task[None]] = set()
        self.closed_waiters: dict[Subscriber, asyncio.Future[None]] = {}
        self.clock_offset = time.time() - time.monotonic()  # kernel stamps (realtime) to the monotonic clock

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.stopped = asyncio.Event()
        loop.add_reader(self.pipe.fileno(), self._readable)
        await self.stopped.wait()
        loop.remove_reader(self.pipe.fileno())
        for sub in self.subs:
            self._gone(sub)

    def _readable(self) -> None:
        assert self.stopped is not None
        try:
            while self.pipe.poll():
                command = self.pipe.recv()
                task = asyncio.get_running_loop().create_task(self._handle(command))
                self.tasks.add(task)
                task.add_done_callback(self.tasks.discard)
        except (EOFError, OSError):  # the driver is gone
            self.stopped.set()

    async def _handle(self, command: dict[str, Any]) -> None:
        try:
            result = await getattr(self, "op_" + command["op"])(command)
        except Exception:
            result = {"error": traceback.format_exc()}
        with contextlib.suppress(OSError):
            self.pipe.send({"reply": command["id"], **result})

    # --- sockets ---------------------------------------------------------------------------------------------

    def _socket_readable(self, sub: Subscriber) -> None:
        try:
            data, ancillary, _flags, _address = sub.sock.recvmsg(RECV_BYTES, STAMP_SPACE)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        now = time.monotonic()
        arrived = now
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(value) >= 16:
                seconds, nanoseconds = struct.unpack("qq", value[:16])
                arrived = seconds + nanoseconds / 1e9 - self.clock_offset
        protocol = sub.protocol
        if data:
            protocol.receive_data(data)
        else:
            protocol.receive_eof()
        for event in protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._frame(sub, bytes(event.data), arrived, now)
        sub.flush()  # pongs, the answer to a close
        if not data or protocol.close_expected() or protocol.state is State.CLOSED:
            self._gone(sub)

    def _frame(self, sub: Subscriber, message: bytes, arrived: float, now: float) -> None:
        self.frames += 1
        if sub.inbox is not None:
            sub.inbox.append(message)
            if sub.waiter is not None and not sub.waiter.done():
                sub.waiter.set_result(None)
            return
        if message.startswith(b'{"type":"user_'):
            self.presence_frames += 1
            return
        current = self.round
        if current is not None and sub.seen < current.serial and all(n in message for n in current.needles):
            sub.seen = current.serial
            current.count += 1
            current.first = min(current.first, arrived)
            current.last = max(current.last, arrived)
            current.last_handled = max(current.last_handled, now)
            current.size = len(message)
            if current.count >= current.expected:
                self._finish_round()

    def _gone(self, sub: Subscriber) -> None:
        if sub.closed:
            return
        sub.closed = True
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(sub.sock.fileno())
        sub.sock.close()
        if sub.waiter is not None and not sub.waiter.done():
            sub.waiter.set_result(None)
        if (waiter := self.closed_waiters.pop(sub, None)) is not None and not waiter.done():
            waiter.set_result(None)
        if not self.closing and sub in self.subs:
            received = sub.protocol.close_rcvd
            code = received.code if received is not None else 1006
            self.unexpected_closes[f"{code} {received.reason if received else ''}".strip()] += 1

    @staticmethod
    async def _await_frame(sub: Subscriber, needle: bytes) -> None:
        """While opening: until a frame containing ``needle`` has arrived (an error frame is a refusal)."""
        assert sub.inbox is not None
        while True:
            while sub.inbox:
                message = sub.inbox.popleft()
                if needle in message:
                    return
                if message.startswith(b'{"type":"error"'):
                    data = json.loads(message).get("data") or {}
                    raise Refused(f"error frame {data.get('error_code')}: {data.get('message')}")
            if sub.closed:
                raise ConnectionError("closed")
            sub.waiter = asyncio.get_running_loop().create_future()
            await sub.waiter

    async def _connect(self, url: str, local_addr: str) -> Subscriber:
        loop = asyncio.get_running_loop()
        uri = parse_uri(url)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            sock.bind((local_addr, 0))
            await loop.sock_connect(sock, (uri.host, uri.port))
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if SO_TIMESTAMPNS is not None:
                sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
            protocol = ClientProtocol(uri, max_size=2**22)
            request = protocol.connect()
            protocol.send_request(request)
            await loop.sock_sendall(sock, b"".join(protocol.data_to_send()))
            while protocol.state is State.CONNECTING:
                data = await loop.sock_recv(sock, RECV_BYTES)
                if not data:
                    protocol.receive_eof()
                    raise ConnectionError("closed during the handshake")
                protocol.receive_data(data)
            if protocol.handshake_exc is not None:
                raise protocol.handshake_exc
        except BaseException:
            sock.close()
            raise
        sub = Subscriber(sock, protocol)
        loop.add_reader(sock.fileno(), self._socket_readable, sub)
        # frames that came with the handshake response
        for event in protocol.events_received():
            if isinstance(event, Frame) and event.opcode is Opcode.TEXT:
                self._frame(sub, bytes(event.data), time.monotonic(), time.monotonic())
        return sub

    def alive(self) -> int:
        return sum(1 for sub in self.subs if not sub.closed)

    async def op_open(self, command: dict[str, Any]) -> dict[str, Any]:
        local_addr = command["local_addr"]
        hello, joined, timeout = command["hello"], command["joined"].encode(), command["timeout"]
        gate = asyncio.Semaphore(command["concurrency"])
        failures: Counter[str] = Counter()
        connect_ms: list[float] = []
        join_ms: list[float] = []
        presence_before = self.presence_frames

        async def one(url: str, join_text: str) -> None:
            async with gate:
                started = time.monotonic()
                sub: Subscriber | None = None
                try:
                    async with asyncio.timeout(timeout):
                        sub = await self._connect(url, local_addr)
                        if hello:
                            await self._await_frame(sub, hello.encode())
                        connected = time.monotonic()
                        sub.protocol.send_text(join_text.encode())
                        sub.flush()
                        await self._await_frame(sub, joined)
                        sub.inbox = None  # from now on frames count for rounds
                except TimeoutError:
                    failures[f"no answer within {timeout}s"] += 1
                except Refused as exc:
                    failures[str(exc)[:160]] += 1
                except (OSError, InvalidHandshake) as exc:
                    failures[f"{type(exc).__name__}: {exc}"[:160]] += 1
                else:
                    done = time.monotonic()
                    connect_ms.append((connected - started) * 1000)
                    join_ms.append((done - connected) * 1000)
                    self.subs.append(sub)
                    return
                if sub is not None:
                    sub.inbox = None
                    self._gone(sub)  # not in self.subs yet: not an unexpected close

        started = time.monotonic()
        await asyncio.gather(*(one(url, join_text) for url, join_text in command["items"]))
        return {
            "ok": len(join_ms),
            "failed": sum(failures.values()),
            "failures": dict(failures),
            "elapsed_s": round(time.monotonic() - started, 3),
            "connect_ms": [round(v, 2) for v in connect_ms],
            "join_ms": [round(v, 2) for v in join_ms],
            "presence_frames": self.presence_frames - presence_before,
            "alive": self.alive(),
        }

    async def op_status(self, _command: dict[str, Any]) -> dict[str, Any]:
        return {
            "alive": self.alive(),
            "frames": self.frames,
            "presence_frames": self.presence_frames,
            "unexpected_closes": dict(self.unexpected_closes),
        }

    async def op_close_all(self, command: dict[str, Any]) -> dict[str, Any]:
        """The closing handshake from every socket (bounded), then whatever is left is closed."""
        self.closing = True
        loop = asyncio.get_running_loop()
        subs, self.subs = self.subs, []
        started = time.monotonic()
        batch = command["concurrency"]
        for first in range(0, len(subs), batch):
            waiters = []
            for sub in subs[first : first + batch]:
                if sub.closed:
                    continue
                waiter = self.closed_waiters[sub] = loop.create_future()
                waiters.append(waiter)
                sub.protocol.send_close()
                sub.flush()
            if waiters:
                await asyncio.wait(waiters, timeout=15)
        for sub in subs:
            self._gone(sub)
        self.closed_waiters.clear()
        self.closing = False
        return {"closed": len(subs), "elapsed_s": round(time.monotonic() - started, 3)}

    # --- latency rounds --------------------------------------------------------------------------------------

    def _start_round(self, index: int) -> None:
        if index >= len(self.plan):
            self.round = None
            return
        self.serial += 1
        self.round = Round(index, self.serial, self.plan[index], self.alive())

    def _finish_round(self) -> None:
        current = self.round
        if current is None:
            return
        with contextlib.suppress(OSError):
            self.pipe.send(
                {
                    "event": "round",
                    "index": current.index,
                    "count": current.count,
                    "expected": current.expected,
                    "first": current.first if current.count else None,
                    "last": current.last if current.count else None,
                    "last_handled": current.last_handled if current.count else None,
                    "size": current.size,
                    "cpu": time.process_time(),
                }
            )
        self._start_round(current.index + 1)

    async def op_rounds(self, command: dict[str, Any]) -> dict[str, Any]:
        """The needles of every round to come; each round ends when every socket has seen a frame containing all of
        its needles (or when the driver aborts it)."""
        self.plan = [[needle.encode() for needle in needles] for needles in command["needles"]]
        self._start_round(0)
        return {"expected": self.round.expected if self.round else 0, "cpu": time.process_time()}

    async def op_abort_round(self, command: dict[str, Any]) -> dict[str, Any]:
        if self.round is not None and self.round.index == command["index"]:
            self._finish_round()
        return {}

    async def op_stop_rounds(self, _command: dict[str, Any]) -> dict[str, Any]:
        self.plan, self.round = [], None
        return {}

    async def op_exit(self, _command: dict[str, Any]) -> dict[str, Any]:
        assert self.stopped is not None
        self.stopped.set()
        return {}


def worker_main(pipe: Pipe, cpus: list[int] | None) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver cleans up on Ctrl-C and tells us to exit
    raise_nofile()
    if cpus and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)
    asyncio.run(ClientWorker(pipe).run())


class Workers:
    """The driver's side of the client processes: commands and replies over pipes, read by the event loop."""

    def __init__(self, count: int, cpus: set[int] | None) -> None:
        context = mp.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.processes: list[Any] = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(theirs, sorted(cpus) if cpus else None),
                name=f"bench-client-{index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[asyncio.Queue[dict[str, Any]]] = []
        self.next_id = 0

    def __len__(self) -> int:
        return len(self.pipes)

    def attach(self) -> None:
        loop = asyncio.get_running_loop()
        self.events = [asyncio.Queue() for _ in self.pipes]
        for index, pipe in enumerate(self.pipes):
            loop.add_reader(pipe.fileno(), self._readable, index)

    def _readable(self, index: int) -> None:
        pipe = self.pipes[index]
        try:
            while pipe.poll():
                message = pipe.recv()
                if "event" in message:
                    self.events[index].put_nowait(message)
                elif (future := self.pending.pop(message["reply"], None)) is not None and not future.done():
                    future.set_result(message)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(pipe.fileno())
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(RuntimeError(f"client process {index} is gone"))

    async def call(self, worker: int, op: str, within: float = 600.0, **arguments: Any) -> dict[str, Any]:
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        self.pipes[worker].send({"op": op, "id": self.next_id, **arguments})
        reply = await asyncio.wait_for(future, within)
        if "error" in reply:
            raise RuntimeError(f"client process {worker}: {op} failed:\n{reply['error']}")
        return reply

    async def call_all(self, op: str, within: float = 600.0, **arguments: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.call(i, op, within, **arguments) for i in range(len(self)))))

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes:
            with contextlib.suppress(psutil.Error, ValueError):
                times = psutil.Process(process.pid).cpu_times()
                total += times.user + times.system
        return total

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for index, pipe in enumerate(self.pipes):
            with contextlib.suppress(Exception):
                loop.remove_reader(pipe.fileno())
            with contextlib.suppress(Exception):
                pipe.send({"op": "exit", "id": -index - 1})
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)


# -- servers ------------------------------------------------------------------------------------------------------


class ServerProcess:
    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], workdir: Path, cpus: set[int] | None, port: int
    ) -> None:
        self.name = name
        self.port = port
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/ws"
        self.log_path = workdir / f"{name}.log"
        self.log = self.log_path.open("w")
        self.process = subprocess.Popen(  # noqa: S603 - our own interpreter and scripts
            argv,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=pin_to(cpus),  # before exec: the child has no threads yet
            start_new_session=True,  # Ctrl-C reaches the driver only; it stops the servers in order
        )
        self.ps = psutil.Process(self.process.pid)

    def wait_until_serving(self, path: str | None) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}: {' | '.join(self.log_tail(5))}")
            try:
                if path is None:
                    with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                        return
                elif httpx2.get(self.base_url + path, timeout=2).status_code == 200:
                    return
            except (OSError, httpx2.TransportError):
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} did not answer within {STARTUP_TIMEOUT}s; see {self.log_path}")

    def rss(self) -> int:
        return int(self.ps.memory_info().rss)

    def cpu_seconds(self) -> float:
        times = self.ps.cpu_times()
        return float(times.user + times.system)

    def log_tail(self, count: int = 20) -> list[str]:
        with contextlib.suppress(OSError):
            self.log.flush()
            return self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-count:]
        return []

    def log_problems(self, count: int = 20) -> list[str]:
        """The last warning/error lines of the server's log (the evidence when something was refused or failed)."""
        with contextlib.suppress(OSError):
            self.log.flush()
            lines = self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()
            keys = ("warning", "error", "critical", "exception", "traceback", "refused", "limit")
            return [line[:400] for line in lines if any(k in line.lower() for k in keys)][-count:]
        return []

    def stop(self) -> None:
        stop_process(self.process, timeout=20)
        self.log.close()


def spotik_server(
    name: str,
    workdir: Path,
    cpus: set[int] | None,
    secret: str,
    *,
    database_url: str | None = None,
    redis_url: str | None = None,
    prefix: str | None = None,
) -> ServerProcess:
    storage = workdir / name
    storage.mkdir(parents=True, exist_ok=True)
    env = {
        **clean_environment(),
        "SPOTIK_ENV": "production",
        "JWT_SECRET": secret,
        "STORAGE_PATH": str(storage),
        "DATABASE_URL": database_url or f"sqlite:///{storage / 'bench.sqlite3'}",
        "AUTO_MIGRATE": "true",
        "LOG_LEVEL": "warning",
        "RATE_LIMITING_ENABLED": "false",
        "WS_MAX_CONNECTIONS": "12000",
        "WS_MAX_CONNECTIONS_PER_ROOM": "2000",
        "BCRYPT_COST": "4",
        "PYTHONHASHSEED": "0",
    }
    if redis_url:
        env["REDIS_URL"] = redis_url
        env["WS_REDIS_PREFIX"] = f"{prefix}:ws"
        env["RATE_LIMIT_KEY_PREFIX"] = f"{prefix}:ratelimit"
    port = free_port()
    server = ServerProcess(
        name, [sys.executable, "-m", "spotik", "serve", "--port", str(port)], env, workdir, cpus, port
    )
    return server


def ws_defaults() -> dict[str, float]:
    """Spotik's keepalive and frame-size defaults, so that the baselines run with the very same uvicorn options."""
    from spotik.settings import Settings

    fields = Settings.model_fields
    return {
        "ping_interval": float(fields["ws_ping_interval"].default),
        "ping_timeout": float(fields["ws_ping_timeout"].default),
        "max_size": int(fields["ws_max_message_bytes"].default),
    }


def baseline_server(
    name: str,
    kind: str,
    workdir: Path,
    cpus: set[int] | None,
    *,
    redis_url: str | None = None,
    channel: str | None = None,
) -> ServerProcess:
    port = free_port()
    defaults = ws_defaults()
    argv = [
        sys.executable,
        str(BASELINE_APP),
        "--kind",
        kind,
        "--port",
        str(port),
        "--ping-interval",
        str(defaults["ping_interval"]),
        "--ping-timeout",
        str(defaults["ping_timeout"]),
        "--max-size",
        str(int(defaults["max_size"])),
    ]
    if redis_url and channel:
        argv += ["--redis-url", redis_url, "--channel", channel]
    env = {**clean_environment(), "PYTHONHASHSEED": "0"}
    return ServerProcess(name, argv, env, workdir, cpus, port)


# -- Spotik fixtures (REST) -----------------------------------------------------------------------------------------


def wav_bytes(seconds: float = 2.0, rate: int = 8000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(1)
        out.setframerate(rate)
        out.writeframes(bytes([128]) * int(seconds * rate))
    return buffer.getvalue()


@dataclass
class SpotikFixture:
    tokens: list[str]
    rooms: list[str]  # memory rooms
    latency_room: str
    track: str
    setup_s: float = 0.0
    rest_joins: int = 0


def expect(response: httpx2.Response, *statuses: int) -> dict[str, Any]:
    if response.status_code not in statuses:
        raise RuntimeError(
            f"{response.request.method} {response.request.url.path} → {response.status_code}: {response.text[:300]}"
        )
    body: dict[str, Any] = response.json()
    return body


async def spotik_setup(base_url: str, *, users: int, rooms: int, tag: str, concurrency: int = 16) -> SpotikFixture:
    """Users, rooms of which every user is a member, and a latency room holding one queued (idle) track."""
    started = time.monotonic()
    gate = asyncio.Semaphore(concurrency)
    limits = httpx2.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx2.AsyncClient(base_url=base_url, timeout=60, limits=limits, trust_env=False) as client:

        async def register(index: int) -> str:
            name = f"b{tag}u{index}"
            payload = {
                "username": name,
                "email": f"{name}@bench.example.com",
                "password": PASSWORD,
                "password_confirmation": PASSWORD,
            }
            async with gate:
                body = expect(await client.post("/api/auth/register", json=payload), 200, 201)
            return str(body["data"]["token"])

        tokens = list(await asyncio.gather(*(register(i) for i in range(users))))
        admin = {"Authorization": f"Bearer {tokens[0]}"}

        async def create_room(name: str) -> str:
            async with gate:
                body = expect(await client.post("/api/rooms", json={"name": name}, headers=admin), 200, 201)
            data = body["data"]
            return str((data.get("room") or data)["id"])

        room_ids = list(await asyncio.gather(*(create_room(f"bench {tag} {r}") for r in range(rooms))))
        latency_room = await create_room(f"bench {tag} latency")

        async def join(room_id: str, token: str) -> None:
            async with gate:
                expect(
                    await client.post(f"/api/rooms/{room_id}/join", headers={"Authorization": f"Bearer {token}"}),
                    200,
                    201,
                )

        joins = [(room_id, token) for room_id in [*room_ids, latency_room] for token in tokens[1:]]
        await asyncio.gather(*(join(room_id, token) for room_id, token in joins))
        files = {"audio_file": ("bench.wav", wav_bytes(), "audio/wav")}
        body = expect(await client.post(f"/api/rooms/{latency_room}/tracks", files=files, headers=admin), 200, 201)
        track = str((body.get("track") or body.get("data", {}).get("track") or body["data"])["id"])
        # The upload starts playback in an idle room; stop it so that no playback event crosses the measurements.
        expect(await client.post(f"/api/rooms/{latency_room}/playback/stop", headers=admin), 200)
    return SpotikFixture(tokens, room_ids, latency_room, track, round(time.monotonic() - started, 1), len(joins))


async def await_text(ws: ClientConnection, needle: str) -> None:
    while True:
        message = await ws.recv()
        if isinstance(message, str) and needle in message:
            return


async def probe_spotik(server: ServerProcess, fixture: SpotikFixture, count: int = 20) -> dict[str, Any]:
    """Single requests one at a time, nothing else running: what one vote, one room read, one socket join cost on
    an idle server (the floor under the latency figures and the reason for the open times)."""
    timings: dict[str, list[float]] = {}
    room, track = fixture.latency_room, fixture.track
    headers = {"Authorization": f"Bearer {fixture.tokens[0]}"}
    async with httpx2.AsyncClient(base_url=server.base_url, headers=headers, timeout=30, trust_env=False) as client:
        requests = [
            ("GET /api/ping", "GET", "/api/ping"),
            ("GET /api/auth/me", "GET", "/api/auth/me"),
            (f"GET /api/rooms/{{room}} ({len(fixture.tokens)} members)", "GET", f"/api/rooms/{room}"),
            ("POST vote", "POST", f"/api/rooms/{room}/tracks/{track}/vote"),
            ("DELETE vote", "DELETE", f"/api/rooms/{room}/tracks/{track}/vote"),
        ]
        await client.get("/api/ping")
        for _ in range(count):
            for name, method, path in requests:
                started = time.monotonic()
                response = await client.request(method, path)
                timings.setdefault(name, []).append((time.monotonic() - started) * 1000)
                expect(response, 200)
    sockets: list[ClientConnection] = []
    drains: list[asyncio.Task[None]] = []

    async def drain(ws: ClientConnection) -> None:  # presence frames keep coming: read them
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    try:
        for index in range(count):
            token = fixture.tokens[index % len(fixture.tokens)]
            started = time.monotonic()
            ws = await connect(f"{server.ws_url}?token={token}", compression=None, proxy=None, ping_interval=None)
            sockets.append(ws)
            await await_text(ws, SPOTIK_HELLO)
            connected = time.monotonic()
            await ws.send(json.dumps({"type": "join_room", "data": {"room_id": room}}))
            await await_text(ws, SPOTIK_JOINED)
            drains.append(asyncio.get_running_loop().create_task(drain(ws)))
            timings.setdefault("WebSocket connect + authenticate", []).append((connected - started) * 1000)
            timings.setdefault(f"WebSocket join_room ({len(fixture.tokens)} members)", []).append(
                (time.monotonic() - connected) * 1000
            )
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await asyncio.gather(*drains, return_exceptions=True)
    return {name: distribution(values) for name, values in timings.items()}


# -- measurements -------------------------------------------------------------------------------------------------


@dataclass
class Target:
    """How to reach one app: the frame that greets a socket, the one that answers its join, and the sockets' URLs
    and join messages (socket numbers decide user and room)."""

    name: str
    hello: str | None
    joined: str
    connect_items: Callable[[ServerProcess, int, int], list[tuple[str, str]]]  # (server, first, count)
    heap: Callable[[ServerProcess], Awaitable[dict[str, Any]]] | None = None  # the server's live-memory figures


async def settled_rss(
    server: ServerProcess, *, interval: float = 0.5, window: int = 4, max_wait: float = 45.0, min_wait: float = 0.0
) -> dict[str, Any]:
    """RSS once it is stable over ``window`` samples (within 1 % or 512 KiB) and the server is idle (< 10 % of a
    CPU), at the earliest after ``min_wait``, bounded by ``max_wait``."""
    samples: list[int] = []
    busy: list[float] = []
    started = time.monotonic()
    cpu = server.cpu_seconds()
    while True:
        await asyncio.sleep(interval)
        now_cpu = server.cpu_seconds()
        busy.append((now_cpu - cpu) / interval)
        cpu = now_cpu
        samples.append(server.rss())
        recent, recent_busy = samples[-window:], busy[-window:]
        waited = time.monotonic() - started
        stable = (
            waited >= min_wait
            and len(recent) == window
            and max(recent) - min(recent) <= max(0.01 * max(recent), 512 * KIB)
            and max(recent_busy) < 0.10
        )
        if stable or waited >= max_wait:
            return {"rss": samples[-1], "settled": stable, "waited_s": round(waited, 1)}


def split(count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` items over ``parts`` workers: (offset, size) each."""
    base, extra = divmod(count, parts)
    ranges, offset = [], 0
    for index in range(parts):
        size = base + (1 if index < extra else 0)
        ranges.append((offset, size))
        offset += size
    return ranges


async def open_sockets(
    workers: Workers,
    target: Target,
    servers: list[ServerProcess],
    first: int,
    count: int,
    args: argparse.Namespace,
    addresses: SourceAddresses,
) -> dict[str, Any]:
    """Open sockets ``first … first+count-1`` (global numbering: decides user and room), half per client process;
    client process i connects to ``servers[i % len(servers)]``."""
    calls = []
    for index, (offset, size) in enumerate(split(count, len(workers))):
        server = servers[index % len(servers)]
        items = target.connect_items(server, first + offset, size)
        calls.append(
            workers.call(
                index,
                "open",
                items=items,
                local_addr=addresses.take(),
                hello=target.hello,
                joined=target.joined,
                timeout=args.open_timeout,
                concurrency=args.concurrency,
            )
        )
    replies = await asyncio.gather(*calls)
    failures: Counter[str] = Counter()
    for reply in replies:
        failures.update(reply["failures"])
    return {
        "requested": count,
        "ok": sum(r["ok"] for r in replies),
        "failed": sum(r["failed"] for r in replies),
        "failures": dict(failures),
        "elapsed_s": max(r["elapsed_s"] for r in replies),
        "connect_ms": distribution([v for r in replies for v in r["connect_ms"]]),
        "join_ms": distribution([v for r in replies for v in r["join_ms"]]),
        "presence_frames": sum(r["presence_frames"] for r in replies),
    }


async def client_status(workers: Workers) -> dict[str, Any]:
    statuses = await workers.call_all("status")
    closes: Counter[str] = Counter()
    for status in statuses:
        closes.update(status["unexpected_closes"])
    return {
        "alive": sum(s["alive"] for s in statuses),
        "frames": sum(s["frames"] for s in statuses),
        "presence_frames": sum(s["presence_frames"] for s in statuses),
        "unexpected_closes": dict(closes),
    }


async def memory_phase(
    workers: Workers,
    target: Target,
    server: ServerProcess,
    sizes: list[int],
    args: argparse.Namespace,
    addresses: SourceAddresses,
) -> dict[str, Any]:
    before = await settled_rss(server)
    rss0 = before["rss"]
    result: dict[str, Any] = {"rss0": rss0, "rss0_settle": before, "steps": []}
    if target.heap is not None:  # read after RSS: the request itself allocates a little
        result["heap0"] = await target.heap(server)
    say(f"[{target.name}] RSS before any socket: {rss0 / MIB:.1f} MiB" + describe_heap(result.get("heap0")))
    opened = 0
    for size in sizes:
        cpu_before = server.cpu_seconds()
        opening = await open_sockets(workers, target, [server], opened, size - opened, args, addresses)
        cpu_used = server.cpu_seconds() - cpu_before
        after = await settled_rss(server)
        status = await client_status(workers)
        alive = status["alive"]
        step = {
            "connections": size,
            "alive": alive,
            "open": opening,
            "server_cpu_s": round(cpu_used, 2),
            "server_cpu_ms_per_connection": round(cpu_used * 1000 / max(1, size - opened), 3),
            "rss": after["rss"],
            "settle": after,
            "kib_per_connection": round((after["rss"] - rss0) / KIB / alive, 2) if alive else None,
            "server_fds": server.ps.num_fds(),
            "unexpected_closes": status["unexpected_closes"],
        }
        result["steps"].append(step)
        say(
            f"[{target.name}] {alive:>6} open ({opening['failed']} failed, {opening['elapsed_s']:.1f} s, "
            f"join p50 {_num(opening['join_ms'].get('p50'))} ms, "
            f"server {step['server_cpu_ms_per_connection']:.2f} CPU-ms/conn): "
            f"RSS {after['rss'] / MIB:.1f} MiB, {step['kib_per_connection']} KiB/conn"
            + ("" if after["settled"] else " (not settled)")
        )
        if opening["failures"]:
            say(f"[{target.name}] failures: {opening['failures']}")
        opened = size
    closing = await workers.call_all("close_all", concurrency=args.concurrency * 2)
    gone = await settled_rss(server, min_wait=CLOSED_SETTLE_S)
    result["close_elapsed_s"] = max(c["elapsed_s"] for c in closing)
    result["rss_after_close"] = gone["rss"]
    result["rss_after_close_settle"] = gone
    result["rss_return"] = round((gone["rss"] - rss0) / rss0, 4)
    if target.heap is not None:
        result["heap_after_close"] = await target.heap(server)
        result["heap_return"] = heap_return(result["heap0"], result["heap_after_close"])
    say(
        f"[{target.name}] all closed: RSS {gone['rss'] / MIB:.1f} MiB ({result['rss_return'] * 100:+.1f} % vs start)"
        + describe_heap(result.get("heap_after_close"), result.get("heap_return"))
    )
    # More cycles (--cycles): the largest size at once, then all closed again. RSS that comes back to the same level
    # every cycle is memory the allocator keeps for reuse; RSS that keeps climbing is a leak.
    result["cycles"] = [{"cycle": 1, "rss_open": result["steps"][-1]["rss"], "rss_closed": gone["rss"]}]
    for cycle in range(2, args.cycles + 1):
        opening = await open_sockets(workers, target, [server], 0, sizes[-1], args, addresses)
        held = await settled_rss(server)
        await workers.call_all("close_all", concurrency=args.concurrency * 2)
        closed = await settled_rss(server, min_wait=CLOSED_SETTLE_S)
        result["cycles"].append(
            {"cycle": cycle, "opened": opening["ok"], "rss_open": held["rss"], "rss_closed": closed["rss"]}
        )
        if target.heap is not None:
            result["cycles"][-1]["heap_return"] = heap_return(result["heap0"], await target.heap(server))
        say(
            f"[{target.name}] cycle {cycle}: {opening['ok']} open → RSS {held['rss'] / MIB:.1f} MiB; all closed → "
            f"{closed['rss'] / MIB:.1f} MiB ({(closed['rss'] - rss0) / rss0 * 100:+.1f} % vs start)"
        )
    if len(result["cycles"]) > 1:  # the steady state: the last cycle's closed RSS against the first one's
        first, last = result["cycles"][0]["rss_closed"], result["cycles"][-1]["rss_closed"]
        result["rss_return_warm"] = round((last - first) / first, 4)
    return result


def heap_return(start: dict[str, Any], now: dict[str, Any]) -> dict[str, float | None]:
    """Each live-memory figure now against the start, as a fraction (+0.02 = 2 % more)."""
    return {
        key: None
        if start.get(key) in (None, 0) or now.get(key) is None
        else round((now[key] - start[key]) / start[key], 4)
        for key in ("python_blocks", "malloc_in_use_bytes")
    }


def describe_heap(heap: dict[str, Any] | None, returned: dict[str, float | None] | None = None) -> str:
    if heap is None:
        return ""
    blocks, in_use = heap.get("python_blocks"), heap.get("malloc_in_use_bytes")
    parts = [f"{blocks:,} Python blocks"] if blocks is not None else []
    parts += [f"malloc {in_use / MIB:.1f} MiB in use"] if in_use is not None else []
    changes = [f"{k} {v * 100:+.1f} %" for k, v in (returned or {}).items() if v is not None]
    return f"; live: {', '.join(parts)}" + (f" ({', '.join(changes)} vs start)" if changes else "")


Trigger = Callable[[int], Awaitable[tuple[float, int, float]]]  # round → (t0, HTTP status, response ms)
Needles = Callable[[int], tuple[str, list[str]]]  # round → (kind of round, substrings of its frame)
MakeTrigger = Callable[[], tuple[Trigger, Needles, Callable[[], Awaitable[None]]]]


async def run_rounds(
    workers: Workers,
    trigger: Trigger,
    plan: list[tuple[str, list[str]]],
    warmup: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    replies = await workers.call_all("rounds", needles=[needles for _, needles in plan])
    expected = [r["expected"] for r in replies]
    client_cpu = [r["cpu"] for r in replies]
    active = [i for i, n in enumerate(expected) if n > 0]
    measured: list[dict[str, Any]] = []
    incomplete = 0
    http_errors: Counter[int] = Counter()
    for index, (kind, _) in enumerate(plan):
        t0, status, response_ms = await trigger(index)
        if status >= 400:
            http_errors[status] += 1
        done: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + args.round_timeout
        for worker in active:
            while worker not in done:
                remaining = deadline - time.monotonic()
                try:
                    event = await asyncio.wait_for(workers.events[worker].get(), max(0.001, remaining))
                except TimeoutError:
                    await workers.call(worker, "abort_round", index=index)
                    deadline = time.monotonic() + 5.0  # its partial count is on the way
                    continue
                if event["index"] == index:
                    done[worker] = event
        count = sum(e["count"] for e in done.values())
        lasts = [e["last"] for e in done.values() if e["last"] is not None]
        handled = [e["last_handled"] for e in done.values() if e["last_handled"] is not None]
        firsts = [e["first"] for e in done.values() if e["first"] is not None]
        cpu_ms = sum((e["cpu"] - client_cpu[w]) * 1000 for w, e in done.items())
        for worker, event in done.items():
            client_cpu[worker] = event["cpu"]
        complete = count == sum(expected)
        if not complete:
            incomplete += 1
        if index >= warmup:
            measured.append(
                {
                    "round": index - warmup,
                    "kind": kind,
                    "latency_ms": round((max(lasts) - t0) * 1000, 3) if complete and lasts else None,
                    "handled_ms": round((max(handled) - t0) * 1000, 3) if complete and handled else None,
                    "first_ms": round((min(firsts) - t0) * 1000, 3) if firsts else None,
                    "response_ms": round(response_ms, 3),
                    "client_cpu_ms": round(cpu_ms, 3),
                    "received": count,
                    "size": max((e["size"] for e in done.values()), default=0),
                }
            )
    await workers.call_all("stop_rounds")
    latencies = [m["latency_ms"] for m in measured if m["latency_ms"] is not None]
    return {
        "subscribers": sum(expected),
        "per_process": expected,
        "rounds": len(measured),
        "warmup_rounds": warmup,
        "incomplete_rounds": incomplete,
        "http_errors": dict(http_errors),
        "latency_ms": distribution(latencies),
        "handled_ms": distribution([m["handled_ms"] for m in measured if m["handled_ms"] is not None]),
        "first_subscriber_ms": distribution([m["first_ms"] for m in measured if m["first_ms"] is not None]),
        "response_ms": distribution([m["response_ms"] for m in measured]),
        "client_cpu_ms": distribution([m["client_cpu_ms"] for m in measured]),
        "by_kind": {
            kind: {
                "latency_ms": distribution(
                    [m["latency_ms"] for m in measured if m["kind"] == kind and m["latency_ms"] is not None]
                ),
                "first_subscriber_ms": distribution(
                    [m["first_ms"] for m in measured if m["kind"] == kind and m["first_ms"] is not None]
                ),
            }
            for kind in sorted({m["kind"] for m in measured})
        },
        "frame_bytes": max((m["size"] for m in measured), default=0),
        "samples": measured,
    }


async def latency_phase(
    workers: Workers,
    target: Target,
    servers: list[ServerProcess],
    subscribers: list[int],
    make_trigger: MakeTrigger,
    args: argparse.Namespace,
    addresses: SourceAddresses,
    label: str,
    gc_pauses: GcPauses | None = None,
) -> dict[str, Any]:
    """Subscribers open cumulatively (S₁, then up to S₂ …) and each size runs warm-up + measured rounds.
    ``gc_pauses``: the server's collections so far (Spotik's memory monitor), read before and after the rounds."""
    results: dict[str, Any] = {}
    opened = 0
    try:
        for size in subscribers:
            trigger, needles_for, close = make_trigger()
            opening = await open_sockets(workers, target, servers, opened, size - opened, args, addresses)
            opened = size
            status = await client_status(workers)
            if opening["failures"]:
                say(f"[{target.name} {label}] failures opening: {opening['failures']}")
            total = args.warmup_rounds + args.rounds
            try:
                plan = [needles_for(i) for i in range(total)]
                gc_before = await gc_pauses() if gc_pauses else None
                outcome = await run_rounds(workers, trigger, plan, args.warmup_rounds, args)
                if gc_pauses and gc_before is not None:
                    outcome["server_gc"] = gc_during(gc_before, await gc_pauses())
            finally:
                await close()
            outcome["open"] = opening
            outcome["alive"] = status["alive"]
            results[str(size)] = outcome
            lat = outcome["latency_ms"]
            say(
                f"[{target.name} {label}] {outcome['subscribers']:>5} subscribers: p50 {lat.get('p50', '-')} ms, "
                f"p99 {lat.get('p99', '-')} ms (first subscriber p50 {outcome['first_subscriber_ms'].get('p50', '-')}"
                f" ms, REST {outcome['response_ms'].get('p50', '-')} ms, client CPU "
                f"{outcome['client_cpu_ms'].get('p50', '-')} ms/round, {outcome['frame_bytes']} B frames"
                + (f", {outcome['incomplete_rounds']} incomplete rounds" if outcome["incomplete_rounds"] else "")
                + ")"
                + (
                    f"; server collections during the rounds: {describe_gc(outcome['server_gc'])}"
                    if "server_gc" in outcome
                    else ""
                )
            )
            if len(outcome["by_kind"]) > 1:
                say(
                    f"[{target.name} {label}] {outcome['subscribers']:>5} subscribers by round: "
                    + "; ".join(
                        f"{kind} p50 {v['latency_ms'].get('p50')} / p99 {v['latency_ms'].get('p99')} ms "
                        f"(first subscriber p50 {v['first_subscriber_ms'].get('p50')} ms)"
                        for kind, v in outcome["by_kind"].items()
                    )
                )
    finally:
        await workers.call_all("close_all", concurrency=args.concurrency * 2)
    return results


def spotik_target(fixture: SpotikFixture, room_size: int, memory: bool) -> Target:
    def items(server: ServerProcess, first: int, count: int) -> list[tuple[str, str]]:
        out = []
        for index in range(first, first + count):
            token = fixture.tokens[index % len(fixture.tokens)]
            room = fixture.rooms[index // room_size] if memory else fixture.latency_room
            out.append((f"{server.ws_url}?token={token}", json.dumps({"type": "join_room", "data": {"room_id": room}})))
        return out

    async def heap(server: ServerProcess) -> dict[str, Any]:
        figures: dict[str, Any] = (await spotik_monitor(server, fixture))["heap"]
        return figures

    return Target("spotik", SPOTIK_HELLO, SPOTIK_JOINED, items, heap)


async def spotik_monitor(server: ServerProcess, fixture: SpotikFixture) -> dict[str, Any]:
    """The server's memory monitor status, from the dashboard."""
    headers = {"Authorization": f"Bearer {fixture.tokens[0]}"}
    async with httpx2.AsyncClient(base_url=server.base_url, headers=headers, timeout=30, trust_env=False) as c:
        body = expect(await c.get("/api/performance/dashboard"), 200)
    monitor: dict[str, Any] = body["data"]["memory"]["monitor"]
    return monitor


def baseline_target(name: str) -> Target:
    def items(server: ServerProcess, first: int, count: int) -> list[tuple[str, str]]:
        return [(server.ws_url, BASELINE_JOIN)] * count

    return Target(name, None, BASELINE_JOINED, items)


GcPauses = Callable[[], Awaitable[list[dict[str, Any]]]]


def spotik_gc_pauses(server: ServerProcess, fixture: SpotikFixture) -> GcPauses:
    """The server's garbage collections so far, by generation (count, total ms): the memory monitor times every
    collection, the interpreter's automatic ones included, so a collector pause inside the rounds shows here."""

    async def fetch() -> list[dict[str, Any]]:
        pauses: list[dict[str, Any]] = (await spotik_monitor(server, fixture))["gc_pauses"]
        return pauses

    return fetch


def gc_during(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "generation": a["generation"],
            "count": a["count"] - b["count"],
            "total_ms": round(a["total_ms"] - b["total_ms"], 2),
        }
        for b, a in zip(before, after, strict=True)
    ]


def describe_gc(during: list[dict[str, Any]]) -> str:
    return ", ".join(f"gen{g['generation']} {g['count']} ({g['total_ms']:.1f} ms)" for g in during)


def spotik_vote_trigger(server: ServerProcess, fixture: SpotikFixture) -> MakeTrigger:
    """Vote, then unvote, alternately (the room's admin, user 0): ``POST`` publishes ``track_voted``, ``DELETE``
    publishes ``track_voted`` then ``track_unvoted`` (the latter is the round's frame)."""

    def make() -> tuple[Trigger, Needles, Callable[[], Awaitable[None]]]:
        client = httpx2.AsyncClient(
            base_url=server.base_url,
            headers={"Authorization": f"Bearer {fixture.tokens[0]}"},
            timeout=30,
            trust_env=False,
        )
        path = f"/api/rooms/{fixture.latency_room}/tracks/{fixture.track}/vote"

        async def trigger(index: int) -> tuple[float, int, float]:
            method = "POST" if index % 2 == 0 else "DELETE"
            t0 = time.monotonic()
            response = await client.request(method, path)
            return t0, response.status_code, (time.monotonic() - t0) * 1000

        def needles(index: int) -> tuple[str, list[str]]:
            return ("vote", VOTE_NEEDLES) if index % 2 == 0 else ("unvote", UNVOTE_NEEDLES)

        return trigger, needles, client.aclose

    return make


def baseline_trigger(server: ServerProcess, frame_bytes: Callable[[], int], serial: list[int]) -> MakeTrigger:
    def make() -> tuple[Trigger, Needles, Callable[[], Awaitable[None]]]:
        client = httpx2.AsyncClient(base_url=server.base_url, timeout=30, trust_env=False)
        base = serial[0]
        size = frame_bytes()

        async def trigger(index: int) -> tuple[float, int, float]:
            serial[0] = max(serial[0], base + index + 1)
            t0 = time.monotonic()
            response = await client.post("/broadcast", params={"seq": base + index, "size": size})
            return t0, response.status_code, (time.monotonic() - t0) * 1000

        def needles(index: int) -> tuple[str, list[str]]:
            return "broadcast", [f'"seq":{base + index},']

        return trigger, needles, client.aclose

    return make


# -- shared infrastructure (PostgreSQL, Redis) ---------------------------------------------------------------------


async def pg_admin(statement: str, args: argparse.Namespace) -> None:
    """One statement on the server's ``postgres`` database (creating and dropping the run's database)."""
    import asyncpg

    connection = await asyncpg.connect(host=args.pg_host, port=args.pg_port, user=args.pg_user, database="postgres")
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def create_database(name: str, args: argparse.Namespace) -> None:
    await pg_admin(f'CREATE DATABASE "{name}"', args)


async def drop_database(name: str, args: argparse.Namespace) -> None:
    await pg_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)', args)


async def redis_subscribers(redis_url: str, channel: str, want: int, within: float = 30.0) -> int:
    """Wait until ``want`` instances are subscribed to ``channel`` (PUBSUB NUMSUB)."""
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    try:
        deadline = time.monotonic() + within
        while True:
            counts = dict(await client.pubsub_numsub(channel))
            count = int(next(iter(counts.values()), 0))
            if count >= want or time.monotonic() > deadline:
                return count
            await asyncio.sleep(0.2)
    finally:
        await client.aclose()


async def delete_redis_keys(redis_url: str, prefix: str) -> int:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url)
    deleted = 0
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            deleted += int(await client.delete(*keys[start : start + 500]))
    finally:
        await client.aclose()
    return deleted


async def redis_available(redis_url: str) -> str | None:
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, socket_connect_timeout=2)
    try:
        await client.ping()
        return None
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    finally:
        await client.aclose()


# -- the run ------------------------------------------------------------------------------------------------------


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


async def phase_spotik(run: Run, workers: Workers) -> None:
    args = run.args
    section = run.results.setdefault("spotik", {})
    secret = secrets.token_urlsafe(48)
    server = run.start(spotik_server("spotik", run.workdir, run.server_cpus, secret), "/api/ping")
    try:
        started = time.monotonic()
        rooms = math.ceil(max(args.sizes) / args.room_size) if args.sizes else 0
        fixture = await spotik_setup(server.base_url, users=args.users, rooms=rooms, tag=run.tag)
        section["setup"] = {"users": args.users, "rooms": rooms, "rest_joins": fixture.rest_joins, "s": fixture.setup_s}
        say(
            f"[spotik] setup: {args.users} users, {rooms} rooms, {fixture.rest_joins} REST joins in {fixture.setup_s} s"
        )
        if args.sizes:
            target = spotik_target(fixture, args.room_size, memory=True)
            try:
                section["memory"] = await memory_phase(workers, target, server, args.sizes, args, run.addresses)
            except Exception as exc:
                run.record_failure("spotik memory", exc, [server])
                await workers.call_all("close_all", concurrency=args.concurrency * 2)
        try:
            section["probe"] = await probe_spotik(server, fixture)
            say(
                "[spotik] one request at a time (p50 ms): "
                + ", ".join(f"{name} {d.get('p50')}" for name, d in section["probe"].items())
            )
        except Exception as exc:
            run.record_failure("spotik probe", exc, [server])
        if args.subscribers:
            target = spotik_target(fixture, args.room_size, memory=False)
            try:
                section["latency"] = await latency_phase(
                    workers,
                    target,
                    [server],
                    args.subscribers,
                    spotik_vote_trigger(server, fixture),
                    args,
                    run.addresses,
                    "1 instance",
                    spotik_gc_pauses(server, fixture),
                )
            except Exception as exc:
                run.record_failure("spotik latency", exc, [server])
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
            server = spotik_server(
                name, run.workdir, run.server_cpus, secret, database_url=url, redis_url=args.redis_url, prefix=prefix
            )
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
            try:
                section["memory"] = await memory_phase(workers, target, server, args.sizes, args, run.addresses)
            except Exception as exc:
                run.record_failure("baseline memory", exc, [server])
                await workers.call_all("close_all", concurrency=args.concurrency * 2)
        if args.subscribers:
            try:
                section["latency"] = await latency_phase(
                    workers,
                    target,
                    [server],
                    args.subscribers,
                    baseline_trigger(server, lambda: spotik_frame_bytes(run), run.baseline_serial),
                    args,
                    run.addresses,
                    "1 instance",
                )
            except Exception as exc:
                run.record_failure("baseline latency", exc, [server])
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


# -- report -------------------------------------------------------------------------------------------------------


def _get(data: dict[str, Any], *path: Any) -> Any:
    for key in path:
        if not isinstance(data, dict) or key not in data:
            return None
        data = data[key]
    return data


def memory_step(results: dict[str, Any], app: str, size: int) -> dict[str, Any] | None:
    steps = _get(results, app, "memory", "steps") or []
    return next((s for s in steps if s["connections"] == size), None)


def _num(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:,.{digits}f}"


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
                else f"{_num(p99, 2)} ms" + (f" ({incomplete} incomplete rounds)" if incomplete else "") + shortfall,
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
        lines.append(
            f"| RSS per idle joined connection, {size:,} (KiB) | {_num(a, 2)} | {_num(b, 2)} | {_ratio(a, b)} |"
        )
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
                f"| {_num(a.get('p50'), 2)} / {_num(a.get('p99'), 2)} "
                f"| {_num(b.get('p50'), 2)} / {_num(b.get('p99'), 2)} "
                f"| {_ratio(a.get('p50'), b.get('p50'))} / {_ratio(a.get('p99'), b.get('p99'))} |"
            )
    bare = memory_step(results, "websockets", args.bare_size) if args.bare_size else None
    if bare is not None:
        spotik = memory_step(results, "spotik", args.bare_size)
        a = spotik["kib_per_connection"] if spotik else None
        lines.append(
            f"| bare `websockets` echo server, RSS per idle connection, {args.bare_size:,} (KiB) | "
            f"{_num(a, 2)} (Spotik) | {_num(bare['kib_per_connection'], 2)} | {_ratio(a, bare['kib_per_connection'])} |"
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
                f"| {_num(opening['connect_ms'].get('p50'))} / {_num(opening['join_ms'].get('p50'))} "
                f"/ {_num(opening['join_ms'].get('p99'))} "
                f"| {step['server_cpu_ms_per_connection']:.2f} | {opening['presence_frames']:,} "
                f"| {step.get('server_fds', 0):,} "
                f"| {step['rss'] / MIB:.1f} | {_num(step['kib_per_connection'], 2)} "
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
                    f"| {outcome['rounds']} | {outcome['incomplete_rounds']} | {_num(lat.get('p50'), 2)} "
                    f"| {_num(lat.get('p90'), 2)} | {_num(lat.get('p99'), 2)} | {_num(lat.get('max'), 2)} "
                    f"| {_num(outcome['first_subscriber_ms'].get('p50'), 2)} "
                    f"| {_num(outcome['handled_ms'].get('p50'), 2)} / {_num(outcome['handled_ms'].get('p99'), 2)} "
                    f"| {_num(outcome['response_ms'].get('p50'), 2)} "
                    f"| {_num(outcome['client_cpu_ms'].get('p50'), 2)} | {outcome['frame_bytes']} |"
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
                            f"{kind}: p50 {_num(v['latency_ms'].get('p50'), 2)}, p99 "
                            f"{_num(v['latency_ms'].get('p99'), 2)}, first subscriber p50 "
                            f"{_num(v['first_subscriber_ms'].get('p50'), 2)}"
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


def busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def write_report(run: Run, started: float, busy_at_start: float) -> tuple[Path, Path, dict[str, Any]]:
    args = run.args
    usage = resource.getrusage(resource.RUSAGE_SELF)
    own = run.own_cpu_s + usage.ru_utime + usage.ru_stime
    foreign = max(0.0, busy_cpu_seconds() - busy_at_start - own)
    REPORTS.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    options = {k: v for k, v in vars(args).items() if not k.startswith("_")}
    report: dict[str, Any] = {
        "benchmark": "realtime",
        "at": stamp,
        "run_time_s": round(time.monotonic() - started, 1),
        "environment": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
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
    json_path = REPORTS / f"realtime-{stamp}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    md_path = REPORTS / f"realtime-{stamp}.md"
    md_path.write_text(markdown(args, report), encoding="utf-8")
    return json_path, md_path, report


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()] if text.strip() else []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int_list, default=None, help="idle connections, cumulative (1000,5000,10000)")
    parser.add_argument("--subscribers", type=int_list, default=None, help="subscribers of one room (100,1000)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds per latency figure (100)")
    parser.add_argument("--warmup-rounds", type=int, default=4, help="rounds before the measured ones (4)")
    parser.add_argument(
        "--cycles", type=int, default=None, help="open/close cycles of the largest size (leak check; 2, --quick 1)"
    )
    parser.add_argument("--bare-size", type=int, default=None, help="idle connections on the bare websockets server")
    parser.add_argument("--quick", action="store_true", help="sizes 200,500; subscribers 50,100; 20 rounds; 1 cycle")
    parser.add_argument("--users", type=int, default=100, help="Spotik users (socket i belongs to user i %% users)")
    parser.add_argument("--room-size", type=int, default=100, help="idle connections per room (100)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (2)")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight per client process (50)")
    parser.add_argument("--open-timeout", type=float, default=60.0, help="s for one connect + join (60)")
    parser.add_argument("--round-timeout", type=float, default=10.0, help="s before a round counts as incomplete")
    parser.add_argument("--frame-bytes", type=int, default=0, help="baseline frame size (default: Spotik's)")
    parser.add_argument("--apps", default="spotik,baseline", help="spotik, baseline or both (default)")
    parser.add_argument("--no-redis", dest="redis", action="store_false", help="skip the two-instance runs")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers and clients to CPUs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.sizes is None:
        args.sizes = [200, 500] if quick else [1000, 5000, 10000]
    if args.subscribers is None:
        args.subscribers = [50, 100] if quick else [100, 1000]
    if args.rounds is None:
        args.rounds = 20 if quick else 100
    if args.bare_size is None:
        args.bare_size = 200 if quick else 1000
    if args.cycles is None:
        args.cycles = 1 if quick else 2
    args.sizes = sorted(set(args.sizes))
    args.subscribers = sorted(set(args.subscribers))
    args.apps = [app.strip() for app in args.apps.split(",") if app.strip()]
    if args.warmup_rounds % 2:
        args.warmup_rounds += 1  # Spotik's rounds alternate vote / unvote: every run starts with no vote
    if args.rounds % 2:
        args.rounds += 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    server_cpus = client_cpus = None
    if args.pin and len(cpus) >= 2:
        # Servers on the first CPU (a single uvicorn process, like one worker in production); the client processes
        # and this driver on the others. PostgreSQL and Redis are not pinned.
        server_cpus, client_cpus = {cpus[0]}, set(cpus[1:])
        os.sched_setaffinity(0, client_cpus)
    print(
        f"realtime bench: sizes {args.sizes}, subscribers {args.subscribers}, {args.rounds} rounds, apps {args.apps}, "
        f"servers on CPUs {server_cpus or 'any'}, clients on CPUs {client_cpus or 'any'}",
        flush=True,
    )
    started = time.monotonic()
    busy_at_start = busy_cpu_seconds()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="spotik-bench-ws-") as workdir:
        run = Run(args, Path(workdir), server_cpus, client_cpus)

        async def guarded() -> None:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            await execute(run)

        try:
            asyncio.run(guarded())
        except (KeyboardInterrupt, asyncio.CancelledError):
            interrupted = True
            run.errors.append("interrupted")
            print("interrupted: servers and client processes stopped", file=sys.stderr)
        json_path, md_path, report = write_report(run, started, busy_at_start)
    print()
    print(md_path.read_text(encoding="utf-8"))
    print(f"reports: {json_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}")
    if interrupted:
        return 130
    missed = [c for c in report["targets"] if c["passed"] is False and not c.get("informational")]
    if args.strict and (missed or run.errors):
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
