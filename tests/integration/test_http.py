"""Errors in their envelopes (docs/api.md#errors, docs/decisions.md#d9), CORS (docs/decisions.md#d12), request ids,
health and time."""

from __future__ import annotations

import base64
import hashlib
import re
import shutil
from datetime import UTC, datetime

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.types import Message
from structlog.testing import capture_logs

from spotik.app import create_app
from spotik.settings import Settings
from spotik.state import SpotikApp
from tests.helpers import register
from tests.integration.tracks_helpers import create_room
from tests.openapi_contract import contract_hooks

ISO_MICROS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def test_unknown_route_is_a_json_404(client: httpx2.AsyncClient) -> None:
    response = await client.get("/api/does-not-exist")
    assert response.status_code == 404
    assert response.json() == {
        "success": False,
        "message": "The route api/does-not-exist could not be found.",
        "error": "Not Found",
    }


async def test_wrong_method_is_a_json_405(client: httpx2.AsyncClient) -> None:
    response = await client.delete("/api/auth/login")
    assert response.status_code == 405
    assert response.headers["allow"] == "POST"
    assert (
        response.json()["message"]
        == "The DELETE method is not supported for route api/auth/login. Supported methods: POST."
    )


@pytest.mark.parametrize("body", [b"{not json", b'{"email": "a@b.c",', b"\xff\xfe"])
async def test_malformed_json_is_a_400(client: httpx2.AsyncClient, body: bytes) -> None:
    response = await client.post("/api/auth/login", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json() == {"success": False, "message": "Malformed JSON in request body", "error": "Invalid JSON"}


async def test_a_json_body_that_is_not_an_object_is_a_400(client: httpx2.AsyncClient) -> None:
    response = await client.post("/api/auth/login", json=["a", "b"])
    assert response.status_code == 400 and response.json()["error"] == "Invalid JSON"


async def test_an_oversized_json_body_is_a_413(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/login",
        content=b'{"a":"' + b"x" * (1024 * 1024) + b'"}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert response.json()["success"] is False


@pytest.fixture
async def failing_app(settings: Settings) -> FastAPI:
    app = create_app(settings)

    async def explode() -> None:
        raise RuntimeError("secret internal detail")

    app.add_api_route("/api/explode", explode)
    return app


async def test_unexpected_errors_are_a_500_with_a_request_id_and_no_trace(failing_app: FastAPI) -> None:
    async with LifespanManager(failing_app) as manager:
        transport = httpx2.ASGITransport(app=manager.app, raise_app_exceptions=False)
        hooks = contract_hooks(failing_app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as client:
            response = await client.get("/api/explode", headers={"Origin": "http://127.0.0.1:3000"})
    assert response.status_code == 500
    body = response.json()
    assert body["success"] is False and body["error"] == "Internal server error"
    assert body["request_id"] == response.headers["x-request-id"] and len(body["request_id"]) == 32
    assert "secret internal detail" not in response.text and "Traceback" not in response.text
    assert response.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"


async def test_a_client_gone_mid_body_is_a_400_not_an_error(app: SpotikApp) -> None:
    """A client that goes away while sending its body (or is cut with a 408 by ``spotik serve``) is logged as such,
    not as an unhandled error with its traceback, and its request counts as a 400 (as an interrupted upload does),
    not a 500."""
    arriving: list[Message] = [
        {"type": "http.request", "body": b'{"email": "a', "more_body": True},
        {"type": "http.disconnect"},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return arriving.pop(0) if arriving else {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        sent.append(message)

    headers = [(b"host", b"testserver"), (b"content-type", b"application/json"), (b"content-length", b"100")]
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST", "scheme": "http",
        "path": "/api/auth/login", "raw_path": b"/api/auth/login", "root_path": "", "query_string": b"",
        "headers": headers, "client": ("127.0.0.1", 50000), "server": ("testserver", 80),
    }  # fmt: skip
    with capture_logs() as logs:
        await app(scope, receive, send)
    assert [entry["event"] for entry in logs if entry["log_level"] in ("error", "critical")] == []
    assert any(entry["event"] == "client disconnected" for entry in logs), logs
    assert [message["status"] for message in sent if message["type"] == "http.response.start"] == [400]
    family = next(app.services.monitoring.metrics.http_request_duration.collect())
    counted = {s.labels["status"]: s.value for s in family.samples if s.name.endswith("_count")}
    assert counted == {"400": 1.0}


async def test_request_id_is_echoed_when_sane_and_replaced_when_not(client: httpx2.AsyncClient) -> None:
    echoed = await client.get("/api/ping", headers={"X-Request-ID": "client-id-123"})
    assert echoed.headers["x-request-id"] == "client-id-123"
    replaced = await client.get("/api/ping", headers={"X-Request-ID": "bad id\twith <script>"})
    assert re.fullmatch(r"[0-9a-f]{32}", replaced.headers["x-request-id"])


@pytest.mark.parametrize("origin", ["http://127.0.0.1:3000", "http://localhost:5173", "http://client.example"])
async def test_cors_on_success_error_and_preflight(client: httpx2.AsyncClient, origin: str) -> None:
    ok = await client.get("/api/ping", headers={"Origin": origin})
    assert ok.headers["access-control-allow-origin"] == origin
    error = await client.get("/api/auth/me", headers={"Origin": origin})
    assert error.status_code == 401 and error.headers["access-control-allow-origin"] == origin
    preflight = await client.options(
        "/api/time",
        headers={
            "Origin": origin,
            "Access-Control-Request-Method": "GET",
            "Access-Control-Request-Headers": "cache-control, authorization",
        },
    )
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    allowed = {h.strip().lower() for h in preflight.headers["access-control-allow-headers"].split(",")}
    assert {"cache-control", "authorization"} <= allowed


async def test_cors_refuses_other_origins(client: httpx2.AsyncClient) -> None:
    response = await client.get("/api/ping", headers={"Origin": "http://evil.example"})
    assert "access-control-allow-origin" not in response.headers
    preflight = await client.options(
        "/api/ping", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "GET"}
    )
    assert preflight.status_code == 400


async def test_ping_and_time(client: httpx2.AsyncClient) -> None:
    ping = await client.get("/api/ping")
    assert ping.json()["status"] == "ok" and ISO_MICROS_Z.match(ping.json()["timestamp"])
    before = datetime.now(UTC)
    body = (await client.get("/api/time")).json()
    after = datetime.now(UTC)
    assert ISO_MICROS_Z.match(body["timestamp"]) and body["timezone"] == "UTC"
    stamp = datetime.strptime(body["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    assert before <= stamp <= after
    assert body["unix_timestamp"] == int(stamp.timestamp())


async def test_health_live_and_ready(client: httpx2.AsyncClient) -> None:
    health = await client.get("/api/health")
    assert health.status_code == 200
    body = health.json()
    assert body["status"] == "healthy"
    assert body["checks"]["database"]["status"] == "healthy" and body["checks"]["storage"]["read_write"] is True
    assert body["checks"]["database"]["driver"] in ("sqlite", "postgresql")
    assert (await client.get("/live")).json()["alive"] is True
    ready = await client.get("/ready")
    assert ready.status_code == 200 and ready.json()["ready"] is True


async def test_health_reports_unwritable_storage(client: httpx2.AsyncClient, settings: Settings) -> None:
    shutil.rmtree(settings.audio_root)
    settings.audio_root.write_bytes(b"a file where a folder should be")
    health = await client.get("/api/health")
    assert health.status_code == 503
    assert health.json()["status"] == "unhealthy"
    assert health.json()["checks"]["storage"]["status"] == "unhealthy"
    assert health.json()["checks"]["database"]["status"] == "healthy"
    ready = await client.get("/ready")
    assert ready.status_code == 503 and ready.json()["checks"]["storage"] == "unhealthy"


async def test_health_reports_an_unreachable_database(tmp_path: object) -> None:
    from pathlib import Path

    storage = Path(str(tmp_path)) / "s"
    settings = Settings(
        env="testing",
        database_url="postgresql://nobody@127.0.0.1:1/none",
        storage_path=storage,
        jwt_secret="z" * 64,
        db_connect_timeout=1,
    )
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)
        hooks = contract_hooks(app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as client:
            health = await client.get("/api/health")
            assert health.status_code == 503
            assert health.json()["checks"]["database"]["status"] == "unhealthy"
            assert (await client.get("/live")).status_code == 200
            login = await client.post("/api/auth/login", json={"email": "a@b.c", "password": "x"})
            assert login.status_code == 503
            assert login.json()["success"] is False


async def test_the_docs_page_brings_a_policy_that_lets_its_own_script_run(client: httpx2.AsyncClient) -> None:
    """Every response's ``default-src 'none'`` would stop Swagger UI: /docs allows its CDN bundle and its one inline
    script by hash (what a browser checks: the SHA-256 of the script's text), and nothing inline beyond that."""
    response = await client.get("/docs")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    directives = [d.partition(" ") for d in response.headers["content-security-policy"].split("; ")]
    policy = {name: value for name, _, value in directives}
    inline = re.findall(r"<script>(.*?)</script>", response.text, re.DOTALL)
    assert len(inline) == 1
    digest = base64.b64encode(hashlib.sha256(inline[0].encode()).digest()).decode()
    assert f"'sha256-{digest}'" in policy["script-src"].split()
    assert "'unsafe-inline'" not in policy["script-src"] and policy["default-src"] == "'none'"
    bundle = re.search(r'<script src="([^"]+)"', response.text)
    assert bundle is not None and bundle.group(1).startswith(tuple(policy["script-src"].split()))
    assert "/openapi.json" in inline[0] and policy["connect-src"] == "'self'"


async def test_the_body_limits_are_settings(settings: Settings) -> None:
    """``MAX_BODY_KB`` holds for JSON bodies, the operator actions' typed bodies included, and ``MAX_COVER_BODY_KB``
    for a cover's request, each on its own: a body just over its limit is a 413, one just under is read."""
    app = create_app(settings.model_copy(update={"max_body_kb": 2, "max_cover_body_kb": 4}))
    async with (
        LifespanManager(app),
        httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver") as client,
    ):
        admin = await register(client, "limits")
        room = await create_room(client, admin)

        def sized(size: int) -> dict[str, str]:  # a JSON object of about ``size`` bytes
            return {"name": "limits", "description": "x" * (size - 40)}

        over = await client.post("/api/rooms", json=sized(2200), headers=admin.headers)
        assert over.status_code == 413 and over.json()["success"] is False
        assert (await client.post("/api/rooms", json=sized(1900), headers=admin.headers)).status_code in (201, 422)
        action = await client.post("/api/performance/cache/clear", json=sized(2200), headers=admin.headers)
        assert action.status_code == 413
        cover = f"/api/rooms/{room}/cover"
        over = await client.post(cover, json={"cover_data": "x" * 4200}, headers=admin.headers)
        assert over.status_code == 413 and over.json() == {"error": "File too large"}
        under = await client.post(cover, json={"cover_data": "x" * 3000}, headers=admin.headers)
        assert under.status_code == 422  # read (over MAX_BODY_KB, under the cover's own), then refused as no image
