"""One subscriber process of the real-time bench (``multiprocessing``, spawned; ``worker_main`` is its entry
point): it opens sockets on command, reads every socket from one reader callback with ``recvmsg`` and the
``websockets`` sans-I/O client protocol, and reports when each of its sockets has seen the frame of the current
round. Commands and replies go over a pipe (see ``spotikbench.clients.Workers``, the driver's side)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import signal
import socket
import struct
import sys
import time
import traceback
from collections import Counter, deque
from dataclasses import dataclass
from multiprocessing.connection import Connection as Pipe
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import InvalidHandshake
from websockets.frames import Frame, Opcode
from websockets.protocol import State
from websockets.uri import parse_uri

from spotikbench.tools import KIB, raise_nofile


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
