"""The hot reads' fast path (docs/cache.md#answers): the four GETs that listeners poll, answered without FastAPI's
routing and dependency graph, and their rendered answers kept per viewer.

A pure ASGI middleware, the innermost one: request id, timing, security headers, gzip, CORS and the rate limiter
still apply. It takes a request only when all of this holds, and otherwise hands it to FastAPI untouched:

* ``GET`` of one of the routes it was given, with no query string, the cache on, and a bearer token;
* the handler's own code answers it with a success: the token verifies and is not revoked, the user exists, the
  room exists and the viewer may see it. Any :class:`~spotik.errors.ApiError` (a 401, 403 or 404) sends the
  request on to FastAPI, which works it out again and renders the error, in the order its dependencies resolve.

Both paths run the same code: each route is the handler's ``…_answer`` function, which FastAPI's route calls too.

**Kept answers** (``api_response``, in this process only: per viewer, and larger than the entries they are built
from). An :class:`~spotik.http.responses.Answer` with ``tags`` is stored with them, its body and its gzip, under
the viewer and the path; the next request of the same viewer for the same path is sent those bytes after its token
is checked again. It is never stale for the same reasons the entries are: its tags are those of every entry it was
built from, so every write that drops one of those drops it too (here, and on the peers through Redis); the
invalidation sequence is taken before the viewer is authenticated, so an answer built while one of its tags was
invalidated is not kept; and it lives no longer than its ``until`` (a participant's ``duration_in_room`` turning)
or the namespace's TTL.
"""

from __future__ import annotations

import re
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import anyio.to_thread
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import ASGIApp, Receive, Scope, Send

from spotik.auth.credentials import credentials
from spotik.auth.models import User
from spotik.auth.service import authenticate, cached_claims
from spotik.auth.tokens import Claims
from spotik.errors import ApiError
from spotik.http.responses import Answer
from spotik.performance.middleware.gzip import GZIP_WBITS, THREAD_MINIMUM_SIZE, gzip_size, gzip_whole
from spotik.reads import API_RESPONSE
from spotik.rooms.service import RoomRef, find_room_ref
from spotik.state import AppState

JSON_TYPE = (b"content-type", b"application/json")
GZIPPED = ((b"content-encoding", b"gzip"), (b"vary", b"Accept-Encoding"))


