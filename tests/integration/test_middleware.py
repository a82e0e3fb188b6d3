"""The monitoring stack's middleware: timing, security headers, gzip, DB counters, slow queries, N+1, memory."""

from __future__ import annotations

import gzip
import mmap
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi import APIRouter, FastAPI, Request
from sqlalchemy import text
from starlette.responses import PlainTextResponse, Response, StreamingResponse
from structlog.testing import capture_logs

from spotik.performance.dbtiming import current_request_queries
from spotik.performance.middleware.gzip import accepts_gzip, is_compressible
from spotik.performance.monitor import Monitoring
from spotik.performance.routes import UNMATCHED, route_template
from tests.conftest import make_settings
from tests.perfapp import running_app, sqlite_copy

RESPONSE_TIME = re.compile(r"^\d+\.\d{2}ms$")
USERS_QUERY = "SELECT username FROM users WHERE username = :name"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return sqlite_copy(sqlite_template, tmp_path / "db")


def add_test_routes(app: FastAPI) -> None:
    """Tiny endpoints with exactly known bodies, headers and queries."""

    async def sized(kind: str, size: int) -> Response:
        media_type = {"json": "application/json", "text": "text/plain", "audio": "audio/mpeg", "png": "image/png"}
        return Response(b"a" * size, media_type=media_type[kind])

    async def partial() -> Response:
        return Response(
            b"a" * 5000,
            status_code=206,
            media_type="text/plain",
            headers={"Content-Range": "bytes 0-4999/10000", "Accept-Ranges": "bytes"},
        )

    async def encoded() -> Response:
        return Response(b"b" * 5000, media_type="application/json", headers={"Content-Encoding": "br"})

    async def streamed() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for index in range(5):
                yield f"chunk {index} ".encode() * 200

        return StreamingResponse(chunks(), media_type="text/plain")

    async def own_policy() -> PlainTextResponse:
        return PlainTextResponse("page", headers={"Content-Security-Policy": "default-src 'self'"})

    async def repeat_query(request: Request, times: int) -> dict[str, Any]:
        async with request.app.services.engine.connect() as connection:
            for index in range(times):
                await connection.execute(text(USERS_QUERY), {"name": f"nobody-{index}"})
        queries = current_request_queries()
        return {"count": queries.count if queries else None, "on_scope": request.scope["state"]["db_queries"].count}

    async def slow_write(request: Request) -> dict[str, bool]:
        async with request.app.services.engine.begin() as connection:
            await connection.execute(text("UPDATE users SET username = username WHERE username = :n"), {"n": "nobody"})
        return {"ok": True}

    async def item(item_id: int) -> dict[str, int]:
        return {"id": item_id}

    async def allocate(request: Request, megabytes: int) -> dict[str, int]:
        # Fresh pages from the kernel, each touched so that it is resident, kept alive past the request. Not a bytes
        # object: after a long run malloc may serve it from freed heap pages that are resident already (its mmap
        # threshold rises once a large block is freed), and the process's RSS would not grow.
        hoard: list[mmap.mmap] = request.app.state.hoard
        pages = mmap.mmap(-1, megabytes << 20)
        for offset in range(0, len(pages), mmap.PAGESIZE):
            pages[offset] = 1
        hoard.append(pages)
        return {"held": len(hoard)}

    for path, endpoint in (
        ("/test/sized/{kind}/{size}", sized),
        ("/test/partial", partial),
        ("/test/encoded", encoded),
        ("/test/streamed", streamed),
        ("/test/own-policy", own_policy),
        ("/test/repeat/{times}", repeat_query),
        ("/test/slow-write", slow_write),
        ("/test/items/{item_id}", item),
        ("/test/allocate/{megabytes}", allocate),
    ):
        app.add_api_route(path, endpoint)


async def raw_get(client: httpx2.AsyncClient, path: str, **headers: str) -> tuple[httpx2.Response, bytes]:
    """The response and its body exactly as sent (httpx would transparently gunzip ``content``)."""
    request_headers = {"Accept-Encoding": "gzip", **headers}
    async with client.stream("GET", path, headers=request_headers) as response:
        raw = b"".join([chunk async for chunk in response.aiter_raw()])
    return response, raw


