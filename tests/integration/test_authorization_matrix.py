"""The authorization matrix (issue 14, item 3): who may do what, over every HTTP route and every WebSocket client
message type, with the answer docs/api.md (#routes, #client-messages, #error-codes) and the code give for each cell.

Columns (one signed-in person each; the suite runs in the ``testing`` environment, where only the users listed in
``PERFORMANCE_ADMINS`` are operators — in ``development`` every signed-in user would be one):

* ``anonymous``: no token;
* ``stranger``: signed in, member of no room, owner of nothing;
* ``member``: joined the room over REST; uploaded nothing, owns nothing;
* ``owner``: whoever the route's rule names (:class:`Owner`): the room's administrator (its creator) for room,
  playback and cover routes, the track's uploader (a plain member) for track routes, the playlist's owner (a user
  in no room) for playlist routes; for routes open to any user, the room's administrator;
* ``operator``: listed in ``PERFORMANCE_ADMINS``. For anything but the operator actions an operator is just a user
  who is a member of nothing, so the column must equal ``stranger`` there (checked below).

Some rows add a cell for the other privileged person (``also``): a track may be deleted by its uploader *or* the
room's administrator; the uploader may not control playback. The WebSocket table adds ``former member``: a socket
that joined the room while its user was a member and is still attached after the membership row went away (a leave
handled by another instance): every handler must check the membership again, not trust the socket's room. Rows
marked "track of another room" reach the room's track through a room the caller administers (an id from elsewhere
in a path the caller controls): 404 for everyone, whatever their role in their own room.

The world (people, one room with one track uploaded by a member, a room cover, two playlists) is built once per test
function. A cell that changes state works on a victim made for it (a room to delete or leave, a track to delete, a
playlist to delete …), made whatever the cell's expected answer, so that a wrong "allowed" cannot change what later
cells see; playback cells first put the room in the state the action needs (playing, paused). For cells that write,
the test also checks the write happened exactly when the answer says it did (a 403 that deleted anyway fails).

Every response is also checked against /openapi.json by the client's hooks: a status a route really answers but does
not declare fails its cell. Failures are collected and reported together, one line per cell: route, role, expected,
got.
"""

from __future__ import annotations

import contextlib
import itertools
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

import httpx2
import orjson
from fastapi.routing import iter_route_contexts
from httpx2.websockets import AsyncWebSocketSession, WebSocketDisconnect
from sqlalchemy import delete, func, select, update

from spotik.app import create_app
from spotik.db.base import utcnow
from spotik.genres.models import Genre
from spotik.playlists.models import Playlist, PlaylistTrack
from spotik.reads import room_tag
from spotik.realtime.protocol import ClientType
from spotik.rooms.models import Room, RoomParticipant
from spotik.settings import Environment, Settings
from spotik.tracks.models import Track
from tests.conftest import make_settings
from tests.fixtures.audio_files import make_png
from tests.helpers import Account, bearer, register
from tests.integration.test_websocket_support import WAIT, RunningApp, closed_with, receive, running_app, send
from tests.integration.tracks_helpers import ISSUER, long_wav, make_accounts
from tests.openapi_contract import OpenApiViolation


class Role(StrEnum):
    ANONYMOUS = "anonymous"
    STRANGER = "stranger"
    MEMBER = "member"
    OWNER = "owner"
    OPERATOR = "operator"


ROLES = tuple(Role)


class Owner(StrEnum):
    """Who the ``owner`` column is, per route."""

    ROOM_ADMIN = "room administrator"
    UPLOADER = "track uploader"
    PLAYLIST_OWNER = "playlist owner"


OPERATOR_NAME = "matrix-operator"


# --- the world -----------------------------------------------------------------------------------------------------


@dataclass
class World:
    env: RunningApp
    admin: Account  # created the room: its administrator and first member
    uploader: Account  # a member who uploaded the track
    member: Account  # a member who owns nothing
    stranger: Account  # a member of nothing
    operator: Account  # PERFORMANCE_ADMINS; a member of nothing
    curator: Account  # owns the playlists; a member of nothing
    room: str
    track: str
    track_filename: str
    cover_path: str  # under /api/storage
    private_playlist: int
    public_playlist: int
    audio: bytes
    numbers: itertools.count[int] = field(default_factory=itertools.count)
    own_rooms: dict[str, str] = field(default_factory=dict)  # person id -> a room that person administers

    @property
    def client(self) -> httpx2.AsyncClient:
        return self.env.client

    def unique(self, prefix: str) -> str:
        return f"{prefix}{next(self.numbers)}"

    def owner(self, owner: Owner) -> Account:
        return {Owner.ROOM_ADMIN: self.admin, Owner.UPLOADER: self.uploader, Owner.PLAYLIST_OWNER: self.curator}[owner]

    def person(self, role: Role, owner: Owner) -> Account | None:
        people = {Role.STRANGER: self.stranger, Role.MEMBER: self.member, Role.OPERATOR: self.operator}
        return None if role is Role.ANONYMOUS else self.owner(owner) if role is Role.OWNER else people[role]

    def fresh_token(self, account: Account) -> str:
        """A token of its own for every request: a logout or a refresh in one cell cannot touch another's token."""
        return self.env.state.tokens.issue(uuid.UUID(account.id), ISSUER)

    async def scalar(self, statement: Any) -> Any:
        async with self.env.state.sessionmaker() as session:
            return await session.scalar(statement)


