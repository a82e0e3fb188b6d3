"""Section 5 of ``spotik bench``: playback sync accuracy. K simulated clients, each with its own clock (the
machine's clock shifted by a random skew of up to ±2 s), reach ``/ws`` through a delaying loopback proxy (a process
of its own that holds every chunk, in each direction, for the one-way delay ± uniform jitter, keeping their order
as TCP would). Each client estimates its clock offset from the ``ping`` / ``pong`` exchange (docs/api.md: NTP's
formula, the sample with the smallest round trip of several), then the administrator starts a track over REST
(``POST …/play``, not through the proxy), every client computes the position from its ``playback_started`` event
(``client_now + offset − started_at``) and all compute it at the same instant. The spread of those positions is what
listeners would hear out of step. Several trials; p50 / p99 of each client's distance from the group's median
position, pooled over trials, and of each trial's max − min."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import multiprocessing
import random
import socket
import statistics
import time
from typing import Any

import httpx2
from websockets.asyncio.client import ClientConnection, connect

from spotikbench.fixtures import expect, register_users, wav_bytes
from spotikbench.servers import ServerProcess
from spotikbench.tools import free_port, percentile, say

TARGET_P99_MS = 20.0


# -- the delaying proxy (a process of its own) ------------------------------------------------------------------


async def _proxy(port: int, target: int, delay_s: float, jitter_s: float, seed: int) -> None:
    rng = random.Random(seed)

    async def pump(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        pending: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()
        last = 0.0

        async def deliver() -> None:
            while True:
                at, data = await pending.get()
                if not data:
                    writer.close()
                    return
                await asyncio.sleep(max(0.0, at - time.monotonic()))
                writer.write(data)
                await writer.drain()

        task = asyncio.create_task(deliver())
        try:
            while True:
                data = await reader.read(65536)
                last = max(last, time.monotonic() + delay_s + rng.uniform(-jitter_s, jitter_s))
                pending.put_nowait((last, data))
                if not data:
                    break
            await task
        except (ConnectionError, OSError):
            task.cancel()
            writer.close()

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer), return_exceptions=True)

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    async with server:
        await server.serve_forever()


def proxy_main(port: int, target: int, delay_s: float, jitter_s: float, seed: int) -> None:
    asyncio.run(_proxy(port, target, delay_s, jitter_s, seed))


def start_proxy(target: int, delay_ms: float, jitter_ms: float) -> tuple[multiprocessing.process.BaseProcess, int]:
    port = free_port()
    process = multiprocessing.get_context("spawn").Process(
        target=proxy_main, args=(port, target, delay_ms / 1000, jitter_ms / 1000, 16), daemon=True
    )
    process.start()
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return process, port
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the delaying proxy did not start")


# -- the clients ------------------------------------------------------------------------------------------------


def server_ms(iso: str) -> float:
    """A server instant (ISO 8601, UTC) in ms since the epoch."""
    return dt.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp() * 1000


class Client:
    def __init__(self, ws: ClientConnection, skew_ms: float) -> None:
        self.ws = ws
        self.skew_ms = skew_ms
        self.offset_ms = 0.0
        self.rtt_ms = 0.0
        self.pongs: asyncio.Queue[tuple[dict[str, Any], float]] = asyncio.Queue()
        self.started: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.reader = asyncio.create_task(self.read())

    def now_ms(self, at: float | None = None) -> float:
        """This client's clock: the machine's, shifted by its skew."""
        return (time.time() if at is None else at) * 1000 + self.skew_ms

    async def read(self) -> None:
        async for raw in self.ws:
            arrived = self.now_ms()
            message = json.loads(raw)
            if message["type"] == "pong":
                self.pongs.put_nowait((message["data"], arrived))
            elif message["type"] == "playback_started":
                self.started.put_nowait(message["data"])

    async def estimate(self, pings: int, gap_s: float) -> None:
        """NTP's offset from the ping with the smallest round trip."""
        best: tuple[float, float] | None = None
        for _ in range(pings):
            t0 = self.now_ms()
            await self.ws.send(json.dumps({"type": "ping", "data": {"client_time": t0}}))
            data, t3 = await asyncio.wait_for(self.pongs.get(), 10)
            t1, t2 = server_ms(data["server_receive_time"]), server_ms(data["server_send_time"])
            rtt, offset = (t3 - t0) - (t2 - t1), ((t1 - t0) + (t2 - t3)) / 2
            if best is None or rtt < best[0]:
                best = (rtt, offset)
            await asyncio.sleep(gap_s)
        assert best is not None
        self.rtt_ms, self.offset_ms = best


