"""The performance API (docs/decisions.md#d1, docs/decisions.md#d10): every endpoint, its authorization, health
codes, metrics shapes, Laravel's ``/api/metrics`` after traffic, the subsystem plug-in interface and the dashboard
page's CSP.

"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from spotik.app import create_app
from spotik.performance.api import ComponentHealth, PerformanceApi, Subsystem
from spotik.performance.api.service import HourlyRequests, Series, laravel_metrics
from spotik.performance.api.subsystems import Figure, Status, worst
from spotik.settings import Settings
from spotik.state import AppState
from tests.conftest import make_settings
from tests.helpers import Account, register
from tests.openapi_contract import contract_hooks

OPERATOR = "ops"


@dataclass
class Running:
    client: httpx2.AsyncClient
    api: PerformanceApi
    state: AppState
    app: FastAPI


@asynccontextmanager
async def running(settings: Settings, plug: Subsystem | None = None) -> AsyncIterator[Running]:
    app = create_app(settings)
    async with LifespanManager(app) as manager:
        api = app.services.performance
        if plug is not None:
            api.registry.register(plug)  # how the caching service joins: one object
        transport = httpx2.ASGITransport(app=manager.app)
        hooks = contract_hooks(app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as client:
            yield Running(client, api, app.services, app)


@pytest.fixture
def perf_settings(database_url: str, tmp_path: Path) -> Settings:
    return make_settings(database_url, tmp_path / "storage", performance_admins=[OPERATOR], memory_sample_every=1)


@pytest.fixture
async def perf(perf_settings: Settings) -> AsyncIterator[Running]:
    async with running(perf_settings) as value:
        yield value


@pytest.fixture
async def users(perf: Running) -> tuple[Account, Account]:
    """(an ordinary user, an operator listed in PERFORMANCE_ADMINS by username)."""
    return await register(perf.client, "listener"), await register(perf.client, OPERATOR)


# --- public endpoints ------------------------------------------------------------------------------------------


async def test_metrics_are_public_and_carry_every_subsystem(perf: Running) -> None:
    response = await perf.client.get("/api/performance/metrics")
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True
    metrics = body["metrics"]
    assert set(metrics) >= {
        "timestamp",
        "server_time",
        "uptime",
        "memory",
        "connections",
        "performance",
        "cache",
        "requests",
        "health",
        "subsystems",
    }
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", metrics["timestamp"])
    # make_settings puts the memory thresholds far above any test process: the level is ok.
    assert metrics["memory"]["current_mb"] > 0 and metrics["memory"]["status"] == "ok"
    assert metrics["connections"]["websocket"] == 0
    assert isinstance(metrics["connections"]["database"], int)  # PostgreSQL: the scheduler's lock holds one
    components = metrics["health"]["components"]
    assert metrics["performance"]["health_status"] == metrics["health"]["status"] == worst(components.values())
    assert set(metrics["subsystems"]) == {"database", "websocket", "memory", "cache"}
    assert metrics["subsystems"]["database"]["driver"] == perf.state.engine.dialect.name
    assert set(components) == {"database", "websocket", "memory", "cache"} and components["database"] == "healthy"
    assert components["memory"] == components["cache"] == "healthy"
    assert metrics["cache"] == {"hit_rate": None, "total_entries": 0}  # nothing read through it yet


async def test_metrics_request_counters_follow_traffic(perf: Running) -> None:
    first = (await perf.client.get("/api/performance/metrics")).json()["metrics"]["requests"]
    for _ in range(5):
        assert (await perf.client.get("/api/ping")).status_code == 200
    second = (await perf.client.get("/api/performance/metrics")).json()["metrics"]["requests"]
    # The five pings and the first metrics call have finished; the second call is still in flight.
    assert second["total"] == first["total"] + 6
    assert second["duration_seconds_sum"] > first["duration_seconds_sum"]
    assert second["in_flight"] == 1
    assert second["status_codes"]["200"] == first["status_codes"].get("200", 0) + 6


async def test_health_is_public_and_healthy_with_components(perf: Running) -> None:
    response = await perf.client.get("/api/performance/health")
    health = response.json()["health"]
    components = health["components"]
    assert set(components) == {"database", "websocket", "memory", "cache"}
    assert components["cache"]["status"] == "healthy" and components["cache"]["redis"] == "disabled"
    assert components["database"]["status"] == "healthy" and components["database"]["reasons"] == []
    assert health["overall_status"] == worst(c["status"] for c in components.values())
    assert response.status_code == (503 if health["overall_status"] == "unhealthy" else 200)
    assert components["memory"]["level"] == "ok"  # thresholds far above the test process (make_settings)
    assert health["overall_status"] == "healthy"
    assert response.status_code == 200
    assert health["health_issues"] == [] and health["warning_issues"] == []
    assert health["components"]["database"]["response_time_ms"] >= 0


async def test_memory_levels_come_from_the_process_memory_monitor(perf: Running) -> None:
    """One source of memory levels: the gateway's periodic sampler (which logs level changes) decides the memory
    component's health; the websocket component does not report memory a second time."""
    assert perf.state.realtime is not None
    monitor = perf.state.realtime.memory
    monitor.warning_bytes = 1  # every process is above one byte
    health = (await perf.client.get("/api/performance/health")).json()["health"]["components"]
    assert health["memory"]["status"] == "degraded" and health["memory"]["level"] == "warning"
    assert health["websocket"]["status"] == "healthy"
    monitor.tick()
    headers = {"Authorization": f"Bearer {(await register(perf.client, 'memoryreader')).token}"}
    dashboard = (await perf.client.get("/api/performance/dashboard", headers=headers)).json()["data"]["memory"]
    assert dashboard["level"] == "warning" and dashboard["monitor"]["level"] == "warning"
    assert dashboard["monitor"]["level_changes"] >= 1


