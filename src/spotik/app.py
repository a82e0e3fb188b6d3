"""``create_app(settings)``, the composition root: the app-scoped objects, the middleware list, the routers and the
error handlers (see docs/architecture.md)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import TypeVar

from fastapi.exceptions import RequestValidationError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response

import spotik.db.models  # noqa: F401 - every mapper registered before the first query
from spotik.auth.models import User
from spotik.auth.router import router as auth_router
from spotik.auth.tokens import TokenService
from spotik.cache import CacheManager
from spotik.covers.router import router as covers_router
from spotik.db.engine import create_engine, create_sessionmaker
from spotik.deps import db_session, token_from
from spotik.errors import ApiError, JSONResponse, error_response
from spotik.events import LocalEventBus
from spotik.genres.router import router as genres_router
from spotik.health.router import router as health_router
from spotik.http.cors import CORSMiddleware, cors_options
from spotik.http.docs import router as docs_router
from spotik.http.hot import HotIdRoute, HotReads, HotRoute
from spotik.http.middleware import RequestIdMiddleware, UnhandledErrorMiddleware
from spotik.http.openapi import configure_openapi
from spotik.http.responses import Answer
from spotik.lifespan import build_lifespan
from spotik.performance.api.cache import CacheSubsystem
from spotik.performance.api.router import router as performance_router
from spotik.performance.api.service import PerformanceApi
from spotik.performance.api.subsystems import default_subsystems
from spotik.performance.monitor import Monitoring
from spotik.performance.router import router as metrics_router
from spotik.playback.router import router as playback_router
from spotik.playback.router import status_answer
from spotik.playback.scheduler import PlaybackScheduler
from spotik.playlists.router import router as playlists_router
from spotik.reads import Reads, invalidation_handler
from spotik.realtime.gateway import Realtime
from spotik.realtime.router import router as realtime_router
from spotik.rooms.router import room_answer, rooms_answer
from spotik.rooms.router import router as rooms_router
from spotik.rooms.service import RoomRef
from spotik.rooms.warmup import CacheWarmer
from spotik.settings import Settings
from spotik.state import AppState, SpotikApp
from spotik.tracks.router import queue_answer
from spotik.tracks.router import router as tracks_router

Viewer = TypeVar("Viewer", User, uuid.UUID)


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


def build_state(settings: Settings) -> AppState:
    """Every app-scoped object, built once; nothing connects until the lifespan starts them."""
    engine = create_engine(settings)
    sessionmaker = create_sessionmaker(engine)
    tokens = TokenService.from_settings(settings)
    events = LocalEventBus()
    cache = CacheManager.from_settings(settings)
    # The first subscriber: what a write changed is dropped before anyone (a WebSocket client) hears of the write.
    events.subscribe(invalidation_handler(cache))
    reads = Reads(cache, sessionmaker)
    monitoring = Monitoring(settings)  # metrics registry, query/memory monitors, rate limiter
    monitoring.instrument_engine(engine)
    realtime = Realtime(settings=settings, sessionmaker=sessionmaker, tokens=tokens, events=events, reads=reads)
    monitoring.watch_websockets(realtime.figures)  # the spotik_ws_* families, read at scrape time
    state = AppState(
        settings=settings,
        engine=engine,
        sessionmaker=sessionmaker,
        tokens=tokens,
        events=events,
        cache=cache,
        reads=reads,
        warmer=CacheWarmer(reads, settings),
        monitoring=monitoring,
        performance=PerformanceApi(settings),
        realtime=realtime,
        playback_scheduler=PlaybackScheduler(sessionmaker, events),
    )
    for subsystem in default_subsystems(state):  # database, WebSocket, memory
        state.performance.registry.register(subsystem)
    state.performance.registry.register(CacheSubsystem(cache))
    return state


def hot_routes() -> list[HotRoute | HotIdRoute]:
    """The GETs listeners poll, answered by ``spotik.http.hot`` without FastAPI's routing (the same handler code)."""

    def with_room(
        answer: Callable[[AppState, AsyncSession, Viewer, RoomRef], Awaitable[Answer]],
    ) -> Callable[[AppState, AsyncSession, Viewer, RoomRef | None], Awaitable[Answer]]:
        def call(state: AppState, session: AsyncSession, viewer: Viewer, room: RoomRef | None) -> Awaitable[Answer]:
            assert room is not None  # the template has {room}
            return answer(state, session, viewer, room)

        return call

    return [
        HotRoute("/api/rooms", lambda state, session, user, _: rooms_answer(state, session, user)),
        HotRoute("/api/rooms/{room}", with_room(room_answer)),
        HotRoute("/api/rooms/{room}/tracks", with_room(queue_answer)),
        HotIdRoute("/api/rooms/{room}/playback/status", with_room(status_answer)),
    ]


def create_app(settings: Settings) -> SpotikApp:
    """The composition root: builds the app-scoped objects, the middleware stack, the routes, the error handlers."""
    state = build_state(settings)
    monitoring = state.monitoring
    app = SpotikApp(
        services=state,
        websocket_gateway=monitoring.websocket_guard(state.realtime.asgi),  # upgrades count against the rate limits
        title="Spotik",
        version="0.1.0",
        docs_url=None,  # /docs is spotik.http.docs: Swagger UI with a Content-Security-Policy that lets it run
        redoc_url=None,
        lifespan=build_lifespan(state),
        default_response_class=JSONResponse,
        middleware=[
            # Outermost first. CORS wraps the error handler and the rate limiter so that browsers can read errors too.
            Middleware(RequestIdMiddleware),
            *monitoring.outer_middleware(),  # request timing (+ security headers, gzip, memory sampling)
            Middleware(CORSMiddleware, **cors_options(settings.cors_origins)),
            *monitoring.inner_middleware(),  # rate limit
            Middleware(UnhandledErrorMiddleware),
            Middleware(HotReads, state=state, routes=hot_routes()),  # innermost: every layer above still applies
        ],
        exception_handlers={
            ApiError: _api_error,
            HTTPException: _http_error,
            RequestValidationError: _request_validation_error,
        },
    )
    for router in (
        docs_router,
        health_router,
        auth_router,
        rooms_router,
        tracks_router,
        playback_router,
        genres_router,
        playlists_router,
        covers_router,
        realtime_router,
        metrics_router,  # GET /metrics
        performance_router,  # /api/performance/*, /api/metrics, /dashboard
    ):
        app.include_router(router)
    configure_openapi(app, token=token_from, session=db_session)  # /openapi.json: envelopes, middleware errors
    return app
