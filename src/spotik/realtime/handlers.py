"""Client message types (docs/api.md#client-messages). A message that has a REST twin runs the same service
function, with the same authorization rule and validation: ``playback_control`` is ``playback.service.control``,
``vote_track`` is ``tracks.service.vote``/``unvote``, ``get_track_queue`` is ``tracks.service.list_queue``.

``join_room`` needs a membership row (REST join first) and is idempotent; a refusal is an ``error`` message and the
socket stays open: the web client shows ``message`` and re-sends ``join_room`` on every reconnect, so closing with
4403 here would only start a reconnect loop. (4403 is the answer to a forbidden *connection*: an Origin that is not
allowed.) ``leave_room`` and closing a socket never remove the membership.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from spotik.auth import service as auth_service
from spotik.auth.models import User
from spotik.db.base import utcnow
from spotik.errors import ApiError, NotFound
from spotik.events import EventBus
from spotik.playback import service as playback_service
from spotik.reads import Reads
from spotik.realtime import protocol
from spotik.realtime.connection import Connection
from spotik.realtime.presence import Presence, presence_announcement, presence_summary
from spotik.realtime.protocol import ClientMessage, ClientType, CloseCode, ErrorCode, ServerType
from spotik.realtime.registry import Refusal
from spotik.rooms import repository as rooms_repository
from spotik.rooms import service as rooms_service
from spotik.rooms.models import Room
from spotik.settings import Settings
from spotik.timefmt import now_iso
from spotik.tracks import service as tracks_service
from spotik.validation import parse_uuid


class Gateway(Protocol):
    """What the handlers use of the gateway (``spotik.realtime.gateway.Realtime``)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def sessionmaker(self) -> async_sessionmaker[AsyncSession]: ...
    @property
    def events(self) -> EventBus: ...
    @property
    def presence(self) -> Presence: ...
    @property
    def reads(self) -> Reads: ...

    def join_room(self, connection: Connection, room_id: str) -> Refusal | None: ...
    def leave_room(self, connection: Connection) -> str | None: ...
    def broadcast(self, room_id: str, event_type: str, data: dict[str, Any]) -> None: ...


log = structlog.get_logger("spotik.realtime.handlers")

Handler = Callable[[Connection, dict[str, Any]], Awaitable[None]]

STATUS_ERROR_CODES = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.AUTHENTICATION_FAILED,
    403: ErrorCode.FORBIDDEN,
    404: ErrorCode.NOT_FOUND,
    409: ErrorCode.CONFLICT,
    422: ErrorCode.VALIDATION_FAILED,
}


VOTE_TYPES = ("up", "remove")
# ``start`` is the web client's name for ``play``.
PLAYBACK_ACTIONS = {"start": playback_service.Action.PLAY} | {a.value: a for a in playback_service.Action}


