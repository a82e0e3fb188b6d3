"""Tests for spotik.tracks.streaming against a tiny inline Starlette app."""

from __future__ import annotations

import os
import random
import re
from collections.abc import AsyncIterator, Callable
from email.utils import formatdate
from pathlib import Path
from urllib.parse import unquote

import httpx2
import pytest
import pytest_asyncio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import Route
from starlette.types import Message

from spotik.tracks import streaming
from spotik.tracks.streaming import audio_file_response, resolve_inside

SIZE = 300_007  # several 64 KiB chunks, not a multiple of the chunk size
DATA = random.Random(20240601).randbytes(SIZE)
OLD_MTIME = 1_600_000_000  # 2020-09-13, a whole second far in the past
MEDIA_TYPE = "audio/mpeg"

ClientFactory = Callable[..., httpx2.AsyncClient]


def make_app(path: Path, *, download_name: str = "track.mp3", **kwargs: str) -> Starlette:
    async def endpoint(request: Request) -> Response:
        return audio_file_response(request, path, media_type=MEDIA_TYPE, download_name=download_name, **kwargs)

    return Starlette(routes=[Route("/f", endpoint, methods=["GET", "HEAD"])])


@pytest.fixture
def audio(tmp_path: Path) -> Path:
    path = tmp_path / "audio.bin"
    path.write_bytes(DATA)
    os.utime(path, (OLD_MTIME, OLD_MTIME))
    return path


@pytest_asyncio.fixture
async def clients() -> AsyncIterator[ClientFactory]:
    opened: list[httpx2.AsyncClient] = []

    def factory(path: Path, **kwargs: str) -> httpx2.AsyncClient:
        client = httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=make_app(path, **kwargs)),
            base_url="http://t",
        )
        opened.append(client)
        return client

    yield factory
    for client in opened:
        await client.aclose()


@pytest.fixture
def client(audio: Path, clients: ClientFactory) -> httpx2.AsyncClient:
    return clients(audio)


def assert_full(response: httpx2.Response) -> None:
    assert response.status_code == 200
    assert "content-range" not in response.headers
    assert response.headers["content-length"] == str(SIZE)
    assert response.content == DATA


# --- full body and headers ----------------------------------------------------------


@pytest.mark.asyncio
async def test_full_body_and_headers(client: httpx2.AsyncClient, audio: Path) -> None:
    response = await client.get("/f")
    assert_full(response)
    st = audio.stat()
    headers = response.headers
    assert headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == MEDIA_TYPE
    assert headers["cache-control"] == "public, max-age=3600"
    assert headers["last-modified"] == formatdate(OLD_MTIME, usegmt=True)
    assert headers["content-disposition"] == 'inline; filename="track.mp3"'
    etag = headers["etag"]
    assert re.fullmatch(r'"[0-9a-f]+-[0-9a-f]+-[0-9a-f]+"', etag)
    assert etag == f'"{st.st_ino:x}-{st.st_size:x}-{st.st_mtime_ns:x}"'


@pytest.mark.asyncio
async def test_cache_control_override(audio: Path, clients: ClientFactory) -> None:
    response = await clients(audio, cache_control="private, no-cache").get("/f")
    assert response.status_code == 200
    assert response.headers["cache-control"] == "private, no-cache"


@pytest.mark.asyncio
async def test_etag_changes_when_file_is_replaced(client: httpx2.AsyncClient, audio: Path, tmp_path: Path) -> None:
    before = (await client.get("/f")).headers["etag"]
    replacement = tmp_path / "replacement.bin"
    replacement.write_bytes(DATA[::-1])  # same size
    os.utime(replacement, ns=(audio.stat().st_atime_ns, audio.stat().st_mtime_ns))  # same mtime
    replacement.replace(audio)  # only the inode differs
    after = await client.get("/f")
    assert after.content == DATA[::-1]
    assert after.headers["etag"] != before


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("range_header", "expected"),
    [(None, DATA), ("bytes=1000-250000", DATA[1000:250001])],
)
async def test_body_is_streamed_in_chunks(audio: Path, range_header: str | None, expected: bytes) -> None:
    """Drive the ASGI response directly to see the individual body messages."""
    headers = [] if range_header is None else [(b"range", range_header.encode())]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "path": "/f",
        "raw_path": b"/f",
        "query_string": b"",
        "headers": headers,
    }
    messages: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        messages.append(message)

    response = audio_file_response(Request(scope), audio, media_type=MEDIA_TYPE, download_name="x.mp3")
    await response(scope, receive, send)
    assert messages[0]["status"] == (200 if range_header is None else 206)
    bodies = [m["body"] for m in messages if m["type"] == "http.response.body"]
    assert len(bodies) >= 4
    assert max(len(b) for b in bodies) <= FileResponse.chunk_size
    assert b"".join(bodies) == expected
    assert [m["more_body"] for m in messages[1:]] == [True] * (len(bodies) - 1) + [False]


