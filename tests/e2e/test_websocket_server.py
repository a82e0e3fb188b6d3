"""The real-time gateway in a real ``python -m spotik serve`` process on loopback, with the ``websockets`` client."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.server import ServerProcess
from tests.openapi_contract import live_async_contract_hooks, live_contract_hooks

pytestmark = pytest.mark.e2e
WAIT = 15.0
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "storage")
    try:
        process.wait_until_serving()
        yield process
    finally:
        process.stop()


def account(server: ServerProcess, name: str) -> dict[str, str]:
    with httpx2.Client(
        base_url=server.base_url, timeout=WAIT, event_hooks=live_contract_hooks(server.base_url)
    ) as client:
        body = {"username": name, "email": f"{name}@example.com", "password": "password-e2e"}
        response = client.post("/api/auth/register", json={**body, "password_confirmation": "password-e2e"})
        assert response.status_code == 201, response.text
        data = response.json()["data"]
        return {"id": data["user"]["id"], "token": data["token"]}


def room_of(server: ServerProcess, owner: dict[str, str]) -> str:
    with httpx2.Client(
        base_url=server.base_url, timeout=WAIT, event_hooks=live_contract_hooks(server.base_url)
    ) as client:
        response = client.post(
            "/api/rooms", json={"name": "E2E"}, headers={"Authorization": f"Bearer {owner['token']}"}
        )
        assert response.status_code == 201
        room_id: str = response.json()["data"]["id"]
        return room_id


async def next_of(ws: ClientConnection, message_type: str) -> dict[str, Any]:
    async with asyncio.timeout(WAIT):
        while True:
            message: dict[str, Any] = orjson.loads(await ws.recv())
            if message["type"] == message_type:
                return message


def ws_url(server: ServerProcess, token: str) -> str:
    return f"ws://127.0.0.1:{server.port}/ws?token={token}"


def test_join_a_room_and_receive_a_rest_change_over_a_real_socket(server: ServerProcess) -> None:
    owner = account(server, "owner")
    room = room_of(server, owner)

    async def scenario() -> None:
        async with connect(ws_url(server, owner["token"]), origin="http://127.0.0.1:3000") as ws:
            hello = await next_of(ws, "connection_established")
            assert hello["data"]["user"]["id"] == owner["id"]
            await ws.send(orjson.dumps({"type": "join_room", "data": {"room_id": room}}).decode())
            joined = await next_of(ws, "room_joined")
            assert joined["data"]["room"]["id"] == room
            await ws.send(orjson.dumps({"type": "ping", "data": {"client_time": 42}}).decode())
            assert (await next_of(ws, "pong"))["data"]["client_time"] == 42
            async with httpx2.AsyncClient(
                base_url=server.base_url, timeout=WAIT, event_hooks=live_async_contract_hooks(server.base_url)
            ) as http:
                headers = {"Authorization": f"Bearer {owner['token']}"}
                assert (await http.put(f"/api/rooms/{room}", json={"name": "Live"}, headers=headers)).status_code == 200
            event = await next_of(ws, "room_updated")
            assert event["data"]["room"]["name"] == "Live" and event["data"]["room_id"] == room

    asyncio.run(scenario())


def test_bad_token_and_bad_origin_get_their_close_codes(server: ServerProcess) -> None:
    owner = account(server, "owner")

    async def closed(url: str, **kwargs: Any) -> tuple[int, list[dict[str, Any]]]:
        seen: list[dict[str, Any]] = []
        async with connect(url, **kwargs) as ws:
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(WAIT):
                    while True:
                        seen.append(orjson.loads(await ws.recv()))
        assert info.value.rcvd is not None
        return info.value.rcvd.code, seen

    async def scenario() -> None:
        code, seen = await closed(ws_url(server, "garbage"))
        assert code == 4401 and seen[0]["data"]["error_code"] == "authentication_failed"
        code, seen = await closed(ws_url(server, owner["token"]), origin="http://evil.example")
        assert code == 4403 and seen[0]["data"]["error_code"] == "origin_not_allowed"
        # a frame over the limit (64 KiB) closes with 1009
        async with connect(ws_url(server, owner["token"]), max_size=None) as ws:
            await next_of(ws, "connection_established")
            await ws.send("x" * 70_000)
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(WAIT):
                    while True:
                        await ws.recv()
            assert info.value.rcvd is not None and info.value.rcvd.code == 1009

    asyncio.run(scenario())


def test_sigterm_closes_open_sockets_with_1001(server: ServerProcess) -> None:
    owner = account(server, "owner")
    room = room_of(server, owner)

    async def scenario() -> None:
        async with connect(ws_url(server, owner["token"])) as ws:
            await next_of(ws, "connection_established")
            await ws.send(orjson.dumps({"type": "join_room", "data": {"room_id": room}}).decode())
            await next_of(ws, "room_joined")
            server.process.send_signal(signal.SIGTERM)
            with pytest.raises(ConnectionClosed) as info:
                async with asyncio.timeout(WAIT):
                    while True:
                        await ws.recv()
            assert info.value.rcvd is not None
            assert (info.value.rcvd.code, info.value.rcvd.reason) == (1001, "server shutting down")

    asyncio.run(scenario())
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    server.wait_for_log("realtime stopped")
