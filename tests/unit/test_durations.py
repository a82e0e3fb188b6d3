"""``durations_change_at``: how long a kept answer showing participants' ``duration_in_room`` stays true."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from spotik.rooms.schemas import duration_in_room, durations_change_at

NOW = datetime(2026, 12, 3, 12, 0, 0, tzinfo=UTC)
ages = st.lists(st.integers(min_value=-90_000_000, max_value=400 * 86_400_000_000), min_size=1, max_size=6)


def _rooms(joined: list[datetime | None]) -> list[dict[str, object]]:
    half = len(joined) // 2  # spread over two rooms
    as_iso = [{"joined_at": None if j is None else j.isoformat()} for j in joined]
    return [{"participants": as_iso[:half]}, {"participants": as_iso[half:]}]


@given(ages_us=ages)
def test_every_duration_reads_the_same_until_then_and_one_changes_then(ages_us: list[int]) -> None:
    joined = [NOW - timedelta(microseconds=age) for age in ages_us]
    turns = durations_change_at(_rooms(joined), NOW)
    assert turns is not None and turns > NOW
    just_before = turns - timedelta(microseconds=1)
    assert all(duration_in_room(j, just_before) == duration_in_room(j, NOW) for j in joined)
    assert any(duration_in_room(j, turns) != duration_in_room(j, NOW) for j in joined)


def test_no_join_time_never_turns() -> None:
    assert durations_change_at(_rooms([None, None]), NOW) is None
    assert durations_change_at([], NOW) is None
