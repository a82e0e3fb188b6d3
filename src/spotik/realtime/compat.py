"""Follow-up messages for the original web client (docs/api.md#follow-ups-for-the-original-web-client), which
ignores some of the room events (docs/decisions.md#d4).

The Vue client's native-mode handler has no case for ``playback_stopped``, ``playback_seeked`` or ``room_updated``:
an administrator's stop would leave every listener's audio playing, a seek would move nobody, and a rename or a new
cover would show only after a reload. After each of those events the gateway therefore sends, to the same room, the
message the client does handle that produces the same state:

* ``playback_stopped`` → ``track_skipped`` with ``next_track: null`` (the client clears the current track and stops);
* ``playback_seeked`` → ``playback_started`` with the pause-adjusted start while playing (the client's position is
  ``now − playback_started_at``), or ``playback_paused`` with the new position while paused;
* ``room_updated`` → ``room_state_updated {room}`` (the client merges ``room`` into the room it shows).

Every follow-up carries ``follows: <event type>`` so that a client that handles that event type itself can skip it.
``track_removed`` has no counterpart in the client (it never removes a queue entry on an event); removing the
playing track also stops playback, which is covered above. ``WS_CLIENT_COMPAT_EVENTS=false`` switches this off.
"""

from __future__ import annotations

from typing import Any


def followups(event_type: str, data: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """The messages to send after the room event ``event_type`` with payload ``data`` (none for most events)."""
    if event_type == "playback_stopped":
        return [
            (
                "track_skipped",
                {
                    **data,
                    "skipped_track": data.get("previous_track"),
                    "next_track": None,
                    "new_track": None,
                    "follows": event_type,
                },
            )
        ]
    if event_type == "playback_seeked":
        if data.get("is_playing"):
            started = {"started_at": data.get("playback_started_at"), "position": 0, "current_position": 0}
            return [("playback_started", {**data, **started, "follows": event_type})]
        return [("playback_paused", {**data, "paused_at": data.get("playback_paused_at"), "follows": event_type})]
    if event_type == "room_updated" and isinstance(data.get("room"), dict):
        return [("room_state_updated", {"room": data["room"], "follows": event_type})]
    return []