# --- ranges ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("range_header", "start", "end"),
    [
        ("bytes=0-0", 0, 0),
        ("bytes=100-199", 100, 199),
        ("bytes=65530-131080", 65530, 131080),  # crosses chunk boundaries
        (f"bytes=0-{SIZE - 1}", 0, SIZE - 1),
        ("bytes=70000-", 70000, SIZE - 1),
        (f"bytes={SIZE - 1}-", SIZE - 1, SIZE - 1),
        ("bytes=-500", SIZE - 500, SIZE - 1),
        ("bytes=-1", SIZE - 1, SIZE - 1),
        (f"bytes=-{SIZE + 10}", 0, SIZE - 1),  # suffix longer than the file
        ("BYTES = 5-9", 5, 9),  # unit is case-insensitive, OWS allowed
        ("bytes=5-9,", 5, 9),  # empty list elements are allowed
    ],
)
async def test_single_range(client: httpx2.AsyncClient, range_header: str, start: int, end: int) -> None:
    response = await client.get("/f", headers={"Range": range_header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes {start}-{end}/{SIZE}"
    assert response.headers["content-length"] == str(end - start + 1)
    assert response.headers["content-type"] == MEDIA_TYPE
    assert response.content == DATA[start : end + 1]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "range_header",
    [f"bytes=100-{SIZE}", f"bytes=100-{SIZE + 1000}", "bytes=100-" + "9" * 5000],
)
async def test_range_end_is_clamped(client: httpx2.AsyncClient, range_header: str) -> None:
    response = await client.get("/f", headers={"Range": range_header})
    assert response.status_code == 206
    assert response.headers["content-range"] == f"bytes 100-{SIZE - 1}/{SIZE}"
    assert response.content == DATA[100:]


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "range_header",
    [
        f"bytes={SIZE}-",
        f"bytes={SIZE}-{SIZE + 10}",
        f"bytes={SIZE + 5}-",
        "bytes=" + "9" * 5000 + "-",
        "bytes=10-5",
        "bytes=-0",
    ],
)
async def test_unsatisfiable_range(client: httpx2.AsyncClient, range_header: str) -> None:
    response = await client.get("/f", headers={"Range": range_header})
    assert response.status_code == 416
    assert response.headers["content-range"] == f"bytes */{SIZE}"
    assert response.headers["accept-ranges"] == "bytes"
    assert response.headers["content-type"] == "application/json"
    assert response.json() == {"error": "Requested range not satisfiable"}


@pytest.mark.asyncio
@pytest.mark.parametrize("range_header", ["bytes=0-1,5-9", "bytes=0-10, 20-30, -5", "bytes=0-5,0-5"])
async def test_multi_range_is_ignored(client: httpx2.AsyncClient, range_header: str) -> None:
    response = await client.get("/f", headers={"Range": range_header})
    assert_full(response)
    assert response.headers["content-type"] == MEDIA_TYPE


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "range_header",
    [
        "bytes=abc",
        "bytes=",
        "bytes=-",
        "bytes=,",
        "bytes",
        "bytes 0-5",
        "items=0-5",
        "bytes=+5-10",
        "bytes=1_0-20",
        "bytes=5 - 9",
        "bytes=0--5",
        "bytes=-5-10",
        "bytes=5",
        "bytes=0x10-20",
    ],
)
async def test_invalid_range_syntax_is_ignored(client: httpx2.AsyncClient, range_header: str) -> None:
    response = await client.get("/f", headers={"Range": range_header})
    assert_full(response)


@pytest.mark.parametrize(
    ("header", "size", "expected"),
    [
        ("bytes=0-9", 100, (0, 9)),
        ("bytes=90-", 100, (90, 99)),
        ("bytes=90-1000", 100, (90, 99)),
        ("bytes=-10", 100, (90, 99)),
        ("bytes=-1000", 100, (0, 99)),
        ("bytes=0-" + "9" * 5000, 100, (0, 99)),
        ("bytes=0-1,2-3", 100, None),
        ("bytes=x", 100, None),
    ],
)
def test_parse_range_returns_the_canonical_range(header: str, size: int, expected: tuple[int, int] | None) -> None:
    # Starlette re-clamps whatever it is given, so the canonical (clamped) range
    # handed to it is only observable here.
    assert streaming._parse_range(header, size) == expected


# --- If-Range ----------------------------------------------------------------------