# -- request timing -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/api/ping", "/api/no-such-route"])
async def test_every_response_carries_x_response_time_in_ms(sqlite_url: str, tmp_path: Path, path: str) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path)) as running:
        response = await running.client.get(path)
    assert RESPONSE_TIME.match(response.headers["x-response-time"]), response.headers["x-response-time"]
    assert response.headers["x-request-id"]  # the request-id middleware still wraps the stack


async def test_no_timing_header_when_monitoring_is_off(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, enable_performance_monitoring=False)
    async with running_app(settings) as running:
        response = await running.client.get("/api/ping")
    assert response.status_code == 200
    assert "x-response-time" not in response.headers
    assert response.headers["x-request-id"]


async def test_slow_requests_are_logged_with_route_template_status_and_timings(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, slow_request_threshold=0.001)
    async with running_app(settings, routes=add_test_routes) as running:
        with capture_logs() as logs:
            response = await running.client.get("/test/items/41")
    assert response.status_code == 200
    slow = [entry for entry in logs if entry["event"] == "slow request"]
    assert len(slow) == 1
    entry = slow[0]
    assert (entry["route"], entry["method"], entry["status"]) == ("/test/items/{item_id}", "GET", 200)
    assert entry["duration_ms"] > 0 and entry["headers_ms"] <= entry["duration_ms"]
    assert entry["db_queries"] == 0 and entry["db_ms"] == 0


async def test_fast_requests_are_not_logged_as_slow(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, slow_request_threshold=60_000)
    async with running_app(settings, routes=add_test_routes) as running:
        with capture_logs() as logs:
            await running.client.get("/test/items/41")
    assert not [entry for entry in logs if entry["event"] == "slow request"]


async def test_route_template_includes_outer_router_prefixes() -> None:
    """A nested router's route: the full template, not the inner router's relative path."""
    inner = APIRouter(prefix="/api/things")

    @inner.get("/{thing}")
    async def thing(thing: str) -> str:
        return thing

    outer = APIRouter(prefix="/v2")
    outer.include_router(inner)
    app = FastAPI()
    app.include_router(outer)
    seen: list[str] = []

    async def probe(scope: Any, receive: Any, send: Any) -> None:
        await app(scope, receive, send)
        seen.append(route_template(scope))

    transport = httpx2.ASGITransport(app=probe)
    async with httpx2.AsyncClient(transport=transport, base_url="http://t") as client:
        assert (await client.get("/v2/api/things/7")).status_code == 200
        assert (await client.get("/v2/api/nothing")).status_code == 404
    assert seen == ["/v2/api/things/{thing}", UNMATCHED]


# -- database: per-request counters, slow queries, EXPLAIN, N+1 ----------------------------------------------------


async def test_each_request_counts_its_own_queries(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path), routes=add_test_routes) as running:
        first = (await running.client.get("/test/repeat/3")).json()
        second = (await running.client.get("/test/repeat/2")).json()
    assert first == {"count": 3, "on_scope": 3}
    assert second == {"count": 2, "on_scope": 2}  # per request, not cumulative


async def test_slow_request_log_carries_the_db_count_and_time(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, slow_request_threshold=0.001)
    async with running_app(settings, routes=add_test_routes) as running:
        with capture_logs() as logs:
            await running.client.get("/test/repeat/3")
    (entry,) = [e for e in logs if e["event"] == "slow request" and e["route"] == "/test/repeat/{times}"]
    assert entry["db_queries"] == 3 and entry["db_ms"] > 0


async def test_slow_queries_are_logged_with_their_statement(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, slow_query_threshold=0.001, slow_query_explain=False)
    async with running_app(settings, routes=add_test_routes) as running:
        with capture_logs() as logs:
            await running.client.get("/test/repeat/1")
    slow = [e for e in logs if e["event"] == "slow query" and "FROM users" in e["statement"]]
    assert len(slow) == 1
    assert slow[0]["operation"] == "select" and slow[0]["duration_ms"] > 0.001
    assert slow[0]["threshold_ms"] == 0.001


async def test_queries_under_the_threshold_are_not_logged(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, slow_query_threshold=60_000)
    async with running_app(settings, routes=add_test_routes) as running:
        with capture_logs() as logs:
            await running.client.get("/test/repeat/2")
    assert not [e for e in logs if e["event"] == "slow query"]


