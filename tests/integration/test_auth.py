"""Auth as docs/api.md#auth, docs/api.md#authentication and docs/decisions.md#d6 describe it, on SQLite and
PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import bcrypt
import httpx2
import jwt
import pytest
from asgi_lifespan import LifespanManager
from sqlalchemy import text

from spotik.app import create_app
from spotik.auth.tokens import PRV
from tests.conftest import TEST_JWT_SECRET, make_settings
from tests.helpers import assert_envelope_a_error, bearer, register
from tests.openapi_contract import contract_hooks

ISO_MICROS_Z = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


async def test_register_returns_user_and_token(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/register",
        json={
            "username": "alice",
            "email": "alice@example.com",
            "password": "password1",
            "password_confirmation": "password1",
        },
    )
    assert response.status_code == 201
    body = response.json()
    assert body["success"] is True and body["message"] == "User registered successfully"
    data = body["data"]
    assert set(data) == {"user", "token", "token_type", "expires_in"}
    assert set(data["user"]) == {"id", "username", "email", "created_at"}
    assert data["user"]["username"] == "alice" and data["user"]["email"] == "alice@example.com"
    uuid.UUID(data["user"]["id"])
    assert ISO_MICROS_Z.match(data["user"]["created_at"])
    assert data["token_type"] == "bearer" and data["expires_in"] == 60 * 60
    me = await client.get("/api/auth/me", headers=bearer(data["token"]))
    assert me.status_code == 200
    assert me.json()["data"]["user"]["id"] == data["user"]["id"]


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        (
            {},
            {
                "username": ["The username field is required."],
                "email": ["The email field is required."],
                "password": ["The password field is required."],
            },
        ),
        (
            {"username": "bob", "email": "not-an-email", "password": "password1", "password_confirmation": "password1"},
            {"email": ["The email field must be a valid email address."]},
        ),
        (
            {"username": "bob", "email": "bob@example.com", "password": "short", "password_confirmation": "short"},
            {"password": ["The password field must be at least 8 characters."]},
        ),
        (
            {
                "username": "bob",
                "email": "bob@example.com",
                "password": "password1",
                "password_confirmation": "password2",
            },
            {"password": ["The password field confirmation does not match."]},
        ),
        (
            {
                "username": "b" * 51,
                "email": "bob@example.com",
                "password": "password1",
                "password_confirmation": "password1",
            },
            {"username": ["The username field must not be greater than 50 characters."]},
        ),
        (
            {"username": "bob", "email": "bob@example.com", "password": "é" * 40, "password_confirmation": "é" * 40},
            {"password": ["The password field must not be greater than 72 bytes."]},
        ),
        (
            {"username": 12, "email": "bob@example.com", "password": "password1", "password_confirmation": "password1"},
            {"username": ["The username field must be a string."]},
        ),
        (
            {
                "username": "   ",
                "email": "bob@example.com",
                "password": "password1",
                "password_confirmation": "password1",
            },
            {"username": ["The username field is required."]},
        ),
    ],
)
async def test_register_validation_uses_laravel_messages(
    client: httpx2.AsyncClient, payload: dict[str, Any], expected: dict[str, list[str]]
) -> None:
    response = await client.post("/api/auth/register", json=payload)
    assert response.status_code == 422
    body = response.json()
    assert body["success"] is False and body["message"] == "Validation failed"
    assert body["errors"] == expected


async def test_register_refuses_taken_username_and_email(client: httpx2.AsyncClient) -> None:
    await register(client, "carol")
    response = await client.post(
        "/api/auth/register",
        json={
            "username": "carol",
            "email": "carol@example.com",
            "password": "password1",
            "password_confirmation": "password1",
        },
    )
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "username": ["The username has already been taken."],
        "email": ["The email has already been taken."],
    }


async def test_register_accepts_form_encoding_and_trims(client: httpx2.AsyncClient) -> None:
    response = await client.post(
        "/api/auth/register",
        data={
            "username": "  dave  ",
            "email": " dave@example.com ",
            "password": "password1",
            "password_confirmation": "password1",
        },
    )
    assert response.status_code == 201
    assert response.json()["data"]["user"]["username"] == "dave"
    assert response.json()["data"]["user"]["email"] == "dave@example.com"


async def test_login_succeeds_and_tokens_are_unique(client: httpx2.AsyncClient) -> None:
    account = await register(client, "erin", "password-erin")
    tokens = set()
    for _ in range(2):
        response = await client.post("/api/auth/login", json={"email": account.email, "password": "password-erin"})
        assert response.status_code == 200
        body = response.json()
        assert body["success"] is True and body["message"] == "Login successful"
        assert body["data"]["user"]["id"] == account.id
        tokens.add(body["data"]["token"])
    assert len(tokens) == 2


async def test_an_unknown_e_mail_costs_the_same_bcrypt_work_as_a_wrong_password(
    database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The timing of a failed login must not tell whether the account exists: both failures run bcrypt against a
    hash of the server's cost (BCRYPT_COST), which the hashes' ``$2b$<cost>$`` prefix shows."""
    checked: list[bytes] = []
    real_checkpw = bcrypt.checkpw

    def spy(password: bytes, hashed: bytes) -> bool:
        checked.append(hashed[:7])
        return real_checkpw(password, hashed)

    monkeypatch.setattr(bcrypt, "checkpw", spy)
    app = create_app(make_settings(database_url, tmp_path / "cost", bcrypt_cost=6))
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver") as client:
            account = await register(client, "gina", "password-gina")
            for email in (account.email, "nobody@example.com"):
                response = await client.post("/api/auth/login", json={"email": email, "password": "not-hers"})
                assert response.status_code == 401
    assert checked == [b"$2b$06$", b"$2b$06$"]


