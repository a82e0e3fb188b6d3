"""Hostile clients on raw sockets (asyncio streams): slow-loris heads and bodies, trickled uploads, idle
connections, and WebSockets that never read.

They run in their own process (``python -m tests.faults.hostile``, driven by :class:`HostileProcess`), not in the
test's: a scenario that measures a normal client's latency while they run must not measure its own event loop
handling thousands of sockets (the pings the server sends them, the trickles' wake-ups, their start-up) as well.
The process reads a spec (JSON) on stdin and reports each phase as one JSON line on stdout.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class Cut:
    """When the server ended a hostile connection, and with what (``408``, ``eof``, ``reset`` …)."""

    kind: str
    seconds: float  # from the connection's start
    how: str


async def _answer(reader: asyncio.StreamReader, within: float) -> tuple[float, str]:
    """Read until the server closes; the moment it did and the status line (or ``eof``/``reset``)."""
    data = b""
    try:
        async with asyncio.timeout(within):
            while chunk := await reader.read(65536):
                data += chunk
    except (ConnectionResetError, BrokenPipeError):
        return time.monotonic(), "reset" if not data else data.split(b"\r\n", 1)[0].decode(errors="replace")
    except TimeoutError:
        return time.monotonic(), "still open"
    if data.startswith(b"HTTP/1.1 "):
        return time.monotonic(), data.split(b"\r\n", 1)[0].decode()
    return time.monotonic(), "eof"


async def trickle(
    port: int,
    kind: str,
    head: bytes,
    rest: bytes,
    pace: float,
    chunk: int,
    within: float,
    sent_head: Callable[[], None] = lambda: None,
) -> Cut:
    """Send ``head`` at once (then calls ``sent_head``), then ``rest`` ``chunk`` bytes every ``pace`` seconds until
    the server ends it."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = asyncio.ensure_future(_answer(reader, within))
    try:
        writer.write(head)
        await writer.drain()
        sent_head()
        for offset in range(0, len(rest), chunk):
            if answered.done():
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(answered), pace)
            if answered.done():
                break
            try:
                writer.write(rest[offset : offset + chunk])
                await writer.drain()
            except (ConnectionResetError, BrokenPipeError):
                break
        ended, how = await answered
    finally:
        writer.close()
    return Cut(kind, ended - started, how)


def mask_frame(payload: bytes) -> bytes:
    """A client text frame (clients must mask)."""
    mask = os.urandom(4)
    length = len(payload)
    head = bytes([0x81]) + (bytes([0x80 | length]) if length < 126 else bytes([0x80 | 126]) + struct.pack("!H", length))
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


async def read_frame(reader: asyncio.StreamReader) -> dict[str, Any]:
    first, second = await reader.readexactly(2)
    assert first & 0x0F == 1, f"not a text frame: {first:#x}"
    length = second & 0x7F
    if length == 126:
        (length,) = struct.unpack("!H", await reader.readexactly(2))
    elif length == 127:
        (length,) = struct.unpack("!Q", await reader.readexactly(8))
    message: dict[str, Any] = json.loads(await reader.readexactly(length))
    return message


