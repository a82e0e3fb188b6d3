"""What every benchmark's report shares: where reports go (bench/reports/, git-ignored), the time stamp that names
them, the machine they ran on, the CPU the whole machine used meanwhile, and writing and showing the JSON and
Markdown pair."""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

import psutil

ROOT = Path(__file__).resolve().parents[2]
REPORTS = ROOT / "bench" / "reports"


def stamp() -> str:
    """Now, in UTC, as reports are named and dated (``20261126T075034Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def machine() -> dict[str, Any]:
    return {"python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count()}


def busy_cpu_seconds() -> float:
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def write(benchmark: str, at: str, report: dict[str, Any], markdown: str) -> tuple[Path, Path]:
    """``bench/reports/<benchmark>-<at>.json`` (the report; anything JSON cannot hold as its ``str``) and ``.md``."""
    REPORTS.mkdir(parents=True, exist_ok=True)
    json_path = REPORTS / f"{benchmark}-{at}.json"
    json_path.write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    md_path = REPORTS / f"{benchmark}-{at}.md"
    md_path.write_text(markdown, encoding="utf-8")
    return json_path, md_path


def show(json_path: Path, md_path: Path) -> None:
    """The Markdown report on stdout, then where both files are."""
    print(md_path.read_text(encoding="utf-8"))
    print(f"reports: {json_path.relative_to(ROOT)}, {md_path.relative_to(ROOT)}")
