"""Fan-out across instances: two app instances sharing PostgreSQL and Redis (each with its own gateway), real
WebSocket clients on each; then a Redis of our own that we kill and restart (outage and recovery)."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from httpx2.websockets import AsyncWebSocketSession
from structlog.testing import capture_logs

from spotik.settings import Settings
from tests.conftest import make_settings, pg_url, reset_postgres
from tests.e2e.server import free_port
from tests.helpers import Account, register
from tests.integration.test_websocket_support import (
    RunningApp,
    receive,
    receive_type,
    redis_reachable,
    running_app,
    send,
    wait_for,
)

pytestmark = [pytest.mark.redis, pytest.mark.postgres]
REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def shared_settings(postgres_database: str, tmp_path: Path) -> Settings:
    asyncio.run(reset_postgres(postgres_database))
    return make_settings(pg_url(postgres_database), tmp_path / "storage")


def prefix() -> str:
    return f"spotik-test:{uuid.uuid4().hex[:12]}"  # a channel and keys of this test's own


@asynccontextmanager
async def two_instances(settings: Settings, redis_url: str, **overrides: Any) -> AsyncIterator[list[RunningApp]]:
    channel = prefix()
    async with AsyncExitStack() as stack:
        apps = [
            await stack.enter_async_context(
                running_app(settings, redis_url=redis_url, ws_redis_prefix=channel, **overrides)
            )
            for _ in range(2)
        ]
        yield apps


async def socket_in_room(stack: AsyncExitStack, app: RunningApp, account: Account, room_id: str) -> Any:
    ws: AsyncWebSocketSession = await stack.enter_async_context(app.ws(account.token))
    await receive_type(ws, "connection_established")
    await ws.send_text(send("join_room", room_id=room_id))
    joined = await receive_type(ws, "room_joined")
    return ws, joined


async def setup(app: RunningApp) -> tuple[Account, Account, str]:
    admin = await register(app.client, "admin")
    member = await register(app.client, "member")
    response = await app.client.post("/api/rooms", json={"name": "Shared"}, headers=admin.headers)
    room_id: str = response.json()["data"]["id"]
    assert (await app.client.post(f"/api/rooms/{room_id}/join", headers=member.headers)).status_code == 200
    return admin, member, room_id


async def announcement_of(ws: AsyncWebSocketSession, message_type: str, user_id: str) -> dict[str, Any]:
    for _ in range(10):
        message = await receive_type(ws, message_type)
        if message["data"]["user"]["id"] == user_id:
            return message
    raise AssertionError(f"no {message_type} for {user_id}")


async def no_more(ws: AsyncWebSocketSession, message_type: str) -> None:
    """Nothing of ``message_type`` is pending: a ping's pong comes back first (the queue is FIFO per lane)."""
    await ws.send_text(send("ping", client_time="probe"))
    while True:
        message = await receive(ws)
        assert message["type"] != message_type, f"unexpected extra {message_type}"
        if message["type"] == "pong" and message["data"]["client_time"] == "probe":
            return


async def test_events_reach_clients_on_both_instances_exactly_once(shared_settings: Settings) -> None:
    await redis_reachable(REDIS_URL)
    async with two_instances(shared_settings, REDIS_URL) as (one, two), AsyncExitStack() as stack:
        assert await one.realtime.wait_ready(10) and await two.realtime.wait_ready(10)
        admin, member, room = await setup(one)
        admin_ws, _ = await socket_in_room(stack, one, admin, room)
        member_ws, joined = await socket_in_room(stack, two, member, room)
        # presence is correct across instances: the member's instance sees the admin's socket on the other one
        assert joined["data"]["websocket_connections"] == 2
        assert set(joined["data"]["online_users"]) == {admin.id, member.id}
        announced = await announcement_of(admin_ws, "user_connected_websocket", member.id)  # through Redis
        assert announced["data"]["user"]["id"] == member.id and announced["data"]["websocket_connections"] == 2

        # a REST change on instance one reaches both clients once; the same on instance two
        for app, name in ((one, "From one"), (two, "From two")):
            response = await app.client.put(f"/api/rooms/{room}", json={"name": name}, headers=admin.headers)
            assert response.status_code == 200
            for ws in (admin_ws, member_ws):
                event = await receive_type(ws, "room_updated")
                assert event["data"]["room"]["name"] == name and event["data"]["room_id"] == room
        for ws in (admin_ws, member_ws):
            await no_more(ws, "room_updated")
        assert one.realtime.broker.stats()["echoes_skipped"] >= 1

        await member_ws.close()
        gone = await receive_type(admin_ws, "user_disconnected_websocket")
        assert gone["data"]["user"]["id"] == member.id and gone["data"]["user_online"] is False
        assert gone["data"]["online_user_count"] == 1 and gone["data"]["websocket_connections"] == 1


