from __future__ import annotations

from fastapi import APIRouter, Request

from spotik.auth import service
from spotik.auth.schemas import (
    AuthResponse,
    CurrentUserResponse,
    LoginRequest,
    RegisterRequest,
    TokenResponse,
    token_payload,
    user_brief,
    user_full,
)
from spotik.deps import BearerToken, CurrentUser, SessionDep, StateDep
from spotik.errors import JSONResponse
from spotik.http.input import read_input
from spotik.http.openapi import BAD_INPUT, INVALID_A, UNAUTHENTICATED, Done, error, request_body, responses, returns
from spotik.http.responses import ok

router = APIRouter(prefix="/api/auth", tags=["auth"])


@router.post(
    "/register",
    status_code=201,
    summary="Register a new account",
    responses=responses(returns(AuthResponse, 201), BAD_INPUT, INVALID_A),
    openapi_extra=request_body(RegisterRequest),
)
async def register_user(request: Request, state: StateDep, session: SessionDep) -> JSONResponse:
    user, token = await service.register(
        session,
        state.tokens,
        data=await read_input(request),
        bcrypt_cost=state.settings.bcrypt_cost,
        issuer=str(request.url.replace(query="")),
    )
    data = {"user": user_brief(user), **token_payload(token, state.tokens.ttl_seconds)}
    return ok("User registered successfully", data, status_code=201)


@router.post(
    "/login",
    summary="Log in",
    responses=responses(
        returns(AuthResponse), BAD_INPUT, {401: error("Unknown e-mail or wrong password (envelope A).")}, INVALID_A
    ),
    openapi_extra=request_body(LoginRequest),
)
async def log_in(request: Request, state: StateDep, session: SessionDep) -> JSONResponse:
    user, token = await service.login(
        session,
        state.tokens,
        data=await read_input(request),
        issuer=str(request.url.replace(query="")),
        bcrypt_cost=state.settings.bcrypt_cost,
    )
    return ok("Login successful", {"user": user_brief(user), **token_payload(token, state.tokens.ttl_seconds)})


@router.post(
    "/refresh",
    summary="Exchange a token for a new one",
    responses=responses(
        returns(TokenResponse),
        {401: error("No token, or one that is invalid, revoked or expired too long ago (envelope A).")},
    ),
)
async def refresh_token(request: Request, token: BearerToken, state: StateDep, session: SessionDep) -> JSONResponse:
    new_token = await service.refresh(
        session, state.tokens, state.reads, token=token, issuer=str(request.url.replace(query=""))
    )
    return ok("Token refreshed successfully", token_payload(new_token, state.tokens.ttl_seconds))


@router.post(
    "/logout",
    summary="Revoke the token (always succeeds)",
    responses=returns(Done),
)
async def log_out(token: BearerToken, state: StateDep, session: SessionDep) -> JSONResponse:
    await service.logout(session, state.tokens, state.reads, token=token)
    return ok("Successfully logged out")


@router.get("/me", summary="The authenticated user", responses=responses(returns(CurrentUserResponse), UNAUTHENTICATED))
async def me(user: CurrentUser) -> JSONResponse:
    return ok("User retrieved successfully", {"user": user_full(user)})
