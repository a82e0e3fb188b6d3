"""The gateway under a real uvicorn (websockets-sansio) on loopback, driven by the ``websockets`` client.

The in-process transport buffers without bound, so back-pressure, keepalive pings and uvicorn's shutdown order can
only be tested against the real server stack. The server runs in this event loop, so the tests can look at the
registry while the clients misbehave.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import sys
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from spotik.events import DomainEvent
from spotik.realtime import protocol
from spotik.realtime.connection import Connection
from spotik.settings import Settings
from tests.conftest import make_settings
from tests.helpers import Account, register
from tests.integration.test_websocket_support import WAIT, LiveServer, live_server, send, wait_for
from tests.openapi_contract import live_async_contract_hooks

pytestmark = pytest.mark.slow
BROADCASTS = 10_000
PADDING = "x" * 1000  # ~1 KB per message: 10,000 of them overflow any loopback socket buffer


@pytest.fixture
def sqlite_settings(sqlite_template: Path, tmp_path: Path) -> Settings:
    target = tmp_path / "spotik.sqlite3"
    shutil.copyfile(sqlite_template, target)
    return make_settings(f"sqlite:///{target}", tmp_path / "storage")


async def recv_json(ws: ClientConnection, within: float = WAIT) -> dict[str, Any]:
    async with asyncio.timeout(within):
        message: dict[str, Any] = orjson.loads(await ws.recv())
    return message


async def recv_type(ws: ClientConnection, message_type: str, within: float = WAIT) -> dict[str, Any]:
    async with asyncio.timeout(within):
        while True:
            message = await recv_json(ws, within)
            if message["type"] == message_type:
                return message


async def setup_room(server: LiveServer, names: list[str]) -> tuple[list[Account], str]:
    async with httpx2.AsyncClient(
        base_url=server.http, timeout=WAIT, event_hooks=live_async_contract_hooks(server.http)
    ) as http:
        accounts = [await register(http, name) for name in names]
        response = await http.post("/api/rooms", json={"name": "Live"}, headers=accounts[0].headers)
        room_id: str = response.json()["data"]["id"]
        for account in accounts[1:]:
            assert (await http.post(f"/api/rooms/{room_id}/join", headers=account.headers)).status_code == 200
    return accounts, room_id


@asynccontextmanager
async def socket_in_room(
    server: LiveServer, account: Account, room_id: str, *, stuck: bool = False, **kwargs: Any
) -> AsyncIterator[ClientConnection]:
    """A joined client. ``stuck``: a tiny receive buffer and a one-frame client queue, so that once it stops
    calling ``recv`` the server's writes back up within a few kilobytes."""
    sock = None
    if stuck:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", server.port))
        kwargs |= {"sock": sock, "max_queue": 1}
    async with connect(f"{server.ws_url}?token={account.token}", ping_interval=None, **kwargs) as ws:
        await recv_type(ws, "connection_established")
        await ws.send(send("join_room", room_id=room_id))
        await recv_type(ws, "room_joined")
        yield ws


def connection_of(server: LiveServer, account: Account) -> Connection:
    (found,) = [c for c in server.realtime.registry if c.user_id == account.id]
    return found


async def publish_votes(server: LiveServer, room_id: str, count: int, start: int = 0) -> float:
    started = time.perf_counter()
    room = uuid.UUID(room_id)
    for index in range(start, start + count):
        await server.state.events.publish(DomainEvent("track_voted", room, {"n": index, "padding": PADDING}))
    return time.perf_counter() - started


async def collect_votes(ws: ClientConnection, count: int) -> list[int]:
    seen: list[int] = []
    async with asyncio.timeout(120):
        while len(seen) < count:
            message = orjson.loads(await ws.recv())
            if message["type"] == "track_voted":
                seen.append(message["data"]["n"])
    return seen


