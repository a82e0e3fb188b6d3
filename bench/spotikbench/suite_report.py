"""``spotik bench``'s REPORT.md: the targets and whether each was met, then one part per section, each figure as the
median with min–max over repeated runs and, where a baseline applies, its ratio to that baseline measured in the
same run."""

from __future__ import annotations

from typing import Any

from spotikbench.realtime_report import markdown as realtime_markdown
from spotikbench.throughput import CEILING, CEILING_TARGET, ENDPOINTS
from spotikbench.tools import MIB, num

NOISY = "Figures of a run on a busy machine (other processes used CPU meanwhile): compare ratios, not absolute values."


CLIENT_BOUND = (
    "the Python load generator (httpx, used when `wrk` is not installed) tops out near the hello-world app's speed, "
    "so the ceiling is the client's; install wrk (`apt-get install wrk`) for the ratio"
)


def verdict(met: bool | None) -> str:
    return {True: "met", False: "**NOT met**", None: "not measured"}[met]


def targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    http = (results.get("http") or {}).get("summary") or {}
    worst = http.get("worst_cached_read")
    client_bound = (results.get("http") or {}).get("tool") == "httpx"
    bare = http.get("worst_cached_read_bare")
    rows.append(
        {
            "target": f"cached hot reads keep ≥ {CEILING_TARGET:.0%} of the hello-world ceiling's req/s on the same "
            "server stack (`GET /api/ping` of the same process; worst endpoint, median of the per-round ratios)",
            "measured": "—"
            if not worst
            else f"{worst['to_stack']['median']:.1%} ({worst['variant']}, {worst['endpoint']}, "
            f"{worst['concurrency']} clients)"
            + (
                ""
                if not bare or client_bound
                else f"; against bare Starlette on uvicorn {bare['to_ceiling']['median']:.1%} ({bare['variant']}, "
                f"{bare['endpoint']}, {bare['concurrency']} clients)"
            )
            + (f" — {CLIENT_BOUND}" if client_bound else ""),
            "met": None if client_bound else http.get("target_met"),
        }
    )
    grow = results.get("growth") or {}
    flat = [(label, grow[label]) for label in ("sqlite", "postgres") if isinstance(grow.get(label), dict)]
    ratios = [f"{label} ×{g['flat_ratio']:.2f}" for label, g in flat if "flat_ratio" in g]
    met = [g["flat_ratio"] <= grow["flat_target"] for _, g in flat if "flat_ratio" in g]
    largest = max(grow.get("sizes") or [0])
    rows.append(
        {
            "target": f"queue query time flat (index-bound) from 1,000 to {largest:,} tracks in other rooms "
            f"(time at the largest ≤ ×{grow.get('flat_target', 1.5)} the time at 1,000)",
            "measured": ", ".join(ratios) or "—",
            "met": all(met) if met else None,
        }
    )
    mix = results.get("mixed") or {}
    rows.append(
        {
            "target": "mixed scenario: zero errors",
            "measured": "—" if "errors" not in mix else f"{mix['errors']} errors",
            "met": None if "errors" not in mix else mix["errors"] == 0,
        }
    )
    sync = results.get("sync") or {}
    rows.append(
        {
            "target": f"sync spread p99 < {sync.get('target_p99_ms', 20):g} ms with "
            f"{sync.get('delay_ms', 50):g} ± {sync.get('jitter_ms', 10):g} ms of one-way delay",
            "measured": "—" if "deviation_ms" not in sync else f"p99 {sync['deviation_ms']['p99']:.2f} ms",
            "met": sync.get("target_met"),
        }
    )
    for check in (results.get("realtime") or {}).get("targets") or []:
        rows.append(
            {
                "target": f"real time: {check['target']}",
                "measured": check["measured"],
                "met": check["passed"],
                "informational": check.get("informational", False),
            }
        )
    for row in rows:
        row["verdict"] = verdict(row["met"]) + (" (informational)" if row.get("informational") else "")
    return rows