def expect_status(response: httpx2.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, f"world setup: {response.request.url} {response.status_code} {response.text}"
    body: dict[str, Any] = response.json()
    return body


async def new_room(client: httpx2.AsyncClient, admin: Account, *members: Account, name: str = "Matrix room") -> str:
    body = expect_status(await client.post("/api/rooms", json={"name": name}, headers=admin.headers), 201)
    room: str = body["data"]["id"]
    for account in members:
        expect_status(await client.post(f"/api/rooms/{room}/join", headers=account.headers), 200)
    return room


async def upload(client: httpx2.AsyncClient, account: Account, room: str, audio: bytes) -> dict[str, Any]:
    files = {"audio_file": ("matrix-song.wav", audio, "audio/wav")}
    response = await client.post(f"/api/rooms/{room}/tracks", files=files, headers=account.headers)
    track: dict[str, Any] = expect_status(response, 201)["track"]
    return track


async def new_playlist(world: World, *, public: bool = False, with_track: bool = False) -> int:
    client, curator = world.client, world.curator
    body = {"name": world.unique("Matrix playlist "), "is_public": public}
    created = expect_status(await client.post("/api/playlists", json=body, headers=curator.headers), 201)
    playlist: int = created["data"]["id"]
    if with_track:
        response = await client.post(
            f"/api/playlists/{playlist}/tracks", json={"track_id": world.track}, headers=curator.headers
        )
        expect_status(response, 200)
    return playlist


async def build_world(env: RunningApp, tmp: Path) -> World:
    client = env.client
    admin, uploader, member, stranger, operator, curator = [
        await register(client, name)
        for name in (
            "matrix-admin",
            "matrix-uploader",
            "matrix-member",
            "matrix-stranger",
            OPERATOR_NAME,
            "matrix-curator",
        )
    ]
    room = await new_room(client, admin, uploader, member)
    # A minute long: the scheduler never ends it while the test runs (an advance would change the room's state).
    audio = long_wav(tmp).read_bytes()
    track = await upload(client, uploader, room, audio)
    png = make_png(tmp).read_bytes()
    cover = await client.post(f"/api/rooms/{room}/cover", files={"cover_image": ("c.png", png)}, headers=admin.headers)
    cover_url: str = expect_status(cover, 200)["cover_url"]
    world = World(
        env=env,
        admin=admin,
        uploader=uploader,
        member=member,
        stranger=stranger,
        operator=operator,
        curator=curator,
        room=room,
        track=track["id"],
        track_filename=track["filename"],
        cover_path=cover_url.removeprefix("/api/storage/"),
        private_playlist=0,
        public_playlist=0,
        audio=audio,
    )
    world.private_playlist = await new_playlist(world, with_track=True)
    world.public_playlist = await new_playlist(world, public=True, with_track=True)
    return world


async def set_playback(world: World, *, playing: bool) -> None:
    """The room playing (or paused in) its track, written directly: the precondition of pause/resume/skip/seek."""
    now = utcnow()
    track_id, room_id = uuid.UUID(world.track), uuid.UUID(world.room)
    async with world.env.state.sessionmaker() as session:
        await session.execute(update(Track).where(Track.id == track_id).values(played_at=None))
        await session.execute(
            update(Room)
            .where(Room.id == room_id)
            .values(
                current_track_id=track_id,
                is_playing=playing,
                playback_started_at=now - timedelta(seconds=5),
                playback_paused_at=None if playing else now,
            )
        )
        await session.commit()
    await world.env.state.cache.invalidate_tags(room_tag(world.room))  # as the services' events would


async def participants(world: World, room: str) -> int:
    return int(
        await world.scalar(
            select(func.count()).select_from(RoomParticipant).where(RoomParticipant.room_id == uuid.UUID(room))
        )
    )


async def is_member(world: World, room: str, account: Account) -> bool:
    found = await world.scalar(
        select(RoomParticipant.id).where(
            RoomParticipant.room_id == uuid.UUID(room), RoomParticipant.user_id == uuid.UUID(account.id)
        )
    )
    return found is not None


# --- the HTTP table ------------------------------------------------------------------------------------------------

Effect = Callable[[], Awaitable[bool]]


@dataclass
class Call:
    """What one cell sends: path parameters, a body, a query; ``effect`` tells whether the write happened."""

    params: Mapping[str, object] = field(default_factory=dict)
    json: Any = None
    files: Any = None
    query: Mapping[str, str] | None = None
    effect: Effect | None = None


Build = Callable[[World, Account | None], Awaitable[Call]]
Check = Callable[[World, Role, httpx2.Response], str | None]


async def in_room(world: World, _who: Account | None) -> Call:
    return Call({"room": world.room})


async def with_track(world: World, _who: Account | None) -> Call:
    return Call({"room": world.room, "track": world.track, "filename": world.track_filename})


async def nothing(_world: World, _who: Account | None) -> Call:
    return Call()


@dataclass(frozen=True)
class Row:
    method: str
    path: str  # the route's template, as the app declares it
    expect: tuple[int, int, int, int, int]  # anonymous, stranger, member, owner, operator
    call: Build = nothing
    owner: Owner = Owner.ROOM_ADMIN
    also: Mapping[Owner, int] = field(default_factory=dict)  # the other privileged person, where the rule names two
    variant: str = ""
    check: Check | None = None

    def __post_init__(self) -> None:
        assert len(self.expect) == len(ROLES), self
        operator_action = self.path.startswith(("/api/performance/optimize", "/api/performance/cache"))
        if not operator_action:  # docs/api.md#performance: operators are plain users everywhere else
            stranger, operator = self.expect[1], self.expect[4]
            assert stranger == operator, f"{self.name}: an operator is just a user here"

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}" + (f" [{self.variant}]" if self.variant else "")