async def test_a_stuck_reader_never_slows_the_broadcaster_or_the_others(sqlite_settings: Settings) -> None:
    async with live_server(sqlite_settings, ws_send_timeout=300) as server:
        accounts, room_id = await setup_room(server, ["stuck", "fast1", "fast2", "fast3"])
        stuck_account, fast_accounts = accounts[0], accounts[1:]
        async with AsyncExitStack() as stack:
            stuck_ws = await stack.enter_async_context(socket_in_room(server, stuck_account, room_id, stuck=True))
            fast = [await stack.enter_async_context(socket_in_room(server, a, room_id)) for a in fast_accounts]
            stuck = connection_of(server, stuck_account)
            await wait_for(lambda: all(c.queue_depth == 0 and not c.writing for c in server.realtime.registry))
            out_before, dropped_before = stuck.messages_out, stuck.dropped
            readers = [asyncio.create_task(collect_votes(ws, BROADCASTS)) for ws in fast]

            depths: list[int] = []

            async def watch() -> None:
                while True:
                    depths.append(stuck.normal_depth)
                    await asyncio.sleep(0.005)

            watcher = asyncio.create_task(watch())
            elapsed = await publish_votes(server, room_id, BROADCASTS)
            watcher.cancel()
            received = await asyncio.gather(*readers)

            # the broadcaster finished while the stuck client was still stuck, and quickly
            assert stuck.writing  # its writer is still waiting on the socket the client does not read
            assert elapsed < 60, f"broadcasting {BROADCASTS} messages took {elapsed:.1f}s"
            # every other client got every message, in order
            for seen in received:
                assert seen == list(range(BROADCASTS))
            # the stuck connection's queue stayed bounded and the overflow was counted
            assert max(depths) <= 100 and stuck.max_depth <= 100
            assert stuck.queue_depth <= 100
            dropped = stuck.dropped - dropped_before
            assert dropped > 0
            sent = stuck.messages_out - out_before
            assert 0 < stuck.in_flight <= 10  # one batch at most is taken and waiting on the socket
            assert sent + dropped + stuck.queue_depth + stuck.in_flight == BROADCASTS
            assert not stuck.dead and server.realtime.registry.get(stuck.id) is stuck

            # once it reads again it gets a gap-free tail: increasing numbers ending with the newest message
            tail = await collect_votes(stuck_ws, sent + stuck.queue_depth + stuck.in_flight)
            assert tail == sorted(tail) and tail[-1] == BROADCASTS - 1
            print(  # the figures, for the report
                f"\nbroadcast {BROADCASTS} in {elapsed:.2f}s; stuck client: sent {sent}, dropped {dropped}, "
                f"max depth {stuck.max_depth}"
            )


@pytest.mark.parametrize("deflate", [False, True], ids=["plain", "permessage-deflate"])
async def test_a_broadcast_is_written_to_idle_sockets_at_once_unless_an_extension_rewrites_frames(
    sqlite_settings: Settings, deflate: bool
) -> None:
    async with live_server(sqlite_settings, ws_per_message_deflate=deflate) as server:
        accounts, room_id = await setup_room(server, ["one", "two", "three"])
        async with AsyncExitStack() as stack:
            compression = "deflate" if deflate else None
            sockets = [
                await stack.enter_async_context(socket_in_room(server, a, room_id, compression=compression))
                for a in accounts
            ]
            assert all(bool(ws.protocol.extensions) == deflate for ws in sockets)
            connections = [connection_of(server, a) for a in accounts]
            await wait_for(lambda: all(c.queue_depth == 0 and not c.writing for c in connections))
            # a short frame, a 16-bit length and a 64-bit length, with multi-byte characters in each
            items = [
                protocol.room_broadcast("track_voted", room_id, {"n": n, "text": "é" * size})
                for n, size in enumerate((10, 300, 40_000))
            ]
            before = [c.messages_out for c in connections]
            for item in items:
                assert server.realtime.registry.deliver(room_id, item) == len(connections)
            written_at_once = [c.messages_out - b for c, b in zip(connections, before, strict=True)]
            assert written_at_once == [0 if deflate else len(items)] * len(connections)
            assert all(c.writing == deflate for c in connections)
            for ws in sockets:
                for item in items:
                    assert await recv_type(ws, "track_voted") == orjson.loads(item.text)


async def test_an_open_socket_keeps_neither_the_handshake_nor_the_token(sqlite_settings: Settings) -> None:
    async with live_server(sqlite_settings) as server:
        accounts, room_id = await setup_room(server, ["one"])
        token = accounts[0].token
        async with socket_in_room(server, accounts[0], room_id, additional_headers={"X-Padding": "p" * 2000}):
            connection = connection_of(server, accounts[0])
            scope = connection.websocket.scope
            assert scope["query_string"] == b"" and scope["headers"] == ()
            assert not {"state", "extensions", "subprotocols", "asgi"} & scope.keys()
            assert connection.hooks is not None
            uvicorn_protocol = connection.hooks._protocol
            assert uvicorn_protocol.request is None and uvicorn_protocol.response is None
            # websockets' handshake parser keeps the request in a local of its (suspended) generator
            request = uvicorn_protocol.conn.parser.gi_frame.f_locals["request"]
            assert list(request.headers.raw_items()) == [] and token not in request.path
            assert request.path == ""


async def test_a_closed_socket_is_freed_at_once_without_the_cyclic_collector(sqlite_settings: Settings) -> None:
    """websockets' parser generator holds its protocol: unless ``WebSocketProtocol`` drops it when the connection
    is lost, a closed socket lingers (pinning memory) until a full collection, which the monitor rarely runs."""
    async with live_server(sqlite_settings) as server:
        accounts, room_id = await setup_room(server, ["one"])
        gc.collect()
        gc.disable()  # only reference counting may free it
        try:
            for how in ("close handshake", "connection dropped"):
                async with socket_in_room(server, accounts[0], room_id) as ws:
                    connection = connection_of(server, accounts[0])
                    assert connection.hooks is not None
                    uvicorn_protocol = connection.hooks._protocol
                    freed = [weakref.ref(uvicorn_protocol), weakref.ref(uvicorn_protocol.conn)]
                    del connection, uvicorn_protocol
                    if how == "connection dropped":
                        ws.transport.abort()
                await wait_for(lambda refs=freed: all(ref() is None for ref in refs), what=f"socket freed after {how}")
        finally:
            gc.enable()


