"""Room covers and the public storage route (docs/api.md#room-covers-and-public-storage), on SQLite and PostgreSQL.

The images are real: a PNG written with zlib/struct, a baseline JPEG written marker by marker, and the 1x1 WebP
files browsers' feature tests use (all three decode with ffmpeg).
"""

from __future__ import annotations

import asyncio
import base64
import struct
import uuid
import zlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx2
import pytest
from fastapi import FastAPI

from spotik.covers import storage
from spotik.rooms.models import Room, RoomParticipant
from spotik.state import AppState
from tests.events import capture_events
from tests.helpers import Account, assert_envelope_a_error, register


def png_image(width: int = 2, height: int = 2, rgb: tuple[int, int, int] = (200, 30, 60)) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def jpeg_image() -> bytes:
    """An 8x8 mid-grey baseline JPEG: one DC-only block and one-symbol Huffman tables."""

    def segment(marker: int, payload: bytes) -> bytes:
        return bytes([0xFF, marker]) + struct.pack(">H", len(payload) + 2) + payload

    one_code = bytes([1] + [0] * 15)
    return (
        b"\xff\xd8"
        + segment(0xDB, b"\x00" + b"\x01" * 64)
        + segment(0xC0, b"\x08" + struct.pack(">HH", 8, 8) + b"\x01\x01\x11\x00")
        + segment(0xC4, b"\x00" + one_code + b"\x00" + b"\x10" + one_code + b"\x00")
        + segment(0xDA, b"\x01\x01\x00\x00\x3f\x00")
        + b"\x3f\xff\xd9"
    )


WEBP_IMAGE = base64.b64decode("UklGRiIAAABXRUJQVlA4IBYAAAAwAQCdASoBAAEADsD+JaQAA3AAAAAA")
GIF_IMAGE = base64.b64decode("R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7")
PNG_HEADER = png_image()[:33]  # signature and IHDR: enough for the content check, used to pad large bodies
ADMIN_ONLY = {"error": "Only room administrators can update the cover"}


class Scene:
    def __init__(self, admin: Account, member: Account, stranger: Account, room_id: uuid.UUID, root: Path) -> None:
        self.admin = admin
        self.member = member
        self.stranger = stranger
        self.room_id = room_id
        self.root = root

    @property
    def url(self) -> str:
        return f"/api/rooms/{self.room_id}/cover"

    def covers(self) -> list[str]:
        folder = self.root / storage.ROOM_COVERS
        return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


@pytest.fixture
async def scene(client: httpx2.AsyncClient, state: AppState) -> Scene:
    admin = await register(client, "admin")
    member = await register(client, "member")
    stranger = await register(client, "stranger")
    async with state.sessionmaker() as session:
        room = Room(name="Covers", administrator_id=uuid.UUID(admin.id))
        session.add(room)
        await session.flush()
        for account in (admin, member):
            session.add(RoomParticipant(room_id=room.id, user_id=uuid.UUID(account.id)))
        await session.commit()
    return Scene(admin, member, stranger, room.id, state.settings.public_root)


async def upload(client: httpx2.AsyncClient, scene: Scene, data: bytes, name: str = "cover.png") -> httpx2.Response:
    files = {"cover_image": (name, data, "image/png")}
    return await client.post(scene.url, files=files, headers=scene.admin.headers)


def data_url(data: bytes, kind: str = "png") -> str:
    return f"data:image/{kind};base64,{base64.b64encode(data).decode()}"


@pytest.mark.parametrize(
    ("image", "ext", "media_type"),
    [(png_image(), "png", "image/png"), (jpeg_image(), "jpg", "image/jpeg"), (WEBP_IMAGE, "webp", "image/webp")],
)
async def test_admin_uploads_a_cover_that_is_served_byte_exact(
    client: httpx2.AsyncClient, scene: Scene, image: bytes, ext: str, media_type: str
) -> None:
    # The client's file name and MIME type say PNG whatever the content: the content decides.
    response = await upload(client, scene, image, name="whatever.png")
    assert response.status_code == 200, response.text
    cover_url = f"/api/storage/room_covers/{scene.room_id}.{ext}"
    assert response.json() == {"message": "Room cover updated successfully", "cover_url": cover_url}
    assert scene.covers() == [f"{scene.room_id}.{ext}"]
    assert (scene.root / "room_covers" / f"{scene.room_id}.{ext}").read_bytes() == image

    served = await client.get(cover_url)  # public: no token
    assert served.status_code == 200
    assert served.content == image
    assert served.headers["content-type"] == media_type
    assert served.headers["cache-control"] == "public, max-age=3600"
    assert served.headers["x-content-type-options"] == "nosniff"
    revalidated = await client.get(cover_url, headers={"If-None-Match": served.headers["etag"]})
    assert revalidated.status_code == 304 and revalidated.content == b""
    head = await client.head(cover_url)
    assert head.status_code == 200 and head.content == b"" and head.headers["content-length"] == str(len(image))


