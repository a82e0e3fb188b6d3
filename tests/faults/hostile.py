"""Hostile clients on raw sockets (asyncio streams): slow-loris heads and bodies, trickled uploads, idle
connections, and WebSockets that never read."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import struct
import time
from dataclasses import dataclass
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


async def trickle(port: int, kind: str, head: bytes, rest: bytes, pace: float, chunk: int, within: float) -> Cut:
    """Send ``head`` at once, then ``rest`` ``chunk`` bytes every ``pace`` seconds until the server ends it."""
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    answered = asyncio.ensure_future(_answer(reader, within))
    try:
        writer.write(head)
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