async def test_an_unhealthy_component_makes_health_a_503_and_raises_one_alert(
    perf: Running, users: tuple[Account, Account]
) -> None:
    assert perf.state.realtime is not None
    await perf.state.realtime.stop()  # the gateway now refuses connections: really unhealthy
    response = await perf.client.get("/api/performance/health")
    assert response.status_code == 503
    health = response.json()["health"]
    assert health["overall_status"] == "unhealthy"
    assert health["components"]["websocket"]["status"] == "unhealthy"
    assert "websocket gateway is not accepting connections" in health["health_issues"]
    assert (await perf.client.get("/api/performance/health")).status_code == 503  # a second look: same crossing

    dashboard = (await perf.client.get("/api/performance/dashboard", headers=users[0].headers)).json()["data"]
    active = [a["key"] for a in dashboard["alerts"]["active"]]
    assert "websocket_unhealthy" in active
    raised = [a for a in dashboard["alerts"]["recent"] if a["key"] == "websocket_unhealthy"]
    assert len(raised) == 1 and raised[0]["event"] == "raised"  # once per crossing, not once per check
    metrics = (await perf.client.get("/api/performance/metrics")).json()["metrics"]
    assert metrics["health"]["status"] == "unhealthy" and metrics["alerts"] >= 1


class FakeCache:
    """A real subsystem implementation standing in for a second caching service: it shows that a subsystem joins by
    registering one object."""

    name = "lyrics_cache"

    def __init__(self, status: Status = "degraded") -> None:
        self.entries = {"room_state": 3, "track_queue": 2}
        self.status = status
        self.optimized = 0

    def headline(self) -> dict[str, Figure]:
        return {"hit_rate": 0.5, "total_entries": sum(self.entries.values())}

    async def dashboard(self) -> dict[str, Any]:
        return {"entries": dict(self.entries)}

    async def health(self) -> ComponentHealth:
        return ComponentHealth(self.status, ("cache hit rate 50% < 80%",) if self.status != "healthy" else ())

    async def optimize(self) -> dict[str, Any]:
        self.optimized += 1
        return {"expired_purged": 0}

    async def benchmark(self) -> dict[str, Any]:
        return {"get_us": 1.0}

    async def clear_cache(self, cache_type: str) -> int:
        if cache_type == "all":
            cleared = sum(self.entries.values())
            self.entries = {}
        else:
            cleared = self.entries.pop(cache_type, 0)
        return cleared


