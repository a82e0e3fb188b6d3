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
every other response gets from the app (docs/api.md#cors-and-common-headers).

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

import gc
import socket
from collections.abc import Generator
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


class HttpProtocol(HttpToolsProtocol):
    """uvicorn's ``httptools`` protocol (``http=``) adding ``extra_headers`` to the 400 it sends on its own."""

    extra_headers: ClassVar[list[tuple[bytes, bytes]]] = []

    def send_400_response(self, msg: str) -> None:
        state = self.server_state
        defaults = state.default_headers  # uvicorn writes these into its 400; shared, but this call is synchronous
        state.default_headers = [*defaults, *self.extra_headers]
        try:
            super().send_400_response(msg)
        finally:
            state.default_headers = defaults


def http_protocol(extra_headers: list[tuple[bytes, bytes]]) -> type[HttpProtocol]:
    """The ``http=`` protocol class for uvicorn, its own 400s carrying ``extra_headers`` (the security headers)."""
    return type("HttpProtocol", (HttpProtocol,), {"extra_headers": list(extra_headers)})


def serve(config: uvicorn.Config, realtime: Realtime) -> None:
    """``uvicorn.run`` for one process (no reload, no workers) with the graceful WebSocket shutdown."""
    RealtimeServer(config, realtime).run()