async def test_slow_selects_get_their_plan_logged_after_the_request(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, slow_query_threshold=0.001, slow_query_explain=True)
    async with running_app(settings, routes=add_test_routes) as running:
        with capture_logs() as logs:
            assert (await running.client.get("/test/repeat/1")).status_code == 200
            await running.monitoring.queries.drain()
    plans = [e for e in logs if e["event"] == "slow query plan" and "FROM users" in e["statement"]]
    assert len(plans) == 1
    plan = plans[0]["plan"]
    if running.state.engine.dialect.name == "sqlite":
        assert any("users" in line for line in plan), plan  # e.g. "SEARCH users USING INDEX …"
    else:
        assert plan[0]["Plan"]["Node Type"]  # EXPLAIN (FORMAT JSON)


async def test_writes_are_never_explained(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path, slow_query_threshold=0.001, slow_query_explain=True)
    async with running_app(settings, routes=add_test_routes) as running:
        with capture_logs() as logs:
            assert (await running.client.get("/test/slow-write")).status_code == 200
            await running.monitoring.queries.drain()
    assert [e for e in logs if e["event"] == "slow query" and e["statement"].startswith("UPDATE users")]
    assert not [e for e in logs if e["event"] == "slow query plan" and "UPDATE" in e["statement"]]


def test_explain_defaults_to_development_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.sqlite3'}"
    assert Monitoring(make_settings(url, tmp_path, env="development")).queries.explain_enabled
    assert not Monitoring(make_settings(url, tmp_path, env="testing")).queries.explain_enabled
    assert Monitoring(make_settings(url, tmp_path, env="testing", slow_query_explain=True)).queries.explain_enabled


async def test_repeated_identical_queries_are_flagged_as_n_plus_one(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path), routes=add_test_routes) as running:
        with capture_logs() as logs:
            await running.client.get("/test/repeat/6")
    (warning,) = [e for e in logs if e["event"] == "possible n+1 query"]
    assert warning["count"] == 6 and warning["threshold"] == 5
    assert warning["route"] == "/test/repeat/{times}" and warning["method"] == "GET"
    assert warning["statement"] == "SELECT username FROM users WHERE username = ?"  # the normalised shape
    assert running.monitoring.queries.recent_n_plus_one[-1]["count"] == 6


async def test_fewer_repeats_than_the_threshold_are_not_flagged(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path), routes=add_test_routes) as running:
        with capture_logs() as logs:
            await running.client.get("/test/repeat/4")
    assert not [e for e in logs if e["event"] == "possible n+1 query"]


async def test_the_n_plus_one_threshold_is_a_setting(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, n_plus_one_threshold=3)
    async with running_app(settings, routes=add_test_routes) as running:
        with capture_logs() as logs:
            await running.client.get("/test/repeat/3")
    assert [e["count"] for e in logs if e["event"] == "possible n+1 query"] == [3]


# -- memory sampler -------------------------------------------------------------------------------------------------


async def test_memory_is_sampled_on_one_request_in_n(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, memory_sample_every=3)
    async with running_app(settings, routes=add_test_routes) as running:
        for index in range(7):
            await running.client.get(f"/test/items/{index}")
        samples = list(running.monitoring.memory.samples)
    assert len(samples) == 2  # the 3rd and the 6th
    assert {(s.route, s.method) for s in samples} == {("/test/items/{item_id}", "GET")}
    assert all(s.rss_bytes > 0 for s in samples)


async def test_the_memory_window_is_bounded(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, memory_sample_every=1, memory_window_size=4)
    async with running_app(settings, routes=add_test_routes) as running:
        for index in range(10):
            await running.client.get(f"/test/items/{index}")
        assert len(running.monitoring.memory.samples) == 4


async def test_the_most_memory_hungry_route_tops_the_list(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, memory_sample_every=1)
    async with running_app(settings, routes=add_test_routes) as running:
        hoard: list[mmap.mmap] = []
        running.app.state.hoard = hoard
        try:
            for index in range(3):
                await running.client.get(f"/test/items/{index}")
                await running.client.get("/test/allocate/16")
            top = running.monitoring.memory.top_routes()
        finally:
            hoard.clear()  # give the memory back: later tests judge this process's RSS
    assert top[0]["route"] == "/test/allocate/{megabytes}"
    assert top[0]["growth_bytes"] >= 3 * 14 << 20  # three 16 MiB allocations held alive


# -- security headers -----------------------------------------------------------------------------------------------

