"""Scenario 3: the storage fills up during an upload (docs/reliability.md#3).

A tmpfs of a few MiB is mounted on the storage folders (the test runs as root here; without the right to mount it
is skipped loudly, or fails under CI=true). The database (SQLite) lives elsewhere, so only the files see the full
disk. Proves: the upload that meets ENOSPC is a 507 in envelope B, leaves no partial file and no row, a room cover
too; /api/health says the storage is unhealthy; once space is freed the next upload succeeds, with no restart.
"""

from __future__ import annotations

import asyncio
import errno
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import unavailable
from tests.faults.conftest import ServerFactory
from tests.faults.consistency import check_consistency
from tests.faults.load import Api
from tests.fixtures.audio_files import make_png, make_wav
from tests.helpers import Account

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TMPFS_BYTES = 4 * 1024 * 1024


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount_point = tmp_path / "small-disk"
    mount_point.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755", "tmpfs", str(mount_point)],
        capture_output=True,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        unavailable(f"a tmpfs mount (mount -t tmpfs, as uid {os.geteuid()})", OSError(result.stderr.strip()))
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], capture_output=True, check=False)


def fill(folder: Path, leave: int) -> Path:
    """Fill the file system until ENOSPC, then give back about ``leave`` bytes."""
    filler = folder / f"filler-{len(list(folder.glob('filler-*')))}.bin"
    chunk = b"\0" * 65536
    with filler.open("wb") as out:
        try:
            while True:
                out.write(chunk)
                out.flush()
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
    size = filler.stat().st_size
    os.truncate(filler, max(0, size - leave))
    return filler


async def test_a_full_disk_refuses_the_upload_cleanly_and_recovers(
    servers: ServerFactory, small_disk: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    audio_root, public_root = small_disk / "audio", small_disk / "public"
    database = f"sqlite:///{tmp_path / 'db.sqlite3'}"
    server = servers(DATABASE_URL=database, AUDIO_STORAGE_PATH=str(audio_root), PUBLIC_STORAGE_PATH=str(public_root))
    media = tmp_path / "media"
    media.mkdir()
    short = make_wav(media, 2.0, sample_rate=8000, channels=1).read_bytes()  # 32 KB
    big = make_wav(media, 10.0, sample_rate=44100, channels=2).read_bytes()  # 1.7 MB: flushed 256 KiB at a time
    png = make_png(media, 64, 64).read_bytes()
    api = Api(server.base_url)
    try:
        owner = await api.register("owner")
        room = await api.create_room(owner)
        first = await api.upload(room, owner, short)
        assert first is not None and first.status_code == 201

        filler = fill(small_disk, leave=512 * 1024)  # room for two flushes of the big file, not for all of it
        answer = await api.upload(room, owner, big)
        assert answer is not None and answer.status_code == 507, answer and answer.text
        assert answer.json() == {
            "error": "Insufficient storage",
            "message": "There is no space left to store the upload.",
        }
        assert not [p.name for p in (audio_root / "tracks").iterdir() if p.name.startswith(".upload-")]

        fillers = [filler, fill(small_disk, leave=0)]  # now completely full
        small_too = await api.upload(room, owner, short)
        assert small_too is not None and small_too.status_code == 507, small_too and small_too.text
        assert await cover_status(api, room, owner, png) == 507
        health = await api.client.get("/api/health")
        assert health.status_code == 503 and health.json()["checks"]["storage"]["status"] == "unhealthy"
        queue = await api.queue(room, owner)
        assert queue is not None and queue.json()["total_count"] == 1  # nothing of the refused uploads

        for filler in fillers:
            filler.unlink()  # space comes back: the very next upload succeeds, no restart
        again = await api.upload(room, owner, big)
        assert again is not None and again.status_code == 201, again and again.text
        assert await cover_status(api, room, owner, png) == 200
        assert (await api.client.get("/api/health")).status_code == 200
    finally:
        await api.aclose()
    result = await check_consistency(database, audio_root, public_root, api.acknowledged)
    assert result.tracks == 2
    print(f"\n[faults] scenario 3: {result.describe()}; {time.monotonic() - started:.1f}s")


async def cover_status(api: Api, room: str, owner: Account, png: bytes) -> int:
    answer = await api.request(
        "cover",
        "POST",
        f"/api/rooms/{room}/cover",
        files={"cover_image": ("c.png", png, "image/png")},
        headers=owner.headers,
    )
    assert answer is not None
    return answer.status_code


def test_helper_fill_really_fills(small_disk: Path) -> None:
    filler = fill(small_disk, leave=0)
    with pytest.raises(OSError) as caught:
        (small_disk / "more").write_bytes(b"\0" * 8192)
    assert caught.value.errno == errno.ENOSPC
    filler.unlink()
    asyncio.run(asyncio.sleep(0))
