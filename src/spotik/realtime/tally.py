"""Process-wide WebSocket counters, kept by the gateway and read by Prometheus at scrape time.

The hot paths (a frame written, a message received, a frame dropped) only increment a ``collections.Counter``
shared by every connection: no lock, no label lookup. ``spotik.performance.metrics`` turns ``WebSocketFigures``
into the ``spotik_ws_*`` families when ``/metrics`` is scraped. Counts survive the connections they came from.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from typing import TypedDict


class Tally:
    __slots__ = ("dropped", "received", "refused", "sent")

    def __init__(self) -> None:
        self.received: Counter[str] = Counter()  # by client message type ("unknown", "invalid", "too_big" otherwise)
        self.sent: Counter[str] = Counter()  # frames written, by server message type
        self.dropped: Counter[str] = Counter()  # frames not delivered, by reason
        self.refused: Counter[str] = Counter()  # connections refused, by error code


class WebSocketFigures(TypedDict):
    connections: int
    opened: int
    queued: int
    received: Mapping[str, int]
    sent: Mapping[str, int]
    dropped: Mapping[str, int]
    refused: Mapping[str, int]
