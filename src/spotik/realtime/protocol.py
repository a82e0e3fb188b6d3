"""The WebSocket protocol (docs/api.md#websocket, docs/decisions.md#d3): envelopes, message types and close codes,
in one place.

Server → client frames are ``{type, data, timestamp}`` (text frames, JSON, timestamps per docs/decisions.md#d2);
client → server frames are ``{type, data}``. Every frame is encoded once with orjson and the same ``Outgoing``
object is queued to every socket that should receive it, so a broadcast to a thousand sockets costs one encoding.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any, Final

import orjson
from websockets.frames import Frame, Opcode

from spotik.timefmt import now_iso


class CloseCode(IntEnum):
    NORMAL = 1000
    GOING_AWAY = 1001  # server shutdown
    MESSAGE_TOO_BIG = 1009  # a client frame over the size limit
    INTERNAL_ERROR = 1011
    TRY_AGAIN_LATER = 1013  # slow consumer, or the database is unavailable: the client reconnects and re-joins
    UNAUTHORIZED = 4401  # bad, expired or revoked token
    FORBIDDEN = 4403  # Origin not allowed
    INACTIVE = 4408  # nothing received (no message, no pong) for longer than the activity timeout
    TOO_MANY = 4429  # connection limits (total or per room)


class ClientType(StrEnum):
    PING = "ping"
    JOIN_ROOM = "join_room"
    LEAVE_ROOM = "leave_room"
    GET_ROOM_STATE = "get_room_state"
    PLAYBACK_CONTROL = "playback_control"
    VOTE_TRACK = "vote_track"
    GET_TRACK_QUEUE = "get_track_queue"


class ServerType(StrEnum):
    CONNECTION_ESTABLISHED = "connection_established"
    PONG = "pong"
    ERROR = "error"
    ROOM_JOINED = "room_joined"
    ROOM_LEFT = "room_left"
    ROOM_STATE = "room_state"
    USER_CONNECTED = "user_connected_websocket"
    USER_DISCONNECTED = "user_disconnected_websocket"
    PLAYBACK_CONTROL_SUCCESS = "playback_control_success"
    VOTE_SUCCESS = "vote_success"
    TRACK_QUEUE = "track_queue"


class ErrorCode(StrEnum):
    AUTHENTICATION_FAILED = "authentication_failed"
    ORIGIN_NOT_ALLOWED = "origin_not_allowed"
    CONNECTION_LIMIT = "connection_limit"
    ROOM_CONNECTION_LIMIT = "room_connection_limit"
    SERVER_SHUTTING_DOWN = "server_shutting_down"
    SERVER_BUSY = "server_busy"
    INVALID_JSON = "invalid_json"
    INVALID_MESSAGE = "invalid_message"
    MESSAGE_TOO_BIG = "message_too_big"
    UNKNOWN_MESSAGE_TYPE = "unknown_message_type"
    MISSING_ROOM_ID = "missing_room_id"
    ROOM_NOT_FOUND = "room_not_found"
    ACCESS_DENIED = "access_denied"
    NOT_IN_ROOM = "not_in_room"
    VALIDATION_FAILED = "validation_failed"
    NOT_FOUND = "not_found"
    FORBIDDEN = "forbidden"
    BAD_REQUEST = "bad_request"
    CONFLICT = "conflict"
    NOT_AVAILABLE = "not_available"
    INTERNAL_ERROR = "internal_error"


# Room events that are never dropped from a slow client's queue: each one changes what the client plays, and each
# payload is self-contained (full track, timestamps), so it may overtake queued non-critical messages safely.
# The database is down or its pool exhausted: the socket is refused with 1013, or the message is answered with it.
SERVER_BUSY_MESSAGE: Final = "The server is busy, try again later"
CRITICAL_EVENT_TYPES: Final = frozenset({"track_skipped", "room_deleted", ServerType.ERROR.value})


def is_critical(message_type: str) -> bool:
    return message_type.startswith("playback_") or message_type in CRITICAL_EVENT_TYPES


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One encoded message, shared by every socket it is queued to. ``frame`` is the complete WebSocket frame a
    server sends for it (unmasked, uncompressed): the same bytes for every subscriber, so a broadcast frames it once
    (see ``ServerHooks.write_frame``)."""

    text: str
    size: int  # bytes of the payload (UTF-8), for the counters
    critical: bool
    type: str
    frame: bytes

    @classmethod
    def of(cls, raw: bytes, message_type: str, *, critical: bool) -> Outgoing:
        return cls(raw.decode(), len(raw), critical, message_type, Frame(Opcode.TEXT, raw).serialize(mask=False))


def encode(message_type: str, data: dict[str, Any], *, critical: bool | None = None) -> Outgoing:
    raw = orjson.dumps({"type": message_type, "data": data, "timestamp": now_iso()}, option=orjson.OPT_NON_STR_KEYS)
    critical = is_critical(message_type) if critical is None else critical
    return Outgoing.of(raw, str(message_type), critical=critical)


def reply(message_type: str, data: dict[str, Any]) -> Outgoing:
    """A direct answer to the client's own request: never dropped (a client gets only as many as it asks for)."""
    return encode(message_type, data, critical=True)


def error(code: ErrorCode | str, message: str, **extra: Any) -> Outgoing:
    return encode(ServerType.ERROR, {"error_code": str(code), "message": message, **extra}, critical=True)


def room_broadcast(event_type: str, room_id: str, data: dict[str, Any], *, occurred_at: str | None = None) -> Outgoing:
    """docs/decisions.md#d4: ``data`` gains ``room_id``, ``timestamp`` and ``server_time``; a service's own values
    win (they are the instants of the change), the rest is filled in now."""
    now = now_iso()
    payload = dict(data)
    payload["room_id"] = room_id
    payload.setdefault("timestamp", occurred_at or now)
    payload.setdefault("server_time", now)
    return encode(event_type, payload)


@dataclass(frozen=True, slots=True)
class ClientMessage:
    type: str
    data: dict[str, Any]


# Client messages are two or three levels deep. orjson reads up to 1024 levels but writes at most 254, so a deeper
# value echoed back (``ping``'s ``client_time``) could not even be encoded: such a message is refused when it arrives.
MAX_DEPTH: Final = 32


def _deeper_than(value: Any, limit: int) -> bool:
    """Whether ``value`` (parsed JSON) nests containers more than ``limit`` levels deep; iterative, no recursion."""
    level: list[Any] = [value]
    depth = 0
    while level:
        depth += 1
        if depth > limit:
            return True
        children: list[Any] = []
        for item in level:
            if isinstance(item, dict):
                children.extend(child for child in item.values() if isinstance(child, dict | list))
            elif isinstance(item, list):
                children.extend(child for child in item if isinstance(child, dict | list))
        level = children
    return False


class ProtocolError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def parse(text: str | bytes) -> ClientMessage:
    """``{type, data}``; ``data`` may be omitted. Raises ``ProtocolError`` for anything else."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError:
        raise ProtocolError(ErrorCode.INVALID_JSON, "Invalid JSON message") from None
    if not isinstance(value, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "A message must be a JSON object with a type")
    if _deeper_than(value, MAX_DEPTH):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, f"A message may not be nested more than {MAX_DEPTH} levels deep")
    message_type = value.get("type")
    if not isinstance(message_type, str) or not message_type:
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "A message must have a string type")
    data = value.get("data")
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ProtocolError(ErrorCode.INVALID_MESSAGE, "The data of a message must be a JSON object")
    return ClientMessage(message_type, data)