async def test_a_client_that_stops_reading_is_cut_off_after_the_send_timeout(sqlite_settings: Settings) -> None:
    async with live_server(sqlite_settings, ws_send_timeout=0.5) as server:
        accounts, room_id = await setup_room(server, ["stuck", "fast"])
        async with AsyncExitStack() as stack:
            stuck_ws = await stack.enter_async_context(socket_in_room(server, accounts[0], room_id, stuck=True))
            fast_ws = await stack.enter_async_context(socket_in_room(server, accounts[1], room_id))
            stuck = connection_of(server, accounts[0])
            reader = asyncio.create_task(collect_votes(fast_ws, BROADCASTS))
            await publish_votes(server, room_id, BROADCASTS)
            assert await reader == list(range(BROADCASTS))  # the fast client is not affected
            await wait_for(lambda: server.realtime.registry.get(stuck.id) is None, what="stuck client removed")
            assert stuck.dead
            with pytest.raises(ConnectionClosed):
                async with asyncio.timeout(WAIT):
                    while True:
                        await stuck_ws.recv()


async def test_a_client_that_answers_pings_is_never_swept_one_that_does_not_is(sqlite_settings: Settings) -> None:
    async with live_server(
        sqlite_settings, ws_ping_interval=0.1, ws_ping_timeout=30, ws_activity_timeout=0.5
    ) as server:
        accounts, room_id = await setup_room(server, ["listener", "silent"])
        async with AsyncExitStack() as stack:
            await stack.enter_async_context(socket_in_room(server, accounts[0], room_id))
            silent_ws = await stack.enter_async_context(socket_in_room(server, accounts[1], room_id))
            listener, silent = connection_of(server, accounts[0]), connection_of(server, accounts[1])
            assert listener.hooks is not None and listener.hooks.keepalive_enabled
            silent_ws.transport.pause_reading()  # no more reading, so no more pongs
            loop = asyncio.get_running_loop()
            # both have sent nothing for longer than the activity timeout; only the listener kept answering pings
            await wait_for(lambda: loop.time() - listener.last_message_at > 0.5, what="listener quiet")
            await wait_for(lambda: loop.time() - silent.last_activity() > 0.5, what="silent inactive")
            assert loop.time() - listener.last_activity() < 0.5
            result = await server.realtime.janitor.sweep()
            assert result.closed == 1
            await wait_for(lambda: server.realtime.registry.get(silent.id) is None, what="silent removed")
            assert server.realtime.registry.get(listener.id) is listener
            silent_ws.transport.resume_reading()  # let it see the close (a quick teardown)


async def test_server_shutdown_flushes_and_closes_every_socket_with_1001(sqlite_settings: Settings) -> None:
    async with live_server(sqlite_settings) as server:
        accounts, room_id = await setup_room(server, ["a", "b"])
        async with AsyncExitStack() as stack:
            sockets = [await stack.enter_async_context(socket_in_room(server, a, room_id)) for a in accounts]
            await publish_votes(server, room_id, 50)
            server.server.should_exit = True  # what SIGTERM does
            for ws in sockets:
                votes: list[int] = []
                with pytest.raises(ConnectionClosed) as closed:
                    async with asyncio.timeout(WAIT):
                        while True:
                            message = orjson.loads(await ws.recv())
                            if message["type"] == "track_voted":
                                votes.append(message["data"]["n"])
                assert votes == list(range(50))
                assert closed.value.rcvd is not None and closed.value.rcvd.code == 1001
                assert closed.value.rcvd.reason == "server shutting down"


async def test_sockets_that_come_and_go_leave_nothing_behind(sqlite_settings: Settings) -> None:
    """Zero unbounded growth, counted in what is live rather than in RSS (which the allocators keep after a burst):
    once a first round of sockets has warmed the caches, further rounds of sockets opened, joined and closed leave
    the number of Python's allocated blocks where it was. One socket is hundreds of blocks; the tolerance is less
    than 4 per socket (sqlite3's cursor lists alone swing by a few hundred)."""
    async with live_server(sqlite_settings) as server:
        accounts, room_id = await setup_room(server, ["first", "second"])

        async def come_and_go(count: int) -> int:
            for index in range(count):
                async with socket_in_room(server, accounts[index % 2], room_id):
                    pass
            await wait_for(lambda: len(server.realtime.registry) == 0, what="every socket gone")
            gc.collect()
            return sys.getallocatedblocks()

        await come_and_go(100)  # first use: compiled statements, caches
        before = await come_and_go(100)
        after = await come_and_go(500)
        assert after - before < 2_000
