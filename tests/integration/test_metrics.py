"""``GET /metrics``: the Prometheus exposition, parsed by prometheus_client's own parser, after real traffic."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from sqlalchemy import text

from spotik.performance.routes import UNMATCHED
from tests.conftest import make_settings
from tests.perfapp import running_app, sample_value, sqlite_copy


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return sqlite_copy(sqlite_template, tmp_path / "db")


def add_query_route(app: FastAPI) -> None:
    async def queries(request: Request, times: int) -> dict[str, int]:
        async with request.app.services.engine.connect() as connection:
            for _ in range(times):
                await connection.execute(text("SELECT count(*) FROM users"))
        return {"ran": times}

    app.add_api_route("/test/queries/{times}", queries)


async def test_metrics_is_the_standard_text_exposition(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path)) as running:
        response = await running.client.get("/metrics")
        families = await running.scrape()
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    assert "# TYPE spotik_http_request_duration_seconds histogram" in response.text
    for name in (
        "spotik_http_request_duration_seconds",
        "spotik_http_requests_in_flight",
        "process_resident_memory_bytes",
        "python_gc_collections",
        "spotik_build_info",
    ):
        assert name in families, name


async def test_latency_histogram_is_labelled_by_route_template_and_status(sqlite_url: str, tmp_path: Path) -> None:
    room = uuid.uuid4()
    async with running_app(make_settings(sqlite_url, tmp_path)) as running:
        for _ in range(3):
            await running.client.get("/api/ping")
        room_status = (await running.client.get(f"/api/rooms/{room}")).status_code  # matched, unknown room
        await running.client.get("/api/no-such-route/12345")
        exposition = (await running.client.get("/metrics")).text
        samples = (await running.scrape())["spotik_http_request_duration_seconds"]
    count = "spotik_http_request_duration_seconds_count"
    assert sample_value(samples, count, method="GET", route="/api/ping", status="200") == 3
    assert sample_value(samples, count, method="GET", route="/api/rooms/{room}", status=str(room_status)) == 1
    assert sample_value(samples, count, method="GET", route=UNMATCHED, status="404") == 1
    assert sample_value(samples, "spotik_http_request_duration_seconds_bucket", route="/api/ping", le="+Inf") == 3
    # raw paths (ids, unknown URLs) never become label values
    assert str(room) not in exposition and "no-such-route" not in exposition


async def test_in_flight_counts_the_scrape_itself(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path)) as running:
        await running.client.get("/api/ping")
        samples = (await running.scrape())["spotik_http_requests_in_flight"]
    assert sample_value(samples, "spotik_http_requests_in_flight") == 1  # nothing else is running


async def test_database_query_histogram_and_pool_usage(database_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(database_url, tmp_path), routes=add_query_route) as running:
        await running.client.get("/test/queries/4")
        families = await running.scrape()
        pool_size = running.state.engine.pool.size()  # type: ignore[attr-defined]
    select = sample_value(
        families["spotik_db_query_duration_seconds"], "spotik_db_query_duration_seconds_count", operation="select"
    )
    assert select is not None and select >= 4  # the route's four (the playback scheduler may add its own)
    per_request = families["spotik_db_queries_per_request"]
    at_most_3 = sample_value(per_request, "spotik_db_queries_per_request_bucket", le="3.0")
    at_most_5 = sample_value(per_request, "spotik_db_queries_per_request_bucket", le="5.0")
    assert (at_most_3, at_most_5) == (0, 1)  # one request ran statements: four of them
    assert sample_value(families["spotik_db_pool_size"], "spotik_db_pool_size") == pool_size
    checked_out = sample_value(families["spotik_db_pool_checked_out"], "spotik_db_pool_checked_out")
    assert checked_out is not None and 0 <= checked_out <= pool_size


async def test_memory_and_gc_families(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, memory_sample_every=1)
    async with running_app(settings) as running:
        await running.client.get("/api/ping")
        families = await running.scrape()
        rss = running.monitoring.process.memory_info().rss
    reported = sample_value(families["spotik_memory_rss_bytes"], "spotik_memory_rss_bytes")
    assert reported is not None and 0.5 * rss < reported < 2 * rss
    assert sample_value(families["process_resident_memory_bytes"], "process_resident_memory_bytes")
    generations = {s.labels["generation"] for s in families["python_gc_collections"]}
    assert generations == {"0", "1", "2"}
    deltas = families["spotik_memory_request_delta_bytes"]  # negative buckets: no _sum/_count, +Inf counts
    assert sample_value(deltas, "spotik_memory_request_delta_bytes_bucket", le="+Inf") == 1
    growth = families["spotik_memory_route_growth_bytes"]
    assert all(s.labels["route"] == "/api/ping" for s in growth)


async def test_rate_limit_rejections_are_counted_by_limit(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, rate_limiting_enabled=True, max_requests_per_hour=1)
    async with running_app(settings) as running:
        for _ in range(3):
            await running.client.get("/api/ping")
        samples = (await running.scrape())["spotik_rate_limit_rejections"]
    assert sample_value(samples, "spotik_rate_limit_rejections_total", limit="hourly", transport="http") == 2


async def test_health_per_component_is_a_gauge_set_by_callbacks(sqlite_url: str, tmp_path: Path) -> None:
    async with running_app(make_settings(sqlite_url, tmp_path)) as running:
        running.monitoring.set_health("database", "healthy")
        running.monitoring.set_health("redis", "unhealthy")
        running.monitoring.set_health("websocket", "degraded")
        running.monitoring.set_health("storage", True)
        samples = (await running.scrape())["spotik_health_status"]
    values = {s.labels["component"]: s.value for s in samples}
    assert values == {"database": 1.0, "redis": 0.0, "websocket": 0.5, "storage": 1.0}


async def test_websocket_families_are_exported_before_any_socket(sqlite_url: str, tmp_path: Path) -> None:
    """The families exist from the start (dashboards need no special case); what fills them after real socket
    traffic is tested in tests/integration/test_websocket.py (test_prometheus_counts_what_the_sockets_did)."""
    async with running_app(make_settings(sqlite_url, tmp_path)) as running:
        before = await running.scrape()
    assert sample_value(before["spotik_ws_connections"], "spotik_ws_connections") == 0
    assert sample_value(before["spotik_ws_connections_opened"], "spotik_ws_connections_opened_total") == 0
    assert sample_value(before["spotik_ws_send_queue_depth"], "spotik_ws_send_queue_depth") == 0
    for name in ("spotik_ws_messages_received", "spotik_ws_messages_sent", "spotik_ws_messages_dropped"):
        assert name in before, name
    assert "spotik_ws_connections_rejected" in before


async def test_compression_ratio_is_exported(sqlite_url: str, tmp_path: Path) -> None:
    def big_json(app: FastAPI) -> None:
        async def payload() -> dict[str, list[int]]:
            return {"numbers": list(range(2000))}

        app.add_api_route("/test/big", payload)

    async with running_app(make_settings(sqlite_url, tmp_path), routes=big_json) as running:
        response = await running.client.get("/test/big", headers={"Accept-Encoding": "gzip"})
        families = await running.scrape()
    assert response.headers["content-encoding"] == "gzip"
    ratio = families["spotik_http_compression_ratio"]
    assert sample_value(ratio, "spotik_http_compression_ratio_count") == 1
    assert sample_value(ratio, "spotik_http_compression_ratio_bucket", le="0.5") == 1  # compresses well
    stages = families["spotik_http_compression_bytes"]
    original = sample_value(stages, "spotik_http_compression_bytes_total", stage="in")
    compressed = sample_value(stages, "spotik_http_compression_bytes_total", stage="out")
    assert original is not None and compressed is not None and compressed < original


async def test_slow_queries_and_n_plus_one_are_counted(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, slow_query_threshold=0.001, slow_query_explain=False)
    async with running_app(settings, routes=add_query_route) as running:
        await running.client.get("/test/queries/5")
        families = await running.scrape()
    slow = sample_value(families["spotik_db_slow_queries"], "spotik_db_slow_queries_total", operation="select")
    assert slow is not None and slow >= 5
    n_plus_one = families["spotik_db_n_plus_one"]
    assert sample_value(n_plus_one, "spotik_db_n_plus_one_total", route="/test/queries/{times}") == 1


async def test_two_apps_in_one_process_keep_separate_registries(sqlite_url: str, tmp_path: Path) -> None:
    async with (
        running_app(make_settings(sqlite_url, tmp_path / "a")) as first,
        running_app(make_settings(sqlite_url, tmp_path / "b")) as second,
    ):
        for _ in range(2):
            await first.client.get("/api/ping")
        await second.client.get("/api/ping")
        first_samples = (await first.scrape())["spotik_http_request_duration_seconds"]
        second_samples = (await second.scrape())["spotik_http_request_duration_seconds"]
    count = "spotik_http_request_duration_seconds_count"
    assert sample_value(first_samples, count, route="/api/ping") == 2
    assert sample_value(second_samples, count, route="/api/ping") == 1


async def test_metrics_still_answer_with_monitoring_off(sqlite_url: str, tmp_path: Path) -> None:
    settings = make_settings(sqlite_url, tmp_path, enable_performance_monitoring=False)
    async with running_app(settings) as running:
        await running.client.get("/api/ping")
        families = await running.scrape()
    assert families["spotik_http_request_duration_seconds"] == []  # nothing timed
    assert sample_value(families["spotik_memory_rss_bytes"], "spotik_memory_rss_bytes")
