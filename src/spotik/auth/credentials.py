"""Where a request or a WebSocket handshake carries its token: one reader for HTTP and ``/ws`` (docs/api.md#tokens).

In this order: ``Authorization: Bearer <jwt>``, else ``?token=<jwt>`` (audio elements and browsers' WebSockets
cannot send headers), else the WebSocket subprotocol ``token.<jwt>``. Read from the ASGI scope, not through
Starlette's ``headers``/``query_params``, which would cache parsed copies on an open socket's object for as long
as it is connected.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import parse_qsl

from starlette.types import Scope

TOKEN_SUBPROTOCOL_PREFIX = "token."  # noqa: S105 - a prefix, not a secret


class Credentials(NamedTuple):
    token: str | None
    # The ``token.<jwt>`` subprotocol the client offered: a WebSocket handshake must echo it back, or the browser
    # fails the connection.
    subprotocol: str | None = None


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return str(value.decode("latin-1"))
    return None


def credentials(scope: Scope) -> Credentials:
    subprotocol = next(
        (p.strip() for p in scope.get("subprotocols", ()) if p.strip().startswith(TOKEN_SUBPROTOCOL_PREFIX)), None
    )
    scheme, _, value = (header(scope, b"authorization") or "").partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return Credentials(value.strip(), subprotocol)
    query = scope.get("query_string", b"").decode("latin-1")
    token = next((v for k, v in parse_qsl(query) if k == "token" and v), None)
    if token is None and subprotocol is not None:
        token = subprotocol[len(TOKEN_SUBPROTOCOL_PREFIX) :] or None
    return Credentials(token, subprotocol)
