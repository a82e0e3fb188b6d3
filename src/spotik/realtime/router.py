"""``/ws``: the WebSocket endpoint (contract D3). A plain Starlette route: no dependency resolution per socket,
which keeps an idle connection small; everything else happens in ``Realtime.serve``."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response
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


router.add_websocket_route("/ws", websocket_endpoint, name="websocket")


@router.get("/ws", include_in_schema=False)
async def websocket_upgrade_required(_request: Request) -> Response:
    return error_response(400, "WebSocket upgrade required", "WebSocket upgrade required")