class SessionOnDemand:
    """Stands in for an ``AsyncSession`` that is opened the first time any of it is used. The cached reads touch
    the caller's session only on a miss (``Reads.through``), so a request answered from the cache never pays for
    one."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession]) -> None:
        self._sessionmaker = sessionmaker
        self._session: AsyncSession | None = None

    def __getattr__(self, name: str) -> Any:
        if self._session is None:
            self._session = self._sessionmaker()
        return getattr(self._session, name)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()


@dataclass(frozen=True, slots=True)
class HotRoute:
    """``path`` is the route's template (``{room}`` at most once, a path segment) and its metrics label; ``answer``
    is the handler's code, given the app's state, a session, the viewer and the ``{room}``'s reference (None when
    the template has none)."""

    path: str
    answer: Callable[[AppState, AsyncSession, User, RoomRef | None], Awaitable[Answer]]


@dataclass(frozen=True, slots=True)
class HotIdRoute:
    """A :class:`HotRoute` whose answer needs the viewer's id alone: when this process holds everything the token's
    checks ask of the cache (:func:`~spotik.auth.service.cached_claims`), no ``User`` is built for it."""

    path: str
    answer: Callable[[AppState, AsyncSession, uuid.UUID, RoomRef | None], Awaitable[Answer]]


class HotReads:
    def __init__(self, app: ASGIApp, *, state: AppState, routes: Sequence[HotRoute | HotIdRoute]) -> None:
        self.app = app
        self.state = state
        self.routes = [(re.compile("^" + r.path.replace("{room}", "(?P<room>[^/]+)") + "$"), r) for r in routes]
        self.prefix = min((route.path.partition("{")[0] for route in routes), key=len, default="")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] == "GET"
            and not scope["query_string"]
            and scope["path"].startswith(self.prefix)
            and self.state.cache.enabled
        ):
            for pattern, route in self.routes:
                matched = pattern.match(scope["path"])
                if matched is not None:
                    body = await self._answer(scope, route, matched.groupdict().get("room"))
                    if body is not None:
                        scope["route"] = route  # the metrics label, as FastAPI's route would set it
                        await self._send(scope, send, *body)
                        return
                    break
        await self.app(scope, receive, send)

    async def _answer(
        self, scope: Scope, route: HotRoute | HotIdRoute, room: str | None
    ) -> tuple[bytes | None, bytes | None] | None:
        """``(body, gzipped body)``, kept (then only one of them) or worked out; None to hand the request to
        FastAPI."""
        token = credentials(scope).token
        if token is None:
            return None
        state = self.state
        store = state.cache.store
        claims = cached_claims(state.tokens, state.reads, token)
        if claims is not None:
            kept = store.get(API_RESPONSE, f"{claims.user_id}:{scope['path']}")
            if kept is not None:
                return kept[0], kept[1]
        with store.watching() as since:  # before anything the answer shows is read
            opened = SessionOnDemand(state.sessionmaker)
            session = cast(AsyncSession, opened)  # with every read a hit, it is never opened
            try:
                viewer_id, answer = await self._work_out(session, route, token, claims, room)
            except ApiError:
                return None
            finally:
                await opened.close()
            body = bytes(answer.response.body)
            gzip = state.monitoring.gzip
            gzipped = None
            if gzip is not None and len(body) > gzip.minimum_size and (answer.tags or gzip.accepted(scope)):
                if len(body) >= THREAD_MINIMUM_SIZE:  # as the gzip layer does: the event loop never stalls
                    gzipped = await anyio.to_thread.run_sync(gzip_whole, body, gzip.level)
                else:
                    gzipped = gzip_whole(body, gzip.level)
            if answer.tags:
                ttl = store.namespace(API_RESPONSE).spec.ttl
                if answer.until is not None:  # from now on, as the store counts its entries' lives
                    ttl = min(ttl, (answer.until - datetime.now(UTC)).total_seconds())
                if ttl > 0:  # the gzip alone when there is one (4-5x smaller); the rare identity client unzips it
                    blob = store.encode(API_RESPONSE, [None if gzipped else body, gzipped])
                    key = f"{viewer_id}:{scope['path']}"
                    store.put(API_RESPONSE, key, blob, ttl=ttl, tags=answer.tags, since=since)
            return body, gzipped

    async def _work_out(
        self, session: AsyncSession, route: HotRoute | HotIdRoute, token: str, claims: Claims | None, room: str | None
    ) -> tuple[uuid.UUID, Answer]:
        """The viewer's id and the route's answer, in the order FastAPI's dependencies resolve."""
        state = self.state
        user = None
        if isinstance(route, HotIdRoute) and claims is not None:
            viewer_id = claims.user_id  # the token's checks all passed from the cache
        else:
            _, user = await authenticate(session, state.tokens, token, state.reads)
            viewer_id = user.id
        ref = None if room is None else await find_room_ref(session, state.reads, room)
        if isinstance(route, HotIdRoute):
            return viewer_id, await route.answer(state, session, viewer_id, ref)
        assert user is not None
        return viewer_id, await route.answer(state, session, user, ref)

    async def _send(self, scope: Scope, send: Send, body: bytes | None, gzipped: bytes | None) -> None:
        headers = [JSON_TYPE]
        gzip = self.state.monitoring.gzip
        if gzipped is not None and gzip is not None and gzip.accepted(scope):
            gzip.stats.record(len(body) if body is not None else gzip_size(gzipped), len(gzipped))
            body = gzipped
            headers.extend(GZIPPED)
        elif body is None:
            assert gzipped is not None
            body = zlib.decompress(gzipped, GZIP_WBITS)
        headers.append((b"content-length", b"%d" % len(body)))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})
