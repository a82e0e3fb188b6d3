"""CORS (docs/decisions.md#d12) on Starlette's pure-ASGI CORSMiddleware, with the origin list from settings."""

from __future__ import annotations

from typing import Any

from starlette.middleware.cors import CORSMiddleware

# "loopback" in CORS_ORIGINS: any http(s) origin on a loopback host and any port (the development default).
LOOPBACK_ORIGIN_REGEX = r"https?://(localhost|127(\.\d{1,3}){3}|\[::1\])(:\d{1,5})?"


def cors_options(origins: list[str]) -> dict[str, Any]:
    exact = [origin for origin in origins if origin != "loopback"]
    return {
        "allow_origins": exact,
        "allow_origin_regex": LOOPBACK_ORIGIN_REGEX if "loopback" in origins else None,
        "allow_methods": ["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
        "allow_headers": ["*"],  # echoes what the preflight asks for (the client sends Cache-Control)
        "expose_headers": ["X-Request-ID", "X-Response-Time", "Retry-After", "Content-Range", "Accept-Ranges"],
        "max_age": 86400,
    }


def origin_allowed(origin: str, origins: list[str]) -> bool:
    """The same decision for the WebSocket ``Origin`` check."""
    middleware = CORSMiddleware(app=_noop, **cors_options(origins))
    return middleware.is_allowed_origin(origin)


async def _noop(scope: Any, receive: Any, send: Any) -> None:  # pragma: no cover - never called
    return None


__all__ = ["CORSMiddleware", "cors_options", "origin_allowed"]
