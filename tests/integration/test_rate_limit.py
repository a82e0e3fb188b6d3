"""Per-IP rate limiting: 429 envelope and headers, burst and auth limits, trusted proxies, WebSockets, Redis."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
import redis
from fastapi import FastAPI, WebSocket
from httpx2.websockets import ASGIWebSocketTransport, AsyncWebSocketClient, WebSocketUpgradeError
from structlog.testing import capture_logs

from spotik.performance.proxies import TrustedProxies
from spotik.performance.ratelimit import LocalStorage
from tests.conftest import make_settings, unavailable
from tests.perfapp import running_app, sqlite_copy

REDIS_URL = "redis://127.0.0.1:6379/0"
GENEROUS = {"max_requests_per_hour": 10_000, "rate_limit_burst": "10000/minute"}


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return sqlite_copy(sqlite_template, tmp_path / "db")


def limited(url: str, storage: Path, **overrides: Any) -> Any:
    """Test settings with rate limiting on (the shared test settings switch it off)."""
    values: dict[str, Any] = {"rate_limiting_enabled": True, **GENEROUS, **overrides}
    return make_settings(url, storage, **values)


async def test_the_request_after_the_hourly_limit_is_a_429_in_the_envelope(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(limited(sqlite_url, tmp_path, max_requests_per_hour=3)) as running:
        allowed = [(await running.client.get("/api/ping")).status_code for _ in range(3)]
        refused = await running.client.get("/api/ping")
    assert allowed == [200, 200, 200]
    assert refused.status_code == 429
    body = refused.json()
    assert body == {
        "success": False,
        "message": "Too many requests",
        "error": "Rate limit exceeded",
        "retry_after": body["retry_after"],
    }
    assert 1 <= body["retry_after"] <= 3600
    assert refused.headers["retry-after"] == str(body["retry_after"])
    assert refused.headers["x-ratelimit-limit"] == "3"
    assert refused.headers["x-ratelimit-remaining"] == "0"
    reset = int(refused.headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 3600 + 1


async def test_the_burst_limit_is_separate_and_shorter(sqlite_url: str, tmp_path: Path) -> None:
    settings = limited(sqlite_url, tmp_path, max_requests_per_hour=100, rate_limit_burst="2/minute")
    async with running_app(settings) as running:
        statuses = [(await running.client.get("/api/ping")).status_code for _ in range(3)]
        refused = await running.client.get("/api/ping")
    assert statuses == [200, 200, 429]
    assert refused.headers["x-ratelimit-limit"] == "2"
    assert 1 <= int(refused.headers["retry-after"]) <= 60


@pytest.mark.parametrize(
    ("path", "setting"), [("/api/auth/login", "rate_limit_login"), ("/api/auth/register", "rate_limit_register")]
)
async def test_login_and_register_have_stricter_limits(
    sqlite_url: str, tmp_path: Path, path: str, setting: str
) -> None:
    async with running_app(limited(sqlite_url, tmp_path, **{setting: "2/minute"})) as running:
        attempts = [(await running.client.post(path, json={})).status_code for _ in range(3)]
        elsewhere = await running.client.get("/api/ping")
    assert attempts[:2] == [422, 422]  # empty credentials: refused by validation, but counted
    assert attempts[2] == 429
    assert elsewhere.status_code == 200  # the rest of the API is still open to this client


async def test_a_trailing_slash_does_not_escape_the_login_limit(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(limited(sqlite_url, tmp_path, rate_limit_login="1/minute")) as running:
        first = await running.client.post("/api/auth/login", json={})
        second = await running.client.post("/api/auth/login/", json={})
    assert first.status_code == 422 and second.status_code == 429


async def test_each_rejection_is_logged_as_a_security_event(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(limited(sqlite_url, tmp_path, max_requests_per_hour=1)) as running:
        await running.client.get("/api/ping")
        with capture_logs() as logs:
            await running.client.get("/api/ping", headers={"User-Agent": "flood"})
    (event,) = [entry for entry in logs if entry["event"] == "rate limit exceeded"]
    assert event["security_event"] == "rate_limit_exceeded" and event["log_level"] == "warning"
    assert (event["client_ip"], event["path"], event["method"], event["limit"]) == (
        "127.0.0.1",
        "/api/ping",
        "GET",
        "hourly",
    )
    assert event["rule"] == "1 per 1 hour" and event["transport"] == "http"


async def test_health_probes_and_metrics_are_never_limited(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(limited(sqlite_url, tmp_path, max_requests_per_hour=1)) as running:
        statuses = [(await running.client.get(path)).status_code for path in ("/live", "/metrics") * 3]
        assert (await running.client.get("/api/ping")).status_code == 200  # the one allowed request
    assert statuses == [200] * 6


async def test_a_429_is_readable_by_browsers(sqlite_url: str, tmp_path: Path) -> None:
    """CORS wraps the rate limiter (docs/decisions.md#d12: error responses carry CORS headers too)."""
    async with running_app(limited(sqlite_url, tmp_path, max_requests_per_hour=1)) as running:
        await running.client.get("/api/ping")
        refused = await running.client.get("/api/ping", headers={"Origin": "http://127.0.0.1:3000"})
    assert refused.status_code == 429
    assert refused.headers["access-control-allow-origin"] == "http://127.0.0.1:3000"
    assert "Retry-After" in refused.headers["access-control-expose-headers"]


async def test_rate_limiting_can_be_switched_off(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, rate_limiting_enabled=False, max_requests_per_hour=1)
    async with running_app(settings) as running:
        statuses = [(await running.client.get("/api/ping")).status_code for _ in range(3)]
    assert statuses == [200, 200, 200]


# -- client address: X-Forwarded-For only from trusted proxies --------------------------------------------------------


async def test_forwarded_for_from_an_untrusted_peer_is_ignored(sqlite_url: str, tmp_path: Path) -> None:
    settings = limited(sqlite_url, tmp_path, max_requests_per_hour=2)
    async with running_app(settings, client=("10.0.0.1", 123)) as running:
        statuses = [
            (await running.client.get("/api/ping", headers={"X-Forwarded-For": f"203.0.113.{n}"})).status_code
            for n in range(3)
        ]
    assert statuses == [200, 200, 429]  # one bucket: the peer's


async def test_forwarded_for_from_a_trusted_proxy_names_the_client(sqlite_url: str, tmp_path: Path) -> None:
    settings = limited(sqlite_url, tmp_path, max_requests_per_hour=2, trusted_proxies=["10.0.0.0/8"])
    async with running_app(settings, client=("10.0.0.1", 123)) as running:
        distinct = [
            (await running.client.get("/api/ping", headers={"X-Forwarded-For": f"203.0.113.{n}"})).status_code
            for n in range(3)
        ]
        same = [
            (await running.client.get("/api/ping", headers={"X-Forwarded-For": "198.51.100.7"})).status_code
            for _ in range(3)
        ]
    assert distinct == [200, 200, 200]  # three clients behind the proxy
    assert same == [200, 200, 429]  # one client, its own bucket


def scope_from(peer: str, forwarded_for: str | None = None, proto: str | None = None) -> dict[str, Any]:
    headers = []
    if forwarded_for is not None:
        headers.append((b"x-forwarded-for", forwarded_for.encode()))
    if proto is not None:
        headers.append((b"x-forwarded-proto", proto.encode()))
    return {"type": "http", "scheme": "http", "client": (peer, 1234), "headers": headers}


def test_forwarded_for_is_read_right_to_left_up_to_the_first_untrusted_hop() -> None:
    proxies = TrustedProxies(["10.0.0.0/8", "192.168.1.1"])
    # client spoofs 6.6.6.6; 198.51.100.7 is what our first trusted proxy saw connect to it
    assert proxies.client_ip(scope_from("10.0.0.1", "6.6.6.6, 198.51.100.7")) == "198.51.100.7"
    assert proxies.client_ip(scope_from("10.0.0.1", "6.6.6.6, 198.51.100.7, 192.168.1.1")) == "198.51.100.7"
    assert proxies.client_ip(scope_from("10.0.0.1", "10.0.0.9")) == "10.0.0.9"  # only proxies: the leftmost
    assert proxies.client_ip(scope_from("10.0.0.1", "not-an-ip")) == "10.0.0.1"
    assert proxies.client_ip(scope_from("10.0.0.1")) == "10.0.0.1"
    assert proxies.client_ip(scope_from("8.8.8.8", "1.2.3.4")) == "8.8.8.8"  # untrusted peer
    assert proxies.client_ip({"type": "http", "headers": []}) == "unknown"
    assert TrustedProxies([]).client_ip(scope_from("10.0.0.1", "1.2.3.4")) == "10.0.0.1"
    assert TrustedProxies(["::1"]).client_ip(scope_from("::1", "2001:db8::5")) == "2001:db8::5"


def test_forwarded_proto_is_believed_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.is_https(scope_from("10.0.0.1", proto="https"))
    assert not proxies.is_https(scope_from("8.8.8.8", proto="https"))
    assert not proxies.is_https(scope_from("10.0.0.1", proto="http"))
    assert proxies.is_https({**scope_from("8.8.8.8"), "scheme": "https"})


# -- WebSocket upgrades ------------------------------------------------------------------------------------------------


def add_echo_socket(app: FastAPI) -> None:
    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text(await websocket.receive_text())
        await websocket.close()

    app.add_api_websocket_route("/test/ws", echo)


def with_denial_extension(app: Any) -> Any:
    """Advertise the ASGI WebSocket denial-response extension, as uvicorn does (the test transport does not)."""

    async def advertised(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "websocket":
            scope = {**scope, "extensions": {"websocket.http.response": {}}}
        await app(scope, receive, send)

    return advertised


async def test_a_rejected_websocket_upgrade_gets_an_http_429(sqlite_url: str, tmp_path: Path) -> None:
    settings = limited(sqlite_url, tmp_path, max_requests_per_hour=2)
    async with running_app(settings, routes=add_echo_socket) as running:
        await running.client.get("/api/ping")
        transport = ASGIWebSocketTransport(app=with_denial_extension(running.manager.app), initial_receive_timeout=10.0)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
            sockets = AsyncWebSocketClient(http)
            async with sockets.connect("/test/ws") as socket:  # the 2nd request: accepted
                await socket.send_text("hello")
                assert await socket.receive_text() == "hello"
            with pytest.raises(WebSocketUpgradeError) as refused:
                async with sockets.connect("/test/ws"):
                    pass
    response = refused.value.response
    assert response.status_code == 429
    assert response.headers["retry-after"] and response.headers["x-ratelimit-limit"] == "2"
    assert response.json()["error"] == "Rate limit exceeded"


async def test_websocket_upgrades_count_against_the_http_budget(sqlite_url: str, tmp_path: Path) -> None:
    settings = limited(sqlite_url, tmp_path, max_requests_per_hour=1)
    async with running_app(settings, routes=add_echo_socket) as running:
        transport = ASGIWebSocketTransport(app=with_denial_extension(running.manager.app), initial_receive_timeout=10.0)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
            async with AsyncWebSocketClient(http).connect("/test/ws") as socket:
                await socket.send_text("x")
                await socket.receive_text()
        after = await running.client.get("/api/ping")
    assert after.status_code == 429


# -- Redis: every instance shares the counts ---------------------------------------------------------------------------


@pytest.fixture
def redis_url() -> str:
    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable(f"Redis at {REDIS_URL}", exc)
    finally:
        client.close()
    return REDIS_URL


@pytest.mark.redis
async def test_instances_share_their_counts_through_redis(sqlite_url: str, tmp_path: Path, redis_url: str) -> None:
    shared = {"redis_url": redis_url, "rate_limit_key_prefix": f"spotik-test:{uuid.uuid4().hex}"}
    settings_a = limited(sqlite_url, tmp_path / "a", max_requests_per_hour=3, **shared)
    settings_b = limited(sqlite_url, tmp_path / "b", max_requests_per_hour=3, **shared)
    async with running_app(settings_a) as first, running_app(settings_b) as second:
        assert first.monitoring.rate_limiter is not None and first.monitoring.rate_limiter.shared
        statuses = [
            (await first.client.get("/api/ping")).status_code,
            (await second.client.get("/api/ping")).status_code,
            (await first.client.get("/api/ping")).status_code,
            (await second.client.get("/api/ping")).status_code,
            (await first.client.get("/api/ping")).status_code,
        ]
    assert statuses == [200, 200, 200, 429, 429]


@pytest.mark.redis
async def test_separate_prefixes_do_not_share_counts(sqlite_url: str, tmp_path: Path, redis_url: str) -> None:
    settings_a = limited(
        sqlite_url,
        tmp_path / "a",
        max_requests_per_hour=1,
        redis_url=redis_url,
        rate_limit_key_prefix=f"spotik-test:{uuid.uuid4().hex}",
    )
    settings_b = limited(
        sqlite_url,
        tmp_path / "b",
        max_requests_per_hour=1,
        redis_url=redis_url,
        rate_limit_key_prefix=f"spotik-test:{uuid.uuid4().hex}",
    )
    async with running_app(settings_a) as first, running_app(settings_b) as second:
        statuses = [(await app.client.get("/api/ping")).status_code for app in (first, second)]
    assert statuses == [200, 200]


async def test_an_unreachable_redis_falls_back_to_per_instance_limits_and_says_so(
    sqlite_url: str, tmp_path: Path
) -> None:
    settings = limited(sqlite_url, tmp_path, max_requests_per_hour=2, redis_url="redis://127.0.0.1:1/0")
    async with running_app(settings) as running:
        with capture_logs() as logs:
            statuses = [(await running.client.get("/api/ping")).status_code for _ in range(3)]
            refused = await running.client.get("/api/ping")
    assert statuses == [200, 200, 429]  # counted in this process while Redis is unreachable, never 5xx
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    outages = [entry for entry in logs if entry["event"] == "rate limit storage unavailable; counting per instance"]
    assert len(outages) == 1  # logged once, not per request


@pytest.mark.parametrize("strategy", ["fixed-window", "sliding-window-counter", "moving-window"])
async def test_every_strategy_refuses_the_request_over_the_limit(
    sqlite_url: str, tmp_path: Path, strategy: str
) -> None:
    settings = limited(sqlite_url, tmp_path, max_requests_per_hour=2, rate_limit_strategy=strategy)
    async with running_app(settings) as running:
        statuses = [(await running.client.get("/api/ping")).status_code for _ in range(3)]
        refused = await running.client.get("/api/ping")
    assert statuses == [200, 200, 429]
    assert refused.headers["x-ratelimit-limit"] == "2" and int(refused.headers["retry-after"]) >= 1


async def test_local_counters_expire_and_are_swept() -> None:
    storage = LocalStorage(sweep_interval=0)  # sweep on every count
    assert [storage.count("window", 60) for _ in range(3)] == [1, 2, 3]
    assert [storage.count("gone", 0) for _ in range(2)] == [1, 1]  # a zero-length window never accumulates
    assert await storage.get("window") == 3 and await storage.get("gone") == 0
    assert len(storage) == 2  # "window" and the (already expired) last "gone"
    storage.count("other", 60)
    assert len(storage) == 2  # the sweep dropped "gone": "window" and "other" remain


async def test_the_gateways_upgrades_are_rate_limited_too(sqlite_url: str, tmp_path: Path) -> None:
    """``/ws`` skips the HTTP stack (spotik.state.SpotikApp) but not the limiter."""
    settings = limited(sqlite_url, tmp_path, max_requests_per_hour=2)
    async with running_app(settings) as running:
        await running.client.get("/api/ping")
        transport = ASGIWebSocketTransport(app=with_denial_extension(running.manager.app), initial_receive_timeout=10.0)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as http:
            sockets = AsyncWebSocketClient(http)
            async with sockets.connect("/ws") as socket:  # the 2nd request: reaches the gateway (no token: 4401)
                assert orjson.loads(await socket.receive_text())["data"]["error_code"] == "authentication_failed"
            with pytest.raises(WebSocketUpgradeError) as refused:
                async with sockets.connect("/ws"):
                    pass
    assert refused.value.response.status_code == 429
