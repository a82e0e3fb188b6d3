"""Rooms and membership (docs/api.md#rooms; events per docs/decisions.md#d4; fixes per docs/decisions.md#d11)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from functools import partial
from typing import Any

from anyio import to_thread
from sqlalchemy.ext.asyncio import AsyncSession

from spotik.auth.models import User
from spotik.auth.schemas import user_full
from spotik.covers.storage import ROOM_COVERS, cover_urls
from spotik.db.base import utcnow, utcnow_seconds, uuid7
from spotik.db.upsert import insert_ignore
from spotik.errors import Forbidden, NotFound
from spotik.events import DomainEvent, EventBus
from spotik.reads import ROOM_STATE, ROOMS_TAG, Reads, room_tag, shared_tag
from spotik.rooms import repository
from spotik.rooms.models import Room, RoomParticipant
from spotik.rooms.schemas import NOBODY, for_viewer, participant_resource, room_resource, seen_by, without_viewer
from spotik.settings import Settings
from spotik.timefmt import iso, now_iso
from spotik.tracks.repository import queue_tracks, room_track_files, voted_track_ids
from spotik.tracks.service import remove_stored_files, voted_ids
from spotik.validation import Field, max_chars, parse_uuid, string, validate

NAME_FIELDS = {"name": Field((string, max_chars(100)))}


async def find_room(session: AsyncSession, room_id: object) -> Room:
    """A room by its id as a client wrote it: an unknown or malformed id is a 404 (never a 422 or a 500)."""
    parsed = parse_uuid(room_id)
    found = await repository.get_room(session, parsed) if parsed else None
    if found is None:
        raise NotFound("Room not found", error="Room not found")
    return found


@dataclass(frozen=True, slots=True)
class RoomRef:
    """What a cached read needs of its ``{room}``: that it exists, and who administers it (never changes)."""

    id: uuid.UUID
    administrator_id: uuid.UUID


async def find_room_ref(session: AsyncSession, reads: Reads, room_id: object) -> RoomRef:
    """``find_room`` for the cached reads: the room's id and administrator through the cache (``room_state``,
    ``<room>:ref``, tagged with the room, so it goes with the room's deletion); the same 404s."""
    parsed = parse_uuid(room_id)
    if parsed is None:
        raise NotFound("Room not found", error="Room not found")

    async def build(own: AsyncSession) -> dict[str, str]:
        found = await repository.get_room(own, parsed)
        if found is None:
            raise NotFound("Room not found", error="Room not found")
        return {"administrator_id": str(found.administrator_id)}

    entry = await reads.through(ROOM_STATE, f"{parsed}:ref", build, session=session, tags=(room_tag(parsed),))
    return RoomRef(parsed, uuid.UUID(entry["administrator_id"]))


async def list_rooms(session: AsyncSession, reads: Reads, settings: Settings, *, viewer: User) -> list[dict[str, Any]]:
    """``GET /api/rooms``: one cached list (``room_state``, ``list``, tagged ``rooms``: any event of any room and
    every new room drop it) as nobody in particular sees it, with the viewer's flags laid over each room."""

    async def build(own: AsyncSession) -> list[dict[str, Any]]:
        rooms = await repository.rooms_with_graph(own)
        ids = [room.id for room in rooms]
        counts = await repository.track_counts(own, ids)
        covers = await to_thread.run_sync(cover_urls, settings.public_root, ROOM_COVERS, ids)
        return [
            room_resource(room, viewer_id=NOBODY, track_count=counts.get(room.id, 0), cover_url=covers.get(room.id))
            for room in rooms
        ]

    rooms = await reads.through(ROOM_STATE, "list", build, session=session, tags=(ROOMS_TAG,))
    return [seen_by(room, viewer.id) for room in rooms]


async def room_payload(
    session: AsyncSession, settings: Settings, room_id: uuid.UUID, *, viewer: User
) -> dict[str, Any]:
    """The room as ``viewer`` sees it (with ``user`` = the viewer), without the queue."""
    room = await repository.room_with_graph(session, room_id)
    if room is None:
        raise NotFound("Room not found", error="Room not found")
    voted = await voted_track_ids(session, viewer.id, room_id) if room.current_track_id else frozenset()
    covers = await to_thread.run_sync(cover_urls, settings.public_root, ROOM_COVERS, [room_id])
    return room_resource(
        room,
        viewer_id=viewer.id,
        track_count=(await repository.track_counts(session, [room_id])).get(room_id, 0),
        cover_url=covers.get(room_id),
        voted_track_ids=voted,
        viewer=viewer,
    )


async def room_detail(
    session: AsyncSession, reads: Reads, settings: Settings, room_id: uuid.UUID, *, viewer: User
) -> dict[str, Any]:
    """The room with its queue as ``viewer`` sees it (``GET /api/rooms/{room}``, the WebSocket's room state): the
    room's one cached state, with the viewer's part (``user``, ``is_*``, ``has_voted``) laid over it."""
    state = await room_state(session, reads, settings, room_id)
    return for_viewer(state, viewer, await voted_ids(session, reads, room_id, viewer.id))


