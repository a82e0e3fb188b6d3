"""Gzip for compressible responses larger than ``minimum_size`` bytes, with the compression ratio recorded.

Modelled on Starlette's ``GZipMiddleware`` (a per-request responder that holds the response start until the first
body chunk), but with an allow-list instead of a deny-list — only JSON, ``text/*``, JavaScript, CSS, XML and SVG
are compressed — and a hook to record each ratio, which Starlette's responder has no place for. Never touched:
WebSockets, range responses (206, or any ``Content-Range``), bodies that already have a ``Content-Encoding``,
``Cache-Control: no-transform``, ``text/event-stream`` and clients that do not accept gzip. Chunks of 128 KiB and
more are compressed in a worker thread so that the event loop never stalls.
"""

from __future__ import annotations

import zlib
from typing import Literal

import anyio.to_thread
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spotik.performance.metrics import Metrics

THREAD_MINIMUM_SIZE = 128 * 1024
COMPRESSIBLE_TYPES = frozenset(
    {
        "application/json",
        "application/javascript",
        "application/x-javascript",
        "application/ecmascript",
        "application/xml",
        "image/svg+xml",
    }
)
NEVER_COMPRESSED_STATUSES = frozenset({204, 206, 304})
PARSE_CACHE_SIZE = 256


def add_vary_accept_encoding(headers: list[tuple[bytes, bytes]]) -> None:
    """A compressed response depends on Accept-Encoding: say so to caches (as Starlette's gzip does, only when
    compressing — an identity body suits every client)."""
    for index, (name, value) in enumerate(headers):
        if name.lower() == b"vary":
            if b"accept-encoding" not in value.lower() and value.strip() != b"*":
                headers[index] = (name, value + b", Accept-Encoding")
            return
    headers.append((b"vary", b"Accept-Encoding"))