@pytest.mark.asyncio
async def test_if_range(client: httpx2.AsyncClient) -> None:
    full = await client.get("/f")
    etag, last_modified = full.headers["etag"], full.headers["last-modified"]

    async def get(if_range: str) -> httpx2.Response:
        return await client.get("/f", headers={"Range": "bytes=10-19", "If-Range": if_range})

    for matching in (etag, last_modified):
        response = await get(matching)
        assert response.status_code == 206
        assert response.content == DATA[10:20]

    for stale in (
        '"not-the-etag"',
        "W/" + etag,  # If-Range requires strong comparison
        formatdate(OLD_MTIME - 1, usegmt=True),
        formatdate(OLD_MTIME + 1, usegmt=True),
        "garbage",
    ):
        assert_full(await get(stale))


@pytest.mark.asyncio
async def test_if_range_date_needs_a_strong_last_modified(audio: Path, client: httpx2.AsyncClient) -> None:
    future = 4_000_000_000  # mtime "now or later": Last-Modified is a weak validator
    os.utime(audio, (future, future))
    response = await client.get(
        "/f",
        headers={"Range": "bytes=10-19", "If-Range": formatdate(future, usegmt=True)},
    )
    assert_full(response)


@pytest.mark.asyncio
async def test_if_range_does_not_rescue_unsatisfiable_when_stale(
    client: httpx2.AsyncClient,
) -> None:
    response = await client.get("/f", headers={"Range": f"bytes={SIZE}-", "If-Range": '"old"'})
    assert_full(response)


# --- conditional GET ---------------------------------------------------------------


def assert_not_modified(response: httpx2.Response, reference: httpx2.Response) -> None:
    assert response.status_code == 304
    assert response.content == b""
    for name in ("etag", "last-modified", "cache-control"):
        assert response.headers[name] == reference.headers[name]
    assert "content-range" not in response.headers


@pytest.mark.asyncio
async def test_not_modified_by_etag(client: httpx2.AsyncClient) -> None:
    full = await client.get("/f")
    etag = full.headers["etag"]
    for value in (etag, "W/" + etag, f'"other", {etag}', f'W/"x",W/{etag} ', "*"):
        assert_not_modified(await client.get("/f", headers={"If-None-Match": value}), full)
    # If-None-Match wins over Range
    response = await client.get("/f", headers={"If-None-Match": etag, "Range": "bytes=0-9"})
    assert_not_modified(response, full)
    for value in ('"other"', etag.strip('"'), '"other", W/"x"'):
        assert_full(await client.get("/f", headers={"If-None-Match": value}))


@pytest.mark.asyncio
async def test_not_modified_by_date(client: httpx2.AsyncClient) -> None:
    full = await client.get("/f")
    for since in (OLD_MTIME, OLD_MTIME + 3600):
        response = await client.get("/f", headers={"If-Modified-Since": formatdate(since, usegmt=True)})
        assert_not_modified(response, full)
    for value in (formatdate(OLD_MTIME - 1, usegmt=True), "not a date", ""):
        assert_full(await client.get("/f", headers={"If-Modified-Since": value}))
    # If-Modified-Since is ignored when If-None-Match is present
    response = await client.get(
        "/f",
        headers={
            "If-None-Match": '"other"',
            "If-Modified-Since": formatdate(OLD_MTIME + 3600, usegmt=True),
        },
    )
    assert_full(response)


# --- HEAD --------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_head(client: httpx2.AsyncClient) -> None:
    get = await client.get("/f")
    head = await client.head("/f")
    assert head.status_code == 200
    assert head.content == b""
    for name in (
        "accept-ranges",
        "content-type",
        "content-length",
        "etag",
        "last-modified",
        "cache-control",
        "content-disposition",
    ):
        assert head.headers[name] == get.headers[name]

    partial = await client.head("/f", headers={"Range": "bytes=-100"})
    assert partial.status_code == 206
    assert partial.headers["content-range"] == f"bytes {SIZE - 100}-{SIZE - 1}/{SIZE}"
    assert partial.headers["content-length"] == "100"
    assert partial.content == b""

    cached = await client.head("/f", headers={"If-None-Match": get.headers["etag"]})
    assert_not_modified(cached, get)


# --- empty file --------------------------------------------------------------------


@pytest.mark.asyncio
async def test_empty_file(tmp_path: Path, clients: ClientFactory) -> None:
    empty = tmp_path / "empty.bin"
    empty.write_bytes(b"")
    client = clients(empty)
    response = await client.get("/f")
    assert response.status_code == 200
    assert response.headers["content-length"] == "0"
    assert response.content == b""
    for range_header in ("bytes=0-", "bytes=0-0", "bytes=-1", "bytes=-0"):
        response = await client.get("/f", headers={"Range": range_header})
        assert response.status_code == 416
        assert response.headers["content-range"] == "bytes */0"
        assert response.json() == {"error": "Requested range not satisfiable"}