PUBLIC = (200, 200, 200, 200, 200)
ANY_USER = (401, 200, 200, 200, 200)
CREATED_BY_ANY_USER = (401, 201, 201, 201, 201)
MEMBERS = (401, 403, 200, 200, 403)
OWNER_ONLY = (401, 403, 403, 200, 403)
OPERATORS = (401, 403, 403, 403, 200)
ELSEWHERE = (401, 404, 404, 404, 404)


# Builders for the cells that write: each makes its own victim, whatever the answer the cell expects.


async def register_body(world: World, _who: Account | None) -> Call:
    name = world.unique("matrix-new-")
    password = "correct horse"
    body = {"username": name, "email": f"{name}@example.com", "password": password, "password_confirmation": password}
    return Call(json=body)


async def login_body(world: World, who: Account | None) -> Call:
    account = who or world.stranger
    return Call(json={"email": account.email, "password": account.password})


async def room_body(world: World, _who: Account | None) -> Call:
    return Call(json={"name": world.unique("Made room ")})


async def rename_room(world: World, _who: Account | None) -> Call:
    name = world.unique("Renamed ")

    async def renamed() -> bool:
        return bool(await world.scalar(select(Room.name).where(Room.id == uuid.UUID(world.room))) == name)

    return Call({"room": world.room}, json={"name": name}, effect=renamed)


async def doomed_room(world: World, _who: Account | None) -> Call:
    room = await new_room(world.client, world.admin, world.uploader, world.member, name="Doomed room")

    async def gone() -> bool:
        return await world.scalar(select(Room.id).where(Room.id == uuid.UUID(room))) is None

    return Call({"room": room}, effect=gone)


async def room_to_join(world: World, who: Account | None) -> Call:
    room = await new_room(world.client, world.admin, world.uploader, world.member, name="Open room")

    async def joined() -> bool:
        return await participants(world, room) > 3 if who is None else await is_member(world, room, who)

    return Call({"room": room}, effect=joined)


async def room_to_leave(world: World, _who: Account | None) -> Call:
    room = await new_room(world.client, world.admin, world.uploader, world.member, name="Room to leave")

    async def left() -> bool:
        return await participants(world, room) < 3

    return Call({"room": room}, effect=left)


async def track_upload(world: World, _who: Account | None) -> Call:
    room_id = uuid.UUID(world.room)
    before = int(await world.scalar(select(func.count()).select_from(Track).where(Track.room_id == room_id)))

    async def added() -> bool:
        count = await world.scalar(select(func.count()).select_from(Track).where(Track.room_id == room_id))
        return int(count) > before

    return Call({"room": world.room}, files={"audio_file": ("upload.wav", world.audio, "audio/wav")}, effect=added)


async def foreign_track(world: World, who: Account | None) -> Call:
    """The world's track through a room the caller administers (another room): the track must not be reachable."""
    account = who or world.stranger
    if account.id not in world.own_rooms:
        world.own_rooms[account.id] = await new_room(world.client, account, name="Own room")
    room = world.own_rooms[account.id]

    async def gone() -> bool:
        return await world.scalar(select(Track.id).where(Track.id == uuid.UUID(world.track))) is None

    return Call({"room": room, "track": world.track}, effect=gone)


async def doomed_track(world: World, _who: Account | None) -> Call:
    track = await upload(world.client, world.uploader, world.room, world.audio)

    async def gone() -> bool:
        return await world.scalar(select(Track.id).where(Track.id == uuid.UUID(track["id"]))) is None

    return Call({"room": world.room, "track": track["id"]}, effect=gone)