async def test_a_plugged_in_subsystem_joins_every_endpoint(perf_settings: Settings) -> None:
    cache = FakeCache()
    async with running(perf_settings, cache) as run:
        operator = await register(run.client, OPERATOR)
        health = await run.client.get("/api/performance/health")
        report = health.json()["health"]
        assert report["components"]["lyrics_cache"] == {
            "status": "degraded",
            "reasons": ["cache hit rate 50% < 80%"],
        }
        assert "cache hit rate 50% < 80%" in report["warning_issues"]
        assert report["overall_status"] in ("degraded", "unhealthy")  # never better than its worst component
        if report["overall_status"] == "degraded":
            assert health.status_code == 200  # degraded is still 200
        metrics = (await run.client.get("/api/performance/metrics")).json()["metrics"]
        assert metrics["subsystems"]["lyrics_cache"] == {"hit_rate": 0.5, "total_entries": 5}
        dashboard = (await run.client.get("/api/performance/dashboard", headers=operator.headers)).json()
        assert dashboard["data"]["lyrics_cache"] == {"entries": {"room_state": 3, "track_queue": 2}}
        bench = (await run.client.get("/api/performance/benchmarks", headers=operator.headers)).json()
        assert bench["benchmarks"]["lyrics_cache"] == {"get_us": 1.0}
        optimized = await run.client.post(
            "/api/performance/optimize", json={"type": "lyrics_cache"}, headers=operator.headers
        )
        assert optimized.json()["results"] == {"lyrics_cache": {"expired_purged": 0}} and cache.optimized == 1
        cleared = await run.client.post(
            "/api/performance/cache/clear", json={"cache_type": "room_state"}, headers=operator.headers
        )
        assert cleared.status_code == 200 and cleared.json()["cleared"] == 3  # the app's own cache was empty
        assert cache.entries == {"track_queue": 2}


async def test_websocket_status(perf: Running) -> None:
    response = await perf.client.get("/api/websocket/status")
    assert response.status_code == 200
    body = response.json()
    assert body["websocket_enabled"] is True
    assert body["connection_stats"]["total_connections"] == 0
    assert body["connection_stats"]["room_connections"] == 0
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", body["server_time"])


async def test_laravel_metrics_shape_after_traffic(perf: Running) -> None:
    for _ in range(4):
        assert (await perf.client.get("/api/ping")).status_code == 200
    assert (await perf.client.get("/api/no-such-route")).status_code == 404
    response = await perf.client.get("/api/metrics")
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"timestamp", "metrics"}
    metrics = body["metrics"]
    assert set(metrics) == {"requests", "status_codes", "routes"}
    requests = metrics["requests"]
    assert set(requests) == {
        "total",
        "avg_response_time",
        "max_response_time",
        "avg_memory_usage",
        "max_memory_usage",
    }
    assert requests["total"] == 5
    assert 0 < requests["avg_response_time"] <= requests["max_response_time"]
    assert 0 < requests["avg_memory_usage"] <= requests["max_memory_usage"]
    assert metrics["status_codes"] == {"200": 4, "404": 1}
    ping = metrics["routes"]["/api/ping"]
    assert ping["count"] == 4 and 0 < ping["avg_time"] <= ping["max_time"]
    assert metrics["routes"]["unknown"]["count"] == 1


async def test_laravel_metrics_are_empty_before_any_request(perf: Running) -> None:
    body = (await perf.client.get("/api/metrics")).json()
    assert body["metrics"] == {}


# --- authenticated endpoints -----------------------------------------------------------------------------------


async def test_dashboard_needs_a_user_and_has_every_section(perf: Running, users: tuple[Account, Account]) -> None:
    assert (await perf.client.get("/api/performance/dashboard")).status_code == 401
    response = await perf.client.get("/api/performance/dashboard", headers=users[0].headers)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["authenticated"] is True
    data = body["data"]
    assert set(data) >= {"server", "performance", "database", "websocket", "memory", "alerts", "health"}
    server = data["server"]
    assert server["uptime"] >= 0 and server["memory_mb"] > 0 and server["python_version"].startswith("3.")
    assert server["environment"] == "testing"
    assert data["performance"]["operations_per_hour"] >= 2  # the two registrations at least
    database = data["database"]
    indexes = database["indexes"]
    assert indexes["expected"] > 0 and indexes["missing"] == [] and indexes["present"] == indexes["expected"]
    assert {"track_votes", "tracks", "rooms"} <= {index["table"] for index in indexes["indexes"]}
    assert database["query_stats"]["statements_total"] > 0
    assert data["websocket"]["enabled"] is True and data["websocket"]["connections"]["connections"] == 0
    assert data["memory"]["rss_mb"] > 0 and len(data["memory"]["gc_counts"]) == 3
    assert data["health"]["components"]["database"]["status"] == "healthy"
    assert not [a for a in data["alerts"]["active"] if a["key"].startswith(("database", "websocket_unhealthy"))]
    # the index inventory reads the schema table by table, on purpose: not reported as an n+1 of the dashboard
    again = (await perf.client.get("/api/performance/dashboard", headers=users[0].headers)).json()["data"]
    assert again["database"]["indexes"] == indexes
    assert [e for e in again["database"]["n_plus_one"] if e["route"] == "/api/performance/dashboard"] == []


