"""``python bench/cache_store.py [--quick] [--strict]`` (or ``make bench-cache``): what a read and a write of the
in-process cache tier cost, against a plain dict lookup and a cachetools ``LRUCache`` read measured in the same run.

Every figure is the median (and p99) over ``--batches`` batches of the time per call in a batch of ``--batch-size``
calls (one call is too short to time alone); the loop's own cost is in every row alike. Target: a small-entry
``CacheStore.get`` under 2 µs (median). See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import itertools
import statistics
import time
from collections.abc import Callable
from typing import Any

import orjson
from cachetools import LRUCache
from spotikbench.report import machine, show, stamp, write

from spotik.cache import CacheManager, CacheStore, Codec, NamespaceSpec, Priority

TARGET_US = 2.0
SMALL = {"id": "9b2f6c1e-5d3a-4c7e-8f10-2a6b4d8e0c11", "name": "Friday mix", "is_playing": True, "listeners": 7}
LARGE = {"tracks": [{"id": i, "title": f"Track {i}", "artist": "Someone", "duration": 215} for i in range(60)]}


def timed(call: Callable[[], Any], batches: int, size: int) -> dict[str, float]:
    """Median and p99 of the per-call time (µs) over ``batches`` batches of ``size`` calls."""
    per_call: list[float] = []
    loop = range(size)
    gc.disable()
    try:
        for _ in range(batches):
            start = time.perf_counter_ns()
            for _ in loop:
                call()
            per_call.append((time.perf_counter_ns() - start) / size / 1000)
    finally:
        gc.enable()
    return summary(per_call)


def summary(per_call: list[float]) -> dict[str, float]:
    per_call = sorted(per_call)
    median = statistics.median(per_call)
    return {"median_us": median, "p99_us": per_call[int(len(per_call) * 0.99) - 1], "per_second": 1e6 / median}


def build_store() -> CacheStore:
    return CacheStore(
        [
            NamespaceSpec("room_state", ttl=30, priority=Priority.HIGH),
            NamespaceSpec("room_state_msgpack", ttl=30, priority=Priority.HIGH, codec=Codec.MSGPACK),
            NamespaceSpec("user_data", ttl=600, compress=True),
        ]
    )


def measure(batches: int, size: int) -> dict[str, dict[str, float]]:
    store = build_store()
    store.set("room_state", "room:1", SMALL)
    store.set("room_state_msgpack", "room:1", SMALL)
    store.set("user_data", "big", LARGE)
    plain = {"room:1": SMALL}
    lru: LRUCache[str, Any] = LRUCache(10_000)
    lru["room:1"] = SMALL
    blob = store.encode("room_state", SMALL)
    get, put = store.get, store.set
    next_key = itertools.cycle([f"room:{i}" for i in range(1000)]).__next__

    def set_small() -> None:
        put("room_state", next_key(), SMALL)

    manager = CacheManager(build_store())
    manager.store.set("room_state", "room:1", SMALL)

    async def manager_gets() -> dict[str, float]:
        mget = manager.get
        per_call: list[float] = []
        for _ in range(batches):
            start = time.perf_counter_ns()
            for _ in range(size):
                await mget("room_state", "room:1")
            per_call.append((time.perf_counter_ns() - start) / size / 1000)
        return summary(per_call)

    rows = {
        "dict lookup (baseline)": timed(lambda: plain["room:1"], batches, size),
        "cachetools LRUCache get (baseline)": timed(lambda: lru["room:1"], batches, size),
        "orjson.loads of the entry (decode alone)": timed(lambda: orjson.loads(blob[1:]), batches, size),
        "CacheStore.get small JSON entry": timed(lambda: get("room_state", "room:1"), batches, size),
        "CacheStore.get small msgpack entry": timed(lambda: get("room_state_msgpack", "room:1"), batches, size),
        "CacheStore.get 3.7 KB entry, compressed": timed(lambda: get("user_data", "big"), batches, size),
        "CacheStore.get miss": timed(lambda: get("room_state", "absent"), batches, size),
        "CacheStore.set small JSON entry": timed(set_small, batches, size),
    }
    rows["await CacheManager.get small entry"] = asyncio.run(manager_gets())
    return rows


def markdown(rows: dict[str, dict[str, float]], report: dict[str, Any]) -> str:
    dict_us = rows["dict lookup (baseline)"]["median_us"]
    lru_us = rows["cachetools LRUCache get (baseline)"]["median_us"]
    lines = [
        f"# Cache store micro-benchmark ({report['at']})",
        "",
        f"{report['batches']} batches × {report['batch_size']} calls; Python {report['machine']['python']}.",
        "",
        "| operation | median µs | p99 µs | per second | × dict | × LRUCache |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['median_us']:.3f} | {row['p99_us']:.3f} | {row['per_second']:,.0f} | "
            f"{row['median_us'] / dict_us:.1f} | {row['median_us'] / lru_us:.1f} |"
        )
    verdict = "PASS" if report["target_met"] else "FAIL"
    lines += ["", f"Target: small-entry get median < {TARGET_US} µs: **{verdict}** ({report['get_median_us']:.3f} µs)"]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--quick", action="store_true", help="200 batches")
    parser.add_argument("--strict", action="store_true", help="exit 1 when the target is missed")
    args = parser.parse_args()
    batches = 200 if args.quick else args.batches
    at = stamp()
    rows = measure(batches, args.batch_size)
    get_us = rows["CacheStore.get small JSON entry"]["median_us"]
    report: dict[str, Any] = {
        "benchmark": "cache_store",
        "at": at,
        "machine": machine(),
        "batches": batches,
        "batch_size": args.batch_size,
        "target_us": TARGET_US,
        "get_median_us": get_us,
        "target_met": get_us < TARGET_US,
        "ratios": {
            "get_vs_dict": get_us / rows["dict lookup (baseline)"]["median_us"],
            "get_vs_lrucache": get_us / rows["cachetools LRUCache get (baseline)"]["median_us"],
        },
        "rows": rows,
    }
    show(*write("cache_store", at, report, markdown(rows, report)))
    return 1 if args.strict and not report["target_met"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
