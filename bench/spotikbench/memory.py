"""Memory per idle connection: the server's RSS before any socket, after each size of sockets opened cumulatively
(authenticated, joined) once RSS has settled, and after all of them closed; with ``--cycles``, the largest size
opened and closed again. For Spotik, also the live heap its memory monitor reports."""

from __future__ import annotations

import argparse
from typing import Any

from spotikbench.apps import Target
from spotikbench.clients import SourceAddresses, Workers, client_status, open_sockets
from spotikbench.servers import ServerProcess, settled_rss
from spotikbench.tools import KIB, MIB, num, say


async def memory_phase(
    workers: Workers,
    target: Target,
    server: ServerProcess,
    sizes: list[int],
    args: argparse.Namespace,
    addresses: SourceAddresses,
) -> dict[str, Any]:
    before = await settled_rss(server)
    rss0 = before["rss"]
    result: dict[str, Any] = {"rss0": rss0, "rss0_settle": before, "steps": []}
    if target.heap is not None:  # read after RSS: the request itself allocates a little
        result["heap0"] = await target.heap(server)
    say(f"[{target.name}] RSS before any socket: {rss0 / MIB:.1f} MiB" + describe_heap(result.get("heap0")))
    opened = 0
    for size in sizes:
        cpu_before = server.cpu_seconds()
        opening = await open_sockets(workers, target, [server], opened, size - opened, args, addresses)
        cpu_used = server.cpu_seconds() - cpu_before
        after = await settled_rss(server)
        status = await client_status(workers)
        alive = status["alive"]
        step = {
            "connections": size,
            "alive": alive,
            "open": opening,
            "server_cpu_s": round(cpu_used, 2),
            "server_cpu_ms_per_connection": round(cpu_used * 1000 / max(1, size - opened), 3),
            "rss": after["rss"],
            "settle": after,
            "kib_per_connection": round((after["rss"] - rss0) / KIB / alive, 2) if alive else None,
            "server_fds": server.ps.num_fds(),
            "unexpected_closes": status["unexpected_closes"],
        }
        result["steps"].append(step)
        say(
            f"[{target.name}] {alive:>6} open ({opening['failed']} failed, {opening['elapsed_s']:.1f} s, "
            f"join p50 {num(opening['join_ms'].get('p50'))} ms, "
            f"server {step['server_cpu_ms_per_connection']:.2f} CPU-ms/conn): "
            f"RSS {after['rss'] / MIB:.1f} MiB, {step['kib_per_connection']} KiB/conn"
            + ("" if after["settled"] else " (not settled)")
        )
        if opening["failures"]:
            say(f"[{target.name}] failures: {opening['failures']}")
        opened = size
    closing = await workers.call_all("close_all", concurrency=args.concurrency * 2)
    gone = await settled_rss(server, min_wait=args.closed_settle)
    result["close_elapsed_s"] = max(c["elapsed_s"] for c in closing)
    result["rss_after_close"] = gone["rss"]
    result["rss_after_close_settle"] = gone
    result["rss_return"] = round((gone["rss"] - rss0) / rss0, 4)
    if target.heap is not None:
        result["heap_after_close"] = await target.heap(server)
        result["heap_return"] = heap_return(result["heap0"], result["heap_after_close"])
    say(
        f"[{target.name}] all closed: RSS {gone['rss'] / MIB:.1f} MiB ({result['rss_return'] * 100:+.1f} % vs start)"
        + describe_heap(result.get("heap_after_close"), result.get("heap_return"))
    )
    # More cycles (--cycles): the largest size at once, then all closed again. RSS that comes back to the same level
    # every cycle is memory the allocator keeps for reuse; RSS that keeps climbing is a leak.
    result["cycles"] = [{"cycle": 1, "rss_open": result["steps"][-1]["rss"], "rss_closed": gone["rss"]}]
    for cycle in range(2, args.cycles + 1):
        opening = await open_sockets(workers, target, [server], 0, sizes[-1], args, addresses)
        held = await settled_rss(server)
        await workers.call_all("close_all", concurrency=args.concurrency * 2)
        closed = await settled_rss(server, min_wait=args.closed_settle)
        result["cycles"].append(
            {"cycle": cycle, "opened": opening["ok"], "rss_open": held["rss"], "rss_closed": closed["rss"]}
        )
        if target.heap is not None:
            result["cycles"][-1]["heap_return"] = heap_return(result["heap0"], await target.heap(server))
        say(
            f"[{target.name}] cycle {cycle}: {opening['ok']} open → RSS {held['rss'] / MIB:.1f} MiB; all closed → "
            f"{closed['rss'] / MIB:.1f} MiB ({(closed['rss'] - rss0) / rss0 * 100:+.1f} % vs start)"
        )
    if len(result["cycles"]) > 1:  # the steady state: the last cycle's closed RSS against the first one's
        first, last = result["cycles"][0]["rss_closed"], result["cycles"][-1]["rss_closed"]
        result["rss_return_warm"] = round((last - first) / first, 4)
    return result


def heap_return(start: dict[str, Any], now: dict[str, Any]) -> dict[str, float | None]:
    """Each live-memory figure now against the start, as a fraction (+0.02 = 2 % more)."""
    return {
        key: None
        if start.get(key) in (None, 0) or now.get(key) is None
        else round((now[key] - start[key]) / start[key], 4)
        for key in ("python_blocks", "malloc_in_use_bytes")
    }


def describe_heap(heap: dict[str, Any] | None, returned: dict[str, float | None] | None = None) -> str:
    if heap is None:
        return ""
    blocks, in_use = heap.get("python_blocks"), heap.get("malloc_in_use_bytes")
    parts = [f"{blocks:,} Python blocks"] if blocks is not None else []
    parts += [f"malloc {in_use / MIB:.1f} MiB in use"] if in_use is not None else []
    changes = [f"{k} {v * 100:+.1f} %" for k, v in (returned or {}).items() if v is not None]
    return f"; live: {', '.join(parts)}" + (f" ({', '.join(changes)} vs start)" if changes else "")
