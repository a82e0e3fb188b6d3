"""Pure ASGI middleware of the core HTTP stack: request ids and the last-resort error handler.

(The monitoring stack — timing, rate limits, security headers, gzip — lives in ``spotik.performance``.)
"""

from __future__ import annotations

import re
import uuid

import sqlalchemy.exc
import structlog
from starlette.datastructures import MutableHeaders
from starlette.requests import ClientDisconnect
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spotik.errors import error_response

# A dependency that is down or saturated (database unreachable, pool exhausted) is an overload, not a bug: 503.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    ConnectionError,
    TimeoutError,
)
# PostgreSQL refusing work because it is stopping, starting or full: asyncpg raises these as plain errors, which
# SQLAlchemy wraps in DBAPIError (not OperationalError). SQLSTATE class 08 (connection exception), 53300
# (too_many_connections), 57P01-57P03 (admin_shutdown, crash_shutdown, cannot_connect_now); found by restarting
# PostgreSQL under load (docs/reliability.md#1).
UNAVAILABLE_SQLSTATES = ("08", "53300", "57P01", "57P02", "57P03")


def is_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says a dependency is down or saturated (answered 503), rather than a bug (500)."""
    if isinstance(exc, UNAVAILABLE):
        return True
    if isinstance(exc, sqlalchemy.exc.DBAPIError):
        if exc.connection_invalidated:
            return True
        sqlstate = getattr(exc.orig, "sqlstate", None)
        return isinstance(sqlstate, str) and sqlstate.startswith(UNAVAILABLE_SQLSTATES)
    return False


SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
log = structlog.get_logger("spotik.http")


class RequestIdMiddleware:
    """Gives every request an id (the client's ``X-Request-ID`` if sane), binds it to the logs and echoes it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        incoming = ""
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = incoming if SANE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        structlog.contextvars.clear_contextvars()
        structlog.contextvars.bind_contextvars(request_id=request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        await self.app(scope, receive, send_with_id)


class UnhandledErrorMiddleware:
    """Turns an unexpected exception into a 500 in envelope A (docs/api.md#errors): a request id, never a trace.

    It sits inside the CORS middleware so that browsers can read the error too.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except ClientDisconnect:
            # The client went away in the middle of its body, or ``spotik serve`` cut a slow one with a 408: nothing
            # went wrong here. The 400 reaches nobody; it is what the metrics count, as for an interrupted upload.
            log.info("client disconnected", path=scope.get("path"), method=scope.get("method"))
            if not started:
                await error_response(400, "The request was interrupted", "Request interrupted")(scope, receive, send)
        except Exception as exc:
            request_id = scope.get("state", {}).get("request_id", "")
            unavailable = is_unavailable(exc)
            log.error(
                "dependency unavailable" if unavailable else "unhandled error",
                path=scope.get("path"),
                method=scope.get("method"),
                error=repr(exc),
                exc_info=not unavailable,
            )
            if started:
                raise
            if unavailable:
                response = error_response(
                    503, "Service temporarily unavailable", "Service unavailable", request_id=request_id
                )
                response.headers["Retry-After"] = "5"
            else:
                response = error_response(500, "Server Error", "Internal server error", request_id=request_id)
            await response(scope, receive, send)
