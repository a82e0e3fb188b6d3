"""The soak's report (``bench/reports/soak-<stamp>/``): the least-squares slopes of each server's RSS and open
descriptors over the last half of the run and the verdict, the figures of the whole run, one PNG per series, and
REPORT.md + results.json.

Flat means: |RSS slope| at most ``RSS_FLAT_SHARE`` of the server's mean RSS over the last half per minute (1 % per
10 minutes), and the descriptors' fitted line rising or falling by at most ``FDS_FLAT_OVER_HALF`` across the last half
(|slope| × its minutes). Why those: at the default rates (about 30
requests/s, 1,800 a minute), 1 % of a ~110 MiB process per 10 minutes is ~110 KiB/min, about 60 bytes per request, so
a leak of one small object per request (or a kilobyte per vote, per upload's buffer, per reconnect's state) is
above it, while pymalloc's 1 MiB arenas and the caches filling up to their budgets stay below it once warmed up
(the first half). Descriptors are whole numbers: one connection a pool opens once, on demand, is a step of 1, which a
line fitted over the half turns into at most 1.5 across it; a descriptor leaked per upload, skip or reconnect (12 a
minute each at the defaults) would put tens across it. Hence at most 2 across the half (0.8/min over a 10-minute
run's last 5 minutes).
Slower leaks need a longer soak (``--minutes``); the slopes' standard errors say how far the figures can be trusted."""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from spotikbench.tools import distribution

RSS_FLAT_SHARE = 0.001  # of the mean RSS, per minute: 1 % per 10 minutes
FDS_FLAT_OVER_HALF = 2.0  # descriptors, |slope| × the last half's minutes
MIB_KIB = 1024


def fit(points: list[tuple[float, float]]) -> dict[str, float]:
    """Least squares y = a + b·x; b, its standard error and the mean of y."""
    n = len(points)
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    sxx = sum((x - mx) ** 2 for x in xs)
    slope = sum((x - mx) * (y - my) for x, y in points) / sxx if sxx else 0.0
    intercept = my - slope * mx
    residual = sum((y - intercept - slope * x) ** 2 for x, y in points)
    stderr = (residual / (n - 2) / sxx) ** 0.5 if n > 2 and sxx else 0.0
    return {"slope": slope, "stderr": stderr, "intercept": intercept, "mean": my, "n": n}


def slopes(samples: list[dict[str, Any]], minutes: float) -> dict[str, dict[str, Any]]:
    """Per server, the RSS (KiB/min) and descriptor (per minute) slopes over the last half, with the verdicts."""
    half = minutes * 60 / 2
    fds_limit = FDS_FLAT_OVER_HALF / (minutes / 2)  # per minute
    late = [s for s in samples if s["t"] >= half]
    out: dict[str, dict[str, Any]] = {}
    for name in samples[0]["servers"] if samples else []:
        rss = fit([(s["t"] / 60, s["servers"][name]["rss_kib"]) for s in late])
        fds = fit([(s["t"] / 60, s["servers"][name]["fds"]) for s in late])
        rss_limit = RSS_FLAT_SHARE * rss["mean"]
        out[name] = {
            "samples": rss["n"],
            "rss_slope_kib_per_min": round(rss["slope"], 1),
            "rss_slope_stderr": round(rss["stderr"], 1),
            "rss_mean_mib": round(rss["mean"] / MIB_KIB, 1),
            "rss_limit_kib_per_min": round(rss_limit, 1),
            "rss_flat": abs(rss["slope"]) <= rss_limit,
            "rss_fit": [rss["intercept"], rss["slope"]],
            "fds_slope_per_min": round(fds["slope"], 3),
            "fds_slope_stderr": round(fds["stderr"], 3),
            "fds_min": min(s["servers"][name]["fds"] for s in late),
            "fds_max": max(s["servers"][name]["fds"] for s in late),
            "fds_limit_per_min": round(fds_limit, 3),
            "fds_flat": abs(fds["slope"]) <= fds_limit,
            "fd_kinds_last": samples[-1]["servers"][name].get("fd_kinds"),
            "fds_fit": [fds["intercept"], fds["slope"]],
            "rss_first_mib": round(samples[0]["servers"][name]["rss_kib"] / MIB_KIB, 1),
            "rss_last_mib": round(samples[-1]["servers"][name]["rss_kib"] / MIB_KIB, 1),
            "rss_max_mib": round(max(s["servers"][name]["rss_kib"] for s in samples) / MIB_KIB, 1),
            "fds_first": samples[0]["servers"][name]["fds"],
            "fds_last": samples[-1]["servers"][name]["fds"],
            "cpu_mean": round(statistics.fmean(s["servers"][name]["cpu"] for s in samples), 3),
        }
    return out


