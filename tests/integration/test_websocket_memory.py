"""The memory monitor: levels logged once per crossing, and the GC policy (young generation after N new connections,
full collections only under pressure and rate-limited), measured rather than assumed."""

from __future__ import annotations

import asyncio
import gc
import platform

from structlog.testing import capture_logs

from spotik.realtime.memory import Level, MemoryMonitor
from spotik.settings import Settings
from tests.integration.test_websocket_support import people, receive, running_app, wait_for

TB = 1024**4


def monitor(**overrides: int | float) -> MemoryMonitor:
    values: dict[str, int | float] = {
        "warning_bytes": TB,
        "critical_bytes": 2 * TB,
        "interval": 3600,
        "gc_young_every": 3,
        "gc_full_min_interval": 3600,
    }
    values.update(overrides)
    return MemoryMonitor(**values)  # type: ignore[arg-type]


def test_levels_are_logged_once_per_crossing_and_exposed() -> None:
    memory = monitor()
    with capture_logs() as logs:
        assert memory.sample() is Level.OK
        memory.warning_bytes = 1  # any process is above one byte
        assert memory.sample() is Level.WARNING
        assert memory.sample() is Level.WARNING  # no second log for the same level
        memory.critical_bytes = 1
        assert memory.sample() is Level.CRITICAL
        memory.warning_bytes, memory.critical_bytes = TB, 2 * TB
        assert memory.sample() is Level.OK
    assert [(entry["event"], entry["log_level"]) for entry in logs] == [
        ("memory warning", "warning"),
        ("memory critical", "error"),
        ("memory level lowered", "info"),
    ]
    status = memory.status()
    assert status["level"] == "ok" and status["level_changes"] == 3 and status["rss_mb"] > 0
    assert status["warning_mb"] == TB / 1024 / 1024


def test_heap_figures_follow_live_objects_and_malloc() -> None:
    memory = monitor()
    start = memory.heap()
    objects = [[index] for index in range(20_000)]  # small objects: pymalloc blocks
    buffers = [bytearray(100_000) for _ in range(20)]  # large ones: malloc (here, mmap'd above its threshold)
    held = memory.heap()
    assert held["python_blocks"] is not None and start["python_blocks"] is not None
    assert held["python_blocks"] - start["python_blocks"] >= 20_000
    if platform.libc_ver()[0] == "glibc":
        assert start["malloc_in_use_bytes"] is not None and held["malloc_in_use_bytes"] is not None
        assert held["malloc_in_use_bytes"] - start["malloc_in_use_bytes"] >= 20 * 100_000
    del objects, buffers
    gone = memory.heap()
    assert gone["python_blocks"] is not None and gone["python_blocks"] < start["python_blocks"] + 1_000
    assert memory.status()["heap"].keys() == {"python_blocks", "malloc_in_use_bytes"}


def test_young_collection_after_n_new_connections_only() -> None:
    memory = monitor()
    memory.note_connection()
    memory.note_connection()
    memory.tick()
    assert memory.young_collections == []
    memory.note_connection()
    memory.tick()
    (young,) = memory.young_collections
    assert young.generation == 0 and young.pause_ms >= 0 and young.rss_before > 0 and young.rss_after > 0
    memory.tick()
    assert len(memory.young_collections) == 1  # the counter started over
    assert memory.full_collections == []  # no pressure, no full collection


def test_closed_connections_lead_to_a_collection_that_hands_free_heap_back() -> None:
    """After gc_young_every closed sockets: a collection of the young generations, then malloc_trim (glibc), which
    returns free heap pages to the system (what it buys is measured by bench/realtime.py, not here)."""
    memory = monitor()
    for _ in range(2):
        memory.note_disconnection()
    memory.tick()
    assert memory.young_collections == []
    blocks = [bytearray(600) for _ in range(8_000)]  # malloc'd (over pymalloc's 512-byte limit), freed below
    del blocks[::2]  # half of them freed in the middle of the heap: only malloc_trim returns such pages
    memory.note_disconnection()
    memory.tick()
    (trim,) = memory.young_collections
    assert trim.generation == 1 and trim.reason == "3 closed connections"
    assert trim.trimmed is (platform.libc_ver()[0] == "glibc")
    assert trim.rss_before > 0 and trim.rss_after > 0
    del blocks


def test_a_few_closed_connections_are_trimmed_once_the_closing_has_settled() -> None:
    memory = monitor()
    memory.note_disconnection()
    memory.tick()
    assert memory.young_collections == []  # closing in this interval: maybe more to come
    memory.note_disconnection()
    memory.tick()
    assert memory.young_collections == []  # still closing
    memory.tick()  # nothing closed since the last tick
    (trim,) = memory.young_collections
    assert trim.generation == 1 and trim.reason == "2 closed, settled"
    memory.tick()
    memory.tick()
    assert len(memory.young_collections) == 1  # nothing new to hand back


def test_full_collection_only_under_pressure_and_at_most_once_per_interval() -> None:
    memory = monitor(warning_bytes=1)
    garbage = [[index] for index in range(10_000)]
    cycle: list[object] = []
    cycle.append(cycle)  # a reference cycle only the cyclic collector frees
    del garbage, cycle
    memory.tick()
    (full,) = memory.full_collections
    assert full.generation == 2 and full.collected >= 1 and full.reason == "memory warning"
    memory.tick()
    memory.tick()
    assert len(memory.full_collections) == 1  # rate-limited (gc_full_min_interval)
    memory.gc_full_min_interval = 0
    memory.tick()
    assert len(memory.full_collections) == 2


async def test_every_collection_is_timed_while_the_monitor_runs() -> None:
    memory = monitor()
    stopping = asyncio.Event()
    task = asyncio.create_task(memory.run(stopping))
    await wait_for(lambda: memory.on_gc in gc.callbacks, what="the monitor's gc hook")
    gc.collect(2)  # not the monitor's: the interpreter's collections are timed too
    gc.collect(0)
    full, young = memory.pauses[2], memory.pauses[0]
    assert full.count >= 1 and 0 < full.max_ms <= full.total_ms and young.count >= 1
    stopping.set()
    await task
    counted = memory.pauses[2].count
    gc.collect(2)
    assert memory.pauses[2].count == counted  # unhooked once stopped
    assert memory.status()["gc_pauses"][2] == {
        "generation": 2,
        "count": counted,
        "total_ms": round(full.total_ms, 3),
        "max_ms": round(full.max_ms, 3),
    }


async def test_the_gateway_counts_connections_for_the_monitor_task(settings: Settings) -> None:
    async with running_app(settings, gc_young_every_connections=2, memory_sample_interval=0.05) as env:
        (alice,) = await people(env.client, "alice")
        memory = env.realtime.memory
        async with env.ws(alice.token) as first, env.ws(alice.token) as second:
            await receive(first)
            await receive(second)
            await wait_for(lambda: len(memory.young_collections) == 1, what="young collection by the monitor task")
        assert memory.connections_seen == 2 and memory.samples >= 2
        await wait_for(lambda: len(memory.young_collections) == 2, what="collection after the sockets closed")
        reasons = [c["reason"] for c in env.realtime.status()["memory"]["young_collections"]]
        assert reasons == ["2 new connections", "2 closed connections"]
