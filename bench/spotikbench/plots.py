"""The PNG figures of ``spotik bench``'s report (matplotlib, the ``bench`` extra), one function per figure; each
takes the section's results and returns the file's name, or None when there is nothing to draw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from matplotlib.axes import Axes

MIB = 1024 * 1024


def save(fig: Any, out: Path, name: str) -> str:
    fig.tight_layout()
    fig.savefig(out / name, dpi=110)
    plt.close(fig)
    return name


def bars(ax: Axes, groups: list[str], series: dict[str, list[dict[str, float] | None]], ylabel: str) -> None:
    """Grouped bars (median) with min–max whiskers."""
    width = 0.8 / max(1, len(series))
    for index, (label, values) in enumerate(series.items()):
        xs = [g + index * width - 0.4 + width / 2 for g in range(len(groups))]
        med = [v["median"] if v else 0 for v in values]
        low = [v["median"] - v["min"] if v else 0 for v in values]
        high = [v["max"] - v["median"] if v else 0 for v in values]
        ax.bar(xs, med, width, yerr=[low, high], capsize=2, label=label)
    ax.set_xticks(range(len(groups)), groups, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel(ylabel)


def http(result: dict[str, Any], out: Path) -> list[str]:
    rows = result["summary"]["rows"]
    levels = sorted({r["concurrency"] for r in rows})
    variants = sorted({r["variant"] for r in rows if r["variant"] != "hello world"})
    endpoints = list(dict.fromkeys(r["endpoint"] for r in rows if r["variant"] != "hello world"))
    pick = {(r["variant"], r["endpoint"], r["concurrency"]): r for r in rows}
    names = []
    for metric, ylabel, name in (
        ("rps", "requests/s", "http_throughput.png"),
        ("p99_ms", "p99 latency (ms)", "http_latency.png"),
    ):
        fig, axes = plt.subplots(1, len(levels), figsize=(5.5 * len(levels), 4.2), squeeze=False)
        for ax, level in zip(axes[0], levels, strict=True):
            series = {v: [(pick.get((v, e, level)) or {}).get(metric) for e in endpoints] for v in variants}
            bars(ax, endpoints, series, ylabel)
            hello = (pick.get(("hello world", "hello world", level)) or {}).get(metric)
            if hello:  # the target's ceiling is each variant's own ping bar (the same server stack)
                ax.axhline(hello["median"], color="black", linestyle="--", linewidth=1, label="bare hello world")
            ax.set_title(f"{level} concurrent clients")
            ax.legend(fontsize=7)
        names.append(save(fig, out, name))
    return names


def ideal_line(ax: Axes, xs: Sequence[float], x0: float, y0: float, power: float, label: str) -> None:
    ax.plot(xs, [y0 * (x / x0) ** power for x in xs], color="grey", linestyle=":", label=label)


def growth_queue(result: dict[str, Any], out: Path) -> str | None:
    labels = [k for k in result if isinstance(result[k], dict) and "fixed" in result[k]]
    if not labels:
        return None
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label in labels:
        fixed, own = result[label]["fixed"], result[label]["own"]
        xs = [p["tracks"] for p in fixed]
        left.plot(xs, [p["indexed"]["median_ms"] for p in fixed], marker="o", label=f"{label}: 10-track room, indexes")
        left.plot(xs, [p["no_indexes"]["median_ms"] for p in fixed], marker="x", label=f"{label}: 10-track room, none")
        left.plot(xs, [p["median_ms"] for p in own], marker="s", label=f"{label}: the N-track room")
        right.plot(xs, [p["peak_bytes"] / MIB for p in own], marker="s", label=f"{label}: the N-track room")
    first = result[labels[0]]
    xs = [p["tracks"] for p in first["fixed"]]
    anchor = first["fixed"][min(1, len(xs) - 1)]
    ideal_line(left, xs, anchor["tracks"], anchor["indexed"]["median_ms"], 0, "ideal: flat")
    own = first["own"][-1]
    ideal_line(left, xs, own["tracks"], own["median_ms"], 1, "ideal: linear")
    ideal_line(right, xs, own["tracks"], own["peak_bytes"] / MIB, 1, "ideal: linear")
    for ax, ylabel in ((left, "queue query (ms)"), (right, "rows loaded (MiB, tracemalloc peak)")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("tracks in the table (N)")
        ax.set_ylabel(ylabel)
        ax.legend(fontsize=7)
    return save(fig, out, "growth_queue.png")


def growth_broadcast(realtime: dict[str, Any], out: Path) -> str | None:
    results = realtime.get("results") or {}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    drawn = False
    for app, key, label in (
        ("spotik", "latency", "Spotik, 1 instance"),
        ("spotik", "latency_redis", "Spotik, 2 instances (Redis)"),
        ("baseline", "latency", "baseline, 1 instance"),
    ):
        block = (results.get(app) or {}).get(key) or {}
        points = sorted((int(k), v["latency_ms"]) for k, v in block.items() if v["latency_ms"].get("p50") is not None)
        if not points:
            continue
        xs = [p[0] for p in points]
        ax.plot(xs, [p[1]["p50"] for p in points], marker="o", label=f"{label} p50")
        ax.plot(xs, [p[1]["p99"] for p in points], marker="x", linestyle="--", label=f"{label} p99")
        if not drawn:
            ideal_line(ax, xs, xs[-1], points[-1][1]["p50"], 1, "ideal: linear in subscribers")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("subscribers of the room")
    ax.set_ylabel("vote → last subscriber (ms)")
    ax.legend(fontsize=7)
    return save(fig, out, "growth_broadcast.png")


def growth_memory(realtime: dict[str, Any], out: Path) -> str | None:
    results = realtime.get("results") or {}
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    drawn = False
    for app in ("spotik", "baseline"):
        memory = (results.get(app) or {}).get("memory")
        if not memory or not memory.get("steps"):
            continue
        xs = [s["connections"] for s in memory["steps"]]
        ys = [(s["rss"] - memory["rss0"]) / MIB for s in memory["steps"]]
        ax.plot(xs, ys, marker="o", label=app)
        if app == "spotik":
            ideal_line(ax, xs, xs[-1], ys[-1], 1, "ideal: linear in connections")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlabel("idle joined connections")
    ax.set_ylabel("RSS above the start (MiB)")
    ax.legend(fontsize=7)
    return save(fig, out, "growth_memory.png")


def mixed(result: dict[str, Any], out: Path) -> str | None:
    ops = result.get("operations") or {}
    if not ops:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    names = sorted(ops)
    xs = range(len(names))
    ax.bar([x - 0.2 for x in xs], [ops[n]["latency_ms"].get("p50", 0) for n in names], 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [ops[n]["latency_ms"].get("p99", 0) for n in names], 0.4, label="p99")
    ax.set_xticks(list(xs), names)
    ax.set_ylabel("latency (ms)")
    ax.set_title(f"{result['listeners']} listeners, {result['rooms']} rooms, {result['seconds']:.0f} s")
    ax.legend(fontsize=7)
    return save(fig, out, "mixed.png")


def sync(result: dict[str, Any], out: Path) -> str | None:
    deviations = result.get("deviations") or []
    if not deviations:
        return None
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    ax.hist(deviations, bins=30)
    ax.axvline(
        result["target_p99_ms"], color="red", linestyle="--", label=f"target p99 < {result['target_p99_ms']:g} ms"
    )
    ax.axvline(result["deviation_ms"]["p99"], color="black", linestyle=":", label="measured p99")
    ax.set_xlabel("|position − group median| at the same instant (ms)")
    ax.set_ylabel("clients × trials")
    ax.set_title(f"{result['clients']} clients, {result['delay_ms']:g} ± {result['jitter_ms']:g} ms one way")
    ax.legend(fontsize=7)
    return save(fig, out, "sync.png")
