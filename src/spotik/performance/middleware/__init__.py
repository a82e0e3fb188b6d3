"""The pure-ASGI middleware of the monitoring stack (never ``BaseHTTPMiddleware``: it breaks context variables).

Outermost first, as ``create_app`` installs them around the core layers of ``spotik.http``::

    RequestIdMiddleware            (spotik.http.middleware)
    RequestTimingMiddleware        X-Response-Time, latency histogram, in-flight, DB counters, slow requests, N+1;
                                   in the same send wrapper: security headers (X-Frame-Options, nosniff, CSP,
                                   Referrer-Policy, Permissions-Policy, HSTS on TLS), gzip of compressible bodies
                                   over GZIP_MIN_SIZE, and the sampled memory delta
    CORSMiddleware                 (spotik.http.cors) — so that 429s carry CORS headers too
    RateLimitMiddleware            429 before any work is done
    UnhandledErrorMiddleware       (spotik.http.middleware)

With monitoring switched off, ``SecurityHeadersMiddleware`` and ``GZipMiddleware`` take the timing layer's place.
"""

from spotik.performance.middleware.gzip import CompressionStats, Gzip, GZipMiddleware
from spotik.performance.middleware.ratelimit import RateLimitMiddleware
from spotik.performance.middleware.security import SecurityHeaders, SecurityHeadersMiddleware
from spotik.performance.middleware.timing import RequestTimingMiddleware

__all__ = [
    "CompressionStats",
    "GZipMiddleware",
    "Gzip",
    "RateLimitMiddleware",
    "RequestTimingMiddleware",
    "SecurityHeaders",
    "SecurityHeadersMiddleware",
]