async def test_presence_of_a_vanished_instance_expires(shared_settings: Settings) -> None:
    await redis_reachable(REDIS_URL)
    async with two_instances(shared_settings, REDIS_URL, ws_presence_ttl=3) as (one, two), AsyncExitStack() as stack:
        assert await one.realtime.wait_ready(10) and await two.realtime.wait_ready(10)
        admin, member, room = await setup(one)
        await socket_in_room(stack, one, admin, room)
        await socket_in_room(stack, two, member, room)
        assert set(await one.realtime.presence.online(room)) == {admin.id, member.id}
        # instance two dies without cleaning up (no stop): its heartbeat ends, its share expires
        two_presence = two.realtime.presence
        assert hasattr(two_presence, "_task") and two_presence._task is not None
        two_presence._task.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 15
        while set(await one.realtime.presence.online(room)) != {admin.id}:
            assert loop.time() < deadline, "the vanished instance's presence did not expire"
            await asyncio.sleep(0.2)


class RedisProcess:
    """A redis-server of this test's own, on a free port, that the test can kill and restart."""

    def __init__(self, binary: str) -> None:
        self.binary = binary
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.binary, "--port", str(self.port), "--save", "", "--appendonly", "no", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


@pytest.fixture
def private_redis() -> Iterator[RedisProcess]:
    binary = shutil.which("redis-server")
    if binary is None:
        from tests.conftest import unavailable

        unavailable("redis-server (binary)", FileNotFoundError("redis-server not on PATH"))
        raise AssertionError("unreachable")
    server = RedisProcess(binary)
    server.start()
    try:
        yield server
    finally:
        server.kill()


async def test_a_redis_outage_keeps_local_delivery_and_recovers(
    shared_settings: Settings, private_redis: RedisProcess
) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while True:  # bounded wait for our redis-server to accept connections
        try:
            await redis_reachable(private_redis.url)
            break
        except BaseException:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.05)
    with capture_logs() as logs:
        async with (
            two_instances(shared_settings, private_redis.url, ws_redis_reconnect_max=0.5) as (one, two),
            AsyncExitStack() as stack,
        ):
            assert await one.realtime.wait_ready(10) and await two.realtime.wait_ready(10)
            admin, member, room = await setup(one)
            admin_ws, _ = await socket_in_room(stack, one, admin, room)
            member_ws, _ = await socket_in_room(stack, two, member, room)
            await announcement_of(admin_ws, "user_connected_websocket", member.id)

            private_redis.kill()
            await wait_for(lambda: not one.realtime.link.up and not two.realtime.link.up, what="outage seen")  # type: ignore[union-attr]
            # instance one keeps serving its own clients: local delivery does not stop
            response = await one.client.put(f"/api/rooms/{room}", json={"name": "During"}, headers=admin.headers)
            assert response.status_code == 200
            assert (await receive_type(admin_ws, "room_updated"))["data"]["room"]["name"] == "During"
            await admin_ws.send_text(send("ping"))
            assert (await receive_type(admin_ws, "pong"))["type"] == "pong"
            assert one.realtime.broker.stats()["outages"] == 1

            private_redis.start()
            await wait_for(
                lambda: one.realtime.link.up and two.realtime.link.up,  # type: ignore[union-attr]
                within=20,
                what="recovery",
            )
            assert await one.realtime.wait_ready(10) and await two.realtime.wait_ready(10)
            # fan-out works again, both ways, and presence was re-published after the restart (empty Redis)
            response = await two.client.put(f"/api/rooms/{room}", json={"name": "After"}, headers=admin.headers)
            assert response.status_code == 200
            for ws in (admin_ws, member_ws):
                assert (await receive_type(ws, "room_updated"))["data"]["room"]["name"] == "After"
            assert set(await one.realtime.presence.online(room)) == {admin.id, member.id}
    events = [entry["event"] for entry in logs]
    assert events.count("redis unreachable: serving local clients only") == 2  # once per instance
    assert events.count("redis reachable again") == 2
