"""``/ws``: the WebSocket endpoint (contract D3).

``/ws`` WebSocket scopes do not go through the HTTP middleware stack and router: ``spotik.app.Spotik`` hands them to
``websocket_app`` (behind the rate limiter), which keeps an idle connection small; everything else happens in
``Realtime.serve``."""

from __future__ import annotations

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


async def websocket_endpoint(websocket: WebSocket) -> None:
    realtime = realtime_of(websocket)
    if realtime is None:  # the app was built without the real-time gateway
        await websocket.accept()
        await websocket.close(CloseCode.TRY_AGAIN_LATER, "real-time gateway not running")
        return
    await realtime.serve(websocket)


async def websocket_app(scope: Scope, receive: Receive, send: Send) -> None:
    """``/ws`` as a bare ASGI app (``spotik.app.Spotik`` calls it ahead of the HTTP stack)."""
    await websocket_endpoint(WebSocket(scope, receive, send))


router.add_websocket_route("/ws", websocket_endpoint, name="websocket")  # for an app without that shortcut


@router.get("/ws", include_in_schema=False)
async def websocket_upgrade_required(_request: Request) -> Response:
    return error_response(400, "WebSocket upgrade required", "WebSocket upgrade required")
