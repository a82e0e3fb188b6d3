"""Throughput of Spotik's two hot reads, for two source revisions in one run: ``GET /api/rooms`` (the room list)
and ``GET /api/rooms/{room}/tracks`` (the queue of a room holding 200 tracks).

Each revision is materialised as a tree of its own (``git worktree add --detach /tmp/spotik-bench-<rev> REV`` for
a revision, a copy of ``src/`` and ``config/`` for a working tree, taken once at the start so that edits made
meanwhile do not reach a running server) and served by ``<python> -m spotik serve`` with ``PYTHONPATH=<tree>/src``
from ``cwd=<tree>``, with its own storage and SQLite database (migrated first by that tree's ``spotik migrate``),
production settings with a random JWT secret, rate limiting off. Both servers get the same data through the REST
API, then the same load in every round, alternating which of the two goes first (AB, BA, AB …), so that a slow
drift of the machine's speed cancels out; the figure is the per-round ratio candidate / baseline and its median.

    .venv/bin/python bench/hot_reads.py                          # 689911e against the working tree
    .venv/bin/python bench/hot_reads.py --quick                  # about a minute
    .venv/bin/python bench/hot_reads.py --candidate ../other-tree --strict

Reports go to bench/reports/ (git-ignored) as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx2

from spotikbench.fixtures import expect, register_users, wav_bytes
from spotikbench.load import add_load_options, resolve_tool, run_httpx, run_wrk
from spotikbench.report import ROOT, busy_cpu_seconds, machine, show, stamp, write
from spotikbench.servers import ServerProcess
from spotikbench.tools import clean_environment, free_port, say, split_cpus

DEFAULT_BASELINE = "689911e"  # the commit before the OpenAPI response schemas
WORKING_TREE = "worktree"  # --candidate's default: this repository's working tree, as it is at the start
SERVERS = ("baseline", "candidate")
ENDPOINTS = ("rooms", "tracks")
READY_PATH = "/api/ping"
NOISY_CPUS = 0.25  # other processes using more than this (CPUs, on average) during the rounds: a noisy run

# What both servers run with, on top of a clean environment and the tree's own config/ (production.yml).
SETTINGS = {
    "SPOTIK_ENV": "production",
    "RATE_LIMITING_ENABLED": "false",  # a 429 would fake throughput
    "AUTO_MIGRATE": "false",  # migrated beforehand by the tree's own `spotik migrate`
    "BCRYPT_COST": "4",  # registrations are set-up, not the subject
    "JWT_TTL": "1440",  # minutes: the token outlives any run
    "LOG_LEVEL": "warning",
    "PYTHONHASHSEED": "0",  # the same hashing in every process: one source of variance less
}


# -- the two trees ---------------------------------------------------------------------------------------------------


@dataclass
class Tree:
    label: str  # baseline | candidate
    spec: str  # what was asked: a revision, "worktree" or a directory
    path: Path  # holds src/ and config/
    kind: str  # git-worktree | snapshot
    commit: str  # the commit (HEAD of a snapshotted tree)
    subject: str
    changes: list[str] = field(default_factory=list)  # `git status --short` of src/ and config/ for a snapshot


def git(*args: str, cwd: Path = ROOT) -> str:
    completed = subprocess.run(  # noqa: S603 - fixed git sub-commands
        ["git", *args],  # noqa: S607
        cwd=cwd,
        capture_output=True,
        text=True,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {completed.stderr.strip()}")
    return completed.stdout.strip()


def materialise(label: str, spec: str, stack: ExitStack) -> Tree:
    """A tree of ``spec`` that stays as it is for the whole run; ``stack`` removes it at the end."""
    source = ROOT if spec == WORKING_TREE else Path(spec).expanduser()
    if spec == WORKING_TREE or source.is_dir():
        source = source.resolve()
        if not (source / "src" / "spotik").is_dir():
            raise SystemExit(f"{source} has no src/spotik")
        path = Path(tempfile.mkdtemp(prefix=f"spotik-bench-{label}-"))
        stack.callback(shutil.rmtree, path, True)
        ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
        for part in ("src", "config"):
            if (source / part).is_dir():
                shutil.copytree(source / part, path / part, ignore=ignore)
        try:
            commit = git("rev-parse", "HEAD", cwd=source)
            subject = git("log", "-1", "--format=%s", cwd=source)
            changes = git("status", "--short", "--", "src", "config", cwd=source).splitlines()
        except RuntimeError:
            commit, subject, changes = "", "(not a git tree)", []
        return Tree(label, spec, path, "snapshot", commit, subject, changes)
    commit = git("rev-parse", "--verify", "--quiet", f"{spec}^{{commit}}")
    short = commit[:7]
    path = Path(f"/tmp/spotik-bench-{short}")  # noqa: S108 - the place the brief names; a suffix if taken
    if path.exists():
        path = Path(f"/tmp/spotik-bench-{short}-{secrets.token_hex(3)}")  # noqa: S108
    git("worktree", "add", "--detach", str(path), commit)
    stack.callback(remove_worktree, path)
    return Tree(label, spec, path, "git-worktree", commit, git("log", "-1", "--format=%s", commit))


def remove_worktree(path: Path) -> None:
    try:
        git("worktree", "remove", "--force", str(path))
    except RuntimeError as exc:
        print(f"could not remove the worktree {path}: {exc}", file=sys.stderr)


# -- the servers -----------------------------------------------------------------------------------------------------


def tree_environment(tree: Tree, storage: Path, secret: str) -> dict[str, str]:
    return {
        **clean_environment(),
        **SETTINGS,
        "PYTHONPATH": str(tree.path / "src"),  # wins over the venv's editable install of /work/main/src
        "JWT_SECRET": secret,
        "STORAGE_PATH": str(storage),
        "DATABASE_URL": f"sqlite:///{storage / 'bench.sqlite3'}",
    }


def tree_server(tree: Tree, index: int, workdir: Path, cpus: set[int] | None, python: str) -> ServerProcess:
    """The tree's ``spotik serve`` on loopback, after its own ``spotik migrate`` of a fresh SQLite database; checks
    first that the interpreter imports ``spotik`` from the tree."""
    name = f"{tree.label}-{index}"
    storage = workdir / name
    storage.mkdir(parents=True)
    env = tree_environment(tree, storage, secrets.token_urlsafe(48))
    probe = subprocess.run(  # noqa: S603 - our own interpreter
        [python, "-c", "import spotik; print(spotik.__file__)"],
        env=env,
        cwd=tree.path,
        capture_output=True,
        text=True,
        check=False,
    )
    if probe.returncode != 0 or not Path(probe.stdout.strip()).is_relative_to(tree.path / "src"):
        raise RuntimeError(f"{tree.label}: spotik is not imported from {tree.path}/src: {probe.stdout}{probe.stderr}")
    migrated = subprocess.run(  # noqa: S603 - our own interpreter
        [python, "-m", "spotik", "migrate"],
        env=env,
        cwd=tree.path,
        capture_output=True,
        text=True,
        check=False,
        timeout=180,
    )
    if migrated.returncode != 0:
        raise RuntimeError(f"{tree.label}: spotik migrate failed: {migrated.stdout}{migrated.stderr}")
    port = free_port()
    with contextlib.chdir(tree.path):  # the child starts in the tree (Popen takes the driver's directory)
        return ServerProcess(name, [python, "-m", "spotik", "serve", "--port", str(port)], env, workdir, cpus, port)


# -- the data --------------------------------------------------------------------------------------------------------


@dataclass
class HotData:
    token: str
    queue_room: str  # the room holding the tracks
    rooms: int
    tracks: int
    setup_s: float


async def make_data(base_url: str, *, rooms: int, tracks: int, members: int, limit_s: float) -> HotData:
    """An owner and ``members`` other users; ``rooms`` rooms (the first one is the queue room) of which every user
    is a member; ``tracks`` small WAV tracks uploaded to the queue room, its playback paused after the first one so
    that no track gets played (and leaves the queue) and no playback event crosses the measurements."""
    started = time.monotonic()
    gate = asyncio.Semaphore(8)
    limits = httpx2.Limits(max_connections=8, max_keepalive_connections=8)
    async with (
        asyncio.timeout(limit_s),
        httpx2.AsyncClient(base_url=base_url, timeout=60, limits=limits, trust_env=False) as client,
    ):
        tokens = await register_users(client, gate, [f"hot{index}" for index in range(members + 1)])
        owner = {"Authorization": f"Bearer {tokens[0]}"}

        async def create_room(index: int) -> str:
            payload = {"name": f"hot reads {index:02d}", "description": f"room {index} of the hot-reads bench"}
            async with gate:
                body = expect(await client.post("/api/rooms", json=payload, headers=owner), 200, 201)
            data = body["data"]
            return str((data.get("room") or data)["id"])

        room_ids = [await create_room(i) for i in range(rooms)]  # in order: the same list order in both servers

        async def join(room_id: str, token: str) -> None:
            async with gate:
                await client.post(f"/api/rooms/{room_id}/join", headers={"Authorization": f"Bearer {token}"})

        await asyncio.gather(*(join(room_id, token) for room_id in room_ids for token in tokens[1:]))
        queue_room = room_ids[0]
        audio = wav_bytes(seconds=1.0)

        async def upload(index: int) -> None:
            files = {"audio_file": (f"hot track {index:03d}.wav", audio, "audio/wav")}
            async with gate:
                expect(await client.post(f"/api/rooms/{queue_room}/tracks", files=files, headers=owner), 200, 201)

        if tracks:
            await upload(0)  # starts playback in the idle room: pause it, so that later uploads start nothing
            expect(await client.post(f"/api/rooms/{queue_room}/playback/pause", headers=owner), 200)
            await asyncio.gather(*(upload(i) for i in range(1, tracks)))
        listed = expect(await client.get("/api/rooms", headers=owner), 200)["data"]
        queued = expect(await client.get(f"/api/rooms/{queue_room}/tracks", headers=owner), 200)["total_count"]
    if len(listed) != rooms or queued != tracks:
        raise RuntimeError(f"{base_url}: {len(listed)} rooms listed (expected {rooms}), {queued} tracks queued")
    return HotData(tokens[0], queue_room, rooms, tracks, round(time.monotonic() - started, 1))


@dataclass
class Running:
    """One server of a pair and its data."""

    label: str  # baseline | candidate
    server: ServerProcess
    data: HotData

    def url(self, endpoint: str) -> str:
        path = "/api/rooms" if endpoint == "rooms" else f"/api/rooms/{self.data.queue_room}/tracks"
        return self.server.base_url + path


Pair = dict[str, Running]


def shape(value: Any, prefix: str = "") -> set[str]:
    """The key paths of a JSON document (list items merged), to tell whether two servers answer alike."""
    if isinstance(value, dict):
        paths = {prefix or "."}
        for key, item in value.items():
            paths |= shape(item, f"{prefix}.{key}")
        return paths
    if isinstance(value, list):
        paths = {f"{prefix}[]"}
        for item in value:
            paths |= shape(item, f"{prefix}[]")
        return paths
    return {f"{prefix}:{type(value).__name__}"}


def describe_answers(pair: Pair) -> dict[str, Any]:
    """Each endpoint's answer on each server: status, size plain and gzipped, headers of note, and whether the two
    answers have the same JSON shape (the ids and times differ, the keys should not)."""
    answers: dict[str, Any] = {}
    for endpoint in ENDPOINTS:
        per_server: dict[str, Any] = {}
        shapes: dict[str, set[str]] = {}
        for name, running in pair.items():
            url = running.url(endpoint)
            auth = {"Authorization": f"Bearer {running.data.token}"}
            plain = httpx2.get(url, headers={**auth, "Accept-Encoding": "identity"}, timeout=30)
            gzipped = httpx2.get(url, headers={**auth, "Accept-Encoding": "gzip"}, timeout=30)
            shapes[name] = shape(plain.json())
            per_server[name] = {
                "status": plain.status_code,
                "bytes": len(plain.content),
                "gzip_bytes": int(gzipped.headers.get("content-length") or 0) or None,
                "content_encoding": gzipped.headers.get("content-encoding"),
            }
        baseline, candidate = shapes["baseline"], shapes["candidate"]
        answers[endpoint] = {
            **per_server,
            "same_shape": baseline == candidate,
            "only_baseline": sorted(baseline - candidate)[:20],
            "only_candidate": sorted(candidate - baseline)[:20],
        }
    return answers


# -- the load --------------------------------------------------------------------------------------------------------


@dataclass
class Sample:
    round: int
    pair: int
    endpoint: str
    server: str
    position: int  # 0: first of the round's pair, 1: second
    requests_per_second: float
    requests: int
    errors: int
    latency_ms: dict[str, float]
    server_cpu_ms_per_request: float | None


@dataclass
class Load:
    tool: str
    seconds: float
    requests: int
    connections: int
    threads: int
    cpus: set[int] | None


def drive(running: Running, endpoint: str, load: Load, *, warmup: bool = False) -> Sample:
    server, url, token = running.server, running.url(endpoint), running.data.token
    cpu = server.cpu_seconds()
    if load.tool == "wrk":
        seconds = load.seconds if not warmup else max(1.0, load.seconds / 2)
        run = run_wrk(
            url,
            duration=seconds,
            connections=load.connections,
            threads=load.threads,
            cpus=load.cpus,
            headers=[f"Authorization: Bearer {token}"],
        )
    else:
        count = load.requests if not warmup else max(200, load.requests // 5)
        run = run_httpx(url, requests=count, concurrency=load.connections, headers={"Authorization": f"Bearer {token}"})
    total = run.requests
    per_request = (server.cpu_seconds() - cpu) * 1000 / total if total else None
    cpu_ms = None if per_request is None else round(per_request, 4)
    return Sample(0, 0, endpoint, running.label, 0, run.requests_per_second, total, run.errors, run.latency_ms, cpu_ms)


def child_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    own = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime + own.ru_utime + own.ru_stime


def measure(args: argparse.Namespace, pairs: list[Pair], load: Load) -> tuple[list[Sample], dict[str, float]]:
    for pair in pairs:  # warm-up: imports, first connections, SQLite's page cache, the allocator
        for endpoint in ENDPOINTS:
            for name in SERVERS:
                for _ in range(args.warmup):
                    drive(pair[name], endpoint, load, warmup=True)
    say("warm-up done; measuring")
    processes = [running.server for pair in pairs for running in pair.values()]
    samples: list[Sample] = []
    busy, own, wall = busy_cpu_seconds(), child_cpu_seconds(), time.monotonic()
    served = sum(server.cpu_seconds() for server in processes)
    for round_number in range(1, args.rounds + 1):
        for pair_number, pair in enumerate(pairs):
            # AB, BA, AB …: which server goes first alternates, so that a drift of the machine's speed cancels out.
            order = SERVERS if (round_number + pair_number) % 2 else tuple(reversed(SERVERS))
            for endpoint in ENDPOINTS:
                for position, name in enumerate(order):
                    sample = drive(pair[name], endpoint, load)
                    sample.round, sample.pair, sample.position = round_number, pair_number, position
                    samples.append(sample)
                base, cand = (next(s for s in samples[-2:] if s.server == n) for n in SERVERS)
                say(
                    f"round {round_number} pair {pair_number} {endpoint:6s} "
                    f"baseline {base.requests_per_second:8.1f} req/s  candidate {cand.requests_per_second:8.1f} req/s"
                    f"  ratio {cand.requests_per_second / base.requests_per_second:.3f}"
                    + (f"  ERRORS {base.errors + cand.errors}" if base.errors or cand.errors else "")
                )
    elapsed = time.monotonic() - wall
    servers_cpu = sum(server.cpu_seconds() for server in processes) - served
    others = busy_cpu_seconds() - busy - servers_cpu - (child_cpu_seconds() - own)
    machine_load = {
        "wall_s": round(elapsed, 1),
        "servers_cpu_s": round(servers_cpu, 1),
        "other_processes_cpu_s": round(max(0.0, others), 1),
        "other_processes_cpus": round(max(0.0, others) / elapsed, 3) if elapsed else 0.0,
    }
    machine_load["noisy"] = machine_load["other_processes_cpus"] > NOISY_CPUS
    return samples, machine_load


# -- summary and report ----------------------------------------------------------------------------------------------


def spread(values: list[float], digits: int = 1) -> dict[str, float]:
    return {
        "median": round(statistics.median(values), digits),
        "min": round(min(values), digits),
        "max": round(max(values), digits),
    }


def summarise(samples: list[Sample], budget: float) -> dict[str, Any]:
    summary: dict[str, Any] = {"budget": budget, "errors": sum(s.errors for s in samples)}
    for endpoint in ENDPOINTS:
        mine = [s for s in samples if s.endpoint == endpoint]
        slots = sorted({(s.round, s.pair) for s in mine})
        pick = {(s.round, s.pair, s.server): s for s in mine}
        ratios = [
            pick[(*slot, "candidate")].requests_per_second / pick[(*slot, "baseline")].requests_per_second
            for slot in slots
        ]
        per_server: dict[str, Any] = {}
        for name in SERVERS:
            own = [pick[(*slot, name)] for slot in slots]
            cpu = [s.server_cpu_ms_per_request for s in own if s.server_cpu_ms_per_request is not None]
            per_server[name] = {
                "rps": spread([s.requests_per_second for s in own]),
                "p50_ms": spread([s.latency_ms["p50"] for s in own if "p50" in s.latency_ms], 2),
                "p99_ms": spread([s.latency_ms["p99"] for s in own if "p99" in s.latency_ms], 2),
                "server_cpu_ms_per_request": spread(cpu, 3) if cpu else None,
            }
        ratio = spread(ratios, 4)
        # The same comparison from the servers' CPU per request (baseline / candidate, so that it reads like the
        # throughput ratio): less sensitive to other processes taking CPU time away from a round.
        cpu_ratios = [
            base / cand
            for slot in slots
            if (base := pick[(*slot, "baseline")].server_cpu_ms_per_request)
            and (cand := pick[(*slot, "candidate")].server_cpu_ms_per_request)
        ]
        summary[endpoint] = {
            **per_server,
            "slots": [list(slot) for slot in slots],  # (round, pair) of each ratio
            "ratios": [round(r, 4) for r in ratios],
            "ratio": ratio,
            "ratio_of_medians": round(
                per_server["candidate"]["rps"]["median"] / per_server["baseline"]["rps"]["median"], 4
            ),
            "cpu_ratios": [round(r, 4) for r in cpu_ratios],
            "cpu_ratio": spread(cpu_ratios, 4) if cpu_ratios else None,
            "within_budget": ratio["median"] >= 1 - budget,
        }
    summary["within_budget"] = all(summary[e]["within_budget"] for e in ENDPOINTS)
    return summary


def markdown(report: dict[str, Any], samples: list[Sample]) -> str:
    env, summary, budget = report["environment"], report["summary"], report["summary"]["budget"]
    load = (
        f"wrk -t{env['threads']} -c{env['connections']} -d{env['seconds']}s"
        if env["tool"] == "wrk"
        else f"an httpx2 loop, {env['requests']} requests, {env['connections']} connections"
    )

    def tree_line(name: str) -> str:
        tree = env["trees"][name]
        what = f"`{tree['spec']}` = {tree['commit'][:10]} ({tree['subject']})"
        if tree["kind"] == "snapshot":
            what += f", working tree copied at the start, {len(tree['changes'])} changed file(s) in src/ and config/"
        return f"- **{name}**: {what}"

    data = env["data"]
    lines = [
        f"# Hot reads — {report['at']}",
        "",
        tree_line("baseline"),
        tree_line("candidate"),
        "",
        f"`GET /api/rooms` ({data['rooms']} rooms, {data['members'] + 1} members each) and "
        f"`GET /api/rooms/{{room}}/tracks` ({data['tracks']} tracks), {env['pairs']} `spotik serve` process(es) per "
        "revision (SQLite, production settings, rate limiting off, 1 worker each), "
        f"{env['rounds']} round(s) alternating which server of a pair goes first, {load} per server and endpoint per "
        f"round, after {env['warmup']} warm-up run(s); servers on CPUs {env['server_cpus'] or 'any'}, load on "
        f"{env['load_cpus'] or 'any'}; Python {env['python']}, {env['cpus']} CPUs; load average "
        f"{env['loadavg_before']} before, {env['loadavg_after']} after.",
        "",
    ]
    for endpoint in ENDPOINTS:
        part = summary[endpoint]
        b, c, ratio = part["baseline"], part["candidate"], part["ratio"]
        title = "GET /api/rooms" if endpoint == "rooms" else "GET /api/rooms/{room}/tracks"
        lines += [
            f"## {title}",
            "",
            "| round | pair | first | baseline req/s | candidate req/s | ratio | baseline p50 / p99 ms "
            "| candidate p50 / p99 ms | server CPU ms/req (b / c) |",
            "|---:|---:|---|---:|---:|---:|---:|---:|---:|",
        ]
        for (round_number, pair_number), one in zip(part["slots"], part["ratios"], strict=True):
            slot = (endpoint, round_number, pair_number)
            pair = {s.server: s for s in samples if (s.endpoint, s.round, s.pair) == slot}
            base, cand = pair["baseline"], pair["candidate"]
            lines.append(
                f"| {round_number} | {pair_number} | {'b' if base.position == 0 else 'c'} "
                f"| {base.requests_per_second:.1f} | {cand.requests_per_second:.1f} | {one:.3f} "
                f"| {latency(base)} | {latency(cand)} "
                f"| {base.server_cpu_ms_per_request or 0:.3f} / {cand.server_cpu_ms_per_request or 0:.3f} |"
            )
        lines += [
            f"| **median** | | | **{b['rps']['median']}** | **{c['rps']['median']}** | **{ratio['median']:.3f}** "
            f"| {b['p50_ms'].get('median', '—')} / {b['p99_ms'].get('median', '—')} "
            f"| {c['p50_ms'].get('median', '—')} / {c['p99_ms'].get('median', '—')} | |",
            f"| min–max | | | {b['rps']['min']}–{b['rps']['max']} | {c['rps']['min']}–{c['rps']['max']} "
            f"| {ratio['min']:.3f}–{ratio['max']:.3f} | | | |",
            "",
            f"Ratio candidate / baseline: median of the {len(part['ratios'])} per-round ratios "
            f"**{ratio['median']:.3f}** (min–max {ratio['min']:.3f}–{ratio['max']:.3f}), ratio of the medians "
            f"{part['ratio_of_medians']:.3f}: "
            + ("**within**" if part["within_budget"] else "**NOT within**")
            + f" {budget * 100:.0f} %. "
            + cpu_line(part["cpu_ratio"])
            + answer_line(report["answers"][endpoint]),
            "",
        ]
    verdict = "within" if summary["within_budget"] else "NOT within"
    machine_load = report["machine_load"]
    lines += [
        f"**Verdict: {verdict} {budget * 100:.0f} %** (the median per-round ratio of each endpoint ≥ "
        f"{1 - budget:.2f}; informational unless `--strict`). Failed requests: {summary['errors']}. "
        f"Other processes used {machine_load['other_processes_cpus']:.2f} CPUs on average during the rounds"
        + (" (**the machine was not quiet**: rerun when it is)." if machine_load["noisy"] else "."),
        "",
    ]
    return "\n".join(lines)


def latency(sample: Sample) -> str:
    p50, p99 = sample.latency_ms.get("p50"), sample.latency_ms.get("p99")
    return "—" if p50 is None or p99 is None else f"{p50:.2f} / {p99:.2f}"


def cpu_line(cpu_ratio: dict[str, float] | None) -> str:
    if cpu_ratio is None:
        return ""
    return (
        f"From the servers' CPU per request (baseline / candidate): median {cpu_ratio['median']:.3f} "
        f"(min–max {cpu_ratio['min']:.3f}–{cpu_ratio['max']:.3f}). "
    )


def answer_line(answer: dict[str, Any]) -> str:
    b, c = answer["baseline"], answer["candidate"]
    sizes = (
        f"Answers (baseline / candidate): {b['bytes']:,} / {c['bytes']:,} B plain, "
        f"{b['gzip_bytes'] or '—'} / {c['gzip_bytes'] or '—'} B gzip"
    )
    if answer["same_shape"]:
        return sizes + ", same JSON keys."
    return sizes + (
        f", **different JSON keys** (only baseline: {', '.join(answer['only_baseline']) or '—'}; only candidate: "
        f"{', '.join(answer['only_candidate']) or '—'})."
    )


# -- options and main ------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--baseline", default=DEFAULT_BASELINE, help=f"revision or directory (default {DEFAULT_BASELINE})"
    )
    parser.add_argument(
        "--candidate",
        default=WORKING_TREE,
        help=f"revision or directory (default {WORKING_TREE!r}: this repository's working tree, copied at the start)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="rounds; each measures both servers on both endpoints")
    parser.add_argument("--seconds", type=float, default=5, help="seconds of load per server, endpoint and round (wrk)")
    add_load_options(parser, requests=3000, connections=16)
    parser.add_argument("--pairs", type=int, default=1, help="server processes per revision (default 1)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up runs (half a round's load each) per server")
    parser.add_argument("--tracks", type=int, default=200, help="tracks in the queue room (default 200)")
    parser.add_argument("--rooms", type=int, default=20, help="rooms in the list, the queue room included (20)")
    parser.add_argument("--members", type=int, default=4, help="users besides the owner in every room (4)")
    parser.add_argument("--setup-timeout", type=float, default=300, help="seconds allowed for one server's data")
    parser.add_argument("--budget", type=float, default=0.05, help="allowed throughput loss (default 0.05)")
    parser.add_argument("--python", default=sys.executable, help="interpreter of both servers (default: this one)")
    parser.add_argument("--quick", action="store_true", help="4 rounds of 2 s, one warm-up: under a minute")
    parser.add_argument("--strict", action="store_true", help="exit 1 when an endpoint's median ratio is under budget")
    args = parser.parse_args(argv)
    if args.quick:  # other defaults; options given explicitly still win
        parser.set_defaults(rounds=4, seconds=2, requests=1000, warmup=1)
        args = parser.parse_args(argv)
    resolve_tool(args)
    if min(args.rounds, args.pairs, args.rooms, args.tracks) < 1:
        parser.error("--rounds, --pairs, --rooms and --tracks must be at least 1")
    return args


@contextlib.contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """The driver (and the httpx2 loop, when it is the load) on the load's CPUs, away from the servers'."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    server_cpus, load_cpus = split_cpus(args.pin)
    load = Load(args.tool, args.seconds, args.requests, args.connections, args.threads, load_cpus)
    loadavg_before = [round(x, 2) for x in os.getloadavg()]
    say(
        f"hot reads: {args.baseline} against {args.candidate}, {args.rounds} rounds, tool {args.tool}, servers on "
        f"CPUs {server_cpus or 'any'}, load average {loadavg_before}"
    )
    started = time.monotonic()
    with ExitStack() as stack, pinned(load_cpus):
        trees = {
            "baseline": materialise("baseline", args.baseline, stack),
            "candidate": materialise("candidate", args.candidate, stack),
        }
        for tree in trees.values():
            say(f"{tree.label}: {tree.kind} of {tree.commit[:10]} ({tree.subject}) at {tree.path}")
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="spotik-bench-hot-")))
        servers: list[dict[str, ServerProcess]] = []
        for index in range(args.pairs):
            servers.append({})
            for name, tree in trees.items():
                servers[index][name] = server = tree_server(tree, index, workdir, server_cpus, args.python)
                stack.callback(server.stop, 15)
        pairs: list[Pair] = []
        for index, pair_servers in enumerate(servers):
            pairs.append({})
            for name, server in pair_servers.items():
                server.wait_until_serving(READY_PATH)
                say(f"{server.name}: {args.rooms} rooms, {args.tracks} tracks, {args.members} members")
                made = asyncio.run(
                    make_data(
                        server.base_url,
                        rooms=args.rooms,
                        tracks=args.tracks,
                        members=args.members,
                        limit_s=args.setup_timeout,
                    )
                )
                say(f"{server.name}: data ready in {made.setup_s} s")
                pairs[index][name] = Running(name, server, made)
        answers = describe_answers(pairs[0])
        samples, machine_load = measure(args, pairs, load)
        processes = [running.server for pair in pairs for running in pair.values()]
        problems = {server.name: server.log_problems(10) for server in processes}
        rss = {server.name: server.rss() for server in processes}
        setup = {running.server.name: running.data.setup_s for pair in pairs for running in pair.values()}
    summary = summarise(samples, args.budget)
    at = stamp()
    environment = {
        **machine(),
        "tool": args.tool,
        "wrk": subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False).stdout.splitlines()[0]  # noqa: S607
        if args.tool == "wrk"
        else None,
        "rounds": args.rounds,
        "pairs": args.pairs,
        "seconds": args.seconds if args.tool == "wrk" else None,
        "requests": args.requests if args.tool == "httpx" else None,
        "warmup": args.warmup,
        "connections": args.connections,
        "threads": args.threads,
        "server_cpus": sorted(server_cpus) if server_cpus else None,
        "load_cpus": sorted(load_cpus) if load_cpus else None,
        "python_servers": args.python,
        "settings": SETTINGS,
        "trees": {name: {k: v for k, v in asdict(tree).items() if k != "path"} for name, tree in trees.items()},
        "data": {"rooms": args.rooms, "tracks": args.tracks, "members": args.members},
        "setup_s": setup,
        "loadavg_before": loadavg_before,
        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
        "run_s": round(time.monotonic() - started, 1),
        "server_rss_mib_at_end": {name: round(value / 2**20, 1) for name, value in rss.items()},
    }
    report = {
        "benchmark": "hot_reads",
        "at": at,
        "environment": environment,
        "answers": answers,
        "machine_load": machine_load,
        "summary": summary,
        "server_log_problems": problems,
        "samples": [asdict(s) for s in samples],
    }
    json_path, md_path = write("hot_reads", at, report, markdown(report, samples))
    show(json_path, md_path)
    say(f"done in {environment['run_s']} s")
    if summary["errors"]:
        print("some requests failed: the figures are not comparable", file=sys.stderr)
        return 2
    if args.strict and not summary["within_budget"]:
        return 1
    return 0
