"""The slow-client bounds of ``spotik serve`` (spotik.realtime.serving) leave well-behaved clients alone: a WebSocket
lives past HTTP_HEADER_TIMEOUT (its connection was handed over to the WebSocket protocol), and a kept-alive HTTP
connection whose requests arrive promptly is never cut, however long it lives."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.faults.conftest import ServerFactory
from tests.faults.load import Api, Listener, frame

pytestmark = [pytest.mark.e2e]
HEADER_TIMEOUT = 1.0


async def test_websockets_and_prompt_keep_alive_requests_outlive_the_header_timeout(servers: ServerFactory) -> None:
    server = servers(HTTP_HEADER_TIMEOUT=str(HEADER_TIMEOUT), HTTP_BODY_TIMEOUT="1")
    api = Api(server.base_url)
    try:
        account = await api.register("patient")
        listener = await Listener.open(server.ws_url, account, None)
        try:
            deadline = time.monotonic() + 3 * HEADER_TIMEOUT
            while time.monotonic() < deadline:  # one connection, kept alive, a request every half timeout
                assert (await api.client.get("/api/auth/me", headers=account.headers)).status_code == 200
                await asyncio.sleep(HEADER_TIMEOUT / 2)
            await listener.ws.send(frame("ping", client_time="late"))
            pong = await listener.wait_for(lambda m: m["type"] == "pong", 5, "a pong after three header timeouts")
            assert pong["data"]["client_time"] == "late" and listener.open_now
        finally:
            await listener.close()
    finally:
        await api.aclose()
    assert "slow client cut off" not in server.output()


async def test_an_idle_kept_alive_connection_is_closed_after_the_keep_alive_timeout(servers: ServerFactory) -> None:
    """The server, not the client, decides how long an idle connection lives: HTTP_KEEP_ALIVE_TIMEOUT, not
    uvicorn's 5 s (which equals httpx's own and loses a request to the race between the two)."""
    keep_alive = 2
    server = servers(HTTP_KEEP_ALIVE_TIMEOUT=str(keep_alive))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
    try:
        writer.write(b"GET /api/ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)
        assert head.startswith(b"HTTP/1.1 200") and b"connection: close" not in head.lower()
        length = int(next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:])
        await reader.readexactly(length)
        answered = time.monotonic()
        assert await asyncio.wait_for(reader.read(1), keep_alive + 5) == b""  # the server closed it
        idle = time.monotonic() - answered
    finally:
        writer.close()
    assert keep_alive - 0.1 <= idle < keep_alive + 2, idle
