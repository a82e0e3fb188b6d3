"""One WebSocket connection: its metadata and counters, a bounded two-lane outgoing queue and its writer.

**Queue.** Two FIFO lanes. The *priority* lane holds critical room events (playback changes, skips, room deletion),
errors and replies to the client's own requests; it is sent first and nothing in it is ever dropped. The *normal*
lane holds every other broadcast and is bounded (``queue_size``, 100): when it is full the **oldest** message is
dropped and counted, so a client that catches up always ends with the newest state. The priority lane has the same
bound; a client that lets it fill up is a slow consumer and is disconnected (1013) — it reconnects, re-sends
``join_room`` and gets the full room state again — so memory per connection is bounded in every case.

**Writer.** Enqueuing never awaits: a broadcaster appends to each queue and moves on, whatever the client does. The
writer is a task started when a queue receives its first message and ending when both lanes are empty (an idle
connection holds no task), sending up to ``batch_size`` messages per batch and yielding to the loop between
batches. A batch that cannot be written within ``send_timeout`` (the client stopped reading and the server's write
buffer is full) marks the connection as a slow consumer.

**Activity** (for the inactivity sweep) is the later of the last message received and the last keepalive pong that
the server saw. uvicorn's sans-I/O protocol answers and sends protocol pings itself and does not tell the ASGI app
about pongs, so ``ServerHooks`` reads its keepalive fields (read-only) when the app runs under it.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections import deque
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson
import structlog
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.http11 import Request
from websockets.protocol import State

from spotik.realtime.protocol import CloseCode, Outgoing
from spotik.realtime.tally import Tally
from spotik.timefmt import iso

log = structlog.get_logger("spotik.realtime")

# Exceptions that mean "this socket is gone": Starlette raises WebSocketDisconnect for OSError (uvicorn's
# ClientDisconnected) and RuntimeError subclasses when the socket is already closed.
SEND_FAILURES = (WebSocketDisconnect, OSError, RuntimeError)


class ServerHooks:
    """What uvicorn's websockets-sansio protocol can tell us beyond ASGI (found through the ``receive`` callable,
    which is a bound method of the protocol object). Every other server gets ``None`` and the gateway falls back
    to "activity = messages received"."""

    __slots__ = ("_protocol",)

    def __init__(self, protocol: Any) -> None:
        self._protocol = protocol

    @classmethod
    def detect(cls, receive: Any) -> ServerHooks | None:
        protocol = getattr(receive, "__self__", None)
        required = ("ping_sent_at", "last_ping_rtt", "pending_ping_payload", "ping_interval", "transport", "conn")
        if protocol is None or not all(hasattr(protocol, name) for name in required):
            return None
        return cls(protocol)

    def write_frame(self, frame: bytes) -> bool:
        """Write a complete, pre-built text frame straight to the transport, as uvicorn's own ``send`` would after
        framing the message (``conn.send_text`` + ``transport.write``) — but framed once for all subscribers of a
        broadcast, and without a task or an await per socket (the prepared-message technique of gorilla/websocket
        and uWebSockets). Only when that is exactly what ``send`` would write without waiting: the connection is
        open, no close was sent, no extension (permessage-deflate) rewrites frames, and the transport is not paused
        for flow control. False means "use the queue and ``send``"."""
        protocol = self._protocol
        if (
            protocol.close_sent
            or protocol.disconnected
            or not protocol.writable.is_set()
            or protocol.conn.state is not State.OPEN
            or protocol.conn.extensions
        ):
            return False
        transport = protocol.transport
        if transport is None or transport.is_closing():
            return False
        transport.write(frame)
        return True

    @property
    def keepalive_enabled(self) -> bool:
        interval = self._protocol.ping_interval
        return interval is not None and interval > 0

    def last_pong_at(self) -> float | None:
        """Loop time of the last keepalive pong, if one is known.

        uvicorn sends the next ping ``interval - rtt`` after a pong arrives (with a ping timeout set), so while a
        ping is in flight the previous pong came ``interval - rtt`` before it was sent."""
        protocol = self._protocol
        sent_at: float = protocol.ping_sent_at
        rtt: float = protocol.last_ping_rtt
        if not sent_at:
            return None
        if protocol.pending_ping_payload is None:
            return sent_at + rtt
        if rtt > 0:
            return sent_at - max(0.0, float(protocol.ping_interval) - rtt)
        return None

    def release_handshake(self) -> None:
        """uvicorn keeps the handshake's request and response (two header maps, ~3 KiB) for the socket's lifetime
        but never reads them after the accept; an idle connection is that much smaller without them."""
        protocol = self._protocol
        if getattr(protocol, "handshake_complete", False):
            # websockets' handshake parser (``ServerProtocol.parse``) keeps the request in a local of its generator
            # for the socket's lifetime, so dropping uvicorn's reference alone frees nothing: empty it (~2 KiB of
            # headers, and the path with the token in its query).
            request = getattr(protocol, "request", None)
            if isinstance(request, Request):
                request.headers.clear()
                request.path = ""
            for name in ("request", "response"):
                if hasattr(protocol, name):
                    setattr(protocol, name, None)

    def abort(self) -> None:
        """Drop the TCP connection without a closing handshake (for a client that stopped reading: a close frame
        would wait behind the unread data forever)."""
        transport = self._protocol.transport
        if transport is not None:
            transport.abort()


class Connection:
    """Per-socket state. ``__slots__`` and lazily created lanes keep an idle connection small."""

    __slots__ = (
        "_close",
        "_normal",
        "_on_closed",
        "_priority",
        "_sending",
        "_writer",
        "batch_size",
        "bytes_in",
        "bytes_out",
        "closing",
        "connected_at",
        "connected_at_wall",
        "dead",
        "dropped",
        "hooks",
        "id",
        "in_flight",
        "last_message_at",
        "max_depth",
        "messages_in",
        "messages_out",
        "queue_size",
        "reader_task",
        "room_id",
        "send_timeout",
        "tally",
        "user_id",
        "user_json",
        "username",
        "websocket",
    )

    def __init__(
        self,
        websocket: WebSocket,
        *,
        user_id: str,
        username: str,
        user: dict[str, Any],
        queue_size: int,
        batch_size: int,
        send_timeout: float,
        connected_at_wall: float,
        tally: Tally,
        hooks: ServerHooks | None = None,
        on_closed: Callable[[Connection], None] | None = None,
    ) -> None:
        loop_time = asyncio.get_running_loop().time()
        self.id = uuid.uuid4().hex
        self.websocket = websocket
        self.user_id = user_id
        self.username = username
        # A third of the dict's size, for a value read only on leave. A str: orjson's bytes keep a 4 KiB buffer.
        self.user_json = orjson.dumps(user).decode()
        self.room_id: str | None = None
        self.connected_at = loop_time
        self.connected_at_wall = connected_at_wall  # time.time()
        self.last_message_at = loop_time
        self.messages_in = 0
        self.bytes_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.dropped = 0
        self.max_depth = 0
        self.in_flight = 0  # taken from the queue by the writer, not yet written (at most one batch)
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.send_timeout = send_timeout
        self.hooks = hooks
        self.tally = tally
        self.reader_task: asyncio.Task[Any] | None = asyncio.current_task()
        self._normal: deque[Outgoing] | None = None
        self._priority: deque[Outgoing] | None = None
        self._writer: asyncio.Task[None] | None = None
        self._sending = False  # the writer is inside a send (it may be blocked on a client that does not read)
        self._close: tuple[int, str] | None = None
        self._on_closed = on_closed
        self.closing = False
        self.dead = False

    # --- metadata --------------------------------------------------------------------------------------------

    @property
    def user(self) -> dict[str, Any]:
        """The user's payload for presence messages (``user_full``)."""
        user: dict[str, Any] = orjson.loads(self.user_json)
        return user

    @property
    def queue_depth(self) -> int:
        return (len(self._normal) if self._normal else 0) + (len(self._priority) if self._priority else 0)

    @property
    def normal_depth(self) -> int:
        return len(self._normal) if self._normal else 0

    @property
    def priority_depth(self) -> int:
        return len(self._priority) if self._priority else 0

    @property
    def writing(self) -> bool:
        return self._writer is not None

    def note_received(self, size: int) -> None:
        self.messages_in += 1
        self.bytes_in += size
        self.last_message_at = asyncio.get_running_loop().time()

    def last_activity(self) -> float:
        """The later of the last message received and the last keepalive pong the server saw (loop time)."""
        if self.hooks is not None:
            pong = self.hooks.last_pong_at()
            if pong is not None and pong > self.last_message_at:
                return pong
        return self.last_message_at

    def describe(self, now: float) -> dict[str, Any]:
        return {
            "connection_id": self.id,
            "user_id": self.user_id,
            "username": self.username,
            "room_id": self.room_id,
            "connected_at": iso(datetime.fromtimestamp(self.connected_at_wall, UTC)),
            "connected_seconds": round(now - self.connected_at, 3),
            "idle_seconds": round(now - self.last_activity(), 3),
            "messages_in": self.messages_in,
            "bytes_in": self.bytes_in,
            "messages_out": self.messages_out,
            "bytes_out": self.bytes_out,
            "queue_depth": self.queue_depth,
            "max_queue_depth": self.max_depth,
            "dropped": self.dropped,
            "closing": self.closing,
        }

    # --- queueing (never awaits) -----------------------------------------------------------------------------

    def enqueue(self, item: Outgoing) -> bool:
        """Queue ``item``; False when the connection no longer takes messages. Drops are counted, never raised.

        With nothing queued or being written and a transport that takes data without waiting, the frame is written
        at once instead (same order, same bytes, no writer task): that is the common case of a broadcast."""
        if self.closing or self.dead:
            self.tally.dropped["closed"] += 1
            return False
        if self._writer is None and self.hooks is not None and self.hooks.write_frame(item.frame):
            self.messages_out += 1
            self.bytes_out += item.size
            self.tally.sent[item.type] += 1
            return True
        if item.critical:
            lane = self._priority
            if lane is None:
                lane = self._priority = deque()
            if len(lane) >= self.queue_size:
                self.dropped += 1
                self.tally.dropped["slow_consumer"] += 1
                self.fail("slow consumer")
                return False
            lane.append(item)
        else:
            lane = self._normal
            if lane is None:
                lane = self._normal = deque()
            if len(lane) >= self.queue_size:
                lane.popleft()
                self.dropped += 1
                self.tally.dropped["queue_full"] += 1
            lane.append(item)
            if len(lane) > self.max_depth:
                self.max_depth = len(lane)
        self._wake()
        return True

    def close(self, code: int, reason: str = "") -> None:
        """Send what is queued, then close with ``code``. Idempotent; never awaits."""
        if self.closing or self.dead:
            return
        self.closing = True
        self._close = (code, reason)
        self._notify_closed()
        self._wake()

    def fail(self, reason: str) -> None:
        """A slow consumer: drop its queue and disconnect it now — with 1013 if the writer is not inside a send,
        else by aborting the connection (a close frame would wait behind the data the client does not read)."""
        if self.dead:
            return
        self.dropped += self.normal_depth
        self.tally.dropped["slow_consumer"] += self.queue_depth
        self._normal = None
        self._priority = None
        log.warning("websocket slow consumer", connection_id=self.id, user_id=self.user_id, reason=reason)
        if self._sending:
            self._kill()
        else:
            self.closing = False
            self._close = None
            self.close(CloseCode.TRY_AGAIN_LATER, reason)

    def _kill(self) -> None:
        self.dead = True
        self.closing = True
        self._notify_closed()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        if self.hooks is not None:
            self.hooks.abort()  # uvicorn then reports the disconnect to the reader
        elif self.reader_task is not None and not self.reader_task.done():
            self.reader_task.cancel()

    def _notify_closed(self) -> None:
        callback, self._on_closed = self._on_closed, None
        if callback is not None:
            callback(self)

    def _wake(self) -> None:
        if self._writer is None and not self.dead:
            self._writer = asyncio.get_running_loop().create_task(self._drain())

    def _take(self) -> list[Outgoing]:
        batch: list[Outgoing] = []
        for lane in (self._priority, self._normal):
            while lane and len(batch) < self.batch_size:
                batch.append(lane.popleft())
        return batch

    async def _drain(self) -> None:
        websocket = self.websocket
        try:
            while not self.dead:
                batch = self._take()
                if not batch:
                    self._normal = self._priority = None  # an idle connection holds no queue (~0.8 KiB each)
                    if self._close is not None:
                        code, reason = self._close
                        self._close = None
                        self._sending = True
                        with contextlib.suppress(*SEND_FAILURES):
                            async with asyncio.timeout(self.send_timeout):
                                await websocket.close(code, reason)
                    break
                self._sending = True
                self.in_flight = len(batch)
                async with asyncio.timeout(self.send_timeout):
                    for item in batch:
                        await websocket.send_text(item.text)
                        self.in_flight -= 1
                        self.messages_out += 1
                        self.bytes_out += item.size
                        self.tally.sent[item.type] += 1
                self._sending = False
                if not self._lanes_pending():  # the common case after a broadcast: done, without another loop turn
                    self._normal = self._priority = None
                    break
                await asyncio.sleep(0)  # one batch at a time: let the other writers and the broadcaster run
        except TimeoutError:
            self.fail("send timeout")
        except SEND_FAILURES:
            self.dead = True
            self._normal = None
            self._priority = None
        finally:
            self._sending = False
            self.in_flight = 0
            if self._writer is asyncio.current_task():
                self._writer = None
        if self._lanes_pending() and not self.dead:
            self._wake()  # a message arrived between the last take and the end of the task

    def _lanes_pending(self) -> bool:
        return bool(self._normal) or bool(self._priority) or self._close is not None

    async def flushed(self, *, within: float) -> bool:
        """Wait (bounded) until the writer has nothing left to do. ``asyncio.wait`` neither raises the writer's
        own outcome nor hides a cancellation of the caller."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while (self._writer is not None or self._lanes_pending()) and not self.dead:
            writer = self._writer
            remaining = deadline - loop.time()
            if remaining <= 0:
                return False
            if writer is None:
                self._wake()
                continue
            await asyncio.wait({writer}, timeout=remaining)
        return True

    def detach(self) -> None:
        """The reader is gone: stop the writer and let go of the queue."""
        self.dead = True
        self._normal = None
        self._priority = None
        writer, self._writer = self._writer, None
        if writer is not None and writer is not asyncio.current_task():
            writer.cancel()
        self._notify_closed()
