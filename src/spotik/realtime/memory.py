"""Process memory: samples RSS, reports warning/critical levels once per crossing, and runs garbage collection
off the hot path.

* ``note_connection()`` is all the connection path does (one increment). The monitor task, on its next tick, runs a
  young-generation collection (``gc.collect(0)``) once ``gc_young_every`` connections have arrived since the last
  one: connection set-up allocates many short-lived container objects (scope, headers, coroutines) and a young
  collection is a sub-millisecond pause.
* Memory freed when sockets close mostly stays in the process (glibc keeps freed heap pages): once
  ``gc_young_every`` connections have *closed* since the last time, or some have and the closing has settled (none
  closed during the last interval, so the pages of the last ones are free too), the monitor collects the young
  generations and calls glibc's ``malloc_trim(0)``, which hands free pages back to the system (measured: 3,000
  sockets opened and closed, glibc heap 43 → 31 MB; collection and trim about 2 ms). Elsewhere (musl, macOS) only
  the collection runs. What it cannot hand back is pymalloc's: an arena (1 MiB) returns to the system only once
  every object in it is gone, and objects that live across a burst of connections get re-created during it
  (sqlite3's cursor weakrefs, counters, the periodic tasks' timer handles), pinning arenas the burst allocated.
  So RSS stays above a cold start after a burst, at the same level burst after burst; ``heap()`` (Python's live
  blocks, malloc's bytes in use) is what shows whether anything was left behind.
* A full collection stalls the loop in proportion to the number of live objects (about 200 ms with a million live
  dicts), so it runs only under memory pressure (level warning or critical) and at most once every
  ``gc_full_min_interval`` seconds (30 min).

Each collection's pause and RSS before/after are recorded, so ``status()`` shows what the policy actually buys.
While the monitor runs it also times every collection the interpreter makes (``gc.callbacks``): count, total and
longest pause per generation. Those are the automatic ones, which run wherever an allocation crosses a threshold —
in the middle of a broadcast too — so this is where a latency outlier from the collector shows.
"""

from __future__ import annotations

import asyncio
import ctypes
import gc
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from typing import Any, cast

import psutil
import structlog

from spotik.realtime.janitor import every