# --- Content-Disposition -----------------------------------------------------------

_DISPOSITION = re.compile(
    r"""inline; filename="(?P<fallback>[ !#-\[\]-~]*)"(?:; filename\*=UTF-8''(?P<ext>[A-Za-z0-9!#$&+\-.^_`|~%]+))?"""
)


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("plain name.mp3", "plain name.mp3"),
        ("Beyoncé – Déjà vu.mp3", "Beyonce _ Deja vu.mp3"),
        ("日本語.flac", "___.flac"),
        ('evil".mp3\r\nSet-Cookie: owned=1', "evil_.mp3__Set-Cookie: owned=1"),
        ('a\\"; filename="x.exe', "a__; filename=_x.exe"),
        ("", "download"),
    ],
)
async def test_content_disposition(audio: Path, clients: ClientFactory, name: str, fallback: str) -> None:
    response = await clients(audio, download_name=name).get("/f")
    assert response.status_code == 200
    assert "set-cookie" not in response.headers
    raw = dict(response.headers.raw)[b"content-disposition"]
    assert b"\r" not in raw and b"\n" not in raw
    header = raw.decode("ascii")
    match = _DISPOSITION.fullmatch(header)
    assert match is not None, header
    assert match["fallback"] == fallback
    if name in (fallback, ""):
        assert match["ext"] is None
    else:
        assert match["ext"] is not None
        assert unquote(match["ext"], encoding="utf-8", errors="strict") == name


# --- resolve_inside ----------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """tmp/root/{top.bin, sub/inner.bin, link_in, link_out, link_dir_out}, tmp/outside/secret.bin"""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "top.bin").write_bytes(b"top")
    (root / "sub" / "inner.bin").write_bytes(b"inner")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.bin").write_bytes(b"secret")
    (root / "link_in").symlink_to(root / "sub" / "inner.bin")
    (root / "link_out").symlink_to(outside / "secret.bin")
    (root / "link_dir_out").symlink_to(outside, target_is_directory=True)
    (root / "link_rel_out").symlink_to(Path("..") / "outside" / "secret.bin")
    (root / "loop").symlink_to(root / "loop")
    (root / "back\\slash.bin").write_bytes(b"exists, but backslashes are refused")
    return root


@pytest.mark.parametrize(
    ("relative", "expected"),
    [
        ("top.bin", "top.bin"),
        ("sub/inner.bin", "sub/inner.bin"),
        ("./sub//inner.bin", "sub/inner.bin"),
        ("link_in", "sub/inner.bin"),
    ],
)
def test_resolve_inside_accepts(tree: Path, relative: str, expected: str) -> None:
    assert resolve_inside(tree, relative) == (tree / expected).resolve()


def test_resolve_inside_accepts_root_given_through_symlink(tree: Path, tmp_path: Path) -> None:
    alias = tmp_path / "alias"
    alias.symlink_to(tree, target_is_directory=True)
    assert resolve_inside(alias, "sub/inner.bin") == (tree / "sub" / "inner.bin").resolve()


@pytest.mark.parametrize(
    "relative",
    [
        "",
        ".",
        "sub",  # a directory
        "missing.bin",
        "..",
        "../outside/secret.bin",
        "sub/../../outside/secret.bin",
        "sub/../top.bin",  # `..` is refused even when it would stay inside
        "sub/../../root/top.bin",
        "/etc/passwd",
        "SECRET_ABS",  # replaced by the absolute path of the outside file
        "sub/..%2F..%2Foutside/secret.bin".replace("%2F", "/"),  # decoded by the router
        "..\\outside\\secret.bin",
        "sub\\inner.bin",
        "back\\slash.bin",  # a real file whose name holds a backslash
        "top.bin\x00.mp3",
        "\x00",
        "link_out",
        "link_rel_out",
        "link_dir_out/secret.bin",
        "loop",
    ],
)
def test_resolve_inside_rejects(tree: Path, relative: str) -> None:
    if relative == "SECRET_ABS":
        relative = str(tree.parent / "outside" / "secret.bin")
        assert Path(relative).is_file()
    assert resolve_inside(tree, relative) is None


def test_resolve_inside_missing_root(tmp_path: Path) -> None:
    assert resolve_inside(tmp_path / "nope", "x.bin") is None


def test_resolve_inside_never_returns_the_root_itself(tmp_path: Path) -> None:
    root_file = tmp_path / "not-a-dir.bin"
    root_file.write_bytes(b"x")
    for relative in (".", "./", "x.bin"):
        assert resolve_inside(root_file, relative) is None