def build(meta: dict[str, Any], samples: list[dict[str, Any]], tally: Any, ending: dict[str, Any]) -> dict[str, Any]:
    seconds = samples[-1]["t"] if samples else 0.0
    requests = sum(s["requests"] for s in samples)
    errors = sum(s["errors"] for s in samples)
    ops = {
        op: {
            "count": sum(counts.values()),
            "per_s": round(sum(counts.values()) / seconds, 3) if seconds else None,
            "statuses": counts,
            "latency_ms": distribution(tally.latencies.get(op, [])),
        }
        for op, counts in sorted(tally.counts.items())
    }
    everything = [ms for values in tally.latencies.values() for ms in values]
    per_server = slopes(samples, meta["minutes"])
    db = [s["db_connections_total"] for s in samples]
    redis = [s["redis_used_memory"] for s in samples]
    keys = [s["redis_run_keys"] for s in samples]
    p99s = [s["p99_ms"] for s in samples if s["p99_ms"] is not None]
    flat = all(v["rss_flat"] and v["fds_flat"] for v in per_server.values())
    consistent = bool(ending["consistency"]["consistent"])
    ok = flat and errors == 0 and consistent and bool(samples)
    summary = (
        f"{'PASS' if ok else 'FAIL'}: {errors} errors in {requests:,} operations; RSS and descriptors "
        f"{'flat' if flat else 'NOT flat'} over the last half ("
        + "; ".join(
            f"{n}: {v['rss_slope_kib_per_min']:+.1f} KiB/min (limit ±{v['rss_limit_kib_per_min']:.0f}), "
            f"{v['fds_slope_per_min']:+.3f} fds/min (limit ±{v['fds_limit_per_min']:g})"
            for n, v in per_server.items()
        )
        + f"); acknowledged writes {'all found' if consistent else 'NOT all consistent'}"
    )
    return {
        "meta": meta,
        "totals": {
            "seconds": seconds,
            "operations": requests,
            "errors": errors,
            "error_rate": errors / requests if requests else None,
            "missed_ticks": dict(tally.missed),
            "frames": tally.frames,
            "frames_per_s": round(tally.frames / seconds, 1) if seconds else None,
            "latency_ms": distribution(everything),
            "interval_p99_ms": {"median": statistics.median(p99s), "max": max(p99s)} if p99s else None,
            "db_connections": {"min": min(db), "max": max(db), "last": db[-1]} if db else None,
            "redis_used_memory_mib": {
                "first": round(redis[0] / 2**20, 2),
                "max": round(max(redis) / 2**20, 2),
                "last": round(redis[-1] / 2**20, 2),
            }
            if redis
            else None,
            "redis_run_keys": {"first": keys[0], "max": max(keys), "last": keys[-1]} if keys else None,
        },
        "operations": ops,
        "servers": per_server,
        "thresholds": {"rss_share_per_min": RSS_FLAT_SHARE, "fds_over_half": FDS_FLAT_OVER_HALF},
        "verdict": {"ok": ok, "flat": flat, "errors": errors, "consistent": consistent, "summary": summary},
        "ending": ending,
        "error_examples": tally.errors[:20],
        "samples": samples,
    }