async def test_a_data_url_cover_is_accepted(client: httpx2.AsyncClient, scene: Scene) -> None:
    response = await client.post(
        scene.url, json={"cover_data": data_url(WEBP_IMAGE, "webp")}, headers=scene.admin.headers
    )
    assert response.status_code == 200, response.text
    assert response.json()["cover_url"] == f"/api/storage/room_covers/{scene.room_id}.webp"
    assert (await client.get(response.json()["cover_url"])).content == WEBP_IMAGE
    # The declared type does not decide the stored one either; form fields work too.
    mislabelled = await client.post(
        scene.url, data={"cover_data": data_url(jpeg_image(), "png")}, headers=scene.admin.headers
    )
    assert mislabelled.status_code == 200
    assert mislabelled.json()["cover_url"].endswith(".jpg")
    assert scene.covers() == [f"{scene.room_id}.jpg"]


async def test_replacing_a_cover_removes_the_other_formats(client: httpx2.AsyncClient, scene: Scene) -> None:
    assert (await upload(client, scene, png_image())).status_code == 200
    assert scene.covers() == [f"{scene.room_id}.png"]
    replaced = await upload(client, scene, jpeg_image(), name="new.jpg")
    assert replaced.status_code == 200
    assert scene.covers() == [f"{scene.room_id}.jpg"]
    gone = await client.get(f"/api/storage/room_covers/{scene.room_id}.png")
    assert gone.status_code == 404 and gone.json() == {"error": "File not found"}
    again = png_image(rgb=(1, 2, 3))
    assert (await upload(client, scene, again)).status_code == 200
    assert scene.covers() == [f"{scene.room_id}.png"]
    assert (await client.get(f"/api/storage/room_covers/{scene.room_id}.png")).content == again


async def test_a_cover_update_is_published_as_room_updated(
    client: httpx2.AsyncClient, scene: Scene, state: AppState
) -> None:
    with capture_events(state) as events:
        response = await upload(client, scene, png_image())
    assert response.status_code == 200
    assert [event.type for event in events] == ["room_updated"]
    event = events[0]
    url = response.json()["cover_url"]
    assert event.room_id == scene.room_id
    assert event.data["room_id"] == str(scene.room_id) and event.data["cover_url"] == url
    assert event.data["room"] == {"id": str(scene.room_id), "cover_url": url}
    assert event.data["timestamp"].endswith("Z")
    with capture_events(state) as refused:
        assert (await upload(client, scene, b"plain text")).status_code == 422
    assert refused == []


async def test_only_the_administrator_may_change_the_cover(client: httpx2.AsyncClient, scene: Scene) -> None:
    image = {"cover_image": ("c.png", png_image(), "image/png")}
    anonymous = await client.post(scene.url, files=image)
    assert anonymous.status_code == 401
    assert_envelope_a_error(anonymous.json(), "Token not provided")
    for account in (scene.stranger, scene.member):
        response = await client.post(scene.url, files=image, headers=account.headers)
        assert response.status_code == 403, account.username
        assert response.json() == ADMIN_ONLY
        as_data = await client.post(scene.url, json={"cover_data": data_url(png_image())}, headers=account.headers)
        assert as_data.status_code == 403 and as_data.json() == ADMIN_ONLY
    assert scene.covers() == []


@pytest.mark.parametrize("room", ["00000000-0000-4000-8000-000000000000", "not-a-uuid", "1"])
async def test_cover_of_an_unknown_room_is_404(client: httpx2.AsyncClient, scene: Scene, room: str) -> None:
    files = {"cover_image": ("c.png", png_image(), "image/png")}
    response = await client.post(f"/api/rooms/{room}/cover", files=files, headers=scene.admin.headers)
    assert response.status_code == 404
    assert not (scene.root / "room_covers").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"just some text, not an image", "The cover image field must be an image."),
        (b"", "The cover image field must be an image."),
        (b"\x89PNG but not really", "The cover image field must be an image."),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "The cover image field must be an image."),
        (GIF_IMAGE, "The cover image field must be a file of type: jpg, jpeg, png, webp."),
        (
            PNG_HEADER + b"\x00" * (5120 * 1024 + 1 - len(PNG_HEADER)),
            "The cover image field must not be greater than 5120 kilobytes.",
        ),
    ],
)
async def test_a_file_that_is_not_an_accepted_image_is_refused_and_nothing_is_stored(
    client: httpx2.AsyncClient, scene: Scene, content: bytes, message: str
) -> None:
    previous = png_image()
    assert (await upload(client, scene, previous)).status_code == 200
    response = await upload(client, scene, content, name="picture.jpg")
    assert response.status_code == 422
    assert response.json() == {"error": "Validation failed", "errors": {"cover_image": [message]}}
    assert scene.covers() == [f"{scene.room_id}.png"]
    assert (scene.root / "room_covers" / f"{scene.room_id}.png").read_bytes() == previous


