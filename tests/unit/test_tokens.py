"""The verified-token memory of ``TokenService.decode``: a remembered token is still refused once it expires, before
it is valid, or when a byte of it differs."""

from __future__ import annotations

import time
import uuid

import jwt
import pytest

from spotik.auth.tokens import ALGORITHM, PRV, TokenError, TokenProblem, TokenService

SECRET = "unit-test-secret-of-32-bytes-or-more!"


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def token(*, exp_in: int, nbf_in: int = 0) -> str:
    now = int(time.time())
    claims = {"iss": "http://t", "iat": now, "nbf": now + nbf_in, "exp": now + exp_in, "jti": "j" * 16}
    return jwt.encode({**claims, "sub": str(uuid.uuid4()), "prv": PRV}, SECRET, algorithm=ALGORITHM)


def problem(service: TokenService, text: str) -> TokenProblem:
    with pytest.raises(TokenError) as raised:
        service.decode(text)
    return raised.value.problem


@pytest.mark.parametrize("leeway", [0, 5])
def test_a_remembered_token_expires_on_time(leeway: int) -> None:
    clock = Clock()
    service = TokenService(SECRET, 60, 20160, leeway_seconds=leeway, clock=clock)
    text = token(exp_in=30)
    first = service.decode(text)
    clock.now = first.exp + leeway - 0.5
    assert service.decode(text) == first  # from memory, still valid
    clock.now = first.exp + leeway
    assert problem(service, text) is TokenProblem.EXPIRED  # what PyJWT says at that moment


def test_a_remembered_token_is_refused_before_it_is_valid() -> None:
    clock = Clock()
    service = TokenService(SECRET, 60, 20160, clock=clock)
    text = token(exp_in=60)
    claims = service.decode(text)
    clock.now = claims.nbf - 1
    assert problem(service, text) is TokenProblem.INVALID


def test_only_the_exact_token_is_remembered() -> None:
    service = TokenService(SECRET, 60, 20160)
    text = token(exp_in=60)
    service.decode(text)
    head, payload, signature = text.split(".")
    tampered = ".".join((head, payload, ("A" if signature[0] != "A" else "B") + signature[1:]))
    assert problem(service, tampered) is TokenProblem.INVALID
    other = TokenService("another-secret-of-32-bytes-or-more!!", 60, 20160)
    assert problem(other, text) is TokenProblem.INVALID  # each service remembers its own verifications