class HandlerError(Exception):
    def __init__(self, code: ErrorCode, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.extra = extra


class Handlers:
    def __init__(self, realtime: Gateway) -> None:
        self.realtime = realtime
        self.table: dict[str, Handler] = {
            ClientType.PING: self.ping,
            ClientType.JOIN_ROOM: self.join_room,
            ClientType.LEAVE_ROOM: self.leave_room,
            ClientType.GET_ROOM_STATE: self.get_room_state,
            ClientType.PLAYBACK_CONTROL: self.playback_control,
            ClientType.VOTE_TRACK: self.vote_track,
            ClientType.GET_TRACK_QUEUE: self.get_track_queue,
        }

    async def dispatch(self, connection: Connection, message: ClientMessage) -> None:
        handler = self.table.get(message.type)
        if handler is None:
            connection.enqueue(
                protocol.error(
                    ErrorCode.UNKNOWN_MESSAGE_TYPE,
                    f"Unknown message type: {message.type[:64]}",
                    request_type=message.type[:64],
                )
            )
            return
        try:
            await handler(connection, message.data)
        except HandlerError as exc:
            connection.enqueue(protocol.error(exc.code, exc.message, request_type=message.type, **exc.extra))
        except ApiError as exc:
            extra: dict[str, Any] = {"request_type": message.type, "status": exc.status_code}
            if exc.errors:
                extra["errors"] = exc.errors
            code = STATUS_ERROR_CODES.get(exc.status_code, ErrorCode.BAD_REQUEST)
            connection.enqueue(protocol.error(code, exc.message, **extra))
        except (SQLAlchemyError, OSError, TimeoutError) as exc:  # database down or pool exhausted
            log.warning("websocket handler unavailable", type=message.type, error=f"{type(exc).__name__}: {exc}")
            busy = protocol.error(ErrorCode.SERVER_BUSY, protocol.SERVER_BUSY_MESSAGE, request_type=message.type)
            connection.enqueue(busy)
        except Exception:
            log.exception("websocket handler failed", type=message.type, connection_id=connection.id)
            connection.enqueue(
                protocol.error(
                    ErrorCode.INTERNAL_ERROR, "The server could not handle this message", request_type=message.type
                )
            )

    # --- helpers ---------------------------------------------------------------------------------------------

    async def _user(self, session: AsyncSession, connection: Connection) -> User:
        user = await auth_service.cached_user(session, self.realtime.reads, uuid.UUID(connection.user_id))
        if user is None:
            raise HandlerError(ErrorCode.AUTHENTICATION_FAILED, "User not found")
        return user

    def _current_room(self, connection: Connection) -> uuid.UUID:
        if connection.room_id is None:
            raise HandlerError(ErrorCode.NOT_IN_ROOM, "Join a room first (join_room)")
        return uuid.UUID(connection.room_id)

    async def _require_member(self, session: AsyncSession, connection: Connection, room_id: uuid.UUID) -> None:
        if not await rooms_repository.is_member(session, room_id, uuid.UUID(connection.user_id)):
            if connection.room_id == str(room_id):
                self.realtime.leave_room(connection)
            raise HandlerError(ErrorCode.ACCESS_DENIED, "You are not a member of this room. Join it first.")

    # --- message types ---------------------------------------------------------------------------------------

    async def ping(self, connection: Connection, data: dict[str, Any]) -> None:
        received = now_iso()
        sent = now_iso()
        connection.enqueue(
            protocol.reply(
                ServerType.PONG,
                {
                    "client_time": data.get("client_time"),
                    "server_receive_time": received,
                    "server_send_time": sent,
                    "server_time": sent,
                },
            )
        )

    async def join_room(self, connection: Connection, data: dict[str, Any]) -> None:
        raw = data.get("room_id")
        if raw is None or raw == "":
            raise HandlerError(ErrorCode.MISSING_ROOM_ID, "room_id is required")
        room_uuid = parse_uuid(raw)
        if room_uuid is None:
            raise HandlerError(ErrorCode.ROOM_NOT_FOUND, "Room not found")
        room_id = str(room_uuid)
        realtime = self.realtime
        async with realtime.sessionmaker() as session:
            await self._find_room(session, connection, room_uuid)
            await self._require_member(session, connection, room_uuid)
            user = await self._user(session, connection)
            already = connection.room_id == room_id
            if not already:
                refusal = realtime.join_room(connection, room_id)
                if refusal is not None:
                    connection.enqueue(protocol.error(refusal.error_code, refusal.reason, request_type="join_room"))
                    connection.close(refusal.code, refusal.reason)
                    return
            try:
                room = await rooms_service.room_detail(
                    session, realtime.reads, realtime.settings, room_uuid, viewer=user
                )
            except ApiError:
                realtime.leave_room(connection)
                raise
        if not already:
            await realtime.presence.changed(room_id)
        online = await realtime.presence.online(room_id)
        presence = presence_summary(online)
        connection.enqueue(
            protocol.reply(
                ServerType.ROOM_JOINED,
                {
                    "room": room,
                    "message": "Already in this room" if already else f"Successfully joined room {room['name']}",
                    "websocket_connected": True,
                    "connection_id": connection.id,
                    **presence,
                },
            )
        )
        if not already:
            realtime.broadcast(
                room_id,
                ServerType.USER_CONNECTED,
                presence_announcement(connection.user, online, f"{connection.username} connected to the room"),
            )

    async def leave_room(self, connection: Connection, data: dict[str, Any]) -> None:
        room_id = self.realtime.leave_room(connection)
        message = "Left the room" if room_id else "You are not in a room"
        connection.enqueue(protocol.reply(ServerType.ROOM_LEFT, {"room_id": room_id, "message": message}))

    async def get_room_state(self, connection: Connection, data: dict[str, Any]) -> None:
        room_uuid = self._current_room(connection)
        async with self.realtime.sessionmaker() as session:
            await self._require_member(session, connection, room_uuid)
            user = await self._user(session, connection)
            room = await rooms_service.room_detail(
                session, self.realtime.reads, self.realtime.settings, room_uuid, viewer=user
            )
        presence = presence_summary(await self.realtime.presence.online(str(room_uuid)))
        connection.enqueue(
            protocol.reply(
                ServerType.ROOM_STATE,
                {"room": room, "websocket_connected": True, "connection_id": connection.id, **presence},
            )
        )

    async def playback_control(self, connection: Connection, data: dict[str, Any]) -> None:
        """``POST /api/rooms/{room}/…/play|pause|resume|skip|stop|seek`` over the socket, for the joined room."""
        raw_action = data.get("action")
        # Only a string can name an action (a list or an object is not even hashable).
        action = PLAYBACK_ACTIONS.get(raw_action) if isinstance(raw_action, str) else None
        if action is None:
            choices = ", ".join(PLAYBACK_ACTIONS)
            raise HandlerError(
                ErrorCode.VALIDATION_FAILED,
                "Validation failed",
                errors={"action": [f"The selected action is invalid ({choices})."]},
            )
        async with self.realtime.sessionmaker() as session:
            room = await self._room(session, connection)
            user = await self._user(session, connection)
            outcome = await playback_service.control(
                session, self.realtime.events, room=room, user=user, action=action, data=data
            )
        reply = {"action": data["action"], "result": outcome.data(utcnow()), "message": outcome.message}
        connection.enqueue(protocol.reply(ServerType.PLAYBACK_CONTROL_SUCCESS, reply))

    async def _room(self, session: AsyncSession, connection: Connection) -> Room:
        """The joined room; a room deleted since is left."""
        room_uuid = self._current_room(connection)
        return await self._find_room(session, connection, room_uuid)

    async def _find_room(self, session: AsyncSession, connection: Connection, room_id: uuid.UUID) -> Room:
        try:
            return await rooms_service.find_room(session, room_id)
        except NotFound:
            if connection.room_id == str(room_id):
                self.realtime.leave_room(connection)
            raise HandlerError(ErrorCode.ROOM_NOT_FOUND, "Room not found") from None

    async def vote_track(self, connection: Connection, data: dict[str, Any]) -> None:
        """``POST``/``DELETE /api/rooms/{room}/tracks/{track}/vote`` over the socket, in the joined room."""
        vote_type = data.get("vote_type", "up")
        errors: dict[str, list[str]] = {}
        if data.get("track_id") in (None, ""):
            errors["track_id"] = ["The track id field is required."]
        if vote_type not in VOTE_TYPES:
            errors["vote_type"] = ["The selected vote type is invalid (up or remove)."]
        if errors:
            raise HandlerError(ErrorCode.VALIDATION_FAILED, "Validation failed", errors=errors)
        async with self.realtime.sessionmaker() as session:
            room = await self._room(session, connection)
            track = await tracks_service.find_track(session, data["track_id"])
            user = await self._user(session, connection)
            change = tracks_service.vote if vote_type == "up" else tracks_service.unvote
            result = await change(session, self.realtime.events, room=room, track=track, user=user)
        connection.enqueue(
            protocol.reply(
                ServerType.VOTE_SUCCESS,
                {
                    "track_id": str(track.id),
                    "vote_type": vote_type,
                    "vote_score": result.vote_score,
                    "user_has_voted": result.user_has_voted,
                    "message": result.message,
                },
            )
        )

    async def get_track_queue(self, connection: Connection, data: dict[str, Any]) -> None:
        """``GET /api/rooms/{room}/tracks`` over the socket, for the joined room."""
        settings = self.realtime.settings
        async with self.realtime.sessionmaker() as session:
            room = await self._room(session, connection)
            user = await self._user(session, connection)
            queue = await tracks_service.list_queue(
                session, self.realtime.reads, room_id=room.id, user=user, public_root=settings.public_root
            )
        connection.enqueue(
            protocol.reply(
                ServerType.TRACK_QUEUE,
                {
                    "room_id": str(room.id),
                    "tracks": queue["tracks"],
                    "total_count": queue["total_count"],
                    "server_time": now_iso(),
                },
            )
        )


__all__ = ["CloseCode", "HandlerError", "Handlers"]
