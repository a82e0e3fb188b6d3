"""``iso``: the API's timestamps (ISO-8601 UTC, microseconds, ``Z``), whatever zone the moment is in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given
from hypothesis import strategies as st

from spotik.timefmt import from_iso, iso

API_FORMAT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
zones = st.integers(min_value=-23 * 60, max_value=23 * 60).map(lambda minutes: timezone(timedelta(minutes=minutes)))
moments = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31))


@given(moment=moments, zone=zones)
def test_an_aware_moment_is_written_in_utc_and_reads_back_the_same(moment: datetime, zone: timezone) -> None:
    aware = moment.replace(tzinfo=zone)
    text = iso(aware)
    assert text is not None and API_FORMAT.match(text), text
    assert from_iso(text) == aware
    assert text == aware.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ") or aware.astimezone(UTC).year < 1000


@given(moment=moments)
def test_a_naive_moment_is_taken_as_utc(moment: datetime) -> None:
    assert iso(moment) == iso(moment.replace(tzinfo=UTC))


def test_nothing_is_written_for_no_moment() -> None:
    assert iso(None) is None
