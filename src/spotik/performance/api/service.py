"""The performance API's figures (docs/decisions.md#d1): health, alerts, the current hour's request figures, and the
registry of subsystems (database, WebSocket, memory, and later the cache) behind ``/api/performance/*``.

One :class:`PerformanceApi` per app, in ``AppState.performance``; subsystems join through ``registry`` (see
:mod:`spotik.performance.api.subsystems`). Request figures come from the app's
:class:`~spotik.performance.monitor.Monitoring`: the Prometheus latency histogram
``spotik_http_request_duration_seconds`` (count and sum by method, route template and status) is the only per-route
record the monitoring keeps, so ``/api/metrics`` derives its current-hour figures from it (the histogram's value at
the last read of the previous hour is the baseline; ``max_response_time`` is the upper bound of the highest latency
bucket that received a request this hour).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import structlog
from pydantic import BaseModel

from spotik.auth.models import User
from spotik.performance.api.subsystems import ComponentHealth, Status, SubsystemRegistry, guarded_health, worst
from spotik.performance.monitor import Monitoring
from spotik.performance.routes import UNMATCHED
from spotik.settings import Environment, Settings
from spotik.timefmt import now_iso

log = structlog.get_logger("spotik.performance.api")

OPTIMIZATION_TYPES = ("all", "database", "websocket", "cache", "memory")
CACHE_TYPES = (
    "room_state",
    "track_queue",
    "user_data",
    "file_metadata",
    "api_response",
    "database_query",
    "all",
)
HEALTH_TTL_SECONDS = 2.0  # the public endpoints are polled every second: one real check per window
HEALTH_TIMEOUT_SECONDS = 5.0
ACTION_TIMEOUT_SECONDS = 30.0
SLOW_RATE_ALERT = 0.05  # share of slow requests (SLOW_REQUEST_THRESHOLD) that raises an alert …
SLOW_RATE_MIN_REQUESTS = 20  # … once at least this many requests were served
DASHBOARD_FILE = Path(__file__).with_name("dashboard.html")
NONCE_PLACEHOLDER = "{{NONCE}}"


# --- request figures from the monitoring's Prometheus histogram ---------------------------------------------------

Key = tuple[str, str, str]  # method, route, status


class Series:
    __slots__ = ("buckets", "count", "sum")

    def __init__(self) -> None:
        self.count = 0.0
        self.sum = 0.0
        self.buckets: list[tuple[float, float]] = []  # (upper bound, cumulative count)


def read_histogram(monitoring: Monitoring | None) -> dict[Key, Series]:
    """The cumulative latency histogram by (method, route, status)."""
    if monitoring is None:
        return {}
    series: dict[Key, Series] = {}
    for family in monitoring.metrics.http_request_duration.collect():
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("method", ""), labels.get("route", ""), labels.get("status", ""))
            entry = series.setdefault(key, Series())
            if sample.name.endswith("_count"):
                entry.count = sample.value
            elif sample.name.endswith("_sum"):
                entry.sum = sample.value
            elif sample.name.endswith("_bucket"):
                entry.buckets.append((float(labels["le"]), sample.value))
    return series


def counter_total(monitoring: Monitoring | None, attribute: str) -> float:
    if monitoring is None:
        return 0.0
    total = 0.0
    for family in getattr(monitoring.metrics, attribute).collect():
        for sample in family.samples:
            if sample.name.endswith("_total"):
                total += sample.value
    return total


def _max_bound(current: Series, baseline: Series | None) -> float:
    """Upper bound (s) of the highest bucket that gained a request since the baseline."""
    before = dict(baseline.buckets) if baseline is not None else {}
    previous_now = previous_then = 0.0
    highest = 0.0
    for bound, cumulative in sorted(current.buckets):
        gained = (cumulative - previous_now) - (before.get(bound, 0.0) - previous_then)
        previous_now, previous_then = cumulative, before.get(bound, 0.0)
        if gained > 0:
            highest = bound
    if highest == float("inf"):  # past the last finite bucket: the best bound known is the last finite one
        finite = [bound for bound, _ in current.buckets if bound != float("inf")]
        highest = max(finite, default=0.0)
    return highest


class HourlyRequests:
    """Request figures of the current clock hour, as differences of the cumulative histogram."""

    def __init__(self, started_at: float) -> None:
        self.started_at = started_at
        self._hour: int | None = None
        self._baseline: dict[Key, Series] = {}
        self._last: dict[Key, Series] = {}

    def current(self, cumulative: dict[Key, Series], now: float) -> dict[Key, tuple[Series, Series | None]]:
        hour = int(now // 3600)
        if self._hour is None:
            # First read: everything since start counts when the process started this hour.
            self._baseline = {} if self.started_at >= hour * 3600 else cumulative
        elif hour != self._hour:
            self._baseline = self._last  # the last read of the previous hour
        self._hour = hour
        self._last = cumulative
        result: dict[Key, tuple[Series, Series | None]] = {}
        for key, series in cumulative.items():
            baseline = self._baseline.get(key)
            delta = Series()
            delta.count = series.count - (baseline.count if baseline else 0.0)
            delta.sum = series.sum - (baseline.sum if baseline else 0.0)
            if delta.count > 0:
                result[key] = (delta, baseline)
        return result


def laravel_metrics(
    hour: dict[Key, tuple[Series, Series | None]],
    cumulative: dict[Key, Series],
    memory_samples: Iterable[tuple[float, int]],
    current_rss: int,
    hour_start: float,
) -> dict[str, Any]:
    """``{requests, status_codes, routes}`` (Laravel's PerformanceMonitor shape; times in ms, memory in bytes)."""
    if not hour:
        return {}
    total = 0.0
    time_sum = 0.0
    max_time = 0.0
    status_codes: dict[str, int] = {}
    routes: dict[str, dict[str, Any]] = {}
    for key, (delta, baseline) in hour.items():
        _method, route, status = key
        bound = _max_bound(cumulative[key], baseline) * 1000
        total += delta.count
        time_sum += delta.sum
        max_time = max(max_time, bound)
        status_codes[status] = status_codes.get(status, 0) + int(delta.count)
        name = "unknown" if route in ("", UNMATCHED) else route
        entry = routes.setdefault(name, {"count": 0, "time_sum": 0.0, "max_time": 0.0})
        entry["count"] += int(delta.count)
        entry["time_sum"] += delta.sum * 1000
        entry["max_time"] = max(entry["max_time"], bound)
    memory = [rss for at, rss in memory_samples if at >= hour_start] or [current_rss]
    return {
        "requests": {
            "total": int(total),
            "avg_response_time": round(time_sum * 1000 / total, 3),
            "max_response_time": round(max_time, 3),
            "avg_memory_usage": round(sum(memory) / len(memory)),
            "max_memory_usage": max(memory),
        },
        "status_codes": dict(sorted(status_codes.items())),
        "routes": {
            name: {
                "count": entry["count"],
                "avg_time": round(entry["time_sum"] / entry["count"], 3),
                "max_time": round(entry["max_time"], 3),
            }
            for name, entry in sorted(routes.items())
        },
    }


# --- alerts --------------------------------------------------------------------------------------------------


class Alerts:
    """Threshold crossings: each logged once when it starts (and once when it clears), listed while active."""

    def __init__(self, history: int = 50) -> None:
        self.active: dict[str, dict[str, Any]] = {}
        self.recent: deque[dict[str, Any]] = deque(maxlen=history)

    def update(self, key: str, active: bool, level: str, message: str) -> None:
        if active and key not in self.active:
            alert = {"key": key, "level": level, "message": message, "since": now_iso()}
            self.active[key] = alert
            self.recent.append({**alert, "event": "raised"})
            (log.error if level == "critical" else log.warning)("performance alert", key=key, message=message)
        elif active:
            self.active[key]["message"] = message  # still crossed: current figures, no new log line
        elif key in self.active:
            alert = self.active.pop(key)
            self.recent.append({**alert, "event": "cleared", "at": now_iso()})
            log.info("performance alert cleared", key=key)

    def as_dict(self) -> dict[str, Any]:
        return {"active": list(self.active.values()), "recent": list(self.recent)}


# --- the API object ----------------------------------------------------------------------------------------


class OptimizeRequest(BaseModel):
    type: str = "all"


class CacheClearRequest(BaseModel):
    cache_type: str = "all"


def is_operator(settings: Settings, user: User) -> bool:
    """A user listed in PERFORMANCE_ADMINS (id, username or e-mail), or anyone signed in in development
    (docs/decisions.md#d10)."""
    if settings.env is Environment.DEVELOPMENT:
        return True
    admins = {entry.strip().lower() for entry in settings.performance_admins}
    return bool(admins & {str(user.id).lower(), user.username.lower(), user.email.lower()})


def load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):
        return None


