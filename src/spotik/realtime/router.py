"""``/ws`` over plain HTTP: a request without the upgrade gets a clear 400.

WebSocket scopes for ``/ws`` never reach the router: ``spotik.state.SpotikApp`` hands them to
``Realtime.asgi`` (behind the rate limiter), which keeps an idle connection small (docs/api.md#websocket).
"""

from __future__ import annotations

from fastapi import APIRouter
from starlette.requests import Request
from starlette.responses import Response

from spotik.errors import error_response

router = APIRouter(tags=["realtime"])


@router.get("/ws", include_in_schema=False)
async def websocket_upgrade_required(_request: Request) -> Response:
    return error_response(400, "WebSocket upgrade required", "WebSocket upgrade required")
