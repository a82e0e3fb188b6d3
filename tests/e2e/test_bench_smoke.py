"""``spotik bench --smoke``: the benchmark suite runs end to end (real servers on SQLite and on PostgreSQL + Redis,
every section) and writes its report and figures. The figures are not checked, only that the pipeline works."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import asyncpg
import pytest
import redis

from tests.conftest import PG_HOST, PG_PORT, PG_USER, unavailable

pytestmark = [pytest.mark.e2e, pytest.mark.postgres, pytest.mark.redis, pytest.mark.slow]
FIGURES = ("http_throughput", "http_latency", "growth_queue", "growth_broadcast", "growth_memory", "mixed", "sync")


def require_services() -> None:
    import asyncio

    async def probe() -> None:
        connection = await asyncpg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, database="postgres", timeout=5)
        await connection.close()

    try:
        asyncio.run(probe())
    except (OSError, asyncpg.PostgresError) as exc:
        unavailable(f"PostgreSQL at {PG_HOST}:{PG_PORT}", exc)
    client = redis.Redis(host="127.0.0.1", port=6379, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        unavailable("Redis at 127.0.0.1:6379", exc)
    finally:
        client.close()


def test_bench_smoke_writes_the_report_and_figures(tmp_path: Path) -> None:
    require_services()
    out = tmp_path / "report"
    command = [sys.executable, "-m", "spotik", "bench", "--smoke", "--out", str(out), "--pg-host", PG_HOST]
    command += ["--pg-port", str(PG_PORT), "--pg-user", PG_USER]
    completed = subprocess.run(command, capture_output=True, text=True, timeout=420, check=False)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    report = (out / "REPORT.md").read_text(encoding="utf-8")
    for heading in (
        "## Targets",
        "## 1. HTTP",
        "## 2. Real time",
        "## 3. How cost grows",
        "## 4. Mixed",
        "## 5. Playback",
    ):
        assert heading in report
    assert "This section failed" not in report
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert results["meta"]["errors"] == {} and results["meta"]["services_problem"] is None
    for name in FIGURES:
        assert (out / f"{name}.png").stat().st_size > 1000, name
