"""Running under uvicorn with a graceful WebSocket shutdown (server shutdown → 1001, docs/api.md#close-codes), and a
garbage collector that leaves the start-up objects alone.

On SIGTERM uvicorn closes every open WebSocket itself with 1012 ("service restart") and only *then* runs the
lifespan shutdown, so ``Realtime.stop()`` in the lifespan would find no socket left to close with 1001. This server
stops the gateway first — flush every queue, close every socket with 1001 — and then lets uvicorn shut down.

Once the app has started, every object allocated so far (modules, routes, models, SQLAlchemy metadata: about
150,000 here) lives as long as the process, yet each automatic full collection would traverse them all again (full
collections paused the loop 85–97 ms in a serving process with idle sockets), and a broadcast waits for them.
``gc.freeze()`` moves them out of the collector's sight (the standard remedy since Python 3.7; Instagram's
write-up). Done here, in the process that serves, not in ``create_app``: test processes build many apps and must
not freeze their garbage.

``HttpProtocol`` is uvicorn's httptools protocol whose own answer to bytes that are not valid HTTP (a 400 sent before
any app runs, e.g. for a malformed ``Content-Length`` or a control character in a header) carries the security headers
every other response gets from the app (docs/api.md#cors-and-common-headers). It also bounds slow clients, which
uvicorn does not (its only timer is the keep-alive one, armed after a response): a connection that sends no complete
request head within ``HTTP_HEADER_TIMEOUT`` (slow-loris headers, or a connection that never sends anything), a body
that pauses longer than ``HTTP_BODY_TIMEOUT``, or a body that averages less than ``HTTP_BODY_MIN_RATE`` bytes/s over
each window of ``HTTP_BODY_MIN_RATE_WINDOW`` seconds, is answered 408 (or, once the app has answered, just closed); the
app then sees the client disconnect (an upload removes its temporary files). Time during which the server itself
paused reading (flow control) is never held against the client. docs/reliability.md#6 shows the figures.

``WebSocketProtocol`` is uvicorn's websockets-sansio protocol minus one reference cycle per socket. websockets'
sans-I/O ``ServerProtocol`` keeps its frame parser as a suspended generator whose frame holds the protocol (and,
after an abnormal close, ``parser_exc``, whose traceback holds that frame too), so a closed socket's protocol, read
buffer, handshake request and parser (about 1.4 KB of small objects) stayed garbage until the next full
collection (the interpreter's own, or the monitor's under memory pressure), and reached the oldest generation, which
makes those collections longer: 3,000 sockets opened and closed left 61.4 MB of live pymalloc blocks where there
were 57.2 MB before them; now 57.4 MB. (RSS is the same either way: the arenas stay pinned, see memory.py.) Once the
connection is lost nothing steps the parser again (uvicorn feeds it only from ``data_received``), so it is dropped
there and the connection is freed by reference counting as it closes.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import ClassVar

import structlog
import uvicorn
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol

from spotik.realtime.gateway import Realtime

log = structlog.get_logger("spotik.serving")


class RealtimeServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, realtime: Realtime) -> None:
        super().__init__(config)
        self.realtime = realtime

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.collect()
        gc.freeze()
        log.info("start-up objects frozen for the garbage collector", objects=gc.get_freeze_count())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        await self.realtime.stop()
        await super().shutdown(sockets)


def _idle_parser() -> Generator[None]:
    """Stands in for websockets' parser once the connection is lost: holds nothing, and stepping it does nothing."""
    while True:
        yield


class WebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's ``websockets-sansio`` protocol (``ws=``) that frees a closed socket without the cyclic collector,
    and that answers a handshake websockets refuses to parse."""

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if not self.handshake_initiated and self.conn.handshake_exc is not None and not self.transport.is_closing():
            # websockets refused the handshake request itself (a line over its 8 KiB limit, e.g. a huge token in the
            # URL or a header: 414/431; too many headers; not HTTP) and queued its answer, which uvicorn never
            # writes: the client would wait for an answer that never comes. Write it and close.
            self.handshake_complete = self.close_sent = True
            self.transport.write(b"".join(self.conn.data_to_send()))
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        conn = self.conn
        conn.parser = _idle_parser()  # the suspended parser held ``conn``: a cycle only a full collection would free
        conn.parser_exc = None  # its traceback holds the parser's frame, which holds ``conn``


@dataclass(frozen=True, slots=True)
class RequestTimeouts:
    """How long a client may take to send a request (docs/api.md settings ``HTTP_*``); ``min_rate`` 0 = no minimum."""

    header: float = 10.0
    body: float = 30.0
    min_rate: int = 512
    min_rate_window: float = 10.0


REQUEST_TIMEOUT_BODY = b'{"success":false,"message":"Request timeout","error":"Request Timeout"}'


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol (``http=``) adding ``extra_headers`` to the 400 it sends on its own, and
    bounding how slowly a client may send a request (``timeouts``)."""

    extra_headers: ClassVar[list[tuple[bytes, bytes]]] = []
    timeouts: ClassVar[RequestTimeouts] = RequestTimeouts()

    _timer: asyncio.TimerHandle | None = None
    _rate_timer: asyncio.TimerHandle | None = None
    _in_body = False
    _last_body = 0.0
    _window_bytes = 0
    _window_excused = False

    def send_400_response(self, msg: str) -> None:
        state = self.server_state
        defaults = state.default_headers  # uvicorn writes these into its 400; shared, but this call is synchronous
        state.default_headers = [*defaults, *self.extra_headers]
        try:
            super().send_400_response(msg)
        finally:
            state.default_headers = defaults

    # --- request timeouts -------------------------------------------------------------------------------------

    def _arm(self, delay: float, callback: Callable[[], None]) -> None:
        self._timer = self.loop.call_later(delay, callback)

    def _cancel_timers(self) -> None:
        self._in_body = False
        for timer in (self._timer, self._rate_timer):
            if timer is not None:
                timer.cancel()
        self._timer = self._rate_timer = None

    def _awaiting_request(self) -> bool:
        return self.cycle is None or self.cycle.response_complete

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.timeouts.header, self._header_timed_out)  # a connection that never sends a request

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        super().connection_lost(exc)

    def _handed_over(self) -> bool:
        """The connection became a WebSocket: the transport now belongs to the WebSocket protocol."""
        return self.transport.get_protocol() is not self

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        # Bytes of a next request on a kept-alive connection (uvicorn's keep-alive timer is now off): its head must
        # be complete in time too, even if the bytes never make the parser start a message (blank lines).
        if (
            self._timer is None
            and not self._in_body
            and self._awaiting_request()
            and not self.transport.is_closing()
            and not self._handed_over()
        ):
            self._arm(self.timeouts.header, self._header_timed_out)

    def on_headers_complete(self) -> None:
        self._cancel_timers()
        super().on_headers_complete()
        cycle = self.cycle
        if cycle is None or cycle.scope is not self.scope or not cycle.more_body:
            return  # a WebSocket upgrade (handed over to its own protocol), or refused before any cycle
        self._in_body = True
        self._last_body = self.loop.time()
        self._arm(self.timeouts.body, self._body_idle_check)
        if self.timeouts.min_rate > 0:
            self._window_bytes = 0
            self._window_excused = False
            self._rate_timer = self.loop.call_later(self.timeouts.min_rate_window, self._body_rate_check)

    def on_body(self, body: bytes) -> None:
        super().on_body(body)
        self._last_body = self.loop.time()
        self._window_bytes += len(body)
        if self.flow.read_paused:  # the app is not reading: the client cannot send, that is not its fault
            self._window_excused = True

    def on_message_complete(self) -> None:
        self._cancel_timers()
        super().on_message_complete()

    def _header_timed_out(self) -> None:
        self._timer = None
        self._time_out("request head not received in time", self.timeouts.header)

    def _body_idle_check(self) -> None:
        self._timer = None
        if not self._in_body:
            return
        now = self.loop.time()
        if self.flow.read_paused:
            self._last_body = now  # the server is not reading: the pause is ours, not the client's
        idle = now - self._last_body
        if idle < self.timeouts.body:
            self._arm(self.timeouts.body - idle, self._body_idle_check)
            return
        self._time_out("request body paused too long", self.timeouts.body)

    def _body_rate_check(self) -> None:
        self._rate_timer = None
        if not self._in_body:
            return
        window = self.timeouts.min_rate_window
        received, excused = self._window_bytes, self._window_excused or self.flow.read_paused
        if excused or received >= self.timeouts.min_rate * window:
            self._window_bytes = 0
            self._window_excused = False
            self._rate_timer = self.loop.call_later(window, self._body_rate_check)
            return
        self._time_out("request body slower than the minimum rate", window, received=received)

    def _time_out(self, reason: str, limit: float, **detail: int) -> None:
        transport = self.transport
        if transport.is_closing() or self._handed_over():
            return
        cycle = self.cycle
        started = cycle is not None and not cycle.response_complete and cycle.response_started
        log.warning("slow client cut off", reason=reason, limit_seconds=limit, client=self.client, **detail)
        self._cancel_timers()
        if not started:
            head = [b"HTTP/1.1 408 Request Timeout\r\n"]
            for name, value in [*self.server_state.default_headers, *self.extra_headers]:
                head += [name, b": ", value, b"\r\n"]
            head += [
                b"content-type: application/json\r\n",
                b"content-length: " + str(len(REQUEST_TIMEOUT_BODY)).encode("ascii") + b"\r\n",
                b"connection: close\r\n\r\n",
                REQUEST_TIMEOUT_BODY,
            ]
            transport.write(b"".join(head))
        if cycle is not None and not cycle.response_complete:
            cycle.disconnected = True  # the app's receive() now says http.disconnect; its answer goes nowhere
            cycle.message_event.set()
        transport.close()


def http_protocol(
    extra_headers: list[tuple[bytes, bytes]], timeouts: RequestTimeouts | None = None
) -> type[HttpProtocol]:
    """The ``http=`` protocol class for uvicorn, its own 400s carrying ``extra_headers`` (the security headers), its
    slow clients bounded by ``timeouts``."""
    return type(
        "HttpProtocol",
        (HttpProtocol,),
        {"extra_headers": list(extra_headers), "timeouts": timeouts or RequestTimeouts()},
    )


def serve(config: uvicorn.Config, realtime: Realtime) -> None:
    """``uvicorn.run`` for one process (no reload, no workers) with the graceful WebSocket shutdown."""
    RealtimeServer(config, realtime).run()