def spread(value: dict[str, float] | None, digits: int = 0, suffix: str = "") -> str:
    if not value:
        return "—"
    return (
        f"{value['median']:,.{digits}f}{suffix} ({value['min']:,.{digits}f}–{value['max']:,.{digits}f})"
        if value["min"] != value["max"]
        else f"{value['median']:,.{digits}f}{suffix}"
    )


def figure(names: list[str]) -> list[str]:
    return [f"![{name}]({name})" for name in names] + ([""] if names else [])


def failed(section: dict[str, Any]) -> list[str]:
    return [f"**This section failed**: `{section['failed']}`", ""]


def http_part(result: dict[str, Any], drawn: list[str]) -> list[str]:
    if "failed" in result:
        return failed(result)
    summary = result["summary"]
    rows = summary["rows"]
    lines = [
        f"Each endpoint driven by `{result['tool']}` for a fixed time per run, every figure the median (min–max) over "
        "the rounds; *× stack* = req/s over the same variant's `ping` (`GET /api/ping`: a hello world on the same "
        "server stack, the target's ceiling) in the same round at the same concurrency; *× bare* = req/s over the "
        "bare hello-world app's (`bench/baseline_ws_app.py`, `GET /ping`, Starlette on uvicorn and nothing else); "
        "*× uncached* = cached over uncached in the same round. Cached hot reads go through the fast path of "
        "docs/cache.md#answers. Endpoints: "
        + ", ".join(f"{name} `{path}`" for name, path in ENDPOINTS.items())
        + " (vote: `POST` and `DELETE` in turn). Rate limiting off; each variant has its own database and the same "
        "data made through the REST API.",
        "",
    ]
    if result.get("tool") == "httpx":
        lines += [f"**Without wrk the bare ceiling is not measured**: {CLIENT_BOUND}.", ""]
    if not result.get("cache_setting_known"):
        lines += [
            "**Cached = uncached in this build**: its settings have no `CACHE_ENABLED` yet (the caching layer is "
            "landing on another branch), so both variants ran the same code and their ratio only shows the noise "
            "between two processes.",
            "",
        ]
    lines += [
        "| variant | endpoint | clients | req/s | p50 ms | p99 ms | × stack | × bare | × uncached |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (r["concurrency"], r["endpoint"] != CEILING, r["endpoint"], r["variant"])):
        lines.append(
            f"| {r['variant']} | {r['endpoint']} | {r['concurrency']} | {spread(r['rps'])} | {spread(r['p50_ms'], 2)} "
            f"| {spread(r['p99_ms'], 2)} | {spread(r.get('to_stack'), 3)} | {spread(r['to_ceiling'], 3)} "
            f"| {spread(r['to_uncached'], 2)} |"
        )
    lines += ["", f"Failed requests: {summary['errors']}.", ""]
    return lines + figure(drawn)


def realtime_part(result: dict[str, Any]) -> list[str]:
    if "failed" in result:
        return failed(result)
    from spotikbench.realtime import parse_args

    text = realtime_markdown(parse_args(result["argv"]), result)
    body = text.split("\n", 2)[2]  # without its title
    return [
        f"`bench/realtime.py {' '.join(result['argv'])}`, run in this process (its phases and report).",
        "",
        *body.replace("\n## Details", "\n#### Details").splitlines(),
        "",
    ]


def growth_part(result: dict[str, Any], realtime: dict[str, Any], drawn: list[str]) -> list[str]:
    lines: list[str] = []
    if "failed" in result:
        lines += failed(result)
    else:
        lines += [
            "The queue query (`spotik.tracks.repository.queue_tracks`: unplayed tracks of a room, uploader and genre "
            "joined, in queue order) timed in the bench's process, median (min–max) over the repeats; rows inserted "
            "directly after `spotik migrate`. *10-track room*: a room of 10 tracks while another room holds N; "
            "*without indexes*: every index leading with `room_id` dropped; *N-track room*: the room holding N "
            "itself, with the memory its rows take (tracemalloc's peak while loading).",
            "",
            "| database | N | 10-track room, indexes (ms) | without indexes (ms) | N-track room (ms) "
            "| its rows (MiB) |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for label in ("sqlite", "postgres"):
            part = result.get(label)
            if not isinstance(part, dict):
                continue
            for fixed, own in zip(part["fixed"], part["own"], strict=True):
                ix, no = fixed["indexed"], fixed["no_indexes"]
                lines.append(
                    f"| {label} | {fixed['tracks']:,} | {ix['median_ms']:.2f} ({ix['min_ms']:.2f}–{ix['max_ms']:.2f}) "
                    f"| {no['median_ms']:.2f} ({no['min_ms']:.2f}–{no['max_ms']:.2f}) | {own['median_ms']:.1f} "
                    f"({own['min_ms']:.1f}–{own['max_ms']:.1f}) | {own['peak_bytes'] / MIB:.1f} |"
                )
        lines.append("")
        for label in ("sqlite", "postgres"):
            part = result.get(label)
            if not isinstance(part, dict) or not part["fixed"]:
                continue
            last = part["fixed"][-1]
            lines += [
                f"<details><summary>{label}: plans of the 10-track room's query at {last['tracks']:,} tracks</summary>",
                "",
                "With the indexes:",
                "",
                "```",
                last["plan_indexed"],
                "```",
                "",
                "Without the indexes:",
                "",
                "```",
                last["plan_no_indexes"],
                "```",
                "",
                "</details>",
                "",
            ]
    results = realtime.get("results") or {}
    rows = []
    for app in ("spotik", "baseline"):
        for key, label in (("latency", "1 instance"), ("latency_redis", "2 instances")):
            for size, outcome in ((results.get(app) or {}).get(key) or {}).items():
                lat = outcome["latency_ms"]
                per = lat.get("p50") / int(size) * 1000 if lat.get("p50") else None
                rows.append(
                    f"| {app}, {label} | {int(size):,} | {num(lat.get('p50'), 2)} | {num(lat.get('p99'), 2)} "
                    f"| {num(per, 1)} |"
                )
    if rows:
        lines += [
            "Broadcast cost against subscribers (from the real-time section):",
            "",
            "| app | subscribers | p50 (ms) | p99 (ms) | p50 per subscriber (µs) |",
            "|---|---:|---:|---:|---:|",
            *rows,
            "",
        ]
    rows = []
    for app in ("spotik", "baseline"):
        memory = (results.get(app) or {}).get("memory") or {}
        for step in memory.get("steps") or []:
            rows.append(
                f"| {app} | {step['connections']:,} | {(step['rss'] - memory['rss0']) / MIB:.1f} "
                f"| {num(step['kib_per_connection'], 2)} |"
            )
    if rows:
        lines += [
            "Memory against connections (from the real-time section):",
            "",
            "| app | connections | RSS above the start (MiB) | KiB per connection |",
            "|---|---:|---:|---:|",
            *rows,
            "",
        ]
    return lines + figure(drawn)


def mixed_part(result: dict[str, Any], drawn: list[str]) -> list[str]:
    if "failed" in result:
        return failed(result)
    lines = [
        f"{result['listeners']} listeners in {result['rooms']} rooms for {result['seconds']:.0f} s on "
        f"{result['instances']} instance(s) ({result['database']}): every listener keeps a WebSocket joined to its "
        "room, votes or withdraws a vote about every 2 s (exponential gaps), 5 % of its actions an upload of a 60 KB "
        "WAV; each room's administrator skips every 5 s. An error is a 5xx or any status not expected, a transport "
        "failure, an `error` frame or a socket closed before the end (a skip answered 400 because the queue ran dry "
        f"is expected). Set-up {result['setup_s']} s.",
        "",
        f"**Errors: {result['errors']}**"
        + (f" (first: {'; '.join(result['error_examples'])})" if result["errors"] else "")
        + f"; frames received: {result['frames']:,}.",
        "",
        "| operation | requests | p50 ms | p90 ms | p99 ms | max ms | statuses |",
        "|---|---:|---:|---:|---:|---:|---|",
    ]
    for op, data in sorted(result["operations"].items()):
        lat = data["latency_ms"]
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(data["statuses"].items()))
        lines.append(
            f"| {op} | {lat['n']} | {num(lat.get('p50'), 2)} | {num(lat.get('p90'), 2)} | {num(lat.get('p99'), 2)} "
            f"| {num(lat.get('max'), 2)} | {statuses} |"
        )
    lines += ["", "| server | CPU (mean, of one core) | RSS before (MiB) | RSS max (MiB) |", "|---|---:|---:|---:|"]
    for name, s in result["servers"].items():
        lines.append(f"| {name} | {s['cpu_mean']:.0%} | {s['rss_before_mib']} | {s['rss_max_mib']} |")
    return [*lines, "", *figure(drawn)]


def sync_part(result: dict[str, Any], drawn: list[str]) -> list[str]:
    if "failed" in result:
        return failed(result)
    d, s, e = result["deviation_ms"], result["spread_ms"], result["error_vs_true_ms"]
    return [
        f"{result['clients']} clients, each with its own clock (skewed by up to ±2 s), reach `/ws` through a delaying "
        f"loopback proxy ({result['delay_ms']:g} ms ± {result['jitter_ms']:g} ms uniform, each way, order kept); "
        f"each estimates its offset with {result['pings']} `ping`/`pong` exchanges (NTP's formula, the smallest round "
        f"trip), then {result['trials']} times the administrator starts a track and every client computes the "
        "position from `playback_started` at the same instant.",
        "",
        "| figure | p50 (ms) | p99 (ms) |",
        "|---|---:|---:|",
        f"| distance from the group's median position (the target's figure) | {d['p50']:.2f} | {d['p99']:.2f} |",
        f"| spread of a trial (max − min) | {s['p50']:.2f} | {s['p99']:.2f} |",
        f"| distance from the true position | {e['p50']:.2f} | {e['p99']:.2f} |",
        "",
        *figure(drawn),
    ]


def markdown(
    meta: dict[str, Any], results: dict[str, Any], checks: list[dict[str, Any]], drawn: dict[str, list[str]]
) -> str:
    label = {"quick": "QUICK run (`--quick`): small sizes, few repeats", "smoke": "SMOKE run (`--smoke`): CI's size"}
    m = meta["machine"]
    lines = [
        "# Spotik benchmark report",
        "",
        f"**{label.get(meta['size'], 'Full run')}** — {meta['at']}, {meta['run_s']:.0f} s; Python {m['python']}, "
        f"{m['cpus']} CPUs, {m['platform']}; load average at the end {meta['load_average']}; command "
        f"`spotik bench {' '.join(meta['argv'])}`.",
        "",
    ]
    if meta["size"] != "full":
        lines += [
            "Sizes and repeats are far below the full run's: the pipeline is proven, the figures are indicative.",
            "",
        ]
    lines += [NOISY, ""]
    if meta["services_problem"]:
        lines += [f"PostgreSQL + Redis were unavailable ({meta['services_problem']}): their parts were skipped.", ""]
    if meta["errors"]:
        lines += ["Failed sections: " + "; ".join(f"{k}: `{v}`" for k, v in meta["errors"].items()), ""]
    lines += ["## Targets", "", "| target | measured | verdict |", "|---|---|---|"]
    lines += [f"| {c['target']} | {c['measured']} | {c['verdict']} |" for c in checks]
    lines += ["", "Targets are reported, not enforced (`--strict` exits 1 when one is missed).", ""]
    timings = results.get("timings") or {}
    parts = (
        (
            "http",
            "1. HTTP: hot endpoints against the ceiling, cached against uncached",
            lambda r: http_part(r, drawn.get("http", [])),
        ),
        ("realtime", "2. Real time", realtime_part),
        (
            "growth",
            "3. How cost grows",
            lambda r: growth_part(r, results.get("realtime") or {}, drawn.get("growth", [])),
        ),
        ("mixed", "4. Mixed scenario", lambda r: mixed_part(r, drawn.get("mixed", []))),
        ("sync", "5. Playback sync accuracy", lambda r: sync_part(r, drawn.get("sync", []))),
    )
    for key, title, part in parts:
        if key not in results:
            continue
        lines += [f"## {title}", "", *part(results[key])]
        if key in timings:
            lines += [f"*Section time: {timings[key]:.0f} s.*", ""]
    return "\n".join(lines).rstrip() + "\n"
