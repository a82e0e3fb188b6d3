"""``deploy/``: the Prometheus scrape config and the Grafana dashboard only use what the app really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI, Request
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from tests.conftest import make_settings
from tests.perfapp import running_app, sqlite_copy

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
DASHBOARD = DEPLOY / "grafana" / "spotik-dashboard.json"
SCRAPE_CONFIG = DEPLOY / "prometheus.yml"

# Suffixes each metric type adds to its family name in the text exposition.
TYPE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("_count", "_sum", "_created", ""),
    "gauge": ("",),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
PROMQL_WORDS = frozenset(
    {
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "inf",
        "nan",
        "le",
    }
)
TARGET_LABELS = frozenset({"instance", "job", "service"})  # added by Prometheus at scrape time


def metric_names(expr: str) -> set[str]:
    """Metric names in a PromQL expression: identifiers that are not functions, keywords, labels or ranges."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)  # string literals
    expr = re.sub(r"\{[^}]*\}", " ", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", " ", expr)  # range selectors
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)  # label lists
    names = set()
    for match in re.finditer(r"(?<![\w$.])[A-Za-z_:][\w:]*", expr):
        following = expr[match.end() :].lstrip()
        if following.startswith("(") or match.group() in PROMQL_WORDS:
            continue  # a function call or a keyword
        names.add(match.group())
    return names


def matcher_labels(expr: str) -> list[tuple[str, set[str]]]:
    """``metric{a="x", b=~"y"}`` -> ``[("metric", {"a", "b"})]``."""
    found = []
    for metric, matchers in re.findall(r"([A-Za-z_:][\w:]*)\{([^}]*)\}", expr):
        found.append((metric, set(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))))
    return found


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    queries: list[str] = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            queries.extend(target["expr"] for target in panel.get("targets", []) if target.get("expr"))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        definition = query.get("query") if isinstance(query, dict) else query
        if variable.get("type") == "query" and isinstance(definition, str):
            match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", definition)
            assert match, f"unexpected variable query {definition!r}"
            queries.append(match.group(1))
    return queries


def add_traffic_routes(app: FastAPI) -> None:
    async def queries(request: Request) -> dict[str, bool]:
        async with request.app.services.engine.connect() as connection:
            for _ in range(5):  # five repeats of one shape in a request: an N+1 by default
                await connection.execute(text("SELECT count(*) FROM users"))
        return {"ok": True}

    async def big() -> dict[str, str]:
        return {"padding": "x" * 5000}

    app.add_api_route("/test/queries", queries)
    app.add_api_route("/test/big", big)


@pytest.fixture
async def exported(sqlite_template: Path, tmp_path: Path) -> dict[str, set[str]]:
    """Exported name -> the label names its samples carry, after traffic of every kind the dashboard charts."""
    url = sqlite_copy(sqlite_template, tmp_path / "db")
    settings = make_settings(
        url,
        tmp_path,
        rate_limiting_enabled=True,
        max_requests_per_hour=3,
        memory_sample_every=1,
        slow_request_threshold=0.001,
        slow_query_threshold=0.001,
    )
    async with running_app(settings, routes=add_traffic_routes) as running:
        await running.client.get("/api/ping")
        await running.client.get("/test/queries")
        assert (await running.client.get("/test/big", headers={"Accept-Encoding": "gzip"})).status_code == 200
        assert (await running.client.get("/api/ping")).status_code == 429  # the 4th request this hour
        running.monitoring.set_health("database", "healthy")
        exposition = (await running.client.get("/metrics")).text
    names: dict[str, set[str]] = {}
    for family in text_string_to_metric_families(exposition):
        for suffix in TYPE_SUFFIXES[family.type]:
            names.setdefault(family.name + suffix, set())
        for sample in family.samples:
            names.setdefault(sample.name, set()).update(sample.labels)
    # the traffic above really produced the labelled samples the dashboard filters on
    for name in (
        "spotik_http_compression_bytes_total",
        "spotik_rate_limit_rejections_total",
        "spotik_db_n_plus_one_total",
        "spotik_memory_route_growth_bytes_total",
    ):
        assert names.get(name), name
    return names


def test_metric_name_extraction() -> None:
    expr = (
        "histogram_quantile(0.99, sum by (le, route) (rate(spotik_http_request_duration_seconds_bucket"
        '{instance=~"$instance", status=~"5.."}[$__rate_interval]))) / on(instance) group_left sum(up offset 5m)'
    )
    assert metric_names(expr) == {"spotik_http_request_duration_seconds_bucket", "up"}
    assert matcher_labels(expr) == [("spotik_http_request_duration_seconds_bucket", {"instance", "status"})]


def test_every_dashboard_query_uses_exported_metric_names(exported: dict[str, set[str]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = dashboard_queries(dashboard)
    used = set().union(*(metric_names(query) for query in queries))
    assert len(queries) >= 20 and "spotik_http_request_duration_seconds_bucket" in used
    missing = sorted(used - set(exported))
    assert not missing, f"the dashboard queries metrics the app does not export: {missing}"


def test_dashboard_label_matchers_name_real_labels(exported: dict[str, set[str]]) -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    for query in dashboard_queries(dashboard):
        for metric, labels in matcher_labels(query):
            if exported.get(metric):  # families with samples: their label names are known
                unknown = labels - exported[metric] - TARGET_LABELS
                assert not unknown, f"{metric} has no label(s) {unknown} (in {query})"


def test_dashboard_covers_the_operational_questions() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    text_of_queries = "\n".join(dashboard_queries(dashboard))
    for needle in (
        "rate(spotik_http_request_duration_seconds_count",  # request rate
        "histogram_quantile(0.5, sum by (le) (rate(spotik_http_request_duration_seconds_bucket",  # p50
        "histogram_quantile(0.99, sum by (le) (rate(spotik_http_request_duration_seconds_bucket",  # p99
        "spotik_http_requests_in_flight",
        "spotik_db_query_duration_seconds",
        "spotik_db_pool_checked_out",
        "spotik_memory_rss_bytes",
        "spotik_rate_limit_rejections_total",
        "spotik_ws_connections",
    ):
        assert needle in text_of_queries, needle
    assert dashboard["uid"] and dashboard["title"] == "Spotik"
    assert all(p["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] if p["type"] != "row")


def test_prometheus_scrapes_the_metrics_endpoint_on_port_8000(exported: dict[str, set[str]]) -> None:
    config = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    (job,) = [job for job in config["scrape_configs"] if job["job_name"] == "spotik"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [target for group in job["static_configs"] for target in group["targets"]]
    assert targets and all(target.endswith(":8000") for target in targets)
    assert "spotik_build_info" in exported  # what that path serves (the fixture scraped it from the app)
