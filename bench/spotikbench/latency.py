"""Broadcast latency: rounds of one request (a vote, a broadcast) to the last of S subscribers, each arrival the
kernel's receive timestamp; the server's garbage collections during the rounds; and, on an idle Spotik, single
requests one at a time (the floor under those figures)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import time
from collections import Counter
from typing import Any

import httpx2
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from spotikbench.apps import SPOTIK_HELLO, SPOTIK_JOINED, GcPauses, MakeTrigger, Target, Trigger
from spotikbench.clients import SourceAddresses, Workers, client_status, open_sockets
from spotikbench.fixtures import SpotikFixture, expect
from spotikbench.servers import ServerProcess
from spotikbench.tools import distribution, say


async def run_rounds(
    workers: Workers,
    trigger: Trigger,
    plan: list[tuple[str, list[str]]],
    warmup: int,
    args: argparse.Namespace,
) -> dict[str, Any]:
    replies = await workers.call_all("rounds", needles=[needles for _, needles in plan])
    expected = [r["expected"] for r in replies]
    client_cpu = [r["cpu"] for r in replies]
    active = [i for i, n in enumerate(expected) if n > 0]
    measured: list[dict[str, Any]] = []
    incomplete = 0
    http_errors: Counter[int] = Counter()
    for index, (kind, _) in enumerate(plan):
        t0, status, response_ms = await trigger(index)
        if status >= 400:
            http_errors[status] += 1
        done: dict[int, dict[str, Any]] = {}
        deadline = time.monotonic() + args.round_timeout
        for worker in active:
            while worker not in done:
                remaining = deadline - time.monotonic()
                try:
                    event = await asyncio.wait_for(workers.events[worker].get(), max(0.001, remaining))
                except TimeoutError:
                    await workers.call(worker, "abort_round", index=index)
                    deadline = time.monotonic() + 5.0  # its partial count is on the way
                    continue
                if event["index"] == index:
                    done[worker] = event
        count = sum(e["count"] for e in done.values())
        lasts = [e["last"] for e in done.values() if e["last"] is not None]
        handled = [e["last_handled"] for e in done.values() if e["last_handled"] is not None]
        firsts = [e["first"] for e in done.values() if e["first"] is not None]
        cpu_ms = sum((e["cpu"] - client_cpu[w]) * 1000 for w, e in done.items())
        for worker, event in done.items():
            client_cpu[worker] = event["cpu"]
        complete = count == sum(expected)
        if not complete:
            incomplete += 1
        if index >= warmup:
            measured.append(
                {
                    "round": index - warmup,
                    "kind": kind,
                    "latency_ms": round((max(lasts) - t0) * 1000, 3) if complete and lasts else None,
                    "handled_ms": round((max(handled) - t0) * 1000, 3) if complete and handled else None,
                    "first_ms": round((min(firsts) - t0) * 1000, 3) if firsts else None,
                    "response_ms": round(response_ms, 3),
                    "client_cpu_ms": round(cpu_ms, 3),
                    "received": count,
                    "size": max((e["size"] for e in done.values()), default=0),
                }
            )
    await workers.call_all("stop_rounds")
    latencies = [m["latency_ms"] for m in measured if m["latency_ms"] is not None]
    return {
        "subscribers": sum(expected),
        "per_process": expected,
        "rounds": len(measured),
        "warmup_rounds": warmup,
        "incomplete_rounds": incomplete,
        "http_errors": dict(http_errors),
        "latency_ms": distribution(latencies),
        "handled_ms": distribution([m["handled_ms"] for m in measured if m["handled_ms"] is not None]),
        "first_subscriber_ms": distribution([m["first_ms"] for m in measured if m["first_ms"] is not None]),
        "response_ms": distribution([m["response_ms"] for m in measured]),
        "client_cpu_ms": distribution([m["client_cpu_ms"] for m in measured]),
        "by_kind": {
            kind: {
                "latency_ms": distribution(
                    [m["latency_ms"] for m in measured if m["kind"] == kind and m["latency_ms"] is not None]
                ),
                "first_subscriber_ms": distribution(
                    [m["first_ms"] for m in measured if m["kind"] == kind and m["first_ms"] is not None]
                ),
            }
            for kind in sorted({m["kind"] for m in measured})
        },
        "frame_bytes": max((m["size"] for m in measured), default=0),
        "samples": measured,
    }


async def latency_phase(
    workers: Workers,
    target: Target,
    servers: list[ServerProcess],
    subscribers: list[int],
    make_trigger: MakeTrigger,
    args: argparse.Namespace,
    addresses: SourceAddresses,
    label: str,
    gc_pauses: GcPauses | None = None,
) -> dict[str, Any]:
    """Subscribers open cumulatively (S₁, then up to S₂ …) and each size runs warm-up + measured rounds.
    ``gc_pauses``: the server's collections so far (Spotik's memory monitor), read before and after the rounds."""
    results: dict[str, Any] = {}
    opened = 0
    try:
        for size in subscribers:
            trigger, needles_for, close = make_trigger()
            opening = await open_sockets(workers, target, servers, opened, size - opened, args, addresses)
            opened = size
            status = await client_status(workers)
            if opening["failures"]:
                say(f"[{target.name} {label}] failures opening: {opening['failures']}")
            total = args.warmup_rounds + args.rounds
            try:
                plan = [needles_for(i) for i in range(total)]
                gc_before = await gc_pauses() if gc_pauses else None
                outcome = await run_rounds(workers, trigger, plan, args.warmup_rounds, args)
                if gc_pauses and gc_before is not None:
                    outcome["server_gc"] = gc_during(gc_before, await gc_pauses())
            finally:
                await close()
            outcome["open"] = opening
            outcome["alive"] = status["alive"]
            results[str(size)] = outcome
            lat = outcome["latency_ms"]
            say(
                f"[{target.name} {label}] {outcome['subscribers']:>5} subscribers: p50 {lat.get('p50', '-')} ms, "
                f"p99 {lat.get('p99', '-')} ms (first subscriber p50 {outcome['first_subscriber_ms'].get('p50', '-')}"
                f" ms, REST {outcome['response_ms'].get('p50', '-')} ms, client CPU "
                f"{outcome['client_cpu_ms'].get('p50', '-')} ms/round, {outcome['frame_bytes']} B frames"
                + (f", {outcome['incomplete_rounds']} incomplete rounds" if outcome["incomplete_rounds"] else "")
                + ")"
                + (
                    f"; server collections during the rounds: {describe_gc(outcome['server_gc'])}"
                    if "server_gc" in outcome
                    else ""
                )
            )
            if len(outcome["by_kind"]) > 1:
                say(
                    f"[{target.name} {label}] {outcome['subscribers']:>5} subscribers by round: "
                    + "; ".join(
                        f"{kind} p50 {v['latency_ms'].get('p50')} / p99 {v['latency_ms'].get('p99')} ms "
                        f"(first subscriber p50 {v['first_subscriber_ms'].get('p50')} ms)"
                        for kind, v in outcome["by_kind"].items()
                    )
                )
    finally:
        await workers.call_all("close_all", concurrency=args.concurrency * 2)
    return results


def gc_during(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "generation": a["generation"],
            "count": a["count"] - b["count"],
            "total_ms": round(a["total_ms"] - b["total_ms"], 2),
        }
        for b, a in zip(before, after, strict=True)
    ]


def describe_gc(during: list[dict[str, Any]]) -> str:
    return ", ".join(f"gen{g['generation']} {g['count']} ({g['total_ms']:.1f} ms)" for g in during)


async def await_text(ws: ClientConnection, needle: str) -> None:
    while True:
        message = await ws.recv()
        if isinstance(message, str) and needle in message:
            return


async def probe_spotik(server: ServerProcess, fixture: SpotikFixture, count: int = 20) -> dict[str, Any]:
    """Single requests one at a time, nothing else running: what one vote, one room read, one socket join cost on
    an idle server (the floor under the latency figures and the reason for the open times)."""
    timings: dict[str, list[float]] = {}
    room, track = fixture.latency_room, fixture.track
    headers = {"Authorization": f"Bearer {fixture.tokens[0]}"}
    async with httpx2.AsyncClient(base_url=server.base_url, headers=headers, timeout=30, trust_env=False) as client:
        requests = [
            ("GET /api/ping", "GET", "/api/ping"),
            ("GET /api/auth/me", "GET", "/api/auth/me"),
            (f"GET /api/rooms/{{room}} ({len(fixture.tokens)} members)", "GET", f"/api/rooms/{room}"),
            ("POST vote", "POST", f"/api/rooms/{room}/tracks/{track}/vote"),
            ("DELETE vote", "DELETE", f"/api/rooms/{room}/tracks/{track}/vote"),
        ]
        await client.get("/api/ping")
        for _ in range(count):
            for name, method, path in requests:
                started = time.monotonic()
                response = await client.request(method, path)
                timings.setdefault(name, []).append((time.monotonic() - started) * 1000)
                expect(response, 200)
    sockets: list[ClientConnection] = []
    drains: list[asyncio.Task[None]] = []

    async def drain(ws: ClientConnection) -> None:  # presence frames keep coming: read them
        with contextlib.suppress(ConnectionClosed):
            async for _ in ws:
                pass

    try:
        for index in range(count):
            token = fixture.tokens[index % len(fixture.tokens)]
            started = time.monotonic()
            ws = await connect(f"{server.ws_url}?token={token}", compression=None, proxy=None, ping_interval=None)
            sockets.append(ws)
            await await_text(ws, SPOTIK_HELLO)
            connected = time.monotonic()
            await ws.send(json.dumps({"type": "join_room", "data": {"room_id": room}}))
            await await_text(ws, SPOTIK_JOINED)
            drains.append(asyncio.get_running_loop().create_task(drain(ws)))
            timings.setdefault("WebSocket connect + authenticate", []).append((connected - started) * 1000)
            timings.setdefault(f"WebSocket join_room ({len(fixture.tokens)} members)", []).append(
                (time.monotonic() - connected) * 1000
            )
    finally:
        await asyncio.gather(*(ws.close() for ws in sockets), return_exceptions=True)
        await asyncio.gather(*drains, return_exceptions=True)
    return {name: distribution(values) for name, values in timings.items()}
