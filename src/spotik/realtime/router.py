"""``/ws``: the WebSocket endpoint (contract D3).

``/ws`` WebSocket scopes do not go through the HTTP middleware stack and router: ``spotik.app.Spotik`` hands them to
``websocket_app`` (behind the rate limiter), which keeps an idle connection small; everything else happens in
``Realtime.serve``."""

from __future__ import annotations

from collections.abc import Awaitable

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from spotik.errors import error_response
from spotik.realtime.gateway import Realtime
from spotik.realtime.protocol import CloseCode

router = APIRouter(tags=["realtime"])


def realtime_of(websocket: WebSocket) -> Realtime | None:
    """The app's ``Realtime``, from the lifespan state (``AppState.realtime``)."""
    app_state = (websocket.scope.get("state") or {}).get("spotik")
    realtime = getattr(app_state, "realtime", None)
    return realtime if isinstance(realtime, Realtime) else None


async def _not_running(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.close(CloseCode.TRY_AGAIN_LATER, "real-time gateway not running")


def websocket_endpoint(websocket: WebSocket) -> Awaitable[None]:
    """The gateway's coroutine itself, not one awaiting it: every coroutine between the server and the read loop
    stays alive (~250 B) for as long as the socket is open."""
    realtime = realtime_of(websocket)
    if realtime is None:  # the app was built without the real-time gateway
        return _not_running(websocket)
    return realtime.serve(websocket)


def websocket_app(scope: Scope, receive: Receive, send: Send) -> Awaitable[None]:
    """``/ws`` as a bare ASGI app (``spotik.app.Spotik`` calls it ahead of the HTTP stack)."""
    return websocket_endpoint(WebSocket(scope, receive, send))


router.add_websocket_route("/ws", websocket_endpoint, name="websocket")  # for an app without that shortcut


@router.get("/ws", include_in_schema=False)
async def websocket_upgrade_required(_request: Request) -> Response:
    return error_response(400, "WebSocket upgrade required", "WebSocket upgrade required")