async def test_a_cover_of_exactly_5120_kilobytes_is_accepted(client: httpx2.AsyncClient, scene: Scene) -> None:
    content = PNG_HEADER + b"\x00" * (5120 * 1024 - len(PNG_HEADER))
    response = await upload(client, scene, content)
    assert response.status_code == 200
    assert (scene.root / "room_covers" / f"{scene.room_id}.png").stat().st_size == 5120 * 1024


@pytest.mark.parametrize(
    ("cover_data", "detail"),
    [
        ("hello", "The cover data field must be a data:image/(png|jpeg|webp);base64 URL."),
        (data_url(png_image(), "gif"), "The cover data field must be a data:image/(png|jpeg|webp);base64 URL."),
        ("data:image/png;base64,***not base64***", "The cover data field must be valid base64."),
        (data_url(b"text, not an image"), "The cover data field must be an image."),
        (data_url(GIF_IMAGE), "The cover data field must be a file of type: jpg, jpeg, png, webp."),
        (
            data_url(PNG_HEADER + b"\x00" * (5120 * 1024)),
            "The cover data field must not be greater than 5120 kilobytes.",
        ),
        (12345, "The cover data field must be a string."),
    ],
)
async def test_a_bad_data_url_is_refused(
    client: httpx2.AsyncClient, scene: Scene, cover_data: Any, detail: str
) -> None:
    response = await client.post(scene.url, json={"cover_data": cover_data}, headers=scene.admin.headers)
    assert response.status_code == 422
    assert response.json() == {"error": "Invalid cover_data format", "errors": {"cover_data": [detail]}}
    assert scene.covers() == []


@pytest.mark.parametrize(
    "body", [{}, {"cover_data": ""}, {"cover_data": None}, {"other": "x"}, {"cover_image": None, "cover_data": " "}]
)
async def test_no_cover_at_all_is_a_422(client: httpx2.AsyncClient, scene: Scene, body: dict[str, Any]) -> None:
    response = await client.post(scene.url, json=body, headers=scene.admin.headers)
    assert response.status_code == 422
    assert response.json() == {
        "error": "Validation failed",
        "errors": {"cover": ["No cover_image or cover_data provided"]},
    }
    multipart = await client.post(scene.url, files={"something": ("a.txt", b"a")}, headers=scene.admin.headers)
    assert multipart.status_code == 422 and multipart.json()["errors"] == {
        "cover": ["No cover_image or cover_data provided"]
    }
    assert scene.covers() == []


async def test_a_cover_image_that_is_not_a_file_is_not_an_image(client: httpx2.AsyncClient, scene: Scene) -> None:
    as_json = await client.post(scene.url, json={"cover_image": "cover.png"}, headers=scene.admin.headers)
    as_form = await client.post(scene.url, data={"cover_image": "cover.png"}, headers=scene.admin.headers)
    for response in (as_json, as_form):
        assert response.status_code == 422
        assert response.json()["errors"] == {"cover_image": ["The cover image field must be an image."]}
    assert scene.covers() == []


