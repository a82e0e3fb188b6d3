"""Security headers on every HTTP response; HSTS only when the client reached us over TLS; ``Cache-Control:
no-store`` on the JSON answers to requests that carried a token.

``SecurityHeaders`` is the policy. The request-timing middleware applies it in the send wrapper it already has (one
layer less on every request); ``SecurityHeadersMiddleware`` applies it on its own when monitoring is switched off.

A request with credentials (``Authorization``, or the ``token`` query parameter) gets private answers: no shared or
browser cache may keep them, so a JSON response gets ``Cache-Control: no-store`` unless its route chose its own
caching (audio and covers do, on purpose: they are files, cached by the browser for replay and seeking).
"""

from __future__ import annotations

from urllib.parse import parse_qs

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from spotik.performance.proxies import TrustedProxies
from spotik.settings import Settings

RawHeaders = list[tuple[bytes, bytes]]
NO_STORE = (b"cache-control", b"no-store")
SECURITY_HEADER_NAMES = frozenset(
    {
        b"x-frame-options",
        b"x-content-type-options",
        b"content-security-policy",
        b"referrer-policy",
        b"permissions-policy",
        b"strict-transport-security",
    }
)


class SecurityHeaders:
    """Adds each configured header unless the response already set it (a page may bring its own CSP)."""

    def __init__(self, headers: list[tuple[str, str]], hsts: str | None, proxies: TrustedProxies) -> None:
        self.headers: RawHeaders = [(n.lower().encode("latin-1"), v.encode("latin-1")) for n, v in headers]
        self.with_hsts: RawHeaders | None = (
            [*self.headers, (b"strict-transport-security", hsts.encode("latin-1"))] if hsts else None
        )
        self.proxies = proxies

    @classmethod
    def from_settings(cls, settings: Settings, proxies: TrustedProxies) -> SecurityHeaders:
        headers = [
            ("X-Frame-Options", settings.x_frame_options),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", settings.content_security_policy),
            ("Referrer-Policy", settings.referrer_policy),
            ("Permissions-Policy", settings.permissions_policy),
        ]
        hsts = None
        if settings.hsts_max_age > 0:
            hsts = f"max-age={settings.hsts_max_age}"
            if settings.hsts_include_subdomains:
                hsts += "; includeSubDomains"
        # An empty setting leaves its header out.
        return cls([(name, value) for name, value in headers if value], hsts, proxies)

    def for_request(self, scope: Scope) -> RawHeaders:
        """The headers this request's response gets (HSTS only over TLS, as the client saw it)."""
        if self.with_hsts is None:
            return self.headers
        if scope.get("scheme") == "https" or (self.proxies.networks and self.proxies.is_https(scope)):
            return self.with_hsts
        return self.headers

    @staticmethod
    def private(scope: Scope) -> bool:
        """Whether the request carried a token (its JSON answers must not be stored by any cache)."""
        for name, _ in scope["headers"]:
            if name == b"authorization":  # ASGI header names are lower-case
                return True
        query: bytes = scope.get("query_string", b"")
        if b"token" not in query and b"%" not in query:
            return False
        return "token" in parse_qs(query.decode("latin-1"), keep_blank_values=True)

    @staticmethod
    def apply(message: Message, headers: RawHeaders, private: bool = False) -> list[tuple[bytes, bytes]]:
        """Add ``headers`` to a response start message (and ``Cache-Control: no-store`` to a JSON answer of a
        ``private`` request that set no caching of its own); the message's header list, for further additions."""
        raw = message.get("headers")
        raw = [] if raw is None else raw if isinstance(raw, list) else list(raw)
        names = SECURITY_HEADER_NAMES
        own = json = cached = False
        for name, value in raw:
            lower = name.lower()
            if lower in names:  # rare: the response brought one of its own
                own = True
            elif lower == b"content-type":
                media_type = value.split(b";", 1)[0].strip().lower()
                json = media_type == b"application/json" or media_type.endswith(b"+json")
            elif lower == b"cache-control":
                cached = True
        if own:
            present = {existing.lower() for existing, _ in raw}
            raw.extend(header for header in headers if header[0] not in present)
        else:
            raw.extend(headers)
        if private and json and not cached:
            raw.append(NO_STORE)
        message["headers"] = raw
        return raw


class SecurityHeadersMiddleware:
    def __init__(self, app: ASGIApp, *, policy: SecurityHeaders) -> None:
        self.app = app
        self.policy = policy

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = self.policy.for_request(scope)
        private = SecurityHeaders.private(scope)

        async def send_secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                SecurityHeaders.apply(message, headers, private)
            await send(message)

        await self.app(scope, receive, send_secured)
