"""The connection registry: every open connection, the rooms they joined, limits.

Single-threaded by construction (one event loop), so check-then-add is atomic as long as no ``await`` separates
them — and nothing here awaits. Room ids are strings throughout the real-time layer (they arrive as strings from
Redis and from clients).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from spotik.realtime.connection import Connection
from spotik.realtime.protocol import Outgoing


@dataclass(frozen=True, slots=True)
class Refusal:
    code: int
    error_code: str
    reason: str


class Registry:
    def __init__(self, *, max_connections: int, max_per_room: int) -> None:
        self.max_connections = max_connections
        self.max_per_room = max_per_room
        self._connections: dict[str, Connection] = {}
        self._rooms: dict[str, dict[Connection, None]] = {}
        self.total_accepted = 0
        self.total_refused = 0
        self.total_closed = 0
        self.delivered = 0
        self.dropped_on_closed = 0

    # --- lookup ------------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._connections)

    def __iter__(self) -> Iterator[Connection]:
        return iter(list(self._connections.values()))

    def get(self, connection_id: str) -> Connection | None:
        return self._connections.get(connection_id)

    def room_connections(self, room_id: str) -> list[Connection]:
        return list(self._rooms.get(room_id, ()))

    def room_size(self, room_id: str) -> int:
        return len(self._rooms.get(room_id, ()))

    def rooms(self) -> list[str]:
        return list(self._rooms)

    def user_counts(self, room_id: str) -> dict[str, int]:
        """Sockets per user in ``room_id`` on this instance."""
        counts: dict[str, int] = {}
        for connection in self._rooms.get(room_id, ()):
            counts[connection.user_id] = counts.get(connection.user_id, 0) + 1
        return counts

    def user_connections(self, room_id: str, user_id: str) -> list[Connection]:
        return [c for c in self._rooms.get(room_id, ()) if c.user_id == user_id]

    # --- membership of the registry ----------------------------------------------------------------------------

    def admission(self) -> Refusal | None:
        if len(self._connections) >= self.max_connections:
            return Refusal(4429, "connection_limit", f"connection limit reached ({self.max_connections})")
        return None

    def add(self, connection: Connection) -> Refusal | None:
        refusal = self.admission()
        if refusal is not None:
            self.total_refused += 1
            return refusal
        self._connections[connection.id] = connection
        self.total_accepted += 1
        return None

    def remove(self, connection: Connection) -> str | None:
        """Forget ``connection`` (idempotent); returns the room it was in."""
        room_id = self.leave(connection)
        if self._connections.pop(connection.id, None) is not None:
            self.total_closed += 1
        return room_id

    # --- rooms -------------------------------------------------------------------------------------------------

    def join(self, connection: Connection, room_id: str) -> Refusal | None:
        """Put ``connection`` in ``room_id`` (leaving its previous room). Joining the room it is in is a no-op."""
        if connection.room_id == room_id:
            return None
        if connection.id not in self._connections:
            return Refusal(1001, "connection_closed", "connection is closing")
        if self.room_size(room_id) >= self.max_per_room:
            self.total_refused += 1
            return Refusal(4429, "room_connection_limit", f"room connection limit reached ({self.max_per_room})")
        self.leave(connection)
        self._rooms.setdefault(room_id, {})[connection] = None
        connection.room_id = room_id
        return None

    def leave(self, connection: Connection) -> str | None:
        room_id = connection.room_id
        if room_id is None:
            return None
        members = self._rooms.get(room_id)
        if members is not None:
            members.pop(connection, None)
            if not members:
                del self._rooms[room_id]
        connection.room_id = None
        return room_id

    def clear_room(self, room_id: str) -> list[Connection]:
        members = self._rooms.pop(room_id, {})
        for connection in members:
            connection.room_id = None
        return list(members)

    # --- delivery ----------------------------------------------------------------------------------------------

    def deliver(self, room_id: str, item: Outgoing) -> int:
        """Queue ``item`` to every socket in the room; never awaits, whatever the sockets do."""
        members = self._rooms.get(room_id)
        if not members:
            return 0
        delivered = 0
        for connection in list(members):
            if connection.enqueue(item):
                delivered += 1
            else:
                self.dropped_on_closed += 1
        self.delivered += delivered
        return delivered

    def deliver_all(self, item: Outgoing) -> int:
        delivered = 0
        for connection in list(self._connections.values()):
            delivered += connection.enqueue(item)
        return delivered

    # --- figures -----------------------------------------------------------------------------------------------

    def stats(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        connections = list(self._connections.values())
        depths = [c.queue_depth for c in connections]
        return {
            "connections": len(connections),
            "max_connections": self.max_connections,
            "max_connections_per_room": self.max_per_room,
            "rooms": {room_id: len(members) for room_id, members in self._rooms.items()},
            "users": len({c.user_id for c in connections}),
            "total_accepted": self.total_accepted,
            "total_refused": self.total_refused,
            "total_closed": self.total_closed,
            "delivered": self.delivered,
            "queued_messages": sum(depths),
            "max_queue_depth": max((c.max_depth for c in connections), default=0),
            "dropped_messages": sum(c.dropped for c in connections),
            "messages_in": sum(c.messages_in for c in connections),
            "messages_out": sum(c.messages_out for c in connections),
            "bytes_in": sum(c.bytes_in for c in connections),
            "bytes_out": sum(c.bytes_out for c in connections),
            "oldest_idle_seconds": round(max((loop.time() - c.last_activity() for c in connections), default=0.0), 3),
        }
