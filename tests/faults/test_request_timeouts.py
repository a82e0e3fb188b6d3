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
