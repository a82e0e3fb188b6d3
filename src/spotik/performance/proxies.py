"""Who is the client, and did it use TLS? ``X-Forwarded-*`` is believed only from configured trusted proxies."""

from __future__ import annotations

import ipaddress
from functools import lru_cache

from starlette.types import Scope

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
UNKNOWN_CLIENT = "unknown"


def _header_values(scope: Scope, name: bytes) -> list[str]:
    values: list[str] = []
    for key, value in scope.get("headers", ()):
        if key == name:
            values.extend(part.strip() for part in value.decode("latin-1").split(","))
    return [value for value in values if value]


class TrustedProxies:
    """The peers whose ``X-Forwarded-For`` / ``X-Forwarded-Proto`` headers are honoured."""

    def __init__(self, entries: list[str]) -> None:
        self.networks: tuple[IPNetwork, ...] = tuple(ipaddress.ip_network(e, strict=False) for e in entries)
        # Per-instance cache: the same few peers (the load balancers) are asked about on every request.
        self._is_trusted = lru_cache(maxsize=4096)(self._lookup)

    def _lookup(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        return any(address in network for network in self.networks)

    def is_trusted(self, host: str | None) -> bool:
        return bool(self.networks) and host is not None and self._is_trusted(host)

    @staticmethod
    def peer(scope: Scope) -> str | None:
        client = scope.get("client")
        return str(client[0]) if client else None

    def client_ip(self, scope: Scope) -> str:
        """The direct peer, or — while the current hop is a trusted proxy — the address it forwarded.

        ``X-Forwarded-For`` is read right to left (each proxy appends the address it saw), stopping at the first
        hop that is not a trusted proxy: everything left of it is whatever the client chose to send.
        """
        candidate = self.peer(scope)
        if not self.is_trusted(candidate):
            return candidate or UNKNOWN_CLIENT
        for hop in reversed(_header_values(scope, b"x-forwarded-for")):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break
            candidate = hop
            if not self.is_trusted(candidate):
                break
        return candidate or UNKNOWN_CLIENT

    def is_https(self, scope: Scope) -> bool:
        """TLS between the client and us: the scope's scheme, or a trusted proxy's ``X-Forwarded-Proto``."""
        if scope.get("scheme") in ("https", "wss"):
            return True
        if not self.is_trusted(self.peer(scope)):
            return False
        forwarded = _header_values(scope, b"x-forwarded-proto")
        # The first value is the one the edge proxy saw from the client.
        return bool(forwarded) and forwarded[0].lower() in ("https", "wss")
