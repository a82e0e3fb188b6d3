"""``GET /metrics``: the Prometheus text exposition of this app's registry."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.responses import PlainTextResponse, Response

from spotik.deps import StateDep

router = APIRouter(tags=["monitoring"])


@router.get(
    "/metrics",
    summary="Prometheus metrics (text exposition format 0.0.4)",
    response_class=PlainTextResponse,
    responses={200: {"description": "This process's metrics, in Prometheus' text format."}},
)
async def prometheus_metrics(state: StateDep) -> Response:
    return Response(state.monitoring.metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)