async def run(
    server: ServerProcess, *, clients: int, trials: int, delay_ms: float, jitter_ms: float, pings: int = 8
) -> dict[str, Any]:
    rng = random.Random(5)
    async with httpx2.AsyncClient(base_url=server.base_url, timeout=30, trust_env=False) as http:
        tokens = await register_users(http, asyncio.Semaphore(8), [f"sync{i}" for i in range(clients + 1)])
        admin = {"Authorization": f"Bearer {tokens[0]}"}
        room = str(expect(await http.post("/api/rooms", json={"name": "sync"}, headers=admin), 201)["data"]["id"])
        track_ids = []
        for n in range(2):
            files = {"audio_file": (f"sync {n}.wav", wav_bytes(seconds=600, rate=100), "audio/wav")}
            track_ids.append(
                str(
                    expect(await http.post(f"/api/rooms/{room}/tracks", files=files, headers=admin), 201)["track"]["id"]
                )
            )
        for token in tokens[1:]:
            expect(await http.post(f"/api/rooms/{room}/join", headers={"Authorization": f"Bearer {token}"}), 200, 201)
        proxy, port = start_proxy(server.port, delay_ms, jitter_ms)
        sockets: list[Client] = []
        try:
            for token in tokens[1:]:
                ws = await connect(f"ws://127.0.0.1:{port}/ws?token={token}", compression=None, open_timeout=30)
                await ws.send(json.dumps({"type": "join_room", "data": {"room_id": room}}))
                sockets.append(Client(ws, rng.uniform(-2000, 2000)))
            await asyncio.gather(*(c.estimate(pings, 0.05) for c in sockets))
            say(
                f"[sync] {clients} clients through {delay_ms:g} ± {jitter_ms:g} ms: offset error p50 "
                f"{statistics.median(abs(c.offset_ms + c.skew_ms) for c in sockets):.2f} ms, round trip p50 "
                f"{statistics.median(c.rtt_ms for c in sockets):.1f} ms"
            )
            deviations: list[float] = []
            spreads: list[float] = []
            errors: list[float] = []
            for trial in range(trials):
                for c in sockets:  # events of an earlier trial that are still on their way
                    while not c.started.empty():
                        c.started.get_nowait()
                track = track_ids[trial % 2]
                expect(await http.post(f"/api/rooms/{room}/tracks/{track}/play", headers=admin), 200)
                events = await asyncio.wait_for(asyncio.gather(*(c.started.get() for c in sockets)), 30)
                instant = time.time()  # the same instant for everyone, each reading it on its own clock
                positions = [
                    c.now_ms(instant) + c.offset_ms - server_ms(e["started_at"])
                    for c, e in zip(sockets, events, strict=True)
                ]
                truth = instant * 1000 - server_ms(events[0]["started_at"])
                middle = statistics.median(positions)
                deviations += [abs(p - middle) for p in positions]
                errors += [abs(p - truth) for p in positions]
                spreads.append(max(positions) - min(positions))
                await asyncio.sleep(0.2)
        finally:
            for c in sockets:
                c.reader.cancel()
                await c.ws.close()
            proxy.terminate()
            proxy.join(5)
    result: dict[str, Any] = {
        "clients": clients,
        "trials": trials,
        "delay_ms": delay_ms,
        "jitter_ms": jitter_ms,
        "pings": pings,
        "deviation_ms": {"p50": round(statistics.median(deviations), 2), "p99": round(percentile(deviations, 99), 2)},
        "spread_ms": {"p50": round(statistics.median(spreads), 2), "p99": round(percentile(spreads, 99), 2)},
        "error_vs_true_ms": {"p50": round(statistics.median(errors), 2), "p99": round(percentile(errors, 99), 2)},
        "deviations": [round(d, 3) for d in deviations],
        "target_p99_ms": TARGET_P99_MS,
    }
    result["target_met"] = result["deviation_ms"]["p99"] < TARGET_P99_MS
    say(
        f"[sync] position distance from the group's median: p50 {result['deviation_ms']['p50']} ms, p99 "
        f"{result['deviation_ms']['p99']} ms; per-trial spread p50 {result['spread_ms']['p50']} ms"
    )
    return result
