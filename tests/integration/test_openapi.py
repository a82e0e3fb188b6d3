"""The API describes itself: ``/openapi.json`` is valid OpenAPI 3.1 and documents every route completely.

(That every response the suite receives conforms to the document is checked by the clients' event hooks, see
``tests/openapi_contract.py``; the last tests here show that those hooks do fail a non-conforming response.)
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx2
import pytest
from fastapi import FastAPI, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute, iter_route_contexts
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from spotik.app import create_app
from spotik.deps import current_claims_and_user, db_session, room_from_path, token_from
from spotik.errors import JSONResponse
from spotik.http.input import read_input
from spotik.http.responses import ok
from spotik.settings import PROBE_PATHS, Settings
from spotik.tracks.router import track_from_path
from tests.conftest import make_settings
from tests.openapi_contract import Contract, OpenApiViolation, contract_hooks, routes_of

# A handler reads a body when its source calls one of these (or when FastAPI parses a typed body parameter).
BOUNDED_READERS = ("read_input(", "read_cover_input(", "receive_multipart(")  # these refuse large bodies: 413
BODY_READERS = (*BOUNDED_READERS, ".form(", ".json(", ".body(", ".stream(")
NO_BODY_STATUSES = {"204", "304"}


@pytest.fixture
def offline_settings(tmp_path: Path) -> Settings:
    return make_settings(f"sqlite:///{tmp_path / 'unused.sqlite3'}", tmp_path / "storage")


@pytest.fixture
def document(offline_settings: Settings) -> dict[str, Any]:
    return create_app(offline_settings).openapi()


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"].startswith("3.1")
    validate(document, cls=OpenAPIV31SpecValidator)


def test_the_document_leaves_out_only_the_websocket(document: dict[str, Any]) -> None:
    assert "/ws" not in document["paths"]
    for path in ("/metrics", "/dashboard", "/api/storage/{path}", "/api/tracks/{track}/stream"):
        assert path in document["paths"], path
    media = document["paths"]["/metrics"]["get"]["responses"]["200"]["content"]
    assert list(media) == ["text/plain"]
    assert list(document["paths"]["/dashboard"]["get"]["responses"]["200"]["content"]) == ["text/html"]
    stream = document["paths"]["/api/tracks/{track}/stream"]
    assert {"200", "206", "304", "416"} <= set(stream["get"]["responses"]) and "head" in stream
    assert stream["get"]["operationId"] != stream["head"]["operationId"]


def test_every_route_is_documented_completely(offline_settings: Settings) -> None:
    assert completeness_problems(create_app(offline_settings)) == []


def test_a_new_route_without_documentation_is_caught(offline_settings: Settings) -> None:
    app = create_app(offline_settings)

    async def undocumented(request: Request) -> JSONResponse:
        return ok("Created", await read_input(request), status_code=201)

    app.add_api_route("/api/undocumented", undocumented, methods=["POST"], status_code=201)
    problems = completeness_problems(app)
    assert "POST /api/undocumented: 201 has no schema" in problems
    assert "POST /api/undocumented: reads a body but documents none" in problems
    assert "POST /api/undocumented: reads a body but does not declare 400" in problems
    assert "POST /api/undocumented: reads a body but does not declare 413" in problems


def test_a_served_document_matches_paths_as_the_server_routes_them(document: dict[str, Any]) -> None:
    """The live hooks read routes from /openapi.json: ``{path}`` spans segments (Starlette's ``{path:path}``), any
    other parameter is one segment."""
    contract = Contract.of_document(document)
    nested = contract.match("GET", "/api/storage/room_covers/cover.png")
    assert nested.route is not None and nested.route.template == "/api/storage/{path}", nested
    assert nested.parameters == {"path": "room_covers/cover.png"}
    assert contract.match("GET", "/api/rooms/a/b").route is None


async def test_docs_page_is_served(offline_settings: Settings) -> None:
    app = create_app(offline_settings)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://t") as client:
        docs = await client.get("/docs")
        spec = await client.get("/openapi.json")
    assert docs.status_code == 200 and "swagger-ui" in docs.text
    assert spec.status_code == 200 and spec.json()["info"]["title"] == "Spotik"


# --- the response checks fail what the document does not allow ------------------------------------------------


async def test_the_client_hooks_fail_a_response_that_breaks_its_schema(offline_settings: Settings) -> None:
    app = create_app(offline_settings)
    broken = copy.deepcopy(app.openapi())
    broken["components"]["schemas"]["Ping"]["properties"]["status"] = {"type": "integer"}
    with pytest.raises(OpenApiViolation, match=r'(?s)GET /api/ping answered 200.*"ok" is not of type "integer"'):
        await _get(app, "/api/ping", Contract(broken, routes_of(app)))


async def test_the_client_hooks_fail_an_undocumented_status(offline_settings: Settings) -> None:
    app = create_app(offline_settings)
    broken = copy.deepcopy(app.openapi())
    del broken["paths"]["/api/ping"]["get"]["responses"]["200"]
    with pytest.raises(OpenApiViolation, match=r"(?s)answered 200.*Undocumented status code.*Documented: 429, 500"):
        await _get(app, "/api/ping", Contract(broken, routes_of(app)))


async def test_the_client_hooks_fail_an_undocumented_content_type(offline_settings: Settings) -> None:
    app = create_app(offline_settings)
    broken = copy.deepcopy(app.openapi())
    answer = broken["paths"]["/api/ping"]["get"]["responses"]["200"]
    answer["content"] = {"text/plain": answer["content"]["application/json"]}
    with pytest.raises(OpenApiViolation, match=r"(?s)Undocumented Content-Type.*Received: application/json"):
        await _get(app, "/api/ping", Contract(broken, routes_of(app)))


async def test_the_client_hooks_accept_the_framework_404_and_405(offline_settings: Settings) -> None:
    app = create_app(offline_settings)
    assert (await _get(app, "/api/nothing/here")).status_code == 404
    assert (await _get(app, "/api/auth/login")).status_code == 405
    # The same answers to HEAD, without a body.
    assert (await _get(app, "/api/nothing/here", method="HEAD")).status_code == 404
    assert (await _get(app, "/api/auth/login", method="HEAD")).status_code == 405


async def _get(app: FastAPI, path: str, contract: Contract | None = None, *, method: str = "GET") -> httpx2.Response:
    """``GET path`` (or ``method``) from a client with the contract hooks (no lifespan: these routes need no state)."""
    transport = httpx2.ASGITransport(app=app)
    hooks = contract_hooks(app, contract)
    async with httpx2.AsyncClient(transport=transport, base_url="http://testserver", event_hooks=hooks) as client:
        return await client.request(method, path)


# --- what "documented completely" means ------------------------------------------------------------------------


def completeness_problems(app: FastAPI) -> list[str]:
    """Everything the document lacks for the app's routes, as sentences (empty: complete).

    For each operation: a schema for each 2xx response (but 204/304) and for each error response; a request body
    with a schema for each media type when the handler reads a body (and none when it does not); and the errors
    its dependencies and the middleware can give: 401 and 404 with authentication, 404 with a ``{room}`` or
    ``{track}`` binding, 400 and 413 when it reads a body, 503 with a database session, 500 always, 429 except on
    the probes.
    """
    document = app.openapi()
    problems: list[str] = []
    for path, method, route in documented_operations(app):
        name = f"{method} {path}"
        operation = document["paths"].get(path, {}).get(method.lower())
        if operation is None:
            problems.append(f"{name}: missing from the document")
            continue
        answers: dict[str, Any] = operation.get("responses", {})
        successes = [status for status in answers if status.startswith("2")]
        if not successes:
            problems.append(f"{name}: no 2xx response")
        for status, answer in answers.items():
            if status in NO_BODY_STATUSES or status.startswith(("1", "3")):
                continue
            if not _has_schemas(answer):
                problems.append(f"{name}: {status} has no schema")
        calls = set(_calls(route.dependant))
        source = _source(route)
        reads_body = route.body_field is not None or any(reader in source for reader in BODY_READERS)
        body = operation.get("requestBody")
        if reads_body and not (body and _has_schemas(body)):
            problems.append(f"{name}: reads a body but documents none")
        if body and not reads_body:
            problems.append(f"{name}: documents a body it never reads")
        required: dict[str, str] = {"500": "every operation"}
        if path not in PROBE_PATHS:
            required["429"] = "is rate limited"
        if reads_body:
            required["400"] = "reads a body"
        if any(reader in source for reader in BOUNDED_READERS):
            required["413"] = "reads a body"
        if current_claims_and_user in calls:
            required |= {"401": "authenticates", "404": "authenticates"}
        if room_from_path in calls or track_from_path in calls:
            required["404"] = "binds a path id"
        if db_session in calls:
            required["503"] = "opens a database session"
        for status, reason in required.items():
            if status not in answers:
                problems.append(f"{name}: {reason} but does not declare {status}")
        if token_from in calls and not operation.get("security"):
            problems.append(f"{name}: reads a token but declares no security")
    return problems


def documented_operations(app: FastAPI) -> Iterator[tuple[str, str, APIRoute]]:
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema and context.path_format:
            for method in sorted(context.methods or ()):
                yield context.path_format, method, route


def _has_schemas(entry: dict[str, Any]) -> bool:
    content = entry.get("content") or {}
    return bool(content) and all(media.get("schema") not in (None, {}) for media in content.values())


def _calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _calls(dependency)


def _source(route: APIRoute) -> str:
    try:
        return inspect.getsource(route.endpoint)
    except (OSError, TypeError):
        return ""
