"""``Cache-Control: no-store`` on the JSON answers to requests that carried a token (spotik.performance.middleware
.security), applied by both wrappers of the security headers: the request-timing layer, and the standalone security
middleware that takes its place with monitoring off."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi import FastAPI
from starlette.responses import Response

from tests.conftest import make_settings
from tests.perfapp import running_app, sqlite_copy

BEARER = {"Authorization": "Bearer x.y.z"}


def add_routes(app: FastAPI) -> None:
    async def json_body() -> Response:
        return Response(b"{}", media_type="application/json")

    async def problem() -> Response:
        return Response(b"{}", media_type="application/problem+json; charset=utf-8")

    async def cached_json() -> Response:
        return Response(b"{}", media_type="application/json", headers={"Cache-Control": "private, max-age=5"})

    async def audio() -> Response:
        return Response(b"ID3", media_type="audio/mpeg", headers={"Cache-Control": "public, max-age=3600"})

    for path, endpoint in (
        ("/test/json", json_body),
        ("/test/problem", problem),
        ("/test/cached-json", cached_json),
        ("/test/audio", audio),
    ):
        app.add_api_route(path, endpoint)


@pytest.mark.parametrize("monitoring", [True, False], ids=["timing-layer", "standalone"])
@pytest.mark.parametrize(
    ("url", "headers", "expected"),
    [
        ("/test/json", BEARER, "no-store"),  # a bearer token
        ("/test/json?token=x.y.z", {}, "no-store"),  # the token as a query parameter
        ("/test/json?a=1&%74oken=x.y.z", {}, "no-store"),  # … percent-encoded, as the app reads it
        ("/test/problem", BEARER, "no-store"),
        ("/api/rooms", BEARER, "no-store"),  # an error (401) is JSON too
        ("/api/nowhere", BEARER, "no-store"),  # and the framework's 404
        ("/test/json", {}, None),  # no credentials: public, left alone
        ("/test/json?tokens=1", {}, None),  # not the token parameter
        ("/test/cached-json", BEARER, "private, max-age=5"),  # the route chose its own caching
        ("/test/audio", BEARER, "public, max-age=3600"),  # a file keeps its caching
    ],
)
async def test_no_store_on_private_json_only(
    sqlite_template: Path, tmp_path: Path, monitoring: bool, url: str, headers: dict[str, str], expected: str | None
) -> None:
    settings = make_settings(
        sqlite_copy(sqlite_template, tmp_path / "db"), tmp_path, enable_performance_monitoring=monitoring
    )
    async with running_app(settings, routes=add_routes) as running:
        response = await running.client.get(url, headers=headers)
    assert response.headers["x-content-type-options"] == "nosniff"
    assert ("x-response-time" in response.headers) is monitoring  # the wrapper under test
    assert response.headers.get("cache-control") == expected
