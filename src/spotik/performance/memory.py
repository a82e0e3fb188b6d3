"""Sampled per-request memory: RSS before and after 1 request in N, a bounded sliding window, hungry routes.

RSS is process-wide, so a sample also counts whatever ran concurrently; over a window the routes that really
allocate stand out anyway. On Linux RSS is read with one ``pread`` of ``/proc/self/statm`` on a descriptor kept
open (~0.7 µs here); psutil's ``memory_info`` opens, reads and closes that file on every call (~9 µs here, and
system calls are dearer still under load), so it is only the fallback on other systems.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections import deque
from typing import Any, NamedTuple

import psutil


class MemorySample(NamedTuple):
    route: str
    method: str
    delta_bytes: int
    rss_bytes: int
    at: float


class RssReader:
    """The current resident set size of this process, in bytes."""

    def __init__(self, process: psutil.Process) -> None:
        self.process = process
        self._page_size = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self._fd: int | None = None
        self._use_statm = sys.platform.startswith("linux")

    def __call__(self) -> int:
        if self._use_statm:
            try:
                if self._fd is None:  # opened lazily, by the process that serves (never inherited)
                    self._fd = os.open("/proc/self/statm", os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                return int(os.pread(self._fd, 128, 0).split()[1]) * self._page_size
            except (OSError, ValueError, IndexError):
                self.close()
                self._use_statm = False
        return int(self.process.memory_info().rss)

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)


class MemorySampler:
    def __init__(self, *, sample_every: int, window_size: int, process: psutil.Process | None = None) -> None:
        self.sample_every = sample_every
        self.process = process or psutil.Process()
        self.rss = RssReader(self.process)
        self.samples: deque[MemorySample] = deque(maxlen=window_size)

    def close(self) -> None:
        self.rss.close()

    def record(self, route: str, method: str, before: int, after: int) -> MemorySample:
        sample = MemorySample(route, method, after - before, after, time.time())
        self.samples.append(sample)
        return sample

    def top_routes(self, limit: int = 5) -> list[dict[str, Any]]:
        """Route templates by RSS growth over the window (sum of positive deltas), hungriest first."""
        by_route: dict[str, dict[str, Any]] = {}
        for sample in self.samples:
            entry = by_route.setdefault(
                sample.route, {"route": sample.route, "samples": 0, "growth_bytes": 0, "max_delta_bytes": 0}
            )
            entry["samples"] += 1
            entry["growth_bytes"] += max(sample.delta_bytes, 0)
            entry["max_delta_bytes"] = max(entry["max_delta_bytes"], sample.delta_bytes)
        for entry in by_route.values():
            entry["avg_delta_bytes"] = round(entry["growth_bytes"] / entry["samples"])
        ranked = sorted(by_route.values(), key=lambda e: (e["growth_bytes"], e["max_delta_bytes"]), reverse=True)
        return ranked[:limit]

    def summary(self) -> dict[str, Any]:
        deltas = [sample.delta_bytes for sample in self.samples]
        return {
            "rss_bytes": self.rss(),
            "sample_every": self.sample_every,
            "window": len(deltas),
            "window_size": self.samples.maxlen,
            "avg_delta_bytes": round(sum(deltas) / len(deltas)) if deltas else 0,
            "max_delta_bytes": max(deltas, default=0),
            "top_routes": self.top_routes(),
        }
