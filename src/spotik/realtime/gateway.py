"""``Realtime``: the app-scoped real-time gateway (docs/api.md#websocket, docs/decisions.md#d3, docs/decisions.md#d4).

One object per app: the connection registry, the broker (in-process, or Redis pub/sub across instances), presence,
the stale-connection janitor and the memory monitor. The lifespan builds it, ``start()``s it and ``stop()``s it
before the database engine is disposed; ``/ws`` (``spotik.realtime.router``) hands every socket to ``serve``.

Every ``DomainEvent`` with a ``room_id`` published on the event bus becomes the room broadcast
``{type: event.type, data: event.data + {room_id, timestamp, server_time}, timestamp}`` to every socket that joined
the room, the actor's included.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import orjson
import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from spotik.auth.credentials import credentials, header
from spotik.auth.schemas import user_full
from spotik.auth.service import authenticate
from spotik.auth.tokens import TokenService
from spotik.errors import ApiError
from spotik.events import DomainEvent, LocalEventBus
from spotik.http.cors import origin_allowed
from spotik.reads import Reads
from spotik.realtime import compat, protocol
from spotik.realtime.broker import Broker, LocalBroker, RedisBroker, RedisLink
from spotik.realtime.connection import SEND_FAILURES, Connection, ServerHooks
from spotik.realtime.handlers import Handlers
from spotik.realtime.janitor import Janitor
from spotik.realtime.memory import MB, MemoryMonitor
from spotik.realtime.presence import LocalPresence, Presence, RedisPresence, presence_announcement
from spotik.realtime.protocol import CloseCode, ErrorCode, ServerType
from spotik.realtime.registry import Refusal, Registry
from spotik.realtime.tally import Tally, WebSocketFigures
from spotik.settings import Settings
from spotik.timefmt import iso, now_iso

log = structlog.get_logger("spotik.realtime")


def _retire_handshake_scope(scope: Scope) -> None:
    """Once the socket is open nothing reads the handshake's parts of the scope again (uvicorn logs only the
    handshake; the gateway has read the token, Origin and subprotocols), yet the scope lives as long as the socket:
    drop them — the query string also holds the token, which then no longer lingers in memory for hours."""
    scope["headers"] = ()
    scope["query_string"] = b""
    for key in ("state", "extensions", "subprotocols", "asgi"):
        scope.pop(key, None)


class Realtime:
    def __init__(
        self,
        *,
        settings: Settings,
        sessionmaker: async_sessionmaker[AsyncSession],
        tokens: TokenService,
        events: LocalEventBus,
        reads: Reads,
        instance_id: str | None = None,
    ) -> None:
        self.settings = settings
        self.reads = reads
        self.sessionmaker = sessionmaker
        self.tokens = tokens
        self.events = events
        self.instance_id = instance_id or uuid.uuid4().hex
        self.registry = Registry(
            max_connections=settings.ws_max_connections, max_per_room=settings.ws_max_connections_per_room
        )
        self.link: RedisLink | None = None
        self.broker: Broker
        self.presence: Presence
        if settings.redis_url:
            self.link = RedisLink(settings.redis_url, max_connections=settings.redis_max_connections)
            self.broker = RedisBroker(
                self.link,
                self._deliver,
                channel_prefix=settings.ws_redis_prefix,
                instance_id=self.instance_id,
                reconnect_max=settings.ws_redis_reconnect_max,
            )
            self.presence = RedisPresence(
                self.registry,
                self.link,
                prefix=settings.ws_redis_prefix,
                instance_id=self.instance_id,
                ttl=settings.ws_presence_ttl,
            )
        else:
            self.broker = LocalBroker(self._deliver, instance_id=self.instance_id)
            self.presence = LocalPresence(self.registry)
        self.janitor = Janitor(
            self.registry,
            activity_timeout=settings.ws_activity_timeout,
            interval=settings.ws_sweep_interval,
            budget_seconds=settings.ws_sweep_budget,
        )
        self.memory = MemoryMonitor(
            warning_bytes=int(settings.memory_warning_mb * MB),
            critical_bytes=int(settings.memory_critical_mb * MB),
            interval=settings.memory_sample_interval,
            gc_young_every=settings.gc_young_every_connections,
            gc_full_min_interval=settings.gc_full_min_interval,
        )
        self.handlers = Handlers(self)
        self.tally = Tally()
        self.accepting = False
        self._stopped = False
        self.events_broadcast = 0
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._background: set[asyncio.Task[Any]] = set()
        self._unsubscribe: Callable[[], None] | None = None

    # --- lifecycle -------------------------------------------------------------------------------------------

    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._stopping.clear()
        await self.broker.start()
        await self.presence.start()
        self.memory.sample()
        self._tasks = [
            loop.create_task(self.janitor.run(self._stopping), name="spotik-ws-janitor"),
            loop.create_task(self.memory.run(self._stopping), name="spotik-ws-memory"),
        ]
        self._unsubscribe = self.events.subscribe(self._on_event)
        self.accepting = True
        log.info(
            "realtime started",
            broker="redis" if self.link else "local",
            instance_id=self.instance_id,
            max_connections=self.settings.ws_max_connections,
        )

    async def stop(self) -> None:
        """Refuse new sockets, flush every queue, close every socket with 1001, then stop the background tasks.
        Bounded: sockets that cannot take their last messages within ``close_timeout`` are dropped. Idempotent (the
        server's shutdown hook and the lifespan may both call it)."""
        if self._stopped:
            return
        self._stopped = True
        self.accepting = False
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        connections = list(self.registry)
        for connection in connections:
            connection.close(CloseCode.GOING_AWAY, "server shutting down")
        results = await asyncio.gather(*(c.flushed(within=self.settings.ws_close_timeout) for c in connections))
        stuck = [c for c, flushed in zip(connections, results, strict=True) if not flushed]
        for connection in stuck:
            connection.fail("shutdown: close not delivered in time")
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        for task in [*self._tasks, *self._background]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, self.settings.ws_close_timeout)
        self._tasks = []
        await self.presence.stop()
        await self.broker.stop()
        if self.link is not None:
            await self.link.aclose()
        log.info("realtime stopped", closed=len(connections), not_flushed=len(stuck))

    async def wait_ready(self, within: float = 10.0) -> bool:
        """With Redis: until this instance is subscribed (tests and readiness probes)."""
        if isinstance(self.broker, RedisBroker):
            return await self.broker.wait_subscribed(within)
        return True

    # --- broadcasting ----------------------------------------------------------------------------------------

    async def _on_event(self, event: DomainEvent) -> None:
        if event.room_id is None:
            return
        room_id = str(event.room_id)
        item = protocol.room_broadcast(event.type, room_id, event.data, occurred_at=iso(event.occurred_at))
        self.events_broadcast += 1
        self.broker.publish(room_id, event.type, item)
        if self.settings.ws_client_compat_events:
            for follow_type, data in compat.followups(event.type, event.data):
                self.broadcast(room_id, follow_type, data)
        # Enqueuing never waits for a socket; yielding once per event lets the writers flush between the events of
        # a burst instead of letting every queue fill up first.
        await asyncio.sleep(0)

    def broadcast(self, room_id: str, event_type: str, data: dict[str, Any]) -> None:
        """A room broadcast that is not a domain event (presence)."""
        self.broker.publish(room_id, event_type, protocol.room_broadcast(event_type, room_id, data))

    def _deliver(self, room_id: str, event_type: str, item: protocol.Outgoing) -> None:
        """Local delivery of a room broadcast (from this instance or from another one through Redis)."""
        self.registry.deliver(room_id, item)
        if event_type == "room_deleted":
            for connection in self.registry.clear_room(room_id):
                log.info("websocket detached from deleted room", connection_id=connection.id, room_id=room_id)
            self._spawn(self.presence.changed(room_id))
        elif event_type == "user_left":
            # The membership is gone (REST leave): that user's sockets stop receiving the room's events.
            user_id = _user_id_of(item.text)
            leaving = self.registry.user_connections(room_id, user_id) if user_id else []
            for connection in leaving:
                self.leave_room(connection)

    # --- rooms -----------------------------------------------------------------------------------------------

    def join_room(self, connection: Connection, room_id: str) -> Refusal | None:
        previous = connection.room_id
        refusal = self.registry.join(connection, room_id)
        if refusal is None and previous is not None and previous != room_id:
            self._spawn(self._announce_leave(previous, connection.user, connection.username))
        return refusal

    def leave_room(self, connection: Connection) -> str | None:
        room_id = self.registry.leave(connection)
        if room_id is not None:
            self._spawn(self._announce_leave(room_id, connection.user, connection.username))
        return room_id

    async def _announce_leave(self, room_id: str, user: dict[str, Any], username: str) -> None:
        await self.presence.changed(room_id)
        if not self.accepting:
            return
        online = await self.presence.online(room_id)
        self.broadcast(
            room_id,
            ServerType.USER_DISCONNECTED,
            presence_announcement(user, online, f"{username} disconnected from the room"),
        )

    def _spawn(self, coroutine: Coroutine[Any, Any, Any]) -> None:
        task = asyncio.get_running_loop().create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _forget(self, connection: Connection) -> None:
        """The connection is closing or gone: out of the registry (limits free up), presence updated."""
        closed_before = self.registry.total_closed
        room_id = self.registry.remove(connection)
        if self.registry.total_closed != closed_before:
            self.memory.note_disconnection()
        if room_id is not None:
            self._spawn(self._announce_leave(room_id, connection.user, connection.username))

    # --- one socket ------------------------------------------------------------------------------------------

    def asgi(self, scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
        """``/ws`` as a bare ASGI app (``SpotikApp`` hands it every ``/ws`` scope ahead of the HTTP stack). It returns
        ``serve``'s coroutine itself rather than awaiting it: every coroutine between the server and the read loop
        stays alive (~250 B) for as long as the socket is open."""
        return self.serve(WebSocket(scope, receive, send))

    async def serve(self, websocket: WebSocket) -> None:
        connection = await self._admit(websocket)
        if connection is None:
            return
        receive = websocket.receive
        try:
            # The read loop, in this frame (which lives as long as the socket): each message goes straight to the
            # handler, so no reference to the last one (nor to what was parsed from it) is kept while waiting.
            while await self._on_message(connection, await receive()):
                pass
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not connection.dead or task is None:
                raise
            task.uncancel()  # cancelled by the writer: a slow consumer that was cut off
        finally:
            connection.detach()
            self._forget(connection)

    async def _admit(self, websocket: WebSocket) -> Connection | None:
        """Checks, authentication and accept; the connection, or None when it was refused. A separate frame, so that
        nothing used only for the handshake (token, claims, the ORM user) stays referenced while the socket lives."""
        scope = websocket.scope
        token, subprotocol = credentials(scope)
        if not self.accepting:
            shutting_down = Refusal(CloseCode.GOING_AWAY, ErrorCode.SERVER_SHUTTING_DOWN, "server shutting down")
            await self._refuse(websocket, subprotocol, shutting_down)
            return None
        origin = header(scope, b"origin")
        if origin is not None and not origin_allowed(origin, self.settings.cors_origins):
            forbidden = Refusal(CloseCode.FORBIDDEN, ErrorCode.ORIGIN_NOT_ALLOWED, "origin not allowed")
            await self._refuse(websocket, subprotocol, forbidden)
            return None
        refusal = self.registry.admission()  # before any database work
        if refusal is not None:
            self.registry.total_refused += 1
            await self._refuse(websocket, subprotocol, refusal)
            return None
        if token is None:
            await self._refuse(websocket, subprotocol, unauthorized("Token not provided"))
            return None
        try:
            async with self.sessionmaker() as session:
                _claims, user = await authenticate(session, self.tokens, token, self.reads)
                user_id, username, user_data = str(user.id), str(user.username), user_full(user)
        except ApiError as exc:
            await self._refuse(websocket, subprotocol, unauthorized(exc.message))
            return None
        except (SQLAlchemyError, OSError, TimeoutError) as exc:  # database down or pool exhausted: try again later
            log.warning("websocket authentication unavailable", error=f"{type(exc).__name__}: {exc}")
            busy = Refusal(CloseCode.TRY_AGAIN_LATER, ErrorCode.SERVER_BUSY, protocol.SERVER_BUSY_MESSAGE)
            await self._refuse(websocket, subprotocol, busy)
            return None
        await websocket.accept(subprotocol=subprotocol)
        hooks = ServerHooks.detect(websocket._receive)
        if hooks is not None:
            hooks.release_handshake()
        _retire_handshake_scope(scope)
        connection = Connection(
            websocket,
            user_id=user_id,
            username=username,
            user=user_data,
            queue_size=self.settings.ws_queue_size,
            batch_size=self.settings.ws_batch_size,
            send_timeout=self.settings.ws_send_timeout,
            connected_at_wall=time.time(),
            tally=self.tally,
            hooks=hooks,
            on_closed=self._forget,
        )
        refusal = self.registry.add(connection)  # re-checked: other sockets may have arrived during authentication
        if refusal is not None:
            self.tally.refused[refusal.error_code] += 1
            connection.enqueue(protocol.error(refusal.error_code, refusal.reason))
            connection.close(refusal.code, refusal.reason)
            await connection.flushed(within=self.settings.ws_close_timeout)
            return None
        self.memory.note_connection()
        connection.enqueue(
            protocol.reply(
                ServerType.CONNECTION_ESTABLISHED,
                {
                    "connection_id": connection.id,
                    "user": user_data,
                    "server_time": now_iso(),
                    "message": "Connected to Spotik real-time server",
                },
            )
        )
        return connection

    async def _refuse(self, websocket: WebSocket, subprotocol: str | None, refusal: Refusal) -> None:
        """Accept, say why, close with the code: a refused handshake would only show the browser a 1006."""
        self.tally.refused[refusal.error_code] += 1
        with contextlib.suppress(*SEND_FAILURES):
            async with asyncio.timeout(self.settings.ws_close_timeout):
                await websocket.accept(subprotocol=subprotocol)
                await websocket.send_text(protocol.error(refusal.error_code, refusal.reason).text)
                await websocket.close(refusal.code, refusal.reason)

    async def _on_message(self, connection: Connection, message: Message) -> bool:
        """Handle one ASGI message; False once the socket is done."""
        kind = message["type"]
        if kind == "websocket.disconnect":
            return False
        if kind != "websocket.receive":
            return True
        limit = self.settings.ws_max_message_bytes
        text = message.get("text")
        if text is not None:
            size = len(text) if text.isascii() else len(text.encode())
            payload: str | bytes = text
        else:
            payload = message.get("bytes") or b""
            size = len(payload)
        connection.note_received(size)
        received = self.tally.received
        if size > limit:
            received["too_big"] += 1
            connection.enqueue(protocol.error(ErrorCode.MESSAGE_TOO_BIG, f"Messages are limited to {limit} bytes"))
            connection.close(CloseCode.MESSAGE_TOO_BIG, "message too big")
            await connection.flushed(within=self.settings.ws_close_timeout)
            return False
        try:
            parsed = protocol.parse(payload)
        except protocol.ProtocolError as exc:
            received["invalid"] += 1
            connection.enqueue(protocol.error(exc.code, exc.message))
            return True
        received[parsed.type if parsed.type in self.handlers.table else "unknown"] += 1
        await self.handlers.dispatch(connection, parsed)
        if connection.closing or connection.dead:
            await connection.flushed(within=self.settings.ws_close_timeout)
            return False
        return True

    # --- figures ---------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        return {
            "instance_id": self.instance_id,
            "accepting": self.accepting,
            "events_broadcast": self.events_broadcast,
            "connections": self.registry.stats(),
            "broker": self.broker.stats(),
            "presence": self.presence.stats(),
            "memory": self.memory.status(),
            "janitor": {
                "sweeps": self.janitor.sweeps,
                "closed_total": self.janitor.closed_total,
                "activity_timeout_seconds": self.settings.ws_activity_timeout,
                "sweep_interval_seconds": self.settings.ws_sweep_interval,
            },
            "received": dict(self.tally.received),
            "sent": dict(self.tally.sent),
            "dropped": dict(self.tally.dropped),
            "refused": dict(self.tally.refused),
        }

    def figures(self) -> WebSocketFigures:
        """What Prometheus reads at scrape time (``spotik_ws_*``)."""
        registry = self.registry
        return {
            "connections": len(registry),
            "opened": registry.total_accepted,
            "queued": sum(c.queue_depth for c in registry),
            "received": self.tally.received,
            "sent": self.tally.sent,
            "dropped": self.tally.dropped,
            "refused": self.tally.refused,
        }

    def connections(self) -> list[dict[str, Any]]:
        now = asyncio.get_running_loop().time()
        return [c.describe(now) for c in self.registry]


def unauthorized(message: str) -> Refusal:
    return Refusal(CloseCode.UNAUTHORIZED, ErrorCode.AUTHENTICATION_FAILED, message)


def _user_id_of(text: str) -> str | None:
    try:
        user = orjson.loads(text)["data"]["user"]
        return str(user["id"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None
