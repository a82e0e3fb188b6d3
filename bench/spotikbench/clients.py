"""The driver's side of the subscriber processes (``spotikbench.client_worker``): starting them, commands and
replies over pipes read by the event loop, and the operations a measurement asks of them all (open sockets split
over the processes, their status)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import multiprocessing as mp
from collections import Counter
from multiprocessing.connection import Connection as Pipe
from typing import Any

import psutil

from spotikbench.apps import Target
from spotikbench.client_worker import worker_main
from spotikbench.servers import ServerProcess
from spotikbench.tools import distribution


class SourceAddresses:
    """A fresh loopback source address per batch of connections (127.0.0.2, 127.0.0.3, …): 10,000 sockets opened
    and closed per phase never compete for the ephemeral ports (or TIME_WAIT) of an earlier phase."""

    def __init__(self) -> None:
        self.next = 2

    def take(self) -> str:
        value = self.next
        self.next += 1
        return f"127.{(value >> 16) & 255}.{(value >> 8) & 255}.{value & 255}"


class Workers:
    """The driver's side of the client processes: commands and replies over pipes, read by the event loop."""

    def __init__(self, count: int, cpus: set[int] | None) -> None:
        context = mp.get_context("spawn")
        self.pipes: list[Pipe] = []
        self.processes: list[Any] = []
        for index in range(count):
            ours, theirs = context.Pipe()
            process = context.Process(
                target=worker_main,
                args=(theirs, sorted(cpus) if cpus else None),
                name=f"bench-client-{index}",
                daemon=True,
            )
            process.start()
            theirs.close()
            self.pipes.append(ours)
            self.processes.append(process)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.events: list[asyncio.Queue[dict[str, Any]]] = []
        self.next_id = 0

    def __len__(self) -> int:
        return len(self.pipes)

    def attach(self) -> None:
        loop = asyncio.get_running_loop()
        self.events = [asyncio.Queue() for _ in self.pipes]
        for index, pipe in enumerate(self.pipes):
            loop.add_reader(pipe.fileno(), self._readable, index)

    def _readable(self, index: int) -> None:
        pipe = self.pipes[index]
        try:
            while pipe.poll():
                message = pipe.recv()
                if "event" in message:
                    self.events[index].put_nowait(message)
                elif (future := self.pending.pop(message["reply"], None)) is not None and not future.done():
                    future.set_result(message)
        except (EOFError, OSError):
            asyncio.get_running_loop().remove_reader(pipe.fileno())
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(RuntimeError(f"client process {index} is gone"))

    async def call(self, worker: int, op: str, within: float = 600.0, **arguments: Any) -> dict[str, Any]:
        self.next_id += 1
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[self.next_id] = future
        self.pipes[worker].send({"op": op, "id": self.next_id, **arguments})
        reply = await asyncio.wait_for(future, within)
        if "error" in reply:
            raise RuntimeError(f"client process {worker}: {op} failed:\n{reply['error']}")
        return reply

    async def call_all(self, op: str, within: float = 600.0, **arguments: Any) -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(self.call(i, op, within, **arguments) for i in range(len(self)))))

    def cpu_seconds(self) -> float:
        total = 0.0
        for process in self.processes:
            with contextlib.suppress(psutil.Error, ValueError):
                times = psutil.Process(process.pid).cpu_times()
                total += times.user + times.system
        return total

    def close(self) -> None:
        loop = asyncio.get_running_loop()
        for index, pipe in enumerate(self.pipes):
            with contextlib.suppress(Exception):
                loop.remove_reader(pipe.fileno())
            with contextlib.suppress(Exception):
                pipe.send({"op": "exit", "id": -index - 1})
        for process in self.processes:
            process.join(10)
            if process.is_alive():
                process.terminate()
                process.join(5)


def split(count: int, parts: int) -> list[tuple[int, int]]:
    """``count`` items over ``parts`` workers: (offset, size) each."""
    base, extra = divmod(count, parts)
    ranges, offset = [], 0
    for index in range(parts):
        size = base + (1 if index < extra else 0)
        ranges.append((offset, size))
        offset += size
    return ranges


async def open_sockets(
    workers: Workers,
    target: Target,
    servers: list[ServerProcess],
    first: int,
    count: int,
    args: argparse.Namespace,
    addresses: SourceAddresses,
) -> dict[str, Any]:
    """Open sockets ``first … first+count-1`` (global numbering: decides user and room), half per client process;
    client process i connects to ``servers[i % len(servers)]``."""
    calls = []
    for index, (offset, size) in enumerate(split(count, len(workers))):
        server = servers[index % len(servers)]
        items = target.connect_items(server, first + offset, size)
        calls.append(
            workers.call(
                index,
                "open",
                items=items,
                local_addr=addresses.take(),
                hello=target.hello,
                joined=target.joined,
                timeout=args.open_timeout,
                concurrency=args.concurrency,
            )
        )
    replies = await asyncio.gather(*calls)
    failures: Counter[str] = Counter()
    for reply in replies:
        failures.update(reply["failures"])
    return {
        "requested": count,
        "ok": sum(r["ok"] for r in replies),
        "failed": sum(r["failed"] for r in replies),
        "failures": dict(failures),
        "elapsed_s": max(r["elapsed_s"] for r in replies),
        "connect_ms": distribution([v for r in replies for v in r["connect_ms"]]),
        "join_ms": distribution([v for r in replies for v in r["join_ms"]]),
        "presence_frames": sum(r["presence_frames"] for r in replies),
    }


async def client_status(workers: Workers) -> dict[str, Any]:
    statuses = await workers.call_all("status")
    closes: Counter[str] = Counter()
    for status in statuses:
        closes.update(status["unexpected_closes"])
    return {
        "alive": sum(s["alive"] for s in statuses),
        "frames": sum(s["frames"] for s in statuses),
        "presence_frames": sum(s["presence_frames"] for s in statuses),
        "unexpected_closes": dict(closes),
    }
