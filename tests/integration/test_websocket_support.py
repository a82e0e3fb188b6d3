"""Test glue for the real-time gateway (no tests here): the app in process with WebSocket clients, or under a real
uvicorn in this event loop. ``overrides`` are settings (``ws_queue_size=3``) applied on top of the test's settings.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import httpx2
import orjson
import pytest
import uvicorn
from asgi_lifespan import LifespanManager
from httpx2.websockets import ASGIWebSocketTransport, AsyncWebSocketClient, AsyncWebSocketSession, WebSocketDisconnect

from spotik.app import create_app
from spotik.realtime.gateway import Realtime
from spotik.realtime.serving import RealtimeServer, WebSocketProtocol
from spotik.settings import Settings
from spotik.state import AppState
from tests.conftest import unavailable
from tests.helpers import Account, register
from tests.openapi_contract import contract_hooks

WAIT = 10.0  # the bound on every wait for an outcome


def with_overrides(settings: Settings, overrides: dict[str, Any]) -> Settings:
    """The settings with ``overrides`` applied as they are (unvalidated: tests may go below production minimums)."""
    unknown = set(overrides) - set(Settings.model_fields)
    assert not unknown, f"not settings: {unknown}"
    return settings.model_copy(update=overrides)


@dataclass
class RunningApp:
    app: Any  # the ASGI app with lifespan state
    state: AppState
    client: httpx2.AsyncClient

    @property
    def realtime(self) -> Realtime:
        return self.state.realtime

    def ws(
        self, token: str | None = None, **kwargs: Any
    ) -> contextlib.AbstractAsyncContextManager[AsyncWebSocketSession]:
        url = "http://testserver/ws" + (f"?token={token}" if token is not None else "")
        return AsyncWebSocketClient(self.client).connect(url, **kwargs)


@asynccontextmanager
async def running_app(settings: Settings, **overrides: Any) -> AsyncIterator[RunningApp]:
    app = create_app(with_overrides(settings, overrides))
    async with LifespanManager(app) as manager:
        state = app.services
        transport = ASGIWebSocketTransport(app=manager.app, initial_receive_timeout=WAIT)  # the wait for the accept
        hooks = contract_hooks(app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as client:
            yield RunningApp(manager.app, state, client)


async def receive(ws: AsyncWebSocketSession, within: float = WAIT) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(await ws.receive_text(timeout=within))
    return message


async def receive_type(ws: AsyncWebSocketSession, message_type: str, within: float = WAIT) -> dict[str, Any]:
    """The next message of ``message_type`` (others are skipped), within a bounded time."""
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no {message_type!r} message within {within}s")
        message = await receive(ws, remaining)
        if message["type"] == message_type:
            return message


async def receive_types(ws: AsyncWebSocketSession, *types: str, within: float = WAIT) -> dict[str, dict[str, Any]]:
    """The first message of each of ``types``, whatever their order (others are skipped), within a bounded time."""
    found: dict[str, dict[str, Any]] = {}
    deadline = time.monotonic() + within
    while len(found) < len(types):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"missing {set(types) - set(found)} after {within}s")
        message = await receive(ws, remaining)
        if message["type"] in types and message["type"] not in found:
            found[message["type"]] = message
    return found


async def closed_with(ws: AsyncWebSocketSession, within: float = WAIT) -> tuple[int, str, list[dict[str, Any]]]:
    """Read until the server closes; the close code, reason and the messages seen before it."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + within
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"socket not closed within {within}s; saw {[m['type'] for m in seen]}")
        try:
            seen.append(orjson.loads(await ws.receive_text(timeout=remaining)))
        except WebSocketDisconnect as exc:
            return exc.code, exc.reason or "", seen


async def wait_for(predicate: Callable[[], bool], within: float = WAIT, what: str = "condition") -> None:
    """Poll a condition on the server's state (the outcome, not the clock), failing after ``within`` seconds."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {within}s")
        await asyncio.sleep(0.01)


async def create_room(client: httpx2.AsyncClient, owner: Account, name: str = "Listening party") -> str:
    response = await client.post("/api/rooms", json={"name": name}, headers=owner.headers)
    assert response.status_code == 201, response.text
    room_id: str = response.json()["data"]["id"]
    return room_id


async def join(client: httpx2.AsyncClient, room_id: str, account: Account) -> None:
    response = await client.post(f"/api/rooms/{room_id}/join", headers=account.headers)
    assert response.status_code == 200, response.text


async def people(client: httpx2.AsyncClient, *names: str) -> list[Account]:
    return [await register(client, name) for name in names]


def send(message_type: str, **data: Any) -> str:
    return orjson.dumps({"type": message_type, "data": data}).decode()


# --- a real uvicorn server in this process (for back-pressure: the in-process transport buffers without bound) ---


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class LiveServer:
    server: RealtimeServer
    task: asyncio.Task[None]
    port: int
    state: AppState

    @property
    def http(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def realtime(self) -> Realtime:
        return self.state.realtime


@asynccontextmanager
async def live_server(
    settings: Settings,
    *,
    ws_ping_interval: float | None = None,
    ws_ping_timeout: float | None = None,
    ws_per_message_deflate: bool = False,
    **overrides: Any,
) -> AsyncIterator[LiveServer]:
    """uvicorn (websockets-sansio, as ``spotik serve`` runs it) on a free loopback port, in this event loop."""
    app = create_app(with_overrides(settings, overrides))
    port = free_port()
    config = uvicorn.Config(
        app,
        host="127.0.0.1",
        port=port,
        ws=WebSocketProtocol,
        ws_per_message_deflate=ws_per_message_deflate,
        ws_ping_interval=ws_ping_interval,
        ws_ping_timeout=ws_ping_timeout,
        log_config=None,
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    server = RealtimeServer(config, app.services.realtime)
    task = asyncio.get_running_loop().create_task(server.serve())
    await wait_for(lambda: server.started or task.done(), what="uvicorn start")
    if task.done():
        task.result()
    try:
        yield LiveServer(server, task, port, app.services)
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def redis_reachable(url: str) -> None:
    from redis.asyncio import Redis

    client = Redis.from_url(url, socket_connect_timeout=2)
    try:
        await client.ping()
    except Exception as exc:  # any failure means "not reachable"
        unavailable(f"Redis at {url}", exc)
    finally:
        await client.aclose()


__all__ = ["WAIT", "pytest"]