@dataclass
class SilentSocket:
    """A WebSocket that, once open (and joined), never reads again."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    started: float
    accepted: bool

    @classmethod
    async def open(cls, port: int, token: str, room_id: str | None = None) -> SilentSocket:
        started = time.monotonic()
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        key = base64.b64encode(os.urandom(16)).decode()
        writer.write(
            (
                f"GET /ws?token={token} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
            ).encode()
        )
        response = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 30)
        assert response.startswith(b"HTTP/1.1 101"), response[:100]
        hello = await asyncio.wait_for(read_frame(reader), 30)
        accepted = hello["type"] == "connection_established"
        if accepted and room_id is not None:
            writer.write(mask_frame(json.dumps({"type": "join_room", "data": {"room_id": room_id}}).encode()))
            while (await asyncio.wait_for(read_frame(reader), 30))["type"] != "room_joined":
                pass
        return cls(reader, writer, started, accepted)

    async def cut(self, within: float) -> Cut:
        """Read now (for the first time since it opened): whether the server has closed it, and when we knew."""
        ended, how = await _answer(self.reader, within)
        self.writer.close()
        return Cut("silent websocket", ended - self.started, how)


# --- the hostile clients' own process ------------------------------------------------------------------------------


def _emit(event: str, **fields: Any) -> None:
    sys.stdout.write(json.dumps({"event": event, "at": time.monotonic(), **fields}) + "\n")
    sys.stdout.flush()


async def drive(spec: dict[str, Any]) -> None:
    """Runs the hostile clients of ``spec`` and reports each phase on stdout:

    ``sockets`` once the idle WebSockets (``idle_sockets`` of them, connected with ``tokens`` in turn, never joining)
    and the never-reading ones (one per ``reader_tokens``, joined to ``room_id``) are open: how many were refused;
    ``running`` once every trickled connection has sent its head; ``trickles`` once the server has ended them all,
    with their cuts; ``silent`` ``silent_after`` seconds after the sockets opened, with how each accepted socket ended.
    """
    port, tokens = spec["port"], spec["tokens"]
    silent: list[SilentSocket] = []
    for start in range(0, spec["idle_sockets"], 100):
        end = min(start + 100, spec["idle_sockets"])
        silent += await asyncio.gather(*(SilentSocket.open(port, tokens[i % len(tokens)]) for i in range(start, end)))
    readers = [await SilentSocket.open(port, token, spec["room_id"]) for token in spec["reader_tokens"]]
    opened = time.monotonic()
    sockets = silent + readers
    _emit("sockets", refused=sum(not s.accepted for s in sockets), accepted=sum(s.accepted for s in sockets))

    kinds = [(k, base64.b64decode(k["head"]), base64.b64decode(k["rest"])) for k in spec["trickles"]]
    total = sum(k["count"] for k, _, _ in kinds)
    heads_sent = 0

    def sent_head() -> None:
        nonlocal heads_sent
        heads_sent += 1
        if heads_sent == total:
            _emit("running", connections=total)

    cuts = await asyncio.gather(
        *(
            trickle(port, k["kind"], head, rest, k["pace"], k["chunk"], k["within"], sent_head)
            for k, head, rest in kinds
            for _ in range(k["count"])
        )
    )
    _emit("trickles", cuts=[asdict(cut) for cut in cuts])

    # the silent WebSockets: read for the first time once their pings have gone unanswered
    await asyncio.sleep(max(0.0, spec["silent_after"] - (time.monotonic() - opened)))
    socket_cuts = await asyncio.gather(*(s.cut(within=spec["silent_within"]) for s in sockets if s.accepted))
    for s in sockets:
        if not s.accepted:
            s.writer.close()
    _emit("silent", cuts=[asdict(cut) for cut in socket_cuts])


class HostileProcess:
    """The test's handle on ``python -m tests.faults.hostile``: its events as they come; its stderr in ``log``."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    async def start(cls, spec: dict[str, Any], log: Path) -> HostileProcess:
        with log.open("wb") as errors:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "tests.faults.hostile",
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=errors,
                cwd=Path(__file__).resolve().parents[2],
                limit=1 << 24,  # one line carries every cut
            )
        assert process.stdin is not None
        process.stdin.write(json.dumps(spec).encode())
        await process.stdin.drain()
        process.stdin.close()
        return cls(process, log)

    async def event(self, name: str, within: float) -> dict[str, Any]:
        """The next event, which must be ``name``, within ``within`` seconds."""
        assert self.process.stdout is not None
        async with asyncio.timeout(within):
            line = await self.process.stdout.readline()
        if not line:
            await self.process.wait()
            raise AssertionError(
                f"the hostile clients' process ended ({self.process.returncode}) before {name!r}:\n"
                + self.log.read_text(errors="replace")
            )
        found: dict[str, Any] = json.loads(line)
        assert found["event"] == name, (name, found["event"])
        return found

    async def finish(self, within: float) -> None:
        """Waits for the process to exit, which must be cleanly."""
        async with asyncio.timeout(within):
            code = await self.process.wait()
        assert code == 0, f"the hostile clients' process exited {code}:\n" + self.log.read_text(errors="replace")

    async def kill(self) -> None:
        """Ends the process if it still runs (a failed scenario's clean-up)."""
        if self.process.returncode is None:
            self.process.kill()
            await self.process.wait()


def cuts_of(event: dict[str, Any]) -> list[Cut]:
    return [Cut(**cut) for cut in event["cuts"]]


if __name__ == "__main__":
    asyncio.run(drive(json.load(sys.stdin)))
