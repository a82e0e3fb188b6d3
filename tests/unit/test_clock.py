"""The playback clock's pure arithmetic (docs/api.md#playback-clock, the intended semantics) and the scheduler's
timing helpers."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest

from spotik.playback import clock
from spotik.playback.clock import IDLE, PlaybackState

T0 = datetime(2026, 1, 24, 20, 28, 47, 123456, tzinfo=UTC)
TRACK = uuid.UUID("01890000-0000-7000-8000-000000000001")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def playing(start: float = 0.0) -> PlaybackState:
    return clock.started(TRACK, at(start))


def test_started_plays_from_zero() -> None:
    state = clock.started(TRACK, T0)
    assert state == PlaybackState(TRACK, T0, None, True)
    assert clock.position(state, T0) == 0.0
    assert clock.position(state, at(12.345678)) == 12.345678


def test_position_of_idle_room_is_none() -> None:
    assert clock.position(IDLE, T0) is None
    assert clock.raw_position(IDLE, T0) is None
    assert IDLE.is_idle and not IDLE.is_active and not IDLE.is_paused


def test_paused_position_is_pause_minus_virtual_start_and_stands_still() -> None:
    state = clock.paused(playing(), at(60.5))
    assert state.is_paused and not state.is_playing
    assert clock.position(state, at(60.5)) == 60.5
    assert clock.position(state, at(3600)) == 60.5  # time passes, a paused track does not move


def test_resume_moves_the_virtual_start_forward_by_the_pause_length() -> None:
    state = clock.paused(playing(), at(60))
    resumed = clock.resumed(state, at(100))  # paused for 40 s
    assert resumed.started_at == at(40)  # S + (R − P), not Laravel's S − (R − P)
    assert resumed.paused_at is None and resumed.is_playing
    assert clock.position(resumed, at(100)) == 60.0
    assert clock.position(resumed, at(110)) == 70.0


def test_many_pause_resume_cycles_lose_no_time_at_microsecond_precision() -> None:
    state = playing()
    now = 0.0
    listened = 0.0
    for play_for, pause_for in [(1.000001, 2.5), (0.333333, 10.0), (7.25, 0.000001), (0.1, 100.0)]:
        now += play_for
        listened += play_for
        state = clock.paused(state, at(now))
        assert clock.position(state, at(now)) == pytest.approx(listened, abs=1e-6)
        now += pause_for
        state = clock.resumed(state, at(now))
        assert clock.position(state, at(now)) == pytest.approx(listened, abs=1e-6)


def test_seek_while_playing_sets_the_virtual_start() -> None:
    state = clock.sought(playing(), at(30), 12.25)
    assert state.started_at == at(30 - 12.25) and state.is_playing and state.paused_at is None
    assert clock.position(state, at(30)) == 12.25


def test_seek_while_paused_stays_paused_at_the_new_position() -> None:
    state = clock.sought(clock.paused(playing(), at(50)), at(80), 5.0)
    assert state.is_paused
    assert state.paused_at == at(80) and state.started_at == at(75)
    assert clock.position(state, at(500)) == 5.0


def test_invalid_transitions_are_refused() -> None:
    with pytest.raises(ValueError):
        clock.paused(IDLE, T0)
    with pytest.raises(ValueError):
        clock.paused(clock.paused(playing(), at(1)), at(2))
    with pytest.raises(ValueError):
        clock.resumed(playing(), at(1))
    with pytest.raises(ValueError):
        clock.sought(IDLE, T0, 1.0)


def test_position_is_clamped_to_the_track() -> None:
    state = playing(10)
    assert clock.position(state, at(5)) == 0.0  # a start in the future (clock skew) reads as 0
    assert clock.raw_position(state, at(5)) == -5.0
    assert clock.position(state, at(400), duration_seconds=180) == 180.0
    assert clock.position(state, at(100), duration_seconds=180) == 90.0


def test_track_is_due_at_start_plus_duration_and_never_while_paused() -> None:
    state = playing(0)
    assert clock.due_at(state, 180) == at(180)
    assert not clock.is_due(state, 180, at(179.999999))
    assert clock.is_due(state, 180, at(180))
    paused = clock.paused(state, at(10))
    assert clock.due_at(paused, 180) is None and not clock.is_due(paused, 180, at(10_000))
    assert clock.due_at(IDLE, 180) is None


def test_seconds_rounds_to_microseconds() -> None:
    assert clock.seconds(timedelta(seconds=75, microseconds=500_001)) == 75.500001
    assert clock.seconds(timedelta(days=1, microseconds=1)) == 86400.000001


def test_julian_days_convert_to_unix_seconds() -> None:
    assert clock.unix_from_julian_day(2440587.5) == 0.0
    # SQLite: SELECT julianday('2026-01-24 20:28:47.123') = 2461065.353323183…
    assert clock.unix_from_julian_day(2461065.3533231830) == pytest.approx(
        datetime(2026, 1, 24, 20, 28, 47, 123000, tzinfo=UTC).timestamp(), abs=1e-3
    )


def test_sleep_is_bounded_by_the_poll_interval_and_never_negative() -> None:
    assert clock.sleep_for(None, 100.0, 5.0) == 5.0
    assert clock.sleep_for(101.5, 100.0, 5.0) == 1.5
    assert clock.sleep_for(1_000.0, 100.0, 5.0) == 5.0
    assert clock.sleep_for(99.0, 100.0, 5.0) == 0.0


def test_backoff_doubles_up_to_the_cap() -> None:
    delays = [clock.backoff(n, base=0.5, cap=30.0) for n in range(0, 10)]
    assert delays == [0.0, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert clock.backoff(10_000, base=0.5, cap=30.0) == 30.0
