"""HS256 JWTs with tymon/jwt-auth's claims, so tokens minted by the Laravel backend (same secret) are accepted.

Claims: ``iss`` (URL of the issuing request), ``iat``, ``exp``, ``nbf``, ``jti`` (16 random characters), ``sub``
(the user's UUID as a string) and ``prv`` (sha1 of the Laravel model class; checked only when present).
A refreshed token keeps the original ``iat``: the refresh window is counted from the first login (tymon's rule).
"""

from __future__ import annotations

import hashlib
import secrets
import string
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

import jwt
from cachetools import LRUCache

from spotik.settings import Settings
from spotik.validation import storable

ALGORITHM = "HS256"
PRV = hashlib.sha1(b"App\\Models\\User").hexdigest()  # noqa: S324 - an identifier, not security
REQUIRED_CLAIMS = ("iss", "iat", "exp", "nbf", "sub", "jti")
MAX_JTI_LENGTH = 255  # jwt_blacklist.jti
MAX_TIMESTAMP = 253402300799  # 9999-12-31T23:59:59Z, the last instant a datetime can hold
_JTI_ALPHABET = string.ascii_letters + string.digits
VERIFIED_TOKENS = 10_000  # verified tokens remembered (~1 KiB each)


class TokenProblem(StrEnum):
    INVALID = "invalid"
    EXPIRED = "expired"


class TokenError(Exception):
    def __init__(self, problem: TokenProblem, detail: str) -> None:
        super().__init__(detail)
        self.problem = problem


@dataclass(frozen=True, slots=True)
class Claims:
    user_id: uuid.UUID
    jti: str
    iat: int
    exp: int
    nbf: int
    iss: str


@dataclass(frozen=True)
class TokenService:
    secret: str
    ttl_minutes: int
    refresh_ttl_minutes: int
    leeway_seconds: int = 0
    blacklist_enabled: bool = True
    blacklist_grace_seconds: int = 30
    clock: Callable[[], float] = field(default=time.time, repr=False, compare=False)  # for the remembered tokens
    # Tokens whose signature and claims were verified, by the whole token (signature included, so only a token this
    # secret signed can be found here): a request with a known token costs a lookup and the time checks, not a
    # signature and three base64 decodings.
    _verified: LRUCache[str, Claims] = field(
        default_factory=lambda: LRUCache(VERIFIED_TOKENS), init=False, repr=False, compare=False
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> TokenService:
        return cls(
            secret=settings.jwt_secret,
            ttl_minutes=settings.jwt_ttl,
            refresh_ttl_minutes=settings.jwt_refresh_ttl,
            leeway_seconds=settings.jwt_leeway,
            blacklist_enabled=settings.jwt_blacklist_enabled,
            blacklist_grace_seconds=settings.jwt_blacklist_grace_period,
        )

    @property
    def ttl_seconds(self) -> int:
        return self.ttl_minutes * 60

    def issue(self, user_id: uuid.UUID, issuer: str, *, original_iat: int | None = None) -> str:
        now = int(time.time())
        payload = {
            "iss": issuer,
            "iat": original_iat if original_iat is not None else now,
            "exp": now + self.ttl_seconds,
            "nbf": now,
            "jti": "".join(secrets.choice(_JTI_ALPHABET) for _ in range(16)),
            "sub": str(user_id),
            "prv": PRV,
        }
        return jwt.encode(payload, self.secret, algorithm=ALGORITHM)

    def decode(self, token: str, *, allow_expired: bool = False) -> Claims:
        """Verify ``token``; raise ``TokenError`` (never anything else) when it cannot be trusted."""
        if allow_expired:
            return self._verify(token, allow_expired=True)
        claims = self._verified.get(token)
        if claims is None:
            claims = self._verify(token, allow_expired=False)
            self._verified[token] = claims
            return claims
        # PyJWT's time checks, as it makes them, against now
        now = self.clock()
        if claims.exp <= now - self.leeway_seconds:
            raise TokenError(TokenProblem.EXPIRED, "token expired")
        if max(claims.nbf, claims.iat) > now + self.leeway_seconds:
            raise TokenError(TokenProblem.INVALID, "the token is not yet valid")
        return claims

    def _verify(self, token: str, *, allow_expired: bool) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != ALGORITHM:
                raise TokenError(TokenProblem.INVALID, "algorithm not allowed")
            payload = jwt.decode(
                token,
                self.secret,
                algorithms=[ALGORITHM],
                leeway=self.leeway_seconds,
                # tymon's sub is not always a string (PyJWT would refuse it): it is checked as a UUID below.
                options={"require": list(REQUIRED_CLAIMS), "verify_sub": False, "verify_exp": not allow_expired},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenError(TokenProblem.EXPIRED, "token expired") from exc
        except jwt.PyJWTError as exc:
            raise TokenError(TokenProblem.INVALID, str(exc)) from exc
        if "prv" in payload and payload["prv"] != PRV:
            raise TokenError(TokenProblem.INVALID, "token is for another model")
        try:
            user_id = uuid.UUID(str(payload["sub"]))
            claims = Claims(
                user_id=user_id,
                jti=str(payload["jti"]),
                iat=int(payload["iat"]),
                exp=int(payload["exp"]),
                nbf=int(payload["nbf"]),
                iss=str(payload["iss"]),
            )
        # OverflowError: int() of "exp": Infinity, which PyJWT does not check when expiry is not verified (refresh).
        except (OverflowError, TypeError, ValueError) as exc:
            raise TokenError(TokenProblem.INVALID, "malformed claims") from exc
        # The jti is looked up in, and written to, jwt_blacklist.jti (varchar(255)); the times become datetimes.
        if not (0 < len(claims.jti) <= MAX_JTI_LENGTH and storable(claims.jti)):
            raise TokenError(TokenProblem.INVALID, "malformed jti")
        if not all(0 <= value <= MAX_TIMESTAMP for value in (claims.iat, claims.exp, claims.nbf)):
            raise TokenError(TokenProblem.INVALID, "time claim out of range")
        if allow_expired and time.time() > claims.iat + self.refresh_ttl_minutes * 60 + self.leeway_seconds:
            raise TokenError(TokenProblem.EXPIRED, "refresh window elapsed")
        return claims

    def revocation_expiry(self, claims: Claims) -> int:
        """Until when a revoked token must stay revoked: as long as it could be used or refreshed."""
        return max(claims.exp, claims.iat + self.refresh_ttl_minutes * 60)
