"""The hot reads' fast path (spotik.http.hot, docs/cache.md#answers), on SQLite and PostgreSQL: it answers what
FastAPI's route answers, keeps an answer only while every entry it was built from is valid, and leaves every error
to FastAPI. (That its answers are never stale against an app without a cache is the property test of
test_cache.py, which reads through it; the authorization matrix covers anonymous, member, non-member and
administrator through it too.)"""

from __future__ import annotations

import asyncio
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx2

from spotik.http.hot import HotReads, HotRoute
from spotik.http.responses import Answer, ok
from spotik.reads import API_RESPONSE, room_tag
from spotik.state import SpotikApp
from tests.helpers import Account, register
from tests.integration.tracks_helpers import create_room, join_room, long_wav, upload

CLOCK_KEYS = ("server_time", "position")


async def _room(client: httpx2.AsyncClient, tmp_path: Path) -> tuple[str, str, Account, Account]:
    tag = uuid.uuid4().hex[:6]
    admin, member = await register(client, f"admin{tag}"), await register(client, f"member{tag}")
    room = await create_room(client, admin)
    await join_room(client, room, member)
    track = (await upload(client, member, room, long_wav(tmp_path).read_bytes(), "a.wav")).json()["track"]["id"]
    return room, track, admin, member


def _paths(room: str) -> list[str]:
    return ["/api/rooms", f"/api/rooms/{room}", f"/api/rooms/{room}/tracks", f"/api/rooms/{room}/playback/status"]


def _without_clock(response: httpx2.Response) -> object:
    body = response.json()
    if isinstance(body.get("data"), dict) and "server_time" in body["data"]:
        body["data"] = {key: value for key, value in body["data"].items() if key not in CLOCK_KEYS}
    return body


def _vary(response: httpx2.Response) -> set[str]:
    return {part.strip() for part in response.headers.get("vary", "").split(",") if part.strip()}


def _kept(app: SpotikApp, account: Account, path: str) -> bool:
    return app.services.cache.store.namespace(API_RESPONSE).peek(f"{account.id}:{path}") is not None


async def test_the_fast_path_answers_what_the_route_answers(
    app: SpotikApp, client: httpx2.AsyncClient, tmp_path: Path
) -> None:
    room, _track, admin, member = await _room(client, tmp_path)
    for account in (admin, member):
        for path in _paths(room):
            for _ in range(2):  # worked out, then (but the status) kept
                fast = await client.get(path, headers=account.headers)
                # a query string sends the request to FastAPI's route, which ignores it
                routed = await client.get(path, params={"via": "fastapi"}, headers=account.headers)
                assert fast.status_code == routed.status_code == 200, path
                assert _without_clock(fast) == _without_clock(routed), path
                for name in ("content-type", "content-encoding"):
                    assert fast.headers.get(name) == routed.headers.get(name), (path, name)
                assert _vary(fast) == _vary(routed), path
            assert _kept(app, account, path) is (not path.endswith("/status")), path


async def test_a_kept_answer_goes_with_any_write_it_shows(
    app: SpotikApp, client: httpx2.AsyncClient, tmp_path: Path
) -> None:
    room, track, admin, member = await _room(client, tmp_path)
    queue = f"/api/rooms/{room}/tracks"
    hits = app.services.cache.store.namespace(API_RESPONSE)
    first = await client.get(queue, headers=member.headers)
    before = hits.hits
    assert (await client.get(queue, headers=member.headers)).content == first.content
    assert hits.hits == before + 1  # the second read was the kept answer
    # another member's vote changes the score the member sees: the kept answer is dropped, the next read shows it
    assert (await client.post(f"{queue}/{track}/vote", headers=admin.headers)).status_code == 200
    assert not _kept(app, member, queue)
    assert (await client.get(queue, headers=member.headers)).json()["tracks"][0]["vote_score"] == 1
    # a rename shows in the room list of everyone
    assert (await client.get("/api/rooms", headers=member.headers)).status_code == 200
    assert _kept(app, member, "/api/rooms")
    renamed = await client.put(f"/api/rooms/{room}", headers=admin.headers, json={"name": "renamed"})
    assert renamed.status_code == 200
    assert not _kept(app, member, "/api/rooms")
    rooms = (await client.get("/api/rooms", headers=member.headers)).json()["data"]
    assert [r["name"] for r in rooms if r["id"] == room] == ["renamed"]


