"""``GET /metrics``: the Prometheus text exposition of this app's registry (and the monitoring lifespan)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from starlette.responses import PlainTextResponse, Response

if TYPE_CHECKING:
    from spotik.performance.monitor import Monitoring


def build_router(monitoring: Monitoring) -> APIRouter:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        await monitoring.start()
        try:
            yield {"monitoring": monitoring}
        finally:
            await monitoring.stop()

    router = APIRouter(tags=["monitoring"], lifespan=lifespan)

    @router.get(
        "/metrics",
        summary="Prometheus metrics (text exposition format 0.0.4)",
        response_class=PlainTextResponse,
        responses={200: {"description": "This process's metrics, in Prometheus' text format."}},
    )
    async def prometheus_metrics() -> Response:
        return Response(monitoring.metrics.exposition(), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    return router