class PerformanceApi:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = SubsystemRegistry()  # filled by create_app (``default_subsystems``)
        self.alerts = Alerts()
        self.hourly = HourlyRequests(time.time())
        self._health: tuple[float, dict[str, Any]] | None = None
        self._health_lock = asyncio.Lock()
        self.page = DASHBOARD_FILE.read_text(encoding="utf-8")

    # -- figures --------------------------------------------------------------------------------------------

    async def health(self, monitoring: Monitoring | None, *, fresh: bool = False) -> dict[str, Any]:
        async with self._health_lock:
            now = time.monotonic()
            if not fresh and self._health is not None and now - self._health[0] < HEALTH_TTL_SECONDS:
                return self._health[1]
            subsystems = list(self.registry)
            results = await asyncio.gather(*(guarded_health(s, HEALTH_TIMEOUT_SECONDS) for s in subsystems))
            components: dict[str, ComponentHealth] = {s.name: r for s, r in zip(subsystems, results, strict=True)}
            overall: Status = worst(c.status for c in components.values())
            report = {
                "overall_status": overall,
                "health_issues": [r for c in components.values() if c.status == "unhealthy" for r in c.reasons],
                "warning_issues": [r for c in components.values() if c.status == "degraded" for r in c.reasons],
                "components": {name: c.as_dict() for name, c in components.items()},
                "timestamp": now_iso(),
            }
            self._evaluate_alerts(components, monitoring)
            if monitoring is not None:
                for name, component in components.items():
                    monitoring.set_health(f"performance_{name}", component.status)
            self._health = (now, report)
            return report

    def _evaluate_alerts(self, components: dict[str, ComponentHealth], monitoring: Monitoring | None) -> None:
        for name, component in components.items():
            if name == "memory":  # its own alerts below, named after the levels
                continue
            reasons = "; ".join(component.reasons) or component.status
            self.alerts.update(f"{name}_unhealthy", component.status == "unhealthy", "critical", reasons)
            self.alerts.update(f"{name}_degraded", component.status == "degraded", "warning", reasons)
        memory = components.get("memory")
        level = memory.details.get("level") if memory is not None else None
        self.alerts.update("memory_critical", level == "critical", "critical", f"memory level {level}")
        self.alerts.update("memory_warning", level == "warning", "warning", f"memory level {level}")
        total = sum(s.count for s in read_histogram(monitoring).values())
        slow = counter_total(monitoring, "http_slow_requests")
        rate = slow / total if total else 0.0
        self.alerts.update(
            "slow_requests",
            total >= SLOW_RATE_MIN_REQUESTS and rate > SLOW_RATE_ALERT,
            "warning",
            f"{rate:.1%} of {int(total)} requests slower than {self.settings.slow_request_threshold:g} ms",
        )

    def hour_metrics(self, monitoring: Monitoring | None) -> tuple[dict[str, Any], dict[Key, Series]]:
        now = time.time()
        cumulative = read_histogram(monitoring)
        hour = self.hourly.current(cumulative, now)
        samples: list[tuple[float, int]] = []
        rss = 0
        if monitoring is not None:
            samples = [(s.at, s.rss_bytes) for s in monitoring.memory.samples]
            rss = monitoring.memory.rss()
        return laravel_metrics(hour, cumulative, samples, rss, (now // 3600) * 3600), cumulative
