from __future__ import annotations

import time

from spotik.db.base import uuid7


def test_uuid7_is_version_7_time_ordered_and_strictly_increasing() -> None:
    before = time.time_ns() // 1_000_000
    ids = [uuid7() for _ in range(50_000)]  # far more than one millisecond's worth of the counter
    after = time.time_ns() // 1_000_000
    assert ids == sorted(ids) and len(set(ids)) == len(ids)
    assert all(item.version == 7 and item.variant == "specified in RFC 4122" for item in ids[:100])
    assert before <= ids[0].int >> 80 <= after + 50
