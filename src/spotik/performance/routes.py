"""The route template of a request (``/api/rooms/{room}``), read from the scope after routing."""

from __future__ import annotations

from starlette.types import Scope

UNMATCHED = "<unmatched>"


def route_template(scope: Scope) -> str:
    """The matched route's path template, or ``"<unmatched>"``; never the raw path (unbounded label values).

    FastAPI 0.165 no longer flattens included routers, so ``scope["route"].path`` lacks the prefixes of outer
    routers; its effective route context (set on the scope while routing) carries the full template, and the
    plain route path is the fallback when that context is absent.
    """
    fastapi_scope = scope.get("fastapi")
    if isinstance(fastapi_scope, dict):
        path = getattr(fastapi_scope.get("effective_route_context"), "path_format", None)
        if isinstance(path, str) and path:
            return path
    path = getattr(scope.get("route"), "path", None)
    if isinstance(path, str) and path:
        return path
    return UNMATCHED