def playback(*, playing: bool | None, json: Any = None) -> Build:
    async def build(world: World, _who: Account | None) -> Call:
        if playing is not None:
            await set_playback(world, playing=playing)
        return Call({"room": world.room, "track": world.track}, json=json)

    return build


async def search_body(world: World, _who: Account | None) -> Call:
    return Call(query={"search": "matrix-song"})


def sees_room_tracks(world: World, role: Role, response: httpx2.Response) -> str | None:
    """Search finds the tracks of the caller's rooms only."""
    found = response.json()["total_count"]
    member = role in (Role.MEMBER, Role.OWNER)
    if member and found == 0:
        return "a member of the room finds none of its tracks"
    if not member and found != 0:
        return f"finds {found} tracks of a room it is not a member of"
    return None


async def new_genre(world: World) -> int:
    body = {"name": world.unique("Matrix genre ")}
    created = expect_status(await world.client.post("/api/genres", json=body, headers=world.admin.headers), 201)
    genre: int = created["data"]["id"]
    return genre


async def genre_body(world: World, _who: Account | None) -> Call:
    return Call(json={"name": world.unique("Made genre ")})


async def a_genre(world: World, _who: Account | None) -> Call:
    return Call({"genre": await new_genre(world)})


async def genre_to_change(world: World, _who: Account | None) -> Call:
    genre, description = await new_genre(world), world.unique("changed ")

    async def changed() -> bool:
        return bool(await world.scalar(select(Genre.description).where(Genre.id == genre)) == description)

    return Call({"genre": genre}, json={"description": description}, effect=changed)


async def doomed_genre(world: World, _who: Account | None) -> Call:
    genre = await new_genre(world)

    async def gone() -> bool:
        return await world.scalar(select(Genre.id).where(Genre.id == genre)) is None

    return Call({"genre": genre}, effect=gone)


async def playlist_body(world: World, _who: Account | None) -> Call:
    return Call(json={"name": world.unique("Made playlist ")})


def sees_private_playlist(world: World, role: Role, response: httpx2.Response) -> str | None:
    """The list holds the caller's playlists and the public ones: the curator's private one for the curator only."""
    ids = {item["id"] for item in response.json()["data"]}
    if world.public_playlist not in ids:
        return "the public playlist is missing"
    if (world.private_playlist in ids) != (role is Role.OWNER):
        return f"the private playlist is {'listed' if world.private_playlist in ids else 'missing'}"
    return None


async def private_playlist(world: World, _who: Account | None) -> Call:
    return Call({"playlist": world.private_playlist})


async def public_playlist(world: World, _who: Account | None) -> Call:
    return Call({"playlist": world.public_playlist})


async def playlist_to_change(world: World, _who: Account | None) -> Call:
    playlist, description = await new_playlist(world), world.unique("changed ")

    async def changed() -> bool:
        return bool(await world.scalar(select(Playlist.description).where(Playlist.id == playlist)) == description)

    return Call({"playlist": playlist}, json={"description": description}, effect=changed)


async def doomed_playlist(world: World, _who: Account | None) -> Call:
    playlist = await new_playlist(world)

    async def gone() -> bool:
        return await world.scalar(select(Playlist.id).where(Playlist.id == playlist)) is None

    return Call({"playlist": playlist}, effect=gone)


async def entries(world: World, playlist: int) -> int:
    count = await world.scalar(
        select(func.count()).select_from(PlaylistTrack).where(PlaylistTrack.playlist_id == playlist)
    )
    return int(count)


async def playlist_to_fill(world: World, _who: Account | None) -> Call:
    playlist = await new_playlist(world)

    async def added() -> bool:
        return await entries(world, playlist) == 1

    return Call({"playlist": playlist}, json={"track_id": world.track}, effect=added)


async def playlist_to_empty(world: World, _who: Account | None) -> Call:
    playlist = await new_playlist(world, with_track=True)

    async def removed() -> bool:
        return await entries(world, playlist) == 0

    return Call({"playlist": playlist, "track": world.track}, effect=removed)


async def cover_body(world: World, _who: Account | None) -> Call:
    return Call({"room": world.room}, json={"cover_data": f"data:image/png;base64,{PNG_BASE64}"})


# A 1x1 PNG.
PNG_BASE64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAAAAAA6fptVAAAACklEQVR4nGNgAAAAAgABSK+kcQAAAABJRU5ErkJggg=="


async def stored_cover(world: World, _who: Account | None) -> Call:
    return Call({"path": world.cover_path})


async def optimize_body(_world: World, _who: Account | None) -> Call:
    return Call(json={"type": "websocket"})  # the cheapest action: the real one, not a mock


async def cache_body(_world: World, _who: Account | None) -> Call:
    return Call(json={"cache_type": "all"})


