"""Real-time figures of Spotik's ``/ws`` next to a minimal app on the same server stack, in one run.

For ``spotik serve`` and for a minimal Starlette app served by uvicorn with the same options
(``bench/baseline_ws_app.py``), all on loopback:

1. **memory per idle connection**: server RSS before any socket, then after 1,000 / 5,000 / 10,000 connections
   opened cumulatively, each authenticated and joined to a room (rooms of 100), once RSS has settled; per
   connection = (RSS_k − RSS_0) / k; then every socket closes and RSS is compared with RSS_0;
2. **broadcast latency**: a REST vote (Spotik) or ``POST /broadcast`` (baseline) to the *last* of S subscribers
   of one room, S = 100 and 1,000, p50 / p99 over R rounds; t0 is taken right before the request, each
   subscriber takes the kernel's receive timestamp of the read that completed the round's frame (``SO_TIMESTAMPNS``,
   so the client's own CPU time does not count; ``time.monotonic()`` at the read elsewhere);
3. the same latency **across two instances through Redis** (subscribers half on each, the request to the first);
   Spotik's two instances share a PostgreSQL database created for the run;
4. a bare ``websockets`` echo server's memory per idle connection at 1,000, a second anchor.

Subscribers live in client processes (``multiprocessing``, one asyncio loop each, every socket read by a reader
callback with ``recvmsg`` and the ``websockets`` sans-I/O client protocol),
pinned to other CPUs than the servers (``--no-pin`` to switch that off). Targets (``--strict`` exits 1 when one
is missed): ≤ 20 KiB per idle joined connection, 10,000 connections held by one process, p99 < 50 ms for 1,000
subscribers on one instance, p99 < 100 ms across two instances, RSS back within 10 % once all are gone.

    .venv/bin/python bench/realtime.py            # full size, about 16 minutes on 2 CPUs
    .venv/bin/python bench/realtime.py --quick    # small sizes, a couple of minutes

Reports go to bench/reports/ (git-ignored) as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import time
from pathlib import Path

from spotikbench.phases import Run, execute
from spotikbench.realtime_report import write_report
from spotikbench.report import busy_cpu_seconds, show
from spotikbench.tools import raise_nofile, split_cpus


def int_list(text: str) -> list[int]:
    return [int(part) for part in text.split(",") if part.strip()] if text.strip() else []


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int_list, default=None, help="idle connections, cumulative (1000,5000,10000)")
    parser.add_argument("--subscribers", type=int_list, default=None, help="subscribers of one room (100,1000)")
    parser.add_argument("--rounds", type=int, default=None, help="measured rounds per latency figure (100)")
    parser.add_argument("--warmup-rounds", type=int, default=4, help="rounds before the measured ones (4)")
    parser.add_argument(
        "--cycles", type=int, default=None, help="open/close cycles of the largest size (leak check; 2, --quick 1)"
    )
    parser.add_argument(
        "--closed-settle",
        type=float,
        default=25.0,
        help="s to wait at least, once all are closed, before reading RSS (25: two ticks of the memory monitor)",
    )
    parser.add_argument("--bare-size", type=int, default=None, help="idle connections on the bare websockets server")
    parser.add_argument("--quick", action="store_true", help="sizes 200,500; subscribers 50,100; 20 rounds; 1 cycle")
    parser.add_argument("--users", type=int, default=100, help="Spotik users (socket i belongs to user i %% users)")
    parser.add_argument("--room-size", type=int, default=100, help="idle connections per room (100)")
    parser.add_argument("--clients", type=int, default=2, help="client processes (2)")
    parser.add_argument("--concurrency", type=int, default=50, help="handshakes in flight per client process (50)")
    parser.add_argument("--open-timeout", type=float, default=60.0, help="s for one connect + join (60)")
    parser.add_argument("--round-timeout", type=float, default=10.0, help="s before a round counts as incomplete")
    parser.add_argument("--frame-bytes", type=int, default=0, help="baseline frame size (default: Spotik's)")
    parser.add_argument("--apps", default="spotik,baseline", help="spotik, baseline or both (default)")
    parser.add_argument("--no-redis", dest="redis", action="store_false", help="skip the two-instance runs")
    parser.add_argument("--redis-url", default="redis://127.0.0.1:6379/0")
    parser.add_argument("--pg-host", default="127.0.0.1")
    parser.add_argument("--pg-port", type=int, default=5432)
    parser.add_argument("--pg-user", default="postgres")
    parser.add_argument("--no-pin", dest="pin", action="store_false", help="do not pin servers and clients to CPUs")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    quick = args.quick
    if args.sizes is None:
        args.sizes = [200, 500] if quick else [1000, 5000, 10000]
    if args.subscribers is None:
        args.subscribers = [50, 100] if quick else [100, 1000]
    if args.rounds is None:
        args.rounds = 20 if quick else 100
    if args.bare_size is None:
        args.bare_size = 200 if quick else 1000
    if args.cycles is None:
        args.cycles = 1 if quick else 2
    args.sizes = sorted(set(args.sizes))
    args.subscribers = sorted(set(args.subscribers))
    args.apps = [app.strip() for app in args.apps.split(",") if app.strip()]
    if args.warmup_rounds % 2:
        args.warmup_rounds += 1  # Spotik's rounds alternate vote / unvote: every run starts with no vote
    if args.rounds % 2:
        args.rounds += 1
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    raise_nofile()
    # Servers on the first CPU (a single uvicorn process, like one worker in production); the client processes
    # and this driver on the others. PostgreSQL and Redis are not pinned.
    server_cpus, client_cpus = split_cpus(args.pin)
    if client_cpus:
        os.sched_setaffinity(0, client_cpus)
    print(
        f"realtime bench: sizes {args.sizes}, subscribers {args.subscribers}, {args.rounds} rounds, apps {args.apps}, "
        f"servers on CPUs {server_cpus or 'any'}, clients on CPUs {client_cpus or 'any'}",
        flush=True,
    )
    started = time.monotonic()
    busy_at_start = busy_cpu_seconds()
    interrupted = False
    with tempfile.TemporaryDirectory(prefix="spotik-bench-ws-") as workdir:
        run = Run(args, Path(workdir), server_cpus, client_cpus)

        async def guarded() -> None:
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            await execute(run)

        try:
            asyncio.run(guarded())
        except (KeyboardInterrupt, asyncio.CancelledError):
            interrupted = True
            run.errors.append("interrupted")
            print("interrupted: servers and client processes stopped", file=sys.stderr)
        json_path, md_path, report = write_report(run, started, busy_at_start)
    print()
    show(json_path, md_path)
    if interrupted:
        return 130
    missed = [c for c in report["targets"] if c["passed"] is False and not c.get("informational")]
    if args.strict and (missed or run.errors):
        return 1
    return 0
