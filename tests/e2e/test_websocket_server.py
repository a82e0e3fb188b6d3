"""The real-time gateway in a real server process on loopback, with the ``websockets`` client.

Until the gateway is wired into ``create_app``/the lifespan/``spotik serve``, the process is started through this
module's launcher (``python -m tests.e2e.test_websocket_server <port>``), which runs ``spotik serve``'s steps with
the same wiring (``tests.integration.test_websocket_support.wire_realtime`` and ``RealtimeServer``). Once
``create_app`` serves ``/ws``, the tests run the real ``python -m spotik serve``.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from tests.e2e.server import ServerProcess, free_port
from tests.openapi_contract import live_async_contract_hooks, live_contract_hooks

pytestmark = pytest.mark.e2e
WAIT = 15.0
REPO = Path(__file__).resolve().parents[2]


def gateway_wired_in_app() -> bool:
    from spotik.app import create_app
    from spotik.settings import Settings
    from tests.integration.test_websocket_support import has_ws_route

    return has_ws_route(create_app(Settings(env="testing")))


class LauncherProcess(ServerProcess):
    """``ServerProcess`` started through this module's launcher instead of ``python -m spotik serve``."""

    def __init__(self, storage: Path) -> None:
        import queue

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_", "REDIS_", "JWT_"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "tests.e2e.test_websocket_server", str(self.port)],
            cwd=REPO,
            env={**base, "SPOTIK_ENV": "testing", "STORAGE_PATH": str(storage), "LOG_LEVEL": "info"},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "storage") if gateway_wired_in_app() else LauncherProcess(tmp_path / "storage")
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


def _launch(port: int) -> None:
    """``spotik serve`` with the gateway wired in the way the lead will wire it (see the module docstring)."""
    import uvicorn

    from spotik.app import create_app
    from spotik.cli import load_settings
    from spotik.db.migrate import migrate
    from spotik.logs import configure_logging
    from spotik.realtime.serving import RealtimeServer
    from tests.integration.test_websocket_support import wire_realtime

    settings = load_settings()
    configure_logging(settings)
    if settings.auto_migrate:
        print(f"spotik: {migrate(settings).describe()}", file=sys.stderr)
    config = uvicorn.Config(
        wire_realtime(create_app(settings), settings),
        host="127.0.0.1",
        port=port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_timeout),
        ws_per_message_deflate=False,
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=20.0,
        ws_max_size=65_536,
    )
    RealtimeServer(config).run()


if __name__ == "__main__":
    _launch(int(sys.argv[1]))