async def room_state(session: AsyncSession, reads: Reads, settings: Settings, room_id: uuid.UUID) -> dict[str, Any]:
    """The room with its queue as nobody in particular sees it (see ``for_viewer``); a fresh copy."""

    async def build(own: AsyncSession) -> dict[str, Any]:
        room = await repository.room_with_graph(own, room_id)
        if room is None:
            raise NotFound("Room not found", error="Room not found")
        queue = list(await queue_tracks(own, room_id))
        covers = await to_thread.run_sync(cover_urls, settings.public_root, ROOM_COVERS, [room_id])
        return room_resource(
            room, viewer_id=NOBODY, track_count=len(queue), cover_url=covers.get(room_id), track_queue=queue
        )

    tags = (room_tag(room_id), shared_tag(room_id))
    return await reads.through(ROOM_STATE, str(room_id), build, session=session, tags=tags)


async def create_room(
    session: AsyncSession, reads: Reads, settings: Settings, *, creator: User, data: dict[str, Any]
) -> dict[str, Any]:
    values = validate(data, NAME_FIELDS)
    room = Room(name=values["name"], administrator_id=creator.id)
    session.add(room)
    await session.flush()
    session.add(RoomParticipant(room_id=room.id, user_id=creator.id))
    await session.commit()
    await reads.cache.invalidate_tags(ROOMS_TAG)  # a new room publishes no event (nobody is in it to hear one)
    return await room_payload(session, settings, room.id, viewer=creator)


def _require_admin(room: Room, user: User, action: str) -> None:
    if room.administrator_id != user.id:
        raise Forbidden(f"Unauthorized. Only room administrator can {action}.", error="Insufficient permissions")


async def update_room(
    session: AsyncSession, settings: Settings, bus: EventBus, *, room: Room, user: User, data: dict[str, Any]
) -> dict[str, Any]:
    _require_admin(room, user, "update room settings")
    fields = {"name": NAME_FIELDS["name"]} if "name" in data else {}
    values = validate(data, fields)
    if "name" in values:
        room.name = values["name"]
        room.updated_at = utcnow_seconds()
    await session.commit()
    payload = await room_payload(session, settings, room.id, viewer=user)
    if values:
        await bus.publish(
            DomainEvent(
                "room_updated",
                room.id,
                {"room_id": str(room.id), "room": without_viewer(payload), "timestamp": now_iso()},
            )
        )
    return payload


async def delete_room(session: AsyncSession, settings: Settings, bus: EventBus, *, room: Room, user: User) -> None:
    _require_admin(room, user, "delete the room")
    files = await room_track_files(session, room.id)
    room_id, room_name = room.id, room.name
    await repository.delete_room(session, room_id)  # tracks, votes, memberships cascade
    await session.commit()
    # Files go after the commit: a failed delete must not leave rows pointing at missing files.
    await to_thread.run_sync(partial(remove_stored_files, settings, files, room_id=room_id))
    await bus.publish(
        DomainEvent(
            "room_deleted",
            room_id,
            {
                "room_id": str(room_id),
                "room_name": room_name,
                "reason": "deleted_by_administrator",
                "timestamp": now_iso(),
            },
        )
    )


async def _membership_event(session: AsyncSession, kind: str, room: Room, user: User, message: str) -> DomainEvent:
    participants = await repository.participants_with_users(session, room.id)
    entries = [participant_resource(p, administrator_id=room.administrator_id) for p in participants]
    # The client pushes ``user`` into its participant list as it is, next to REST entries: same shape.
    entry = next((e for e in entries if e["id"] == str(user.id)), None)
    person = {**user_full(user), **(entry or {"user_id": str(user.id), "user": user_full(user)})}
    return DomainEvent(
        kind,
        room.id,
        {
            "room_id": str(room.id),
            "user": person,
            "participant_count": len(participants),
            "participants": entries,
            "message": message,
            "timestamp": now_iso(),
        },
    )


async def join_room(
    session: AsyncSession, settings: Settings, bus: EventBus, *, room: Room, user: User
) -> tuple[bool, dict[str, Any]]:
    """Idempotent: joining twice answers with the existing membership (the client re-joins on reconnect)."""
    inserted = await insert_ignore(
        session,
        RoomParticipant.__table__,  # type: ignore[arg-type]
        {"id": uuid7(), "room_id": room.id, "user_id": user.id, "joined_at": utcnow()},
    )
    await session.commit()
    membership = await repository.membership(session, room.id, user.id)
    assert membership is not None
    payload = {
        "room": await room_payload(session, settings, room.id, viewer=user),
        "participant": {
            "id": str(membership.id),
            "room_id": str(membership.room_id),
            "user_id": str(membership.user_id),
            "joined_at": now_iso() if membership.joined_at is None else _iso(membership),
        },
    }
    if inserted:
        await bus.publish(
            await _membership_event(session, "user_joined", room, user, f"{user.username} joined the room")
        )
    return inserted, payload


def _iso(membership: RoomParticipant) -> str:

    return iso(membership.joined_at) or ""


async def leave_room(session: AsyncSession, bus: EventBus, *, room: Room, user: User) -> None:
    if room.administrator_id == user.id:
        raise Forbidden(
            "Room administrator cannot leave the room. Delete the room instead.", error="Administrator cannot leave"
        )
    if not await repository.remove_member(session, room.id, user.id):
        raise NotFound("You are not a participant in this room", error="Not a participant")
    await session.commit()
    await bus.publish(await _membership_event(session, "user_left", room, user, f"{user.username} left the room"))


async def list_participants(session: AsyncSession, *, room: Room) -> list[dict[str, Any]]:
    participants = await repository.participants_with_users(session, room.id)
    return [participant_resource(p, administrator_id=room.administrator_id) for p in participants]
