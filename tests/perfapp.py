"""A dedicated app for the monitoring-stack tests: its own settings, extra test routes, a chosen client address."""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from spotik.app import create_app
from spotik.performance.monitor import Monitoring
from spotik.settings import Settings
from spotik.state import AppState, SpotikApp
from tests.openapi_contract import contract_hooks

DEFAULT_CLIENT = ("127.0.0.1", 123)


@dataclass
class RunningApp:
    app: FastAPI
    manager: LifespanManager
    client: httpx2.AsyncClient

    @property
    def monitoring(self) -> Monitoring:
        return self.state.monitoring

    @property
    def state(self) -> AppState:
        app: SpotikApp = self.app  # type: ignore[assignment]
        return app.services

    def client_from(
        self, address: tuple[str, int], base_url: str = "http://testserver", **kwargs: Any
    ) -> httpx2.AsyncClient:
        """Another client whose requests arrive from ``address`` (the ASGI ``client`` of the scope)."""
        transport = httpx2.ASGITransport(app=self.manager.app, client=address, **kwargs)
        return httpx2.AsyncClient(transport=transport, base_url=base_url, event_hooks=contract_hooks(self.app))

    async def scrape(self) -> dict[str, list[Sample]]:
        """``GET /metrics`` parsed by prometheus_client's own parser: family name -> samples."""
        response = await self.client.get("/metrics")
        assert response.status_code == 200, response.text
        return {family.name: family.samples for family in text_string_to_metric_families(response.text)}


def sqlite_copy(template: Path, folder: Path) -> str:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "spotik.sqlite3"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@asynccontextmanager
async def running_app(
    settings: Settings,
    *,
    routes: Callable[[FastAPI], None] | None = None,
    client: tuple[str, int] = DEFAULT_CLIENT,
    base_url: str = "http://testserver",
) -> AsyncIterator[RunningApp]:
    app = create_app(settings)
    if routes is not None:
        routes(app)
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app, client=client)
        async with httpx2.AsyncClient(transport=transport, base_url=base_url, event_hooks=contract_hooks(app)) as http:
            yield RunningApp(app, manager, http)


def sample_value(samples: list[Sample], name: str, **labels: str) -> float | None:
    """The value of the sample ``name`` whose labels include ``labels`` (``None`` when absent)."""
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    return None