async def test_benchmarks_need_a_user_and_return_figures(perf: Running, users: tuple[Account, Account]) -> None:
    assert (await perf.client.get("/api/performance/benchmarks")).status_code == 401
    response = await perf.client.get("/api/performance/benchmarks", headers=users[0].headers)
    assert response.status_code == 200
    benchmarks = response.json()["benchmarks"]
    assert set(benchmarks) == {"database", "websocket", "memory", "cache"}
    cache = benchmarks["cache"]
    assert cache["enabled"] is True and cache["get"]["iterations"] == cache["set"]["iterations"] == 200
    # the scratch key is gone and the counters were put back: the statistics still describe the app's reads
    scratch = perf.state.cache.stats()["namespaces"]["api_response"]
    assert (scratch["hits"], scratch["misses"], scratch["entries"]) == (0, 0, 0)
    select_1 = benchmarks["database"]["queries"]["select_1"]
    assert select_1["iterations"] == 50 and 0 < select_1["min_ms"] <= select_1["avg_ms"] <= select_1["max_ms"]
    websocket = benchmarks["websocket"]
    assert websocket["encode"]["messages_per_second"] > 0 and websocket["encode"]["frame_bytes"] > 100
    assert websocket["fanout"]["deliveries"] == 20 * 200 and websocket["fanout"]["deliveries_per_second"] > 0
    assert benchmarks["memory"]["allocations"] == 100_000 and benchmarks["memory"]["allocate_ms"] > 0


async def test_optimize_needs_an_operator(perf: Running, users: tuple[Account, Account]) -> None:
    listener, _operator = users
    assert (await perf.client.post("/api/performance/optimize", json={"type": "memory"})).status_code == 401
    forbidden = await perf.client.post("/api/performance/optimize", json={"type": "memory"}, headers=listener.headers)
    assert forbidden.status_code == 403 and forbidden.json()["success"] is False