log = structlog.get_logger("spotik.realtime.memory")
MB = 1024 * 1024


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``, or None where there is no glibc."""
    try:
        return cast("Callable[[int], int]", ctypes.CDLL("libc.so.6").malloc_trim)
    except (OSError, AttributeError):
        return None


_MALLINFO2 = ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in _MALLINFO2]


def _malloc_in_use() -> Callable[[], int] | None:
    """Bytes malloc has handed out and not got back (glibc ≥ 2.33 ``mallinfo2``: heap in use plus mmap'd blocks), or
    None where there is no such glibc."""
    try:
        mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2

    def in_use() -> int:
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return in_use


class Level(StrEnum):
    OK = "ok"
    WARNING = "warning"
    CRITICAL = "critical"


@dataclass(slots=True)
class Collection:
    generation: int
    reason: str
    collected: int
    pause_ms: float
    rss_before: int
    rss_after: int
    at: float  # time.time()
    trimmed: bool = False  # malloc_trim ran after the collection


@dataclass(slots=True)
class Pauses:
    count: int = 0
    total_ms: float = 0.0
    max_ms: float = 0.0


class MemoryMonitor:
    def __init__(
        self,
        *,
        warning_bytes: int,
        critical_bytes: int,
        interval: float = 10.0,
        gc_young_every: int = 500,
        gc_full_min_interval: float = 1800.0,
    ) -> None:
        self.warning_bytes = warning_bytes
        self.critical_bytes = critical_bytes
        self.interval = interval
        self.gc_young_every = gc_young_every
        self.gc_full_min_interval = gc_full_min_interval
        self._process = psutil.Process()
        self.rss = 0
        self.peak_rss = 0
        self.level = Level.OK
        self.samples = 0
        self.crossings = 0
        self._new_connections = 0
        self._closed_connections = 0
        self._closed_at_last_tick = 0
        self.connections_seen = 0
        self._trim = _malloc_trim()
        self._malloc_in_use = _malloc_in_use()
        self._last_full: float | None = None  # time.monotonic()
        self.young_collections: list[Collection] = []
        self.full_collections: list[Collection] = []
        self.pauses = [Pauses(), Pauses(), Pauses()]  # every collection while running, by generation
        self._gc_started = 0.0

    def note_connection(self) -> None:
        self._new_connections += 1
        self.connections_seen += 1

    def note_disconnection(self) -> None:
        self._closed_connections += 1

    def level_for(self, rss: int) -> Level:
        if rss >= self.critical_bytes:
            return Level.CRITICAL
        if rss >= self.warning_bytes:
            return Level.WARNING
        return Level.OK

    def sample(self) -> Level:
        """Read RSS; log a level change once (going up as a warning/error, coming back as info)."""
        rss = int(self._process.memory_info().rss)
        self.rss = rss
        self.peak_rss = max(self.peak_rss, rss)
        self.samples += 1
        level = self.level_for(rss)
        if level is not self.level:
            self.crossings += 1
            fields = {"rss_mb": round(rss / MB, 1), "previous": self.level.value, "level": level.value}
            if level is Level.CRITICAL:
                log.error("memory critical", threshold_mb=round(self.critical_bytes / MB), **fields)
            elif level is Level.WARNING and self.level is Level.OK:
                log.warning("memory warning", threshold_mb=round(self.warning_bytes / MB), **fields)
            else:
                log.info("memory level lowered", **fields)
            self.level = level
        return level

    def collect(self, generation: int, reason: str, *, trim: bool = False) -> Collection:
        before = int(self._process.memory_info().rss)
        started = time.perf_counter()
        collected = gc.collect(generation)
        trim_heap = self._trim if trim else None
        if trim_heap is not None:
            trim_heap(0)
        pause_ms = (time.perf_counter() - started) * 1000
        after = int(self._process.memory_info().rss)
        record = Collection(
            generation, reason, collected, round(pause_ms, 3), before, after, time.time(), trim_heap is not None
        )
        history = self.full_collections if generation == 2 else self.young_collections
        history.append(record)
        del history[:-20]  # keep the last few
        if generation == 2:
            self._last_full = time.monotonic()
            log.info(
                "full garbage collection",
                reason=reason,
                collected=collected,
                pause_ms=record.pause_ms,
                rss_before_mb=round(before / MB, 1),
                rss_after_mb=round(after / MB, 1),
            )
        return record

    def tick(self) -> None:
        """One monitor step: sample, then collect if the policy says so (never called on a request path)."""
        level = self.sample()
        closed = self._closed_connections
        settled = 0 < closed == self._closed_at_last_tick  # none closed since the last tick
        if closed >= self.gc_young_every or settled:
            self._closed_connections = self._new_connections = 0
            reason = f"{self.gc_young_every} closed connections" if not settled else f"{closed} closed, settled"
            self.collect(1, reason, trim=True)
        elif self._new_connections >= self.gc_young_every:
            self._new_connections = 0
            self.collect(0, f"{self.gc_young_every} new connections")
        if level is not Level.OK and (
            self._last_full is None or time.monotonic() - self._last_full >= self.gc_full_min_interval
        ):
            self.collect(2, f"memory {level.value}")
            self.sample()
        self._closed_at_last_tick = self._closed_connections

    def on_gc(self, phase: str, info: dict[str, int]) -> None:
        """``gc.callbacks`` hook: called at the start and the end of every collection."""
        now = time.perf_counter()
        if phase == "start":
            self._gc_started = now
            return
        pause_ms = (now - self._gc_started) * 1000
        pauses = self.pauses[info["generation"]]
        pauses.count += 1
        pauses.total_ms += pause_ms
        pauses.max_ms = max(pauses.max_ms, pause_ms)

    async def run(self, stopping: asyncio.Event) -> None:
        async def job() -> None:
            self.tick()

        gc.callbacks.append(self.on_gc)
        try:
            await every(self.interval, stopping, job, name="memory")
        finally:
            gc.callbacks.remove(self.on_gc)

    def heap(self) -> dict[str, int | None]:
        """What is live, whatever the allocators keep: Python's allocated blocks (pymalloc's objects of up to 512
        bytes and the larger ones it passes to malloc) and malloc's bytes in use. RSS after a burst of connections
        stays above its cold start because the allocators keep memory that a few survivors pin; these two figures
        coming back to their start is what says nothing is left behind."""
        in_use = self._malloc_in_use
        return {"python_blocks": sys.getallocatedblocks(), "malloc_in_use_bytes": in_use() if in_use else None}

    def status(self) -> dict[str, Any]:
        return {
            "rss_mb": round(self.rss / MB, 1),
            "peak_rss_mb": round(self.peak_rss / MB, 1),
            "level": self.level.value,
            "warning_mb": round(self.warning_bytes / MB, 1),
            "critical_mb": round(self.critical_bytes / MB, 1),
            "samples": self.samples,
            "level_changes": self.crossings,
            "connections_seen": self.connections_seen,
            "gc_young_every_connections": self.gc_young_every,
            "gc_full_min_interval_seconds": self.gc_full_min_interval,
            "young_collections": [asdict(c) for c in self.young_collections[-5:]],
            "full_collections": [asdict(c) for c in self.full_collections[-5:]],
            "gc_counts": list(gc.get_count()),
            "heap": self.heap(),
            "gc_pauses": [
                {
                    "generation": generation,
                    "count": p.count,
                    "total_ms": round(p.total_ms, 3),
                    "max_ms": round(p.max_ms, 3),
                }
                for generation, p in enumerate(self.pauses)
            ],
        }