# fmt: off
HTTP_ROWS: tuple[Row, ...] = (
    #    method  path                                         anon stranger member owner operator
    Row("GET",  "/openapi.json",                              PUBLIC),
    Row("HEAD", "/openapi.json",                              PUBLIC),
    Row("GET",  "/docs",                                      PUBLIC),
    Row("GET",  "/api/ping",                                  PUBLIC),
    Row("GET",  "/api/time",                                  PUBLIC),
    Row("GET",  "/api/health",                                PUBLIC),
    Row("GET",  "/live",                                      PUBLIC),
    Row("GET",  "/ready",                                     PUBLIC),
    Row("GET",  "/metrics",                                   PUBLIC),
    Row("GET",  "/dashboard",                                 PUBLIC),
    Row("GET",  "/ws",                                        (400, 400, 400, 400, 400)),  # no upgrade
    # auth
    Row("POST", "/api/auth/register",                         (201, 201, 201, 201, 201), register_body),
    Row("POST", "/api/auth/login",                            PUBLIC, login_body),
    Row("POST", "/api/auth/refresh",                          ANY_USER),
    Row("POST", "/api/auth/logout",                           PUBLIC),
    Row("GET",  "/api/auth/me",                               ANY_USER),
    # rooms
    Row("GET",  "/api/rooms",                                 ANY_USER),
    Row("POST", "/api/rooms",                                 CREATED_BY_ANY_USER, room_body),
    Row("GET",  "/api/rooms/{room}",                          ANY_USER, in_room),
    Row("PUT",  "/api/rooms/{room}",                          OWNER_ONLY, rename_room,
        also={Owner.UPLOADER: 403}),
    Row("DELETE", "/api/rooms/{room}",                        OWNER_ONLY, doomed_room, also={Owner.UPLOADER: 403}),
    Row("POST", "/api/rooms/{room}/join",                     ANY_USER, room_to_join),
    Row("POST", "/api/rooms/{room}/leave",                    (401, 404, 200, 403, 404), room_to_leave),
    Row("GET",  "/api/rooms/{room}/participants",             ANY_USER, in_room),
    Row("POST", "/api/rooms/{room}/cover",                    OWNER_ONLY, cover_body, also={Owner.UPLOADER: 403}),
    Row("GET",  "/api/storage/{path}",                        PUBLIC, stored_cover),
    Row("HEAD", "/api/storage/{path}",                        PUBLIC, stored_cover),
    # tracks and votes: any member; deleting, the uploader or the administrator
    Row("GET",  "/api/rooms/{room}/tracks",                   MEMBERS, in_room),
    Row("POST", "/api/rooms/{room}/tracks",                   (401, 403, 201, 201, 403), track_upload),
    Row("DELETE", "/api/rooms/{room}/tracks/{track}",         OWNER_ONLY, doomed_track,
        owner=Owner.UPLOADER, also={Owner.ROOM_ADMIN: 200}),
    Row("POST", "/api/rooms/{room}/tracks/{track}/vote",      MEMBERS, with_track),
    Row("DELETE", "/api/rooms/{room}/tracks/{track}/vote",    MEMBERS, with_track),
    Row("GET",  "/api/tracks",                                ANY_USER, search_body, check=sees_room_tracks),
    # a track of another room, through a room the caller administers: "Track does not belong to this room"
    Row("DELETE", "/api/rooms/{room}/tracks/{track}",         ELSEWHERE, foreign_track, owner=Owner.UPLOADER,
        variant="track of another room"),
    Row("POST", "/api/rooms/{room}/tracks/{track}/vote",      ELSEWHERE, foreign_track,
        variant="track of another room"),
    Row("DELETE", "/api/rooms/{room}/tracks/{track}/vote",    ELSEWHERE, foreign_track,
        variant="track of another room"),
    Row("POST", "/api/rooms/{room}/tracks/{track}/play",      ELSEWHERE, foreign_track,
        variant="track of another room"),
    Row("GET",  "/api/tracks/{track}/stream",                 MEMBERS, with_track,
        owner=Owner.UPLOADER, also={Owner.ROOM_ADMIN: 200}),
    Row("HEAD", "/api/tracks/{track}/stream",                 MEMBERS, with_track,
        owner=Owner.UPLOADER, also={Owner.ROOM_ADMIN: 200}),
    Row("GET",  "/api/audio/{filename}",                      MEMBERS, with_track,
        owner=Owner.UPLOADER, also={Owner.ROOM_ADMIN: 200}),
    Row("HEAD", "/api/audio/{filename}",                      MEMBERS, with_track,
        owner=Owner.UPLOADER, also={Owner.ROOM_ADMIN: 200}),
    Row("GET",  "/api/audio/{filename}/metadata",             MEMBERS, with_track,
        owner=Owner.UPLOADER, also={Owner.ROOM_ADMIN: 200}),
    # playback: the administrator; the status, any member
    Row("POST", "/api/rooms/{room}/tracks/{track}/play",      OWNER_ONLY, playback(playing=None),
        also={Owner.UPLOADER: 403}),
    Row("POST", "/api/rooms/{room}/playback/pause",           OWNER_ONLY, playback(playing=True),
        also={Owner.UPLOADER: 403}),
    Row("POST", "/api/rooms/{room}/playback/resume",          OWNER_ONLY, playback(playing=False),
        also={Owner.UPLOADER: 403}),
    Row("POST", "/api/rooms/{room}/playback/skip",            OWNER_ONLY, playback(playing=True),
        also={Owner.UPLOADER: 403}),
    Row("POST", "/api/rooms/{room}/playback/stop",            OWNER_ONLY, playback(playing=True),
        also={Owner.UPLOADER: 403}),
    Row("POST", "/api/rooms/{room}/playback/seek",            OWNER_ONLY, playback(playing=True, json={"position": 1}),
        also={Owner.UPLOADER: 403}),
    Row("GET",  "/api/rooms/{room}/playback/status",          MEMBERS, in_room, also={Owner.UPLOADER: 200}),
    # genres: listing is public, the rest any user (there is no genre administrator)
    Row("GET",  "/api/genres",                                PUBLIC),
    Row("GET",  "/api/genres/popular",                        PUBLIC),
    Row("POST", "/api/genres",                                CREATED_BY_ANY_USER, genre_body),
    Row("GET",  "/api/genres/{genre}",                        ANY_USER, a_genre),
    Row("PUT",  "/api/genres/{genre}",                        ANY_USER, genre_to_change),
    Row("DELETE", "/api/genres/{genre}",                      ANY_USER, doomed_genre),
    # playlists: the owner; a public one is readable by any user
    Row("GET",  "/api/playlists",                             ANY_USER, owner=Owner.PLAYLIST_OWNER,
        check=sees_private_playlist),
    Row("POST", "/api/playlists",                             CREATED_BY_ANY_USER, playlist_body,
        owner=Owner.PLAYLIST_OWNER),
    Row("GET",  "/api/playlists/{playlist}",                  OWNER_ONLY, private_playlist,
        owner=Owner.PLAYLIST_OWNER, variant="private"),
    Row("GET",  "/api/playlists/{playlist}",                  ANY_USER, public_playlist,
        owner=Owner.PLAYLIST_OWNER, variant="public"),
    Row("PUT",  "/api/playlists/{playlist}",                  OWNER_ONLY, playlist_to_change,
        owner=Owner.PLAYLIST_OWNER),
    Row("DELETE", "/api/playlists/{playlist}",                OWNER_ONLY, doomed_playlist,
        owner=Owner.PLAYLIST_OWNER),
    Row("POST", "/api/playlists/{playlist}/tracks",           OWNER_ONLY, playlist_to_fill,
        owner=Owner.PLAYLIST_OWNER),
    Row("DELETE", "/api/playlists/{playlist}/tracks/{track}", OWNER_ONLY, playlist_to_empty,
        owner=Owner.PLAYLIST_OWNER),
    # performance: operators act, any user reads the dashboard and benchmarks, the rest is public
    Row("GET",  "/api/performance/metrics",                   PUBLIC),
    Row("GET",  "/api/performance/health",                    PUBLIC),
    Row("GET",  "/api/performance/dashboard",                 ANY_USER),
    Row("GET",  "/api/performance/benchmarks",                ANY_USER),
    Row("POST", "/api/performance/optimize",                  OPERATORS, optimize_body),
    Row("POST", "/api/performance/cache/clear",               OPERATORS, cache_body),
    Row("GET",  "/api/websocket/status",                      PUBLIC),
    Row("GET",  "/api/metrics",                               PUBLIC),
)
# fmt: on