async def test_login_failure_does_not_reveal_whether_the_account_exists(client: httpx2.AsyncClient) -> None:
    account = await register(client, "frank", "password-frank")
    wrong_password = await client.post("/api/auth/login", json={"email": account.email, "password": "Password-frank"})
    unknown_email = await client.post("/api/auth/login", json={"email": "nobody@example.com", "password": "whatever"})
    assert wrong_password.status_code == unknown_email.status_code == 401
    assert (
        wrong_password.json()
        == unknown_email.json()
        == {
            "success": False,
            "message": "Invalid credentials",
            "error": "Invalid credentials",
        }
    )


async def test_login_validation(client: httpx2.AsyncClient) -> None:
    response = await client.post("/api/auth/login", json={"email": "nope"})
    assert response.status_code == 422
    assert response.json()["errors"] == {
        "email": ["The email field must be a valid email address."],
        "password": ["The password field is required."],
    }


async def test_me_requires_a_token(client: httpx2.AsyncClient) -> None:
    response = await client.get("/api/auth/me")
    assert response.status_code == 401
    assert response.json() == {"success": False, "message": "Token not provided", "error": "Token absent"}


async def test_token_is_read_from_the_query_string(client: httpx2.AsyncClient) -> None:
    account = await register(client, "gina")
    response = await client.get("/api/auth/me", params={"token": account.token})
    assert response.status_code == 200
    assert response.json()["data"]["user"]["username"] == "gina"