DEFAULT_SECURITY_HEADERS = {
    "x-frame-options": "DENY",
    "x-content-type-options": "nosniff",
    "content-security-policy": "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    "referrer-policy": "strict-origin-when-cross-origin",
    "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=(), usb=()",
}


@pytest.mark.parametrize("path", ["/api/ping", "/api/no-such-route"])
async def test_security_headers_are_on_every_response(sqlite_url: str, tmp_path: Path, path: str) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path)) as running:
        response = await running.client.get(path)
    for name, value in DEFAULT_SECURITY_HEADERS.items():
        assert response.headers[name] == value, name


async def test_no_hsts_over_plain_http(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path)) as running:
        response = await running.client.get("/api/ping")
    assert "strict-transport-security" not in response.headers


async def test_hsts_over_tls(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), base_url="https://testserver") as running:
        response = await running.client.get("/api/ping")
    assert response.headers["strict-transport-security"] == "max-age=31536000"


async def test_forwarded_proto_from_an_untrusted_peer_gives_no_hsts(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), client=("10.0.0.1", 123)) as running:
        response = await running.client.get("/api/ping", headers={"X-Forwarded-Proto": "https"})
    assert "strict-transport-security" not in response.headers


async def test_forwarded_proto_from_a_trusted_proxy_gives_hsts(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, trusted_proxies=["10.0.0.0/8"], hsts_include_subdomains=True)
    async with running_app(settings, client=("10.0.0.1", 123)) as running:
        tls = await running.client.get("/api/ping", headers={"X-Forwarded-Proto": "https"})
        plain = await running.client.get("/api/ping", headers={"X-Forwarded-Proto": "http"})
    assert tls.headers["strict-transport-security"] == "max-age=31536000; includeSubDomains"
    assert "strict-transport-security" not in plain.headers