async def test_optimize_all_reports_what_each_subsystem_did(perf: Running, users: tuple[Account, Account]) -> None:
    _listener, operator = users
    logout = await perf.client.post("/api/auth/logout", headers=(await register(perf.client, "leaver")).headers)
    assert logout.status_code == 200
    response = await perf.client.post("/api/performance/optimize", json={"type": "all"}, headers=operator.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["message"] == "Performance optimization completed"
    assert body["optimization_type"] == "all"
    results = body["results"]
    assert set(results) == {"database", "websocket", "memory", "cache"}
    assert results["cache"] == {"expired_purged": 0}
    database = results["database"]
    assert database["jwt_blacklist_purged"] == 0  # the fresh revocation has not expired
    assert database["missing_indexes"] == []
    if perf.state.engine.dialect.name == "postgresql":
        assert database["vacuum_analyze_ms"] >= 0
    else:
        assert database["analyze_ms"] >= 0 and database["vacuum"].startswith("skipped")
    assert results["websocket"]["stale_sweep"]["checked"] == 0
    assert results["memory"]["gc_collected"] >= 0 and results["memory"]["rss_after_mb"] > 0


async def test_optimize_without_a_body_means_all(perf: Running, users: tuple[Account, Account]) -> None:
    response = await perf.client.post("/api/performance/optimize", headers=users[1].headers)
    assert response.status_code == 200 and response.json()["optimization_type"] == "all"


async def test_optimize_cache_without_a_cache_says_so(perf_settings: Settings) -> None:
    async with running(perf_settings) as run:
        run.api.registry._subsystems.pop("cache")  # an app built without the cache subsystem
        operator = await register(run.client, OPERATOR)
        response = await run.client.post("/api/performance/optimize", json={"type": "cache"}, headers=operator.headers)
    assert response.status_code == 200
    assert response.json()["results"] == {"cache": {"skipped": "no cache subsystem is registered"}}


async def test_a_bad_optimization_type_is_a_400(perf: Running, users: tuple[Account, Account]) -> None:
    response = await perf.client.post("/api/performance/optimize", json={"type": "disk"}, headers=users[1].headers)
    assert response.status_code == 400
    assert response.json() == {
        "success": False,
        "error": "Invalid optimization type",
        "valid_types": ["all", "database", "websocket", "cache", "memory"],
    }


async def test_cache_clear_needs_an_operator_and_a_known_type(perf: Running, users: tuple[Account, Account]) -> None:
    listener, operator = users
    assert (await perf.client.post("/api/performance/cache/clear", json={})).status_code == 401
    forbidden = await perf.client.post("/api/performance/cache/clear", json={}, headers=listener.headers)
    assert forbidden.status_code == 403
    response = await perf.client.post(
        "/api/performance/cache/clear", json={"cache_type": "room_state"}, headers=operator.headers
    )
    assert response.status_code == 200
    body = response.json()
    assert body["success"] is True and body["cache_type"] == "room_state" and body["cleared"] == 0
    bad = await perf.client.post("/api/performance/cache/clear", json={"cache_type": "disk"}, headers=operator.headers)
    assert bad.status_code == 400
    assert bad.json()["error"] == "Invalid cache type" and "all" in bad.json()["valid_types"]


@pytest.mark.parametrize("listed_by", ["id", "email"])
async def test_operators_are_listed_by_id_or_email(database_url: str, tmp_path: Path, listed_by: str) -> None:
    # The id is only known after registration, so the first app registers and the second (same database) checks.
    settings = make_settings(database_url, tmp_path / "storage")
    async with running(settings) as run:
        account = await register(run.client, "someone")
    listed = account.id if listed_by == "id" else account.email.upper()
    async with running(make_settings(database_url, tmp_path / "storage", performance_admins=[listed])) as run:
        response = await run.client.post("/api/performance/optimize", json={"type": "memory"}, headers=account.headers)
        assert response.status_code == 200


async def test_in_development_any_user_is_an_operator(database_url: str, tmp_path: Path) -> None:
    settings = make_settings(database_url, tmp_path / "storage", env="development")
    async with running(settings) as run:
        account = await register(run.client, "developer")
        response = await run.client.post("/api/performance/optimize", json={"type": "memory"}, headers=account.headers)
        assert response.status_code == 200


# --- the page --------------------------------------------------------------------------------------------------


async def test_dashboard_page_brings_its_own_strict_csp_with_a_nonce(perf: Running) -> None:
    first = await perf.client.get("/dashboard")
    second = await perf.client.get("/dashboard")
    assert first.status_code == 200 and first.headers["content-type"].startswith("text/html")
    policy = first.headers["content-security-policy"]
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy
    assert "default-src 'none'" in policy and "connect-src 'self'" in policy
    nonce = re.search(r"script-src 'nonce-([^']+)'", policy)
    assert nonce is not None
    assert f'<script nonce="{nonce.group(1)}">' in first.text
    assert f'<style nonce="{nonce.group(1)}">' in first.text
    assert "{{NONCE}}" not in first.text
    assert second.headers["content-security-policy"] != policy  # a fresh nonce per response
    assert first.headers["x-content-type-options"] == "nosniff"  # the other security headers still apply
    assert "http://" not in first.text and "https://" not in first.text  # nothing from outside loopback


# --- the current-hour arithmetic behind /api/metrics -------------------------------------------------------------


def _series(count: float, total: float, buckets: list[tuple[float, float]]) -> Series:
    series = Series()
    series.count, series.sum, series.buckets = count, total, buckets
    return series


def test_the_hour_bucket_starts_from_the_last_read_of_the_previous_hour() -> None:
    key = ("GET", "/api/ping", "200")
    hourly = HourlyRequests(started_at=3600 * 10 + 5)
    early = {key: _series(3, 0.03, [(0.01, 2), (0.1, 3), (float("inf"), 3)])}
    first = hourly.current(early, now=3600 * 10 + 60)
    assert first[key][0].count == 3  # started this hour: everything counts
    later = {key: _series(5, 0.5, [(0.01, 2), (0.1, 3), (float("inf"), 5)])}
    hourly.current(later, now=3600 * 10 + 3000)
    next_hour = {key: _series(6, 0.505, [(0.01, 3), (0.1, 4), (float("inf"), 6)])}
    delta, baseline = hourly.current(next_hour, now=3600 * 11 + 10)[key]
    assert delta.count == 1 and round(delta.sum, 6) == 0.005
    shape = laravel_metrics(
        {key: (delta, baseline)}, next_hour, [(3600 * 11 + 5, 100), (3600 * 10, 999)], 50, 3600 * 11
    )
    assert shape["requests"]["total"] == 1
    assert shape["requests"]["max_response_time"] == 10.0  # the request landed in the 10 ms bucket
    assert shape["requests"]["avg_memory_usage"] == 100  # samples of earlier hours are left out
    assert shape["routes"] == {"/api/ping": {"count": 1, "avg_time": 5.0, "max_time": 10.0}}