async def test_errors_and_revoked_tokens_go_to_fastapi(
    app: SpotikApp, client: httpx2.AsyncClient, tmp_path: Path
) -> None:
    room, _track, admin, member = await _room(client, tmp_path)
    outsider = await register(client, f"outsider{uuid.uuid4().hex[:6]}")
    queue, status = f"/api/rooms/{room}/tracks", f"/api/rooms/{room}/playback/status"
    for account in (admin, member, outsider):  # every token's checks in the cache: the status needs no User
        for path in (queue, status):
            await client.get(path, headers=account.headers)
    refused = await client.get(queue, headers=outsider.headers)
    assert refused.status_code == 403
    assert refused.json() == {"error": "You must be a participant of this room to view tracks"}
    refused = await client.get(status, headers=outsider.headers)
    assert refused.status_code == 403 and refused.json()["error"] == "Not a participant"
    for path in (f"/api/rooms/{uuid.uuid4()}/tracks", f"/api/rooms/{uuid.uuid4()}/playback/status"):
        missing = await client.get(path, headers=member.headers)
        assert missing.status_code == 404 and "Room not found" in missing.text, path
    assert (await client.get(queue)).status_code == 401
    assert (await client.get(status)).status_code == 401
    # a kept answer is never sent, nor the status worked out, on a token that was revoked since
    assert _kept(app, member, queue)
    assert (await client.get(status, headers=member.headers)).status_code == 200
    assert (await client.post("/api/auth/logout", headers=member.headers)).status_code == 200
    for path in (queue, status):
        after = await client.get(path, headers=member.headers)
        assert after.status_code == 401 and after.json()["success"] is False, path


async def test_the_body_goes_gzipped_only_to_clients_that_take_gzip(client: httpx2.AsyncClient, tmp_path: Path) -> None:
    room, _track, _admin, member = await _room(client, tmp_path)
    path = f"/api/rooms/{room}"
    await client.get(path, headers=member.headers)  # kept
    plain = await client.get(path, headers={**member.headers, "Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers
    zipped = await client.get(path, headers={**member.headers, "Accept-Encoding": "gzip"})
    assert zipped.headers["content-encoding"] == "gzip" and "Accept-Encoding" in zipped.headers["vary"]
    assert zipped.content == plain.content  # httpx2 unzipped it


async def test_an_answer_built_while_its_tags_were_invalidated_is_not_kept(app: SpotikApp) -> None:
    """The stale guard: the invalidation sequence is taken before the viewer is authenticated, so a write that lands
    while the answer is worked out keeps it from being stored (the caller still gets it)."""
    state = app.services
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver") as client:
        account = await register(client, f"guard{uuid.uuid4().hex[:6]}")
    room = str(uuid.uuid4())

    async def answer(*_: object) -> Answer:
        await state.cache.invalidate_tags(room_tag(room))  # a write of the room, meanwhile
        return Answer(ok("Done", {"room": room}), (room_tag(room),))

    async def inner(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the fast path should have answered")

    guarded = HotReads(inner, state=state, routes=[HotRoute("/api/probe", answer)])
    transport = httpx2.ASGITransport(app=guarded)
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
        response = await client.get("/api/probe", headers=account.headers)
    assert response.status_code == 200 and response.json()["data"] == {"room": room}
    assert not _kept(app, account, "/api/probe")
    assert state.cache.store.namespace(API_RESPONSE).stale_skips == 1


async def test_requests_it_does_not_take_reach_the_routes(app: SpotikApp, client: httpx2.AsyncClient) -> None:
    account = await register(client, f"other{uuid.uuid4().hex[:6]}")
    kept = app.services.cache.store.namespace(API_RESPONSE)
    assert (await client.post("/api/rooms", headers=account.headers, json={"name": "x"})).status_code == 201
    assert (await client.get("/api/rooms", params={"page": 1}, headers=account.headers)).status_code == 200
    assert len(kept.entries) == 0  # none of these went through the fast path


async def test_a_kept_answer_ends_at_its_until_however_long_it_took(app: SpotikApp) -> None:
    """``until`` is a moment: the time the answer took to work out does not lengthen its life."""
    state = app.services
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://testserver") as client:
        account = await register(client, f"until{uuid.uuid4().hex[:6]}")
    until = datetime.now(UTC) + timedelta(seconds=5)

    async def answer(*_: object) -> Answer:
        await asyncio.sleep(0.5)  # a slow computation (a cold cache on a busy database)
        return Answer(ok("Done"), (room_tag(uuid.uuid4()),), until)

    async def inner(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the fast path should have answered")

    hot = HotReads(inner, state=state, routes=[HotRoute("/api/probe", answer)])
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=hot), base_url="http://testserver") as client:
        assert (await client.get("/api/probe", headers=account.headers)).status_code == 200
    left = state.cache.store.remaining_ttl(API_RESPONSE, f"{account.id}:/api/probe")
    assert left is not None and left <= (until - datetime.now(UTC)).total_seconds() + 0.1
