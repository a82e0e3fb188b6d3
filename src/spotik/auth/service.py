"""Registration, login, token refresh and revocation (docs/api.md#auth, docs/api.md#authentication,
docs/decisions.md#d6)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from spotik.auth import repository
from spotik.auth.models import User
from spotik.auth.passwords import hash_password, verify_password
from spotik.auth.tokens import Claims, TokenError, TokenProblem, TokenService
from spotik.db.base import utcnow
from spotik.errors import NotFound, Unauthorized, ValidationFailed
from spotik.reads import USER_DATA, Reads, token_tag, user_tag
from spotik.timefmt import from_iso, iso
from spotik.validation import Field, confirmed, email, max_bytes, max_chars, min_chars, string, unique_taken, validate

REGISTER_FIELDS = {
    "username": Field((string, max_chars(50))),
    "email": Field((string, email, max_chars(255))),
    # bcrypt reads at most 72 bytes; longer passwords would be silently truncated, so they are refused.
    "password": Field((string, min_chars(8), max_bytes(72), confirmed)),
}
LOGIN_FIELDS = {
    "email": Field((string, email)),
    "password": Field((string,)),
}


def invalid_credentials() -> Unauthorized:
    return Unauthorized("Invalid credentials", error="Invalid credentials")


def token_failure(problem: TokenProblem) -> Unauthorized:
    if problem is TokenProblem.EXPIRED:
        return Unauthorized("Token has expired", error="Token expired")
    return Unauthorized("Token is invalid", error="Invalid token")


async def register(
    session: AsyncSession, tokens: TokenService, *, data: dict[str, Any], bcrypt_cost: int, issuer: str
) -> tuple[User, str]:
    values = validate(data, REGISTER_FIELDS)
    username_taken, email_taken = await repository.taken(session, username=values["username"], email=values["email"])
    taken_errors = {
        name: [unique_taken(name)]
        for name, is_taken in (("username", username_taken), ("email", email_taken))
        if is_taken
    }
    if taken_errors:
        raise ValidationFailed(taken_errors)
    user = User(
        username=values["username"],
        email=values["email"],
        password_hash=await hash_password(values["password"], bcrypt_cost),
    )
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:  # lost a race with an identical registration
        await session.rollback()
        raise ValidationFailed({"email": [unique_taken("email")]}) from None
    return user, tokens.issue(user.id, issuer)


async def login(
    session: AsyncSession, tokens: TokenService, *, data: dict[str, Any], issuer: str, bcrypt_cost: int
) -> tuple[User, str]:
    values = validate(data, LOGIN_FIELDS)
    user = await repository.user_by_email(session, values["email"])
    # Same answer, and the same bcrypt work, whether or not the account exists (no user enumeration).
    password_ok = await verify_password(values["password"], user.password_hash if user else None, cost=bcrypt_cost)
    if user is None or not password_ok:
        raise invalid_credentials()
    return user, tokens.issue(user.id, issuer)


async def authenticate(
    session: AsyncSession, tokens: TokenService, token: str, reads: Reads | None = None
) -> tuple[Claims, User]:
    """The token's claims and user. With ``reads`` both the user row and the token's revocation come from the cache
    (a revocation invalidates its entry everywhere once committed, see :func:`_revoke`), so that a request served from
    the cache asks the database nothing."""
    try:
        claims = tokens.decode(token)
    except TokenError as exc:
        raise token_failure(exc.problem) from None
    if reads is not None and reads.cache.enabled:
        user = await cached_user(session, reads, claims.user_id)
        revoked = await cached_revocation(session, reads, claims.jti)
    else:
        user, revoked = await repository.user_for_token(session, claims.user_id, claims.jti)
    if revoked:
        raise token_failure(TokenProblem.INVALID)
    if user is None:
        raise NotFound("User not found", error="User not found")
    return claims, user


def cached_claims(tokens: TokenService, reads: Reads, token: str) -> Claims | None:
    """The token's claims when this process already holds everything :func:`authenticate` asks of the cache and
    all of it passes: the token verifies, its revocation entry says it is not revoked, the user's row is there.
    None otherwise, and then :func:`authenticate` decides. For answers that need the viewer's id only."""
    try:
        claims = tokens.decode(token)
    except TokenError:
        return None
    revocation = reads.cache.local(USER_DATA, token_tag(claims.jti))
    if revocation is None or _revoked(revocation) or reads.cache.local(USER_DATA, str(claims.user_id)) is None:
        return None
    return claims