async def test_a_body_beyond_the_upload_limit_is_a_413(client: httpx2.AsyncClient, scene: Scene) -> None:
    huge = PNG_HEADER + b"\x00" * (9 * 1024 * 1024)
    declared = await upload(client, scene, huge)
    assert declared.status_code == 413
    assert declared.json() == {"error": "File too large"}

    boundary = "cover-boundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="cover_image"; filename="big.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()

    async def chunked() -> AsyncIterator[bytes]:  # no Content-Length: the limit holds while receiving
        yield head
        for offset in range(0, len(huge), 1024 * 1024):
            yield huge[offset : offset + 1024 * 1024]
        yield f"\r\n--{boundary}--\r\n".encode()

    streamed = await client.post(
        scene.url,
        content=chunked(),
        headers={**scene.admin.headers, "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in streamed.request.headers
    assert streamed.status_code == 413
    assert streamed.json() == {"error": "File too large"}
    assert scene.covers() == []


async def test_a_malformed_multipart_body_is_a_400(client: httpx2.AsyncClient, scene: Scene) -> None:
    response = await client.post(
        scene.url, content=b"garbage", headers={**scene.admin.headers, "Content-Type": "multipart/form-data"}
    )
    assert response.status_code == 400
    assert set(response.json()) == {"error"}


async def test_there_is_no_cover_debug_route(client: httpx2.AsyncClient, scene: Scene) -> None:
    response = await client.get(f"/api/rooms/{scene.room_id}/cover/debug", headers=scene.admin.headers)
    assert response.status_code in (404, 405)
    assert "authorization" not in response.text.lower()


async def test_storage_serves_only_the_cover_directories(client: httpx2.AsyncClient, scene: Scene) -> None:
    (scene.root / "other").mkdir(parents=True)
    (scene.root / "other" / "x.png").write_bytes(png_image())
    for path in ("other/x.png", "x.png", "", "room_coversX/a.png", "audio/tracks/a.mp3"):
        response = await client.get(f"/api/storage/{path}")
        assert response.status_code == 403, path
        assert response.json() == {"error": "Invalid path"}
    for path in ("room_covers/missing.png", "track_covers/missing.jpg", "room_covers/"):
        response = await client.get(f"/api/storage/{path}")
        assert response.status_code == 404, path
        assert response.json() == {"error": "File not found"}


async def test_storage_serves_track_covers_too(client: httpx2.AsyncClient, scene: Scene) -> None:
    track_id = uuid.uuid4()
    url = storage.store_cover(scene.root, storage.TRACK_COVERS, track_id, jpeg_image(), "jpg")
    assert url == f"/api/storage/track_covers/{track_id}.jpg"
    served = await client.get(url)
    assert served.status_code == 200 and served.content == jpeg_image()
    assert served.headers["content-type"] == "image/jpeg"
    storage.delete_covers(scene.root, storage.TRACK_COVERS, track_id)
    assert (await client.get(url)).status_code == 404


async def asgi_get(app: FastAPI, raw_path: bytes) -> tuple[int, bytes]:
    """A GET as uvicorn delivers it: ``path`` percent-decoded, dot segments left as they are, ``raw_path`` as sent."""
    scope: dict[str, Any] = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": unquote(raw_path.decode("ascii")),
        "raw_path": raw_path,
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []
    delivered = False

    async def receive() -> dict[str, Any]:
        nonlocal delivered
        if delivered:  # the client stays connected: a disconnect listener waits until the response is done
            await asyncio.Event().wait()
        delivered = True
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    await app(scope, receive, send)
    status = next(message["status"] for message in sent if message["type"] == "http.response.start")
    body = b"".join(message.get("body", b"") for message in sent if message["type"] == "http.response.body")
    return status, body


async def test_storage_paths_cannot_escape(client: httpx2.AsyncClient, app: FastAPI, scene: Scene) -> None:
    assert (await upload(client, scene, png_image())).status_code == 200
    secret = b"top secret, outside the public root"
    (scene.root.parent / "secret.png").write_bytes(secret)  # beside the public root
    (scene.root / "secret.png").write_bytes(secret)  # inside the root, outside the cover directories
    (scene.root / "room_covers" / "link.png").symlink_to(scene.root.parent / "secret.png")
    (scene.root / "room_covers" / "inner.png").symlink_to(scene.root / "secret.png")
    (scene.root / "room_covers" / f".{scene.room_id}.abc.tmp").write_bytes(secret)

    attempts = [
        b"/api/storage/room_covers/../../secret.png",
        b"/api/storage/room_covers/../secret.png",
        b"/api/storage/room_covers/%2e%2e/%2e%2e/secret.png",
        b"/api/storage/room_covers/%2E%2E%2F%2E%2E%2Fsecret.png",
        b"/api/storage/room_covers%2F..%2F..%2Fsecret.png",
        b"/api/storage/..%2Fsecret.png",
        b"/api/storage/%2e%2e/secret.png",
        b"/api/storage//etc/passwd",
        b"/api/storage/room_covers//etc/passwd",
        b"/api/storage/room_covers/%2Fetc%2Fpasswd",
        b"/api/storage/" + str(scene.root.parent / "secret.png").encode(),
        b"/api/storage/room_covers/" + str(scene.root.parent / "secret.png").encode(),
        b"/api/storage/room_covers/link.png",
        b"/api/storage/room_covers/inner.png",
        b"/api/storage/room_covers/..\\..\\secret.png",
        b"/api/storage/room_covers/%00.png",
        b"/api/storage/room_covers/" + f".{scene.room_id}.abc.tmp".encode(),
    ]
    for raw_path in attempts:
        status, body = await asgi_get(app, raw_path)
        assert status in (403, 404), raw_path
        assert secret not in body and b"root:" not in body, raw_path
    # The same through an HTTP client (which may normalise some of them first).
    for raw_path in attempts:
        response = await client.get(raw_path.decode())
        assert response.status_code in (403, 404), raw_path
        assert secret not in response.content
    status, body = await asgi_get(app, f"/api/storage/room_covers/{scene.room_id}.png".encode())
    assert status == 200 and body == png_image()
