"""create_app(settings): the middleware list, the routers and the error handlers."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

import spotik.db.models  # noqa: F401 - every mapper registered before the first query
from spotik.auth.router import router as auth_router
from spotik.covers.router import router as covers_router
from spotik.errors import ApiError, JSONResponse, error_response
from spotik.genres.router import router as genres_router
from spotik.health.router import router as health_router
from spotik.http.cors import CORSMiddleware, cors_options
from spotik.http.middleware import RequestIdMiddleware, UnhandledErrorMiddleware
from spotik.http.openapi import configure_openapi
from spotik.lifespan import build_lifespan
from spotik.performance.api import PerformanceApi
from spotik.performance.monitor import Monitoring
from spotik.playback.router import router as playback_router
from spotik.playlists.router import router as playlists_router
from spotik.realtime.router import router as realtime_router
from spotik.realtime.router import websocket_app
from spotik.rooms.router import router as rooms_router
from spotik.settings import Settings
from spotik.tracks.router import router as tracks_router


async def _api_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return exc.response()


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    path = request.url.path.lstrip("/")
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        return error_response(404, f"The route {path} could not be found.", "Not Found")
    if exc.status_code == 405:
        allowed = headers.get("Allow", "")
        message = f"The {request.method} method is not supported for route {path}. Supported methods: {allowed}."
        response = error_response(405, message, "Method Not Allowed")
        response.headers.update(headers)
        return response
    response = error_response(exc.status_code, str(exc.detail), str(exc.detail))
    response.headers.update(headers)
    return response


async def _request_validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    errors: dict[str, list[str]] = {}
    for item in exc.errors():
        if item.get("type") == "json_invalid":
            return error_response(400, "Malformed JSON in request body", "Invalid JSON")
        location = [str(part) for part in item.get("loc", ()) if part not in ("body", "query", "path")]
        errors.setdefault(".".join(location) or "input", []).append(str(item.get("msg")))
    return ApiError("Validation failed", errors=errors, status_code=422).response()


class Spotik(FastAPI):
    """The FastAPI app, except that ``/ws`` WebSocket scopes go straight to ``websocket_gateway`` (rate-limited).

    An open socket keeps every ASGI layer it passed through alive as a suspended coroutine for as long as it is
    connected. The HTTP stack (FastAPI's own error, telemetry and body-limit layers, request id, timing, CORS,
    error envelope, exception handlers, router) does nothing for a socket after the handshake, so bypassing it keeps
    an idle connection small; the gateway does its own Origin check and error handling.
    """

    websocket_gateway: ASGIApp

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "websocket" and scope["path"] == "/ws":
            await self.websocket_gateway(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


def create_app(settings: Settings) -> FastAPI:
    monitoring = Monitoring(settings)  # app-scoped: metrics registry, query/memory monitors, rate limiter
    app = Spotik(
        title="Spotik",
        version="0.1.0",
        lifespan=build_lifespan(settings),
        default_response_class=JSONResponse,
        middleware=[
            # Outermost first. CORS wraps the error handler and the rate limiter so that browsers can read errors too.
            Middleware(RequestIdMiddleware),
            *monitoring.outer_middleware(),  # request timing (+ security headers, gzip, memory sampling)
            Middleware(CORSMiddleware, **cors_options(settings.cors_origins)),
            *monitoring.inner_middleware(),  # rate limit
            Middleware(UnhandledErrorMiddleware),
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            RequestValidationError: _request_validation_error,
        },
    )
    for router in (
        health_router,
        auth_router,
        rooms_router,
        tracks_router,
        playback_router,
        genres_router,
        playlists_router,
        covers_router,
        realtime_router,
    ):
        app.include_router(router)
    app.include_router(monitoring.router())  # GET /metrics; its lifespan starts/stops the monitoring
    app.include_router(PerformanceApi(settings).router())  # /api/performance/*, /api/metrics, /dashboard
    app.websocket_gateway = monitoring.websocket_guard(websocket_app)  # upgrades count against the rate limits
    configure_openapi(app)  # /openapi.json and /docs: shared envelopes, middleware errors, security
    return app