async def test_a_response_keeps_its_own_security_header(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        response = await running.client.get("/test/own-policy")
    assert response.headers.get_list("content-security-policy") == ["default-src 'self'"]
    assert response.headers["x-frame-options"] == "DENY"


async def test_security_headers_are_configurable(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, x_frame_options="", referrer_policy="no-referrer", hsts_max_age=0)
    async with running_app(settings, base_url="https://testserver") as running:
        response = await running.client.get("/api/ping")
    assert "x-frame-options" not in response.headers
    assert response.headers["referrer-policy"] == "no-referrer"
    assert "strict-transport-security" not in response.headers
    assert response.headers["x-content-type-options"] == "nosniff"


async def test_security_headers_can_be_switched_off(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, security_headers_enabled=False)
    async with running_app(settings) as running:
        response = await running.client.get("/api/ping")
    assert not set(DEFAULT_SECURITY_HEADERS) & set(response.headers)


# -- gzip -----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("size", "compressed"), [(1024, False), (1025, True), (20_000, True)])
async def test_gzip_starts_above_one_kilobyte(sqlite_url: str, tmp_path: Path, size: int, compressed: bool) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        response, raw = await raw_get(running.client, f"/test/sized/json/{size}")
    if compressed:
        assert "Accept-Encoding" in [token.strip() for token in response.headers["vary"].split(",")]
        assert response.headers["content-encoding"] == "gzip"
        assert gzip.decompress(raw) == b"a" * size
        assert int(response.headers["content-length"]) == len(raw) < size
    else:
        assert "content-encoding" not in response.headers
        assert raw == b"a" * size


@pytest.mark.parametrize("kind", ["audio", "png"])
async def test_gzip_skips_incompressible_types(sqlite_url: str, tmp_path: Path, kind: str) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        response, raw = await raw_get(running.client, f"/test/sized/{kind}/5000")
    assert "content-encoding" not in response.headers
    assert raw == b"a" * 5000


async def test_gzip_skips_range_responses(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        response, raw = await raw_get(running.client, "/test/partial")
    assert response.status_code == 206
    assert "content-encoding" not in response.headers
    assert raw == b"a" * 5000 and response.headers["content-range"] == "bytes 0-4999/10000"


async def test_gzip_leaves_already_encoded_bodies_alone(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        response, raw = await raw_get(running.client, "/test/encoded")
    assert response.headers.get_list("content-encoding") == ["br"]
    assert raw == b"b" * 5000


@pytest.mark.parametrize("accept", ["identity", "gzip;q=0", "br"])
async def test_gzip_only_for_clients_that_accept_it(sqlite_url: str, tmp_path: Path, accept: str) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        response, raw = await raw_get(running.client, "/test/sized/text/5000", **{"Accept-Encoding": accept})
    assert "content-encoding" not in response.headers
    assert raw == b"a" * 5000


def test_accept_encoding_parsing() -> None:
    assert accepts_gzip("gzip, deflate, br") and accepts_gzip("*") and accepts_gzip("br;q=1, gzip;q=0.5")
    assert not accepts_gzip("") and not accepts_gzip("gzip;q=0") and not accepts_gzip("*, gzip;q=0")


def test_compressible_types_are_an_allow_list() -> None:
    for media_type in (
        "application/json",
        "text/html; charset=utf-8",
        "text/css",
        "application/javascript",
        "text/javascript",
        "image/svg+xml",
        "application/problem+json",
    ):
        assert is_compressible(media_type), media_type
    for media_type in ("audio/mpeg", "image/png", "application/octet-stream", "text/event-stream", "video/mp4", ""):
        assert not is_compressible(media_type), media_type


async def test_streamed_bodies_are_gzipped_chunk_by_chunk(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        response, raw = await raw_get(running.client, "/test/streamed")
    expected = b"".join(f"chunk {index} ".encode() * 200 for index in range(5))
    assert response.headers["content-encoding"] == "gzip"
    assert "content-length" not in response.headers
    assert gzip.decompress(raw) == expected


@pytest.mark.parametrize(("level", "xfl"), [(None, 0), (1, 4), (9, 2)])
async def test_gzip_level_is_configurable(sqlite_url: str, tmp_path: Path, level: int | None, xfl: int) -> None:
    """The gzip header's XFL byte records the level class: 4 fastest (1), 2 best (9), 0 otherwise (default 5)."""
    overrides = {} if level is None else {"gzip_level": level}
    async with running_app(make_settings(sqlite_url, tmp_path, **overrides), routes=add_test_routes) as running:
        _, raw = await raw_get(running.client, "/test/sized/text/5000")
    assert raw[:2] == b"\x1f\x8b" and raw[8] == xfl


async def test_gzip_records_the_compression_ratio(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        _, raw = await raw_get(running.client, "/test/sized/json/10000")
        await raw_get(running.client, "/test/sized/json/100")  # not compressed: not counted
        stats = running.monitoring.compression
    assert (stats.responses, stats.bytes_in, stats.bytes_out) == (1, 10_000, len(raw))
    assert stats.ratio is not None and stats.ratio < 0.05


async def test_gzip_can_be_switched_off(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, gzip_enabled=False)
    async with running_app(settings, routes=add_test_routes) as running:
        response, raw = await raw_get(running.client, "/test/sized/json/5000")
    assert "content-encoding" not in response.headers and raw == b"a" * 5000


async def test_timing_and_headers_cover_a_gzipped_response(sqlite_url: str, tmp_path: Path) -> None:
    """The layers compose: a compressed body still gets its timing, id, and security headers."""
    started = time.perf_counter()
    async with running_app(make_settings(sqlite_url, tmp_path), routes=add_test_routes) as running:
        response, _ = await raw_get(running.client, "/test/sized/json/5000")
    assert response.headers["content-encoding"] == "gzip"
    assert RESPONSE_TIME.match(response.headers["x-response-time"])
    assert float(response.headers["x-response-time"][:-2]) <= (time.perf_counter() - started) * 1000
    assert response.headers["x-content-type-options"] == "nosniff" and response.headers["x-request-id"]


async def test_headers_and_gzip_without_monitoring(sqlite_url: str, tmp_path: Path) -> None:
    """Monitoring off: the security headers and gzip still apply, through their own middleware."""
    settings = make_settings(sqlite_url, tmp_path, enable_performance_monitoring=False)
    async with running_app(settings, routes=add_test_routes) as running:
        response, raw = await raw_get(running.client, "/test/sized/json/1025")
        small, small_raw = await raw_get(running.client, "/test/sized/json/1024")
    assert "x-response-time" not in response.headers
    assert response.headers["content-encoding"] == "gzip" and gzip.decompress(raw) == b"a" * 1025
    assert "content-encoding" not in small.headers and small_raw == b"a" * 1024
    for name, value in DEFAULT_SECURITY_HEADERS.items():
        assert response.headers[name] == value, name