def _revoked(entry: dict[str, Any]) -> bool:
    since = from_iso(entry["from"])
    return since is not None and since <= utcnow()


def _user_row(user: User) -> dict[str, Any]:
    # Never the password hash: it has no business in a shared cache, and nothing reads it from this user.
    return {
        "id": str(user.id),
        "username": user.username,
        "email": user.email,
        "created_at": iso(user.created_at),
        "updated_at": iso(user.updated_at),
    }


async def cached_user(session: AsyncSession, reads: Reads, user_id: uuid.UUID) -> User | None:
    """The user row by id through the cache (``user_data``, tagged ``user:<id>``), as a detached ``User`` without
    its password hash; None when there is no such user (absence is never cached)."""

    async def load(own: AsyncSession) -> dict[str, Any]:
        found = await repository.get_user(own, user_id)
        if found is None:
            raise _NoSuchUser
        return _user_row(found)

    try:
        row = await reads.through(USER_DATA, str(user_id), load, session=session, tags=[user_tag(user_id)])
    except _NoSuchUser:
        return None
    user = User(
        id=uuid.UUID(row["id"]),
        username=row["username"],
        email=row["email"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
    )
    make_transient_to_detached(user)
    return user


async def cached_revocation(session: AsyncSession, reads: Reads, jti: str) -> bool:
    """Whether the token ``jti`` is revoked now, from the moment its revocation takes effect (``user_data``, tagged
    ``token:<jti>``): a logout or a refresh invalidates the entry after its commit, here and on every instance."""

    async def load(own: AsyncSession) -> dict[str, Any]:
        return {"from": iso(await repository.revoked_from(own, jti))}

    return _revoked(await reads.through(USER_DATA, token_tag(jti), load, session=session, tags=[token_tag(jti)]))


class _NoSuchUser(Exception):
    """Raised inside a computation so that nothing is cached."""


async def refresh(session: AsyncSession, tokens: TokenService, reads: Reads, *, token: str | None, issuer: str) -> str:
    if token is None:
        raise Unauthorized("Token not provided", error="Token absent")
    try:
        claims = tokens.decode(token, allow_expired=True)
    except TokenError as exc:
        if exc.problem is TokenProblem.EXPIRED:
            raise Unauthorized("Token has expired and cannot be refreshed", error="Token expired") from None
        raise token_failure(exc.problem) from None
    # The old token stays usable for the grace period only (the web client refreshes from two places at once on
    # page load); after that, refreshing it again is refused, even when two requests race.
    grace = timedelta(seconds=tokens.blacklist_grace_seconds)
    if not await _revoke(session, tokens, claims, effective_at=utcnow() + grace) and await repository.is_revoked(
        session, claims.jti
    ):
        raise token_failure(TokenProblem.INVALID)
    await session.commit()
    await reads.cache.invalidate_tags(token_tag(claims.jti))
    return tokens.issue(claims.user_id, issuer, original_iat=claims.iat)


async def logout(session: AsyncSession, tokens: TokenService, reads: Reads, *, token: str | None) -> None:
    if token is None:
        return
    try:
        claims = tokens.decode(token, allow_expired=True)
    except TokenError:
        return
    await _revoke(session, tokens, claims, effective_at=utcnow())
    await session.commit()
    await reads.cache.invalidate_tags(token_tag(claims.jti))


async def _revoke(session: AsyncSession, tokens: TokenService, claims: Claims, *, effective_at: datetime) -> bool:
    if not tokens.blacklist_enabled:
        return True
    expires_at = datetime.fromtimestamp(tokens.revocation_expiry(claims), UTC)
    return await repository.revoke(session, claims.jti, expires_at=expires_at, effective_at=effective_at)
