"""bcrypt, interchangeable with Laravel: verifies $2a$/$2b$/$2y$, writes $2y$ (same algorithm, PHP's prefix)."""

from __future__ import annotations

from functools import cache

import bcrypt
from anyio import to_thread


@cache
def dummy_hash(cost: int) -> bytes:
    """Verified against when the e-mail is unknown, at the cost of the real hashes, so that a login takes as long
    whether or not the account exists (a cheaper dummy would tell an attacker which e-mails have accounts)."""
    return bcrypt.hashpw(b"spotik-timing-equaliser", bcrypt.gensalt(cost))


def _hash(password: str, cost: int) -> str:
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(cost)).decode()
    return "$2y$" + hashed[4:]


def _verify(password: str, hashed: str | None, cost: int) -> bool:
    if hashed is None:
        bcrypt.checkpw(password.encode()[:72], dummy_hash(cost))
        return False
    if hashed.startswith("$2y$"):
        hashed = "$2b$" + hashed[4:]
    try:
        return bcrypt.checkpw(password.encode(), hashed.encode())
    except ValueError:  # not a bcrypt hash, or a password over 72 bytes
        return False


async def hash_password(password: str, cost: int) -> str:
    return await to_thread.run_sync(_hash, password, cost)


async def verify_password(password: str, hashed: str | None, *, cost: int) -> bool:
    """Whether ``password`` matches ``hashed``; with no hash (unknown account), False after the same work as a
    check against a hash of ``cost`` (BCRYPT_COST, the cost of the hashes this server writes)."""
    return await to_thread.run_sync(_verify, password, hashed, cost)
