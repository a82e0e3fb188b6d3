from __future__ import annotations

import uuid
from datetime import datetime

from sqlalchemy import ColumnElement, delete, exists, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from spotik.auth.models import JwtBlacklist, User
from spotik.db.base import utcnow, utcnow_seconds
from spotik.db.upsert import insert_ignore


def _in_force(jti: str) -> ColumnElement[bool]:
    # jwt_blacklist.created_at holds the moment the revocation takes effect: "now" for a logout, "now + grace"
    # for a refresh (tymon's blacklist grace period, so that parallel requests holding the old token still pass).
    return exists().where(JwtBlacklist.jti == jti, JwtBlacklist.created_at <= utcnow())


async def user_for_token(session: AsyncSession, user_id: uuid.UUID, jti: str) -> tuple[User | None, bool]:
    """The token's user and whether the token is revoked, in one query (no extra round trip per request)."""
    revoked = _in_force(jti).label("revoked")
    row = (await session.execute(select(User, revoked).where(User.id == user_id))).first()
    if row is None:  # rare: the account is gone; the revocation still decides 401 before 404
        return None, await is_revoked(session, jti)
    return row[0], bool(row[1])


async def is_revoked(session: AsyncSession, jti: str) -> bool:
    return bool(await session.scalar(select(_in_force(jti))))


async def revoked_from(session: AsyncSession, jti: str) -> datetime | None:
    """When the revocation of ``jti`` takes (or took) effect; None when it is not revoked."""
    return await session.scalar(select(JwtBlacklist.created_at).where(JwtBlacklist.jti == jti))


async def get_user(session: AsyncSession, user_id: uuid.UUID) -> User | None:
    return await session.get(User, user_id)


async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email))


async def taken(session: AsyncSession, *, username: str, email: str) -> tuple[bool, bool]:
    row = (
        await session.execute(
            select(
                select(User.id).where(User.username == username).exists(),
                select(User.id).where(User.email == email).exists(),
            )
        )
    ).one()
    return bool(row[0]), bool(row[1])


async def revoke(session: AsyncSession, jti: str, *, expires_at: datetime, effective_at: datetime) -> bool:
    """Blacklist ``jti`` from ``effective_at`` on; False when it was already blacklisted.

    An earlier ``effective_at`` wins over a later one (a logout after a refresh takes effect at once). Times are
    whole seconds, truncated, as the Laravel column keeps them (PostgreSQL would round a fraction up).
    """
    effective_at = effective_at.replace(microsecond=0)
    now = utcnow_seconds()
    inserted = await insert_ignore(
        session,
        JwtBlacklist.__table__,  # type: ignore[arg-type]
        {"jti": jti, "expires_at": expires_at, "created_at": effective_at, "updated_at": now},
    )
    if not inserted:
        await session.execute(
            update(JwtBlacklist)
            .where(JwtBlacklist.jti == jti, JwtBlacklist.created_at > effective_at)
            .values(created_at=effective_at, updated_at=now)
        )
    return inserted


async def purge_expired_revocations(session: AsyncSession) -> int:
    result = await session.execute(delete(JwtBlacklist).where(JwtBlacklist.expires_at < utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)