def figures(result: dict[str, Any], out: Path) -> list[str]:
    samples = result["samples"]
    if not samples:
        return []
    minutes = [s["t"] / 60 for s in samples]
    half = result["meta"]["minutes"] / 2
    names: list[str] = []

    def new(title: str, ylabel: str) -> tuple[Any, Any]:
        fig, ax = plt.subplots(figsize=(6.4, 3.0))
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("minutes", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.axvspan(half, minutes[-1], color="grey", alpha=0.08, label="last half (fitted)")
        return fig, ax

    def save(fig: Any, ax: Any, name: str) -> None:
        ax.legend(fontsize=7, loc="best")
        fig.tight_layout()
        fig.savefig(out / name, dpi=80)
        plt.close(fig)
        names.append(name)

    fig, ax = new("operations per interval", "per second")
    ax.plot(minutes, [s["rps"] for s in samples], label="operations/s")
    ax.plot(minutes, [s["errors"] for s in samples], color="red", label="errors (count)")
    ax.plot(minutes, [s["frames"] / result["meta"]["interval_s"] / 10 for s in samples], label="WS frames/s ÷ 10")
    ax.set_ylim(bottom=0)
    save(fig, ax, "soak-throughput.png")

    fig, ax = new("latency of the operations of each interval", "ms")
    ax.plot(minutes, [s["p50_ms"] for s in samples], label="p50")
    ax.plot(minutes, [s["p99_ms"] for s in samples], label="p99")
    ax.set_yscale("log")
    save(fig, ax, "soak-latency.png")

    for key, label, scale, name in (
        ("rss_kib", "RSS (MiB)", 1 / MIB_KIB, "soak-rss.png"),
        ("fds", "open file descriptors", 1.0, "soak-fds.png"),
    ):
        fig, ax = new(f"{label} per server, with the last half's least-squares line", label)
        for server, figures_ in result["servers"].items():
            line = ax.plot(minutes, [s["servers"][server][key] * scale for s in samples], label=server)[0]
            a, b = figures_["rss_fit" if key == "rss_kib" else "fds_fit"]
            xs = [m for m in minutes if m >= half]
            slope = figures_["rss_slope_kib_per_min" if key == "rss_kib" else "fds_slope_per_min"]
            unit = "KiB/min" if key == "rss_kib" else "/min"
            ax.plot(
                xs,
                [(a + b * x) * scale for x in xs],
                linestyle="--",
                color=line.get_color(),
                label=f"{server} fit: {slope:+g} {unit}",
            )
        save(fig, ax, name)

    fig, ax = new("PostgreSQL connections to the run's database", "connections")
    states = sorted({k for s in samples for k in s["db_connections"]})
    for state in states:
        ax.plot(minutes, [s["db_connections"].get(state, 0) for s in samples], label=state)
    ax.plot(minutes, [s["db_connections_total"] for s in samples], color="black", label="total")
    ax.set_ylim(bottom=0)
    save(fig, ax, "soak-db.png")

    fig, ax = new("Redis used_memory (the whole server's) and the run's keys", "MiB")
    ax.plot(minutes, [s["redis_used_memory"] / 2**20 for s in samples], label="used_memory (MiB)")
    right = ax.twinx()
    right.plot(minutes, [s["redis_run_keys"] for s in samples], color="C1", label="keys of the run")
    right.set_ylabel("keys", fontsize=8)
    right.tick_params(labelsize=7)
    right.legend(fontsize=7, loc="lower right")
    save(fig, ax, "soak-redis.png")
    return names


def markdown(result: dict[str, Any], drawn: list[str]) -> str:
    meta, totals, verdict = result["meta"], result["totals"], result["verdict"]
    rates = meta["rates"]
    interval_p99 = totals["interval_p99_ms"] or {}
    lines = [
        f"# Soak: {meta['minutes']:g} minutes, two instances, PostgreSQL + Redis ({meta['at']})",
        "",
        f"**{verdict['summary']}**",
        "",
        f"Load (open loop, fixed schedule): {meta['listeners']} listeners with a joined WebSocket in {meta['rooms']} "
        f"rooms (half on each instance); {rates['vote']:g} votes or withdrawals/s, {rates['read']:g} reads/s "
        f"(queue : room : playback status = 3 : 1 : 1), {rates['upload'] * 60:g} uploads/min (60 KB WAV), "
        f"{rates['skip'] * 60:g} skips/min, {rates['reconnect'] * 60:g} socket reconnects/min. Sampled every "
        f"{meta['interval_s']:g} s. Set-up {meta['setup_s']} s, run {meta['run_s']} s; load average at the end "
        f"{meta['load_average']}; CPU used by the whole machine meanwhile {meta['machine_busy_cpu_s']} s. "
        f"{meta['machine']['platform']}, Python {meta['machine']['python']}, {meta['machine']['cpus']} CPUs.",
        "",
        "## Totals",
        "",
        f"- operations: {totals['operations']:,} in {totals['seconds']:.0f} s, errors {totals['errors']} "
        f"(rate {totals['error_rate'] or 0:.2e}); ticks missed: {totals['missed_ticks'] or 0}",
        "  (a tick is missed when `--max-in-flight` operations are outstanding, when the three listeners drawn for a "
        "vote all had one in flight or an empty queue, or when the socket drawn for a reconnect was mid-reconnect)",
        f"- latency of every operation: p50 {totals['latency_ms'].get('p50')} ms, p99 {totals['latency_ms'].get('p99')}"
        f" ms, max {totals['latency_ms'].get('max')} ms; the intervals' p99: median {interval_p99.get('median')}"
        f" ms, worst {interval_p99.get('max')} ms",
        f"- WebSocket frames received: {totals['frames']:,} ({totals['frames_per_s']}/s)",
        f"- PostgreSQL connections to the run's database: {totals['db_connections']}",
        f"- Redis used_memory (whole server, MiB): {totals['redis_used_memory_mib']}; the run's keys: "
        f"{totals['redis_run_keys']}",
        "",
        "| operation | count | per s | statuses | p50 ms | p99 ms | max ms |",
        "|---|---:|---:|---|---:|---:|---:|",
    ]
    for op, v in result["operations"].items():
        lat = v["latency_ms"]
        lines.append(
            f"| {op} | {v['count']:,} | {v['per_s']} | {v['statuses']} | {lat.get('p50', '—')} | "
            f"{lat.get('p99', '—')} | {lat.get('max', '—')} |"
        )
    t = result["thresholds"]
    lines += [
        "",
        "## RSS and descriptors over the last half (least squares)",
        "",
        f"Flat: |RSS slope| ≤ {t['rss_share_per_min'] * 100:g} % of the mean RSS per minute (1 % per 10 min), "
        f"descriptors' fitted line moving by at most {t['fds_over_half']:g} across the last half (why: "
        "`spotikbench/soak_report.py`).",
        "",
        "| server | RSS first → last (max) MiB | last-half mean | RSS slope KiB/min (± s.e.) | limit "
        "| fds first → last | last-half min–max | fds slope /min (± s.e.) | limit | fds at the end | CPU mean | flat |",
        "|---|---|---:|---:|---:|---|---|---:|---:|---|---:|---|",
    ]
    for name, v in result["servers"].items():
        lines.append(
            f"| {name} | {v['rss_first_mib']} → {v['rss_last_mib']} ({v['rss_max_mib']}) | {v['rss_mean_mib']} | "
            f"{v['rss_slope_kib_per_min']:+.1f} (± {v['rss_slope_stderr']}) | ±{v['rss_limit_kib_per_min']:.0f} | "
            f"{v['fds_first']} → {v['fds_last']} | {v['fds_min']}–{v['fds_max']} | "
            f"{v['fds_slope_per_min']:+.3f} (± {v['fds_slope_stderr']}) | ±{v['fds_limit_per_min']:g} | "
            f"{v['fd_kinds_last']} | {v['cpu_mean']} | "
            f"{'yes' if v['rss_flat'] and v['fds_flat'] else 'NO'} |"
        )
    c = result["ending"]["consistency"]
    lines += [
        "",
        "## Acknowledged writes against the database",
        "",
        f"{c['uploads_found']} of {c['uploads_acknowledged']} acknowledged uploads have their row; "
        f"{c['vote_states_checked']:,} (listener, track) vote states whose last request was answered: "
        f"{c['vote_rows_missing']} missing vote rows, {c['vote_rows_unexpected']} unexpected "
        f"({c['vote_states_unknown']} states unknown after a failed request, not checked); "
        f"{c['vote_score_drift']} tracks whose vote_score differs from their vote rows; "
        f"{c['tracks_in_database']} tracks in the database.",
        "",
    ]
    if result["error_examples"]:
        lines += ["## Errors (first ones)", "", *[f"- `{e}`" for e in result["error_examples"]], ""]
    problems = {k: v for k, v in result["ending"]["server_log_problems"].items() if v}
    if problems:
        lines += ["## Servers' last warning/error lines", ""]
        for name, found in problems.items():
            lines += [f"- {name}:", *[f"  - `{line[:300]}`" for line in found]]
        lines.append("")
    lines += ["## Every minute", "", "| min | ops/s | errors | p50 ms | p99 ms | frames/s | "]
    names = list(result["servers"])
    lines[-1] += " | ".join(f"{n} RSS MiB | {n} fds" for n in names) + " | db conns | Redis MiB |"
    lines.append("|" + "---:|" * (6 + 2 * len(names) + 2))
    interval = result["meta"]["interval_s"]
    per_minute = max(1, round(60 / interval))
    for s in result["samples"][per_minute - 1 :: per_minute]:
        cells = [
            f"{s['t'] / 60:.1f}",
            f"{s['rps']}",
            f"{s['errors']}",
            f"{s['p50_ms']}",
            f"{s['p99_ms']}",
            f"{s['frames'] / interval:.0f}",
        ]
        for n in names:
            cells += [f"{s['servers'][n]['rss_kib'] / MIB_KIB:.1f}", f"{s['servers'][n]['fds']}"]
        cells += [f"{s['db_connections_total']}", f"{s['redis_used_memory'] / 2**20:.2f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "## Figures", "", *[f"![{name}]({name})" for name in drawn], ""]
    return "\n".join(lines)


def write(out: Path, result: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    drawn = figures(result, out)
    (out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n", encoding="utf-8")
    (out / "REPORT.md").write_text(markdown(result, drawn), encoding="utf-8")