def cells(row: Row) -> list[tuple[str, Role, Owner, int]]:
    """(column label, role, who plays ``owner``, expected status) for every cell of ``row``."""
    found = [(str(role), role, row.owner, status) for role, status in zip(ROLES, row.expect, strict=True)]
    found[3] = (f"owner ({row.owner})", Role.OWNER, row.owner, row.expect[3])
    found += [(f"{other} (also)", Role.OWNER, other, status) for other, status in row.also.items()]
    return found


async def run_http_cell(world: World, row: Row, label: str, role: Role, owner: Owner, expected: int) -> str | None:
    where = f"{row.name} as {label}: expected {expected}"
    who = world.person(role, owner)
    call = await row.call(world, who)
    headers = {} if who is None else bearer(world.fresh_token(who))
    try:
        response = await world.client.request(
            row.method,
            row.path.format(**call.params),
            headers=headers,
            json=call.json,
            files=call.files,
            params=call.query,
        )
    except OpenApiViolation as exc:
        return f"{where}, got an answer /openapi.json does not allow: {exc}"
    if response.status_code != expected:
        body = response.text[:240] if row.method != "HEAD" else ""
        return f"{where}, got {response.status_code} {body}"
    if call.effect is not None and await call.effect() != (expected < 400):
        return f"{where}, got it, but the write {'did not happen' if expected < 400 else 'happened anyway'}"
    if row.check is not None and expected < 400 and (problem := row.check(world, role, response)):
        return f"{where}, got it, but {problem}"
    return None


