"""The reconnection delay every Redis client of Spotik uses (the real-time broker, the cache's Redis tier)."""

from __future__ import annotations

import random


def backoff_delay(attempt: int, *, initial: float, cap: float) -> float:
    """Capped exponential backoff with ±25 % jitter (instances that lost Redis together do not return together)."""
    return float(min(cap, initial * (2 ** min(attempt, 30))) * random.uniform(0.75, 1.25))