def is_compressible(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    if media_type.startswith("text/"):
        return media_type != "text/event-stream"  # compressing a stream would buffer its events
    return media_type in COMPRESSIBLE_TYPES or media_type.endswith(("+json", "+xml"))


def accepts_gzip(accept_encoding: str) -> bool:
    """Does ``Accept-Encoding`` allow gzip (honouring ``q=0`` and ``*``)?"""
    gzip_q: float | None = None
    any_q: float | None = None
    for part in accept_encoding.split(","):
        coding, _, params = part.partition(";")
        coding = coding.strip().lower()
        quality = 1.0
        for param in params.split(";"):
            key, _, value = param.partition("=")
            if key.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if coding in ("gzip", "x-gzip"):
            gzip_q = quality
        elif coding == "*":
            any_q = quality
    chosen = gzip_q if gzip_q is not None else any_q
    return chosen is not None and chosen > 0


GZIP_WBITS = 16 + zlib.MAX_WBITS  # zlib's "gzip container" window bits


def gzip_whole(body: bytes, level: int) -> bytes:
    """``body`` as one gzip member (what the responder sends for a body that comes in one chunk)."""
    compressor = zlib.compressobj(level, zlib.DEFLATED, GZIP_WBITS)
    return compressor.compress(body) + compressor.flush()


def gzip_size(member: bytes) -> int:
    """The uncompressed size of a single gzip member, from its trailer (ISIZE, modulo 2**32)."""
    return int.from_bytes(member[-4:], "little")


class CompressionStats:
    """Totals of what the gzip layer compressed (and, through ``metrics``, the ratio histogram)."""

    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.responses = 0
        self.bytes_in = 0
        self.bytes_out = 0

    def record(self, original: int, compressed: int) -> None:
        self.responses += 1
        self.bytes_in += original
        self.bytes_out += compressed
        if self.metrics is not None and original:
            self.metrics.http_compression_ratio.observe(compressed / original)
            self.metrics.http_compression_bytes.labels("in").inc(original)
            self.metrics.http_compression_bytes.labels("out").inc(compressed)

    @property
    def ratio(self) -> float | None:
        """Compressed / original over every compressed response so far (lower is better)."""
        return self.bytes_out / self.bytes_in if self.bytes_in else None

    def summary(self) -> dict[str, float | int | None]:
        ratio = self.ratio
        return {
            "responses": self.responses,
            "bytes_in": self.bytes_in,
            "bytes_out": self.bytes_out,
            "ratio": round(ratio, 4) if ratio is not None else None,
        }


class Gzip:
    """The compression policy: who gets gzip, which responses, at which level; the ratio goes to ``stats``.

    The request-timing middleware applies it in its own send wrapper (one layer less per request);
    ``GZipMiddleware`` applies it on its own when monitoring is switched off.
    """

    def __init__(self, *, minimum_size: int = 1024, level: int = 5, stats: CompressionStats | None = None) -> None:
        self.minimum_size = minimum_size
        self.level = level
        self.stats = stats or CompressionStats()
        # Clients repeat the same few Accept-Encoding and Content-Type values: parse each once.
        self._accepts: dict[bytes, bool] = {}
        self._compressible: dict[bytes, bool] = {}

    def accepted(self, scope: Scope) -> bool:
        """Does this request's client take gzip?"""
        for name, value in scope["headers"]:
            if name == b"accept-encoding":
                accepted = self._accepts.get(value)
                return self.accepts(value) if accepted is None else accepted
        return False

    def responder(self, send: Send, start: Message) -> _GZipResponder:
        """Takes over an eligible response: holds ``start`` until the first body chunk decides."""
        return _GZipResponder(self, send, start)

    def accepts(self, accept_encoding: bytes) -> bool:
        known = self._accepts.get(accept_encoding)
        if known is None:
            if len(self._accepts) >= PARSE_CACHE_SIZE:
                self._accepts.clear()
            known = self._accepts[accept_encoding] = accepts_gzip(accept_encoding.decode("latin-1"))
        return known

    def eligible(self, message: Message) -> bool:
        """A response worth compressing: a full body, larger than the minimum (when its length is announced),
        not yet encoded, of a compressible type."""
        status = message["status"]
        if status < 200 or status in NEVER_COMPRESSED_STATUSES:
            return False
        content_type = b""
        for name, value in message.get("headers", ()):
            name = name.lower()
            if name == b"content-type":
                content_type = value
            elif name == b"content-length":
                if value.isdigit() and int(value) <= self.minimum_size:
                    return False  # decided at the start: the body need not be held back
            elif name in (b"content-encoding", b"content-range"):
                return False
            elif name == b"cache-control" and b"no-transform" in value.lower():
                return False
        known = self._compressible.get(content_type)
        if known is None:
            if len(self._compressible) >= PARSE_CACHE_SIZE:
                self._compressible.clear()
            known = self._compressible[content_type] = is_compressible(content_type.decode("latin-1"))
        return known


class GZipMiddleware:
    def __init__(self, app: ASGIApp, *, policy: Gzip | None = None) -> None:
        self.app = app
        self.policy = policy or Gzip()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.policy.accepted(scope):
            await self.app(scope, receive, self._wrap(send))
        else:
            await self.app(scope, receive, send)

    def _wrap(self, send: Send) -> Send:
        """A ``send`` that hands an eligible response to a responder; anything else passes straight through."""
        policy = self.policy
        responder: _GZipResponder | None = None

        async def send_maybe_compressed(message: Message) -> None:
            nonlocal responder
            if responder is not None:
                await responder.send_body(message)
            elif message["type"] == "http.response.start" and policy.eligible(message):
                responder = policy.responder(send, message)
            else:
                await send(message)

        return send_maybe_compressed


class _GZipResponder:
    """One eligible response: the held start message goes out with the first body chunk, compressed or not."""

    def __init__(self, policy: Gzip, send: Send, start: Message) -> None:
        self.policy = policy
        self.send = send
        start["headers"] = list(start.get("headers", []))
        self.start: Message = start
        self.mode: Literal["pending", "identity", "gzip"] = "pending"
        self.compressor: zlib._Compress | None = None
        self.bytes_in = 0
        self.bytes_out = 0

    async def send_body(self, message: Message) -> None:
        if message["type"] != "http.response.body":  # pathsend, trailers: passed on untouched
            if self.mode == "pending":
                self.mode = "identity"
                await self.send(self.start)
            await self.send(message)
            return
        if self.mode == "identity":
            await self.send(message)
            return

        body: bytes = message.get("body", b"")
        more_body: bool = message.get("more_body", False)
        if self.mode == "pending":
            if not more_body and len(body) <= self.policy.minimum_size:
                self.mode = "identity"
                await self.send(self.start)
                await self.send(message)
                return
            self.mode = "gzip"
            add_vary_accept_encoding(self.start["headers"])
            headers = MutableHeaders(raw=self.start["headers"])
            headers["Content-Encoding"] = "gzip"
            compressed = await self.compress(body, more_body)
            if more_body or self.start.get("trailers", False):
                if "content-length" in headers:
                    del headers["Content-Length"]
            else:
                headers["Content-Length"] = str(len(compressed))
            await self.send(self.start)
        else:
            compressed = await self.compress(body, more_body)
        await self.send({**message, "body": compressed})
        if not more_body:
            self.policy.stats.record(self.bytes_in, self.bytes_out)

    async def compress(self, body: bytes, more_body: bool) -> bytes:
        if len(body) >= THREAD_MINIMUM_SIZE:
            compressed = await anyio.to_thread.run_sync(self._compress, body, more_body)
        else:
            compressed = self._compress(body, more_body)
        self.bytes_in += len(body)
        self.bytes_out += len(compressed)
        return compressed

    def _compress(self, body: bytes, more_body: bool) -> bytes:
        if self.compressor is None:
            self.compressor = zlib.compressobj(self.policy.level, zlib.DEFLATED, GZIP_WBITS)
        if more_body:
            return self.compressor.compress(body) + self.compressor.flush(zlib.Z_SYNC_FLUSH)
        return self.compressor.compress(body) + self.compressor.flush()