def app_routes(settings: Settings) -> set[tuple[str, str]]:
    """(method, path template) of every HTTP route the app serves, documented or not."""
    app = create_app(settings)
    routes = set()
    for context in iter_route_contexts(app.routes):
        for method in getattr(context, "methods", None) or ():
            routes.add((method, context.path_format))
    document = app.openapi()
    documented = {(m.upper(), path) for path, item in document["paths"].items() for m in item}
    assert documented <= routes, f"documented but not routed: {sorted(documented - routes)}"
    return routes


def test_every_route_and_message_type_has_a_row(tmp_path: Path) -> None:
    """A route (or message type) added without a row, or a row left for one that is gone, fails here."""
    settings = make_settings(f"sqlite:///{tmp_path / 'unused.sqlite3'}", tmp_path)
    routes = app_routes(settings)
    rows = {(row.method, row.path) for row in HTTP_ROWS}
    assert not routes - rows, f"routes without a row in HTTP_ROWS: {sorted(routes - rows)}"
    assert not rows - routes, f"rows for routes the app does not have: {sorted(rows - routes)}"
    assert len(rows) == len(routes) > 60

    handled = set(create_app(settings).services.realtime.handlers.table)
    assert handled == {str(kind) for kind in ClientType}, "a ClientType without a handler, or the reverse"
    covered = {str(row.type) for row in WS_ROWS}
    assert covered == handled, f"message types without a row: {handled - covered}; rows for none: {covered - handled}"


async def test_http_authorization_matrix(settings: Settings, tmp_path: Path) -> None:
    assert settings.env is Environment.TESTING  # in development every signed-in user would be an operator
    async with running_app(settings, performance_admins=[OPERATOR_NAME]) as env:
        world = await build_world(env, tmp_path)
        failures, count = [], 0
        for row in HTTP_ROWS:
            for label, role, owner, expected in cells(row):
                count += 1
                if (problem := await run_http_cell(world, row, label, role, owner, expected)) is not None:
                    failures.append(problem)
        assert not failures, f"{len(failures)} of {count} cells differ:\n" + "\n".join(failures)
        assert count == sum(len(cells(row)) for row in HTTP_ROWS) > 300


# --- the WebSocket table -------------------------------------------------------------------------------------------


class WsRole(StrEnum):
    ANONYMOUS = "anonymous"
    STRANGER = "stranger"
    MEMBER = "member"
    OWNER = "owner (room administrator)"
    OPERATOR = "operator"
    FORMER_MEMBER = "former member (socket still in the room)"


WS_ROLES = tuple(WsRole)
REFUSED = "closed 4401 (authentication_failed)"  # every anonymous cell: the handshake is refused
OK = "the success reply"


@dataclass(frozen=True)
class WsRow:
    type: ClientType
    expect: tuple[str, str, str, str, str, str]  # per WS_ROLES: OK (the success reply), "error <code>", or REFUSED
    reply: str  # the type of the success reply
    data: Callable[[World], dict[str, Any]] = lambda _world: {}
    variant: str = ""

    def __post_init__(self) -> None:
        assert len(self.expect) == len(WS_ROLES), self

    @property
    def name(self) -> str:
        return str(self.type) + (f" [{self.variant}]" if self.variant else "")

    def expected(self) -> list[tuple[WsRole, str]]:
        return [(role, self.reply if cell == OK else cell) for role, cell in zip(WS_ROLES, self.expect, strict=True)]


def err(code: str) -> str:
    return f"error {code}"


NOT_IN_ROOM = err("not_in_room")
FORBIDDEN = err("forbidden")
DENIED = err("access_denied")

# fmt: off
WS_ROWS: tuple[WsRow, ...] = (
    #     type                          anonymous stranger     member     owner operator     former member
    WsRow(ClientType.PING,             (REFUSED, OK,          OK,        OK,   OK,          OK),
          "pong", lambda _w: {"client_time": 1}),
    WsRow(ClientType.JOIN_ROOM,        (REFUSED, DENIED,      OK,        OK,   DENIED,      DENIED),
          "room_joined", lambda w: {"room_id": w.room}),
    WsRow(ClientType.LEAVE_ROOM,       (REFUSED, OK,          OK,        OK,   OK,          OK),
          "room_left"),
    WsRow(ClientType.GET_ROOM_STATE,   (REFUSED, NOT_IN_ROOM, OK,        OK,   NOT_IN_ROOM, DENIED),
          "room_state"),
    WsRow(ClientType.PLAYBACK_CONTROL, (REFUSED, NOT_IN_ROOM, FORBIDDEN, OK,   NOT_IN_ROOM, FORBIDDEN),
          "playback_control_success", lambda _w: {"action": "stop"}, variant="stop"),
    WsRow(ClientType.PLAYBACK_CONTROL, (REFUSED, NOT_IN_ROOM, FORBIDDEN, OK,   NOT_IN_ROOM, FORBIDDEN),
          "playback_control_success", lambda w: {"action": "play", "track_id": w.track}, variant="play"),
    WsRow(ClientType.VOTE_TRACK,       (REFUSED, NOT_IN_ROOM, OK,        OK,   NOT_IN_ROOM, FORBIDDEN),
          "vote_success", lambda w: {"track_id": w.track, "vote_type": "up"}, variant="up"),
    WsRow(ClientType.VOTE_TRACK,       (REFUSED, NOT_IN_ROOM, OK,        OK,   NOT_IN_ROOM, FORBIDDEN),
          "vote_success", lambda w: {"track_id": w.track, "vote_type": "remove"}, variant="remove"),
    WsRow(ClientType.GET_TRACK_QUEUE,  (REFUSED, NOT_IN_ROOM, OK,        OK,   NOT_IN_ROOM, FORBIDDEN),
          "track_queue"),
)
# fmt: on


