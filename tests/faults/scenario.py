"""What several scenarios share: a room with members, tracks and joined sockets; a mixed load; a report line."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tests.faults.load import Api, Listener
from tests.fixtures.audio_files import make_wav
from tests.helpers import Account


@dataclass
class Room:
    id: str
    admin: Account
    members: list[Account]
    tracks: list[str] = field(default_factory=list)


async def room_with_members(api: Api, members: int, prefix: str = "u") -> Room:
    accounts = await asyncio.gather(*(api.register(f"{prefix}{i}") for i in range(members + 1)))
    admin, rest = accounts[0], list(accounts[1:])
    room_id = await api.create_room(admin)
    for account in rest:
        joined = await api.join(room_id, account)
        assert joined is not None and joined.status_code == 200
    return Room(room_id, admin, rest)


def short_wav(folder: Path, seconds: float) -> bytes:
    folder.mkdir(parents=True, exist_ok=True)
    return make_wav(folder, seconds, sample_rate=8000, channels=1).read_bytes()


async def open_sockets(ws_url: str, room: Room, count: int, *, batch: int = 50) -> tuple[Listener, list[Listener]]:
    """One observer that keeps every message, and ``count - 1`` sockets that only count theirs."""
    people = [room.admin, *room.members]
    observer = await Listener.open(ws_url, room.admin, room.id)
    others: list[Listener] = []
    for start in range(0, count - 1, batch):
        size = min(batch, count - 1 - start)
        others += await asyncio.gather(
            *(Listener.open(ws_url, people[(start + i) % len(people)], room.id, keep=False) for i in range(size))
        )
    return observer, others


async def close_all(listeners: list[Listener]) -> None:
    await asyncio.gather(*(listener.close() for listener in listeners))


class Load:
    """Votes, uploads and reads against one room, each kind at its own pace, until stopped."""

    def __init__(
        self,
        api: Api,
        room: Room,
        audio: bytes,
        *,
        votes_per_second: float = 10,
        uploads_per_second: float = 1,
        reads_per_second: float = 5,
    ) -> None:
        self.api = api
        self.room = room
        self.audio = audio
        self.paces = {"vote": votes_per_second, "upload": uploads_per_second, "read": reads_per_second}
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self) -> None:
        actions: dict[str, Callable[[], Awaitable[object]]] = {
            "vote": self._vote,
            "upload": self._upload,
            "read": self._read,
        }
        loop = asyncio.get_running_loop()
        for kind, pace in self.paces.items():
            if pace > 0:
                self._tasks.append(loop.create_task(self._run(actions[kind], 1.0 / pace)))

    async def _run(self, action: Callable[[], Awaitable[object]], interval: float) -> None:
        # Open-loop pacing: a request is sent every `interval` seconds whether or not the previous one answered.
        pending: set[asyncio.Task[object]] = set()
        while not self._stop.is_set():
            task = asyncio.ensure_future(action())
            pending.add(task)
            task.add_done_callback(pending.discard)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), interval)
        if pending:
            await asyncio.wait(pending, timeout=30)

    async def _vote(self) -> None:
        if self.room.tracks:
            await self.api.vote(self.room.id, random.choice(self.room.tracks), random.choice(self.room.members))

    async def _upload(self) -> None:
        answer = await self.api.upload(self.room.id, random.choice(self.room.members), self.audio)
        if answer is not None and answer.status_code == 201:
            self.room.tracks.append(answer.json()["track"]["id"])

    async def _read(self) -> None:
        await self.api.queue(self.room.id, random.choice(self.room.members))

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def parse_instant(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def elapsed(since: float) -> str:
    return f"{time.monotonic() - since:.1f}s"


@dataclass(frozen=True)
class Start:
    track_id: str
    started_at: float  # epoch seconds (the server's instant)
    duration: int
    reason: str
    previous: str | None


def starts_seen(observer: Listener) -> list[Start]:
    """The ``playback_started`` events the observer received (compatibility follow-ups excluded), in order."""
    found = []
    for message in observer.of_type("playback_started"):
        data = message["data"]
        if data.get("follows"):
            continue
        previous = data.get("previous_track")
        found.append(
            Start(
                data["track"]["id"],
                parse_instant(data["started_at"]),
                int(data["track"]["duration_seconds"]),
                data["reason"],
                previous["id"] if previous else None,
            )
        )
    return found


def check_advances(starts: list[Start], tolerance: float = 0.25) -> int:
    """Auto-advance played no track twice and skipped none: every ``track_finished`` start follows the track that
    was playing, no earlier than that track's end; no track starts twice. Returns how many advances were seen."""
    ids = [start.track_id for start in starts]
    assert len(ids) == len(set(ids)), f"a track started twice: {ids}"
    advances = 0
    for before, after in itertools.pairwise(starts):
        if after.reason != "track_finished":
            continue
        advances += 1
        assert after.previous == before.track_id, f"advanced from {after.previous}, but {before.track_id} was playing"
        ended = before.started_at + before.duration
        assert after.started_at >= ended - tolerance, (
            f"{before.track_id} was cut {ended - after.started_at:.2f}s before its end"
        )
    return advances
