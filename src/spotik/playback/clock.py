"""The playback clock: pure arithmetic on a room's playback columns (docs/api.md#playback-clock, the *intended*
semantics).

A room's playback is four columns: ``current_track_id``, ``playback_started_at`` (S), ``playback_paused_at`` (P)
and ``is_playing``. S is the *virtual start*: the instant the track would have started had it never been paused or
sought, so that

* while playing, position = now − S;
* while paused, position = P − S;
* resuming at R moves the virtual start forward by the pause length: S := S + (R − P), P := null
  (Laravel got the sign wrong, docs/decisions.md#b13; we do not reproduce that);
* seeking to x at instant N: S := N − x, and P := N if paused (so P − S = x);
* the current track is over once now ≥ S + duration while playing; paused rooms are never due.

Nothing here touches the database or the wall clock: every function takes ``now``.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

# Julian day number of the Unix epoch: SQLite's julianday() is converted to Unix seconds with it.
JULIAN_DAY_OF_UNIX_EPOCH = 2440587.5
SECONDS_PER_DAY = 86400.0


@dataclass(frozen=True, slots=True)
class PlaybackState:
    """A snapshot of the room's four playback columns."""

    current_track_id: uuid.UUID | None
    started_at: datetime | None
    paused_at: datetime | None
    is_playing: bool

    @property
    def is_idle(self) -> bool:
        return self.current_track_id is None and not self.is_playing

    @property
    def is_active(self) -> bool:
        """Playing a track (the precondition of pause)."""
        return self.is_playing and self.current_track_id is not None and self.started_at is not None

    @property
    def is_paused(self) -> bool:
        """Paused on a track (the precondition of resume)."""
        return (
            not self.is_playing
            and self.current_track_id is not None
            and self.started_at is not None
            and self.paused_at is not None
        )


IDLE = PlaybackState(current_track_id=None, started_at=None, paused_at=None, is_playing=False)


def seconds(delta: timedelta) -> float:
    """A duration as float seconds, rounded to the microsecond the columns store (no float noise)."""
    return round(delta.total_seconds(), 6)


def started(track_id: uuid.UUID, now: datetime) -> PlaybackState:
    """``play(track)`` from any state: the track plays from its beginning, now."""
    return PlaybackState(current_track_id=track_id, started_at=now, paused_at=None, is_playing=True)


def paused(state: PlaybackState, now: datetime) -> PlaybackState:
    if not state.is_active:
        raise ValueError("only a playing room can be paused")
    return PlaybackState(state.current_track_id, state.started_at, now, False)


def resumed(state: PlaybackState, now: datetime) -> PlaybackState:
    """S := S + (now − P): the pause does not count as listening time."""
    if not state.is_paused:
        raise ValueError("only a paused room can be resumed")
    assert state.started_at is not None and state.paused_at is not None
    return PlaybackState(state.current_track_id, state.started_at + (now - state.paused_at), None, True)


def sought(state: PlaybackState, now: datetime, position: float) -> PlaybackState:
    """S := now − position; a paused room stays paused at that position (P := now)."""
    if state.current_track_id is None or state.started_at is None:
        raise ValueError("only a room with a current track can seek")
    start = now - timedelta(seconds=position)
    return PlaybackState(state.current_track_id, start, None if state.is_playing else now, state.is_playing)


def raw_position(state: PlaybackState, now: datetime) -> float | None:
    """now − S while playing, P − S while paused, None when there is nothing to measure."""
    if state.current_track_id is None or state.started_at is None:
        return None
    if state.is_playing:
        return seconds(now - state.started_at)
    if state.paused_at is not None:
        return seconds(state.paused_at - state.started_at)
    return None


def position(state: PlaybackState, now: datetime, duration_seconds: float | None = None) -> float | None:
    """The position clamped to [0, duration]: between the track's end and the server advancing it (milliseconds),
    and across small clock differences, a listener is never told a position outside the track."""
    value = raw_position(state, now)
    if value is None:
        return None
    value = max(value, 0.0)
    if duration_seconds is not None:
        value = min(value, float(duration_seconds))
    return value


def due_at(state: PlaybackState, duration_seconds: float) -> datetime | None:
    """When the current track ends (S + duration), or None while paused or idle."""
    if not state.is_active:
        return None
    assert state.started_at is not None
    return state.started_at + timedelta(seconds=duration_seconds)


def is_due(state: PlaybackState, duration_seconds: float, now: datetime) -> bool:
    end = due_at(state, duration_seconds)
    return end is not None and now >= end


def unix_from_julian_day(julian_day: float) -> float:
    return (julian_day - JULIAN_DAY_OF_UNIX_EPOCH) * SECONDS_PER_DAY


def sleep_for(next_due: float | None, now: float, max_poll: float) -> float:
    """Seconds to sleep until ``next_due`` (Unix seconds), never negative and never beyond ``max_poll``.

    The bound matters: changes made by *other* instances wake nobody here, so the scheduler re-reads at least
    every ``max_poll`` seconds.
    """
    if next_due is None:
        return max_poll
    return min(max(next_due - now, 0.0), max_poll)


def backoff(failures: int, *, base: float, cap: float) -> float:
    """Exponential back-off after ``failures`` consecutive failures: base, 2·base, 4·base … up to ``cap``."""
    if failures <= 0:
        return 0.0
    return min(cap, base * 2.0 ** min(failures - 1, 62))