async def answer_to(ws: AsyncWebSocketSession, request_type: str, reply: str) -> dict[str, Any]:
    """The answer to the message of ``request_type`` just sent (broadcasts in between are skipped), within WAIT."""
    deadline = time.monotonic() + WAIT
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"no answer to {request_type} within {WAIT}s")
        message = await receive(ws, remaining)
        if message["type"] == reply:
            return message
        if message["type"] == "error" and message["data"].get("request_type") == request_type:
            return message


def outcome(message: dict[str, Any]) -> str:
    return err(message["data"]["error_code"]) if message["type"] == "error" else str(message["type"])


async def anonymous_outcome(world: World, message: str) -> str:
    async with world.env.ws(None) as ws:
        with contextlib.suppress(WebSocketDisconnect):  # the server may have closed already: the message is moot
            await ws.send_text(message)
        code, _reason, seen = await closed_with(ws)
    answers = [outcome(m) for m in seen]
    if answers != [err("authentication_failed")]:
        return f"closed {code} after {answers}"
    return f"closed {code} (authentication_failed)"


async def former_member(world: World) -> Account:
    """A user who joined the room; their socket will join it too, then the membership row goes."""
    (account,) = await make_accounts(world.env.state, 1, world.unique("former-"))
    expect_status(await world.client.post(f"/api/rooms/{world.room}/join", headers=account.headers), 200)
    return account


async def drop_membership(world: World, account: Account) -> None:
    async with world.env.state.sessionmaker() as session:
        await session.execute(
            delete(RoomParticipant).where(
                RoomParticipant.room_id == uuid.UUID(world.room), RoomParticipant.user_id == uuid.UUID(account.id)
            )
        )
        await session.commit()
    # What the instance that handled the leave makes every instance do (its ``user_left`` event, through Redis): the
    # room's cached entries go. The socket, though, stays in the room here.
    await world.env.state.cache.invalidate_tags(room_tag(world.room))


async def run_ws_cell(world: World, row: WsRow, role: WsRole, expected: str) -> str | None:
    where = f"websocket {row.name} as {role}: expected {expected}"
    message = orjson.dumps({"type": str(row.type), "data": row.data(world)}).decode()
    if role is WsRole.ANONYMOUS:
        got = await anonymous_outcome(world, message)
        return None if got == expected else f"{where}, got {got}"
    people = {
        WsRole.STRANGER: world.stranger,
        WsRole.MEMBER: world.member,
        WsRole.OWNER: world.admin,
        WsRole.OPERATOR: world.operator,
    }
    account = await former_member(world) if role is WsRole.FORMER_MEMBER else people[role]
    async with world.env.ws(world.fresh_token(account)) as ws:
        hello = await receive(ws)
        assert hello["type"] == "connection_established", hello
        if row.type is not ClientType.JOIN_ROOM or role is WsRole.FORMER_MEMBER:
            # Every socket first asks for the room; the stranger's and the operator's asks are refused.
            await ws.send_text(send("join_room", room_id=world.room))
            joined = outcome(await answer_to(ws, "join_room", "room_joined"))
            member = role in (WsRole.MEMBER, WsRole.OWNER, WsRole.FORMER_MEMBER)
            if joined != ("room_joined" if member else DENIED):
                return f"{where}, but its join_room got {joined}"
        if role is WsRole.FORMER_MEMBER:
            await drop_membership(world, account)
        await ws.send_text(message)
        got = outcome(await answer_to(ws, str(row.type), row.reply))
    return None if got == expected else f"{where}, got {got}"


async def test_websocket_authorization_matrix(settings: Settings, tmp_path: Path) -> None:
    assert settings.env is Environment.TESTING
    async with running_app(settings, performance_admins=[OPERATOR_NAME]) as env:
        world = await build_world(env, tmp_path)
        failures, count = [], 0
        for row in WS_ROWS:
            for role, expected in row.expected():
                count += 1
                if (problem := await run_ws_cell(world, row, role, expected)) is not None:
                    failures.append(problem)
        assert not failures, f"{len(failures)} of {count} cells differ:\n" + "\n".join(failures)