def _b64(data: dict[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(user_id: str, **overrides: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": "http://localhost:8000/api/auth/login",
        "iat": now,
        "exp": now + 3600,
        "nbf": now,
        "jti": "AbCdEfGhIjKlMnOp",
        "sub": user_id,
        "prv": PRV,
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def _hs(claims: dict[str, Any], secret: str = TEST_JWT_SECRET, alg: str = "HS256") -> str:
    return jwt.encode(claims, secret, algorithm=alg)


def laravel_token(user_id: str, secret: str = TEST_JWT_SECRET) -> str:
    """Built by hand the way tymon/jwt-auth (lcobucci/jwt) builds one: header typ/alg, then the claims, HS256."""
    header = {"typ": "JWT", "alg": "HS256"}
    claims = _claims(user_id)
    signing_input = f"{_b64(header)}.{_b64(claims)}"
    signature = hmac.new(secret.encode(), signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{base64.urlsafe_b64encode(signature).rstrip(b'=').decode()}"


async def test_a_laravel_minted_token_is_accepted(client: httpx2.AsyncClient) -> None:
    account = await register(client, "henry")
    response = await client.get("/api/auth/me", headers=bearer(laravel_token(account.id)))
    assert response.status_code == 200
    assert response.json()["data"]["user"]["id"] == account.id


def _unsigned(claims: dict[str, Any]) -> str:
    return f"{_b64({'typ': 'JWT', 'alg': 'none'})}.{_b64(claims)}."


@pytest.mark.parametrize(
    ("make_token", "message"),
    [
        (lambda uid: _unsigned(_claims(uid)), "Token is invalid"),
        (lambda uid: _hs(_claims(uid), alg="HS512"), "Token is invalid"),
        (
            lambda uid: _hs(
                _claims(uid), secret="another-secret-that-is-long-enough-for-every-hmac-0123456789abcdefgh"
            ),
            "Token is invalid",
        ),
        (lambda uid: _hs(_claims(uid, exp=int(time.time()) - 10)), "Token has expired"),
        (lambda uid: _hs(_claims(uid, nbf=int(time.time()) + 600)), "Token is invalid"),
        (lambda uid: _hs(_claims(uid, jti=None)), "Token is invalid"),
        (lambda uid: _hs(_claims(uid, prv="0" * 40)), "Token is invalid"),
        (lambda uid: _hs(_claims("not-a-uuid")), "Token is invalid"),
        (lambda uid: _hs(_claims(uid))[:-4] + "AAAA", "Token is invalid"),
        (lambda uid: "not.a.jwt", "Token is invalid"),
        (lambda uid: "x" * 1000, "Token is invalid"),
        (lambda uid: "eyJhbGciOiJIUzI1NiJ9.invalid.invalid", "Token is invalid"),
    ],
    ids=[
        "alg-none",
        "hs512",
        "wrong-secret",
        "expired",
        "not-yet-valid",
        "no-jti",
        "other-prv",
        "bad-sub",
        "tampered",
        "garbage",
        "long",
        "broken-base64",
    ],
)
async def test_untrustworthy_tokens_are_refused_with_401(
    client: httpx2.AsyncClient, make_token: Any, message: str
) -> None:
    account = await register(client, "ivan")
    response = await client.get("/api/auth/me", headers=bearer(make_token(account.id)))
    assert response.status_code == 401
    assert_envelope_a_error(response.json(), message)
    assert "token" in response.json()["message"].lower()


async def test_token_of_a_deleted_user_is_404(client: httpx2.AsyncClient) -> None:
    response = await client.get("/api/auth/me", headers=bearer(_hs(_claims(str(uuid.uuid4())))))
    assert response.status_code == 404
    assert response.json() == {"success": False, "message": "User not found", "error": "User not found"}


@pytest.fixture
async def strict_client(database_url: str, tmp_path: Path) -> AsyncIterator[httpx2.AsyncClient]:
    """An app with no blacklist grace period: a refreshed token is revoked at once."""
    app = create_app(make_settings(database_url, tmp_path / "strict", jwt_blacklist_grace_period=0))
    async with LifespanManager(app) as manager:
        transport = httpx2.ASGITransport(app=manager.app)
        hooks = contract_hooks(app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as http:
            yield http


async def test_refresh_issues_a_new_token_and_revokes_the_old_one(strict_client: httpx2.AsyncClient) -> None:
    client = strict_client
    account = await register(client, "judy")
    response = await client.post("/api/auth/refresh", headers=account.headers)
    assert response.status_code == 200
    body = response.json()
    assert body["message"] == "Token refreshed successfully"
    assert body["data"]["token_type"] == "bearer" and body["data"]["expires_in"] == 3600
    new_token = body["data"]["token"]
    assert new_token != account.token
    old = await client.get("/api/auth/me", headers=account.headers)
    assert old.status_code == 401 and old.json()["message"] == "Token is invalid"
    again = await client.post("/api/auth/refresh", headers=account.headers)
    assert again.status_code == 401
    assert (await client.get("/api/auth/me", headers=bearer(new_token))).status_code == 200
    # The refreshed token keeps the original iat: the refresh window is counted from the first login.
    old_iat = jwt.decode(account.token, options={"verify_signature": False})["iat"]
    assert jwt.decode(new_token, options={"verify_signature": False})["iat"] == old_iat


async def test_parallel_refreshes_with_one_token_both_succeed_inside_the_grace_period(
    client: httpx2.AsyncClient,
) -> None:
    """The web client refreshes from two places at once on page load (App.vue and the router guard)."""
    account = await register(client, "ruth")
    first, second = await asyncio.gather(
        client.post("/api/auth/refresh", headers=account.headers),
        client.post("/api/auth/refresh", headers=account.headers),
    )
    assert first.status_code == second.status_code == 200
    assert (await client.get("/api/auth/me", headers=account.headers)).status_code == 200  # still in grace
    for response in (first, second):
        token = response.json()["data"]["token"]
        assert (await client.get("/api/auth/me", headers=bearer(token))).status_code == 200


async def test_logout_after_a_refresh_revokes_at_once(client: httpx2.AsyncClient) -> None:
    account = await register(client, "sam")
    assert (await client.post("/api/auth/refresh", headers=account.headers)).status_code == 200
    assert (await client.post("/api/auth/logout", headers=account.headers)).status_code == 200
    assert (await client.get("/api/auth/me", headers=account.headers)).status_code == 401
    assert (await client.post("/api/auth/refresh", headers=account.headers)).status_code == 401


async def test_an_expired_token_can_be_refreshed_inside_the_window_only(client: httpx2.AsyncClient) -> None:
    account = await register(client, "kate")
    now = int(time.time())
    expired = _hs(_claims(account.id, iat=now - 7200, nbf=now - 7200, exp=now - 3600, jti="expired-in-window"))
    response = await client.post("/api/auth/refresh", headers=bearer(expired))
    assert response.status_code == 200
    too_old = _hs(_claims(account.id, iat=now - 20160 * 60 - 5, nbf=now - 20160 * 60 - 5, exp=now - 3600, jti="old"))
    response = await client.post("/api/auth/refresh", headers=bearer(too_old))
    assert response.status_code == 401
    assert response.json() == {
        "success": False,
        "message": "Token has expired and cannot be refreshed",
        "error": "Token expired",
    }


async def test_refresh_without_or_with_a_bad_token(client: httpx2.AsyncClient) -> None:
    missing = await client.post("/api/auth/refresh")
    assert missing.status_code == 401 and missing.json()["message"] == "Token not provided"
    bad = await client.post("/api/auth/refresh", headers=bearer("not.a.jwt"))
    assert bad.status_code == 401 and bad.json()["message"] == "Token is invalid"


async def test_logout_revokes_the_token(client: httpx2.AsyncClient) -> None:
    account = await register(client, "liam")
    response = await client.post("/api/auth/logout", headers=account.headers)
    assert response.status_code == 200
    assert response.json() == {"success": True, "message": "Successfully logged out"}
    after = await client.get("/api/auth/me", headers=account.headers)
    assert after.status_code == 401
    assert (await client.post("/api/auth/refresh", headers=account.headers)).status_code == 401


async def test_logout_without_a_token_still_succeeds(client: httpx2.AsyncClient) -> None:
    response = await client.post("/api/auth/logout")
    assert response.status_code == 200 and response.json()["success"] is True


async def test_laravel_bcrypt_hashes_log_in(client: httpx2.AsyncClient, settings: Any) -> None:
    """A user written by Laravel ($2y$ hashes, cost 10 and 12) logs in; ours are written as $2y$ too."""
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(settings.sqlalchemy_url)
    laravel_factory_hash = "$2y$10$92IXUNpkjO0rOQ5byMi.Ye4oKoEa3Ro9llC/.og/at2.uheWG/igi"  # "password"
    cost12 = "$2y$" + bcrypt.hashpw(b"laravel-12", bcrypt.gensalt(12)).decode()[4:]
    try:
        async with engine.begin() as connection:
            for name, hashed in (("laravel10", laravel_factory_hash), ("laravel12", cost12)):
                await connection.execute(
                    text("INSERT INTO users (id, username, email, password_hash) VALUES (:id, :u, :e, :h)"),
                    {
                        "id": uuid.uuid4().hex if settings.is_sqlite else str(uuid.uuid4()),
                        "u": name,
                        "e": f"{name}@example.com",
                        "h": hashed,
                    },
                )
        for name, password in (("laravel10", "password"), ("laravel12", "laravel-12")):
            response = await client.post("/api/auth/login", json={"email": f"{name}@example.com", "password": password})
            assert response.status_code == 200, response.text
        await register(client, "pythonic", "password-py")
        async with engine.connect() as connection:
            stored = (
                await connection.execute(text("SELECT password_hash FROM users WHERE username='pythonic'"))
            ).scalar()
        assert stored is not None and stored.startswith("$2y$04$") and len(stored) == 60
    finally:
        await engine.dispose()
