"""The OpenAPI document (``/openapi.json``, ``/docs``): shared envelopes and error responses, and its assembly.

Documentation only: handlers keep reading bodies with ``read_input`` + ``validate`` (Laravel's messages and order of
checks) and keep returning ``JSONResponse``, so nothing declared here runs on a request. Request bodies are declared
through ``openapi_extra`` (see :func:`request_body`), never as typed body parameters that FastAPI would validate,
and responses refer to their shapes by ``$ref`` (see :func:`returns`), never through ``response_model`` or
``model``, for which FastAPI builds a pydantic TypeAdapter in every app it serves (about 20 ms per app with these
shapes, paid at its first request; the test suite builds hundreds of apps).

Where each part of an operation comes from:

* the route decorators declare, with ``responses=responses(returns(Shape), ...)``, the 2xx response and the errors
  the handler, its dependencies and its services raise (built from the shared dicts below), and the request body
  with ``openapi_extra=request_body(...)``;
* :func:`build_document` adds what the middleware stack gives every operation: 500 (``UnhandledErrorMiddleware``),
  429 (the rate limiter; not on the probe paths it exempts by default), 503 on operations that open a database
  session (a database that is down or saturated), and the bearer-token security requirement on operations that
  read a token. Those are derived from each route's dependencies, so a new route cannot forget them.

Shapes are ``TypedDict`` classes (one per response shape, in each domain's ``schemas.py``): ``NotRequired`` marks a
key that may be absent, ``X | None`` a value that may be null. Shapes built by a fixed builder function are closed
(``@closed``: ``additionalProperties: false``); envelopes that can carry extra keys (``ApiError.extra``) are open.
"""

from __future__ import annotations

import copy
import re
import warnings
from collections.abc import Callable, Iterator, Mapping
from typing import Annotated, Any, Literal, NotRequired

from fastapi import FastAPI
from fastapi.dependencies.models import Dependant
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute, iter_route_contexts
from pydantic import ConfigDict, Field, TypeAdapter, with_config
from pydantic.json_schema import JsonSchemaMode
from typing_extensions import TypedDict

from spotik.settings import PROBE_PATHS

REF_PREFIX = "#/components/schemas/"
JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
MULTIPART = "multipart/form-data"
READ_INPUT_MEDIA_TYPES = (JSON, FORM, MULTIPART)  # what spotik.http.input.read_input accepts

closed = with_config(ConfigDict(extra="forbid"))
"""Decorator for a ``TypedDict`` whose keys are fixed (``additionalProperties: false`` in the document)."""
open_ended = with_config(ConfigDict(extra="allow"))
"""Decorator for a ``TypedDict`` that may carry more keys (a ``TypedDict`` without either takes its parent's)."""

Uuid = Annotated[str, Field(json_schema_extra={"format": "uuid"})]
"""A UUID in its canonical text form."""
Timestamp = Annotated[str, Field(json_schema_extra={"format": "date-time"})]
"""ISO-8601 UTC with microseconds and ``Z`` (contract D2)."""
Message = Annotated[str, Field(description="A human-readable message (Laravel's wording, shown to users as is).")]
FieldErrors = Annotated[
    dict[str, list[str]],
    Field(
        description="Laravel's validation messages by field name.",
        examples=[{"name": ["The name field is required."]}],
    ),
]
Binary = Annotated[bytes, Field(json_schema_extra={"format": "binary"})]
"""A file part of a multipart body."""
IntegerInput = Annotated[
    int | Annotated[str, Field(pattern=r"^[+-]?\d+$")],
    Field(description="An integer, or a string of digits (Laravel's `integer` rule)."),
]
BooleanInput = Annotated[
    bool | Literal[0, 1, "0", "1", "true", "false"],
    Field(description='A boolean, or one of 0, 1, "0", "1", "true", "false" (Laravel\'s `boolean` rule).'),
]


# --- envelopes ---------------------------------------------------------------------------------------------------


@closed
class Done(TypedDict):
    """Envelope A success without data: ``{success: true, message}``."""

    success: Literal[True]
    message: Message


@open_ended
class ErrorA(TypedDict):
    """Envelope A error (auth, rooms, playback, genres, playlists and framework errors).

    ``error`` is a short machine-readable reason; ``errors`` (validation) lists Laravel's messages by field.
    """

    success: Literal[False]
    message: Message
    error: NotRequired[str]
    errors: NotRequired[FieldErrors]


@open_ended
class ValidationErrorA(TypedDict):
    """Envelope A validation failure (422): ``message`` is "Validation failed", ``errors`` says why, by field."""

    success: Literal[False]
    message: Message
    error: NotRequired[str]
    errors: FieldErrors


@open_ended
class ErrorB(TypedDict):
    """Envelope B error (tracks, votes, audio files, covers): ``error``, plus ``message`` when it says more."""

    error: Annotated[str, Field(description="What went wrong (the message itself when there is no `message`).")]
    message: NotRequired[Message]
    errors: NotRequired[FieldErrors]


@open_ended
class ValidationErrorB(TypedDict):
    """Envelope B validation failure (422): ``errors`` lists Laravel's messages by field."""

    error: str
    message: NotRequired[Message]
    errors: FieldErrors


@open_ended
class RateLimited(TypedDict):
    """Too many requests from this client IP (envelope A); ``Retry-After`` says when to try again."""

    success: Literal[False]
    message: Message
    error: str
    retry_after: Annotated[int, Field(description="Seconds until the limit resets.")]


@open_ended
class ServerError(TypedDict):
    """An unexpected error or an unavailable dependency (envelope A): a request id to quote, never a trace."""

    success: Literal[False]
    message: Message
    error: str
    request_id: Annotated[str, Field(description="The request's id, as in the `X-Request-ID` header.")]


# --- responses ---------------------------------------------------------------------------------------------------
#
# Responses refer to their shapes as components (``$ref``), never as ``model``: FastAPI turns each ``model`` (and each
# ``response_model``) into a pydantic TypeAdapter for every app it builds, which a TypedDict does not cache, while a
# reference costs nothing. build_document adds the referenced shapes to the document's components.

ResponseDoc = dict[str, Any]
Responses = dict[int | str, ResponseDoc]
_COMPONENTS: dict[str, tuple[Any, JsonSchemaMode]] = {}


def ref(model: Any, mode: JsonSchemaMode = "serialization") -> dict[str, str]:
    """A reference to ``model``'s schema, which becomes a component of the document."""
    name = model.__name__
    known = _COMPONENTS.setdefault(name, (model, mode))
    if known[0] is not model:
        raise ValueError(f"two shapes are named {name}")
    return {"$ref": f"{REF_PREFIX}{name}"}


def returns(model: Any, status: int = 200, description: str | None = None) -> Responses:
    """A success response whose JSON body has ``model``'s shape (described by its docstring's first line)."""
    summary = description or (model.__doc__ or "").strip().split("\n", 1)[0] or "Success."
    return {status: {"description": summary, "content": {JSON: {"schema": ref(model)}}}}


def error(description: str, *models: Any) -> ResponseDoc:
    """One error response: its description and body shape (several shapes: any of them; default ``ErrorA``)."""
    return {"description": description, "content": {JSON: {"schema": _any_of([ref(m) for m in models or (ErrorA,)])}}}


def _any_of(schemas: list[dict[str, Any]]) -> dict[str, Any]:
    options: list[dict[str, Any]] = []
    for schema in schemas:
        for option in schema.get("anyOf", [schema]):
            if option not in options:
                options.append(option)
    return options[0] if len(options) == 1 else {"anyOf": options}


def responses(*parts: Mapping[Any, ResponseDoc]) -> Responses:
    """Merge response dicts; one status declared by several parts lists every description and every shape."""
    merged: Responses = {}
    for part in parts:
        for status, doc in part.items():
            if status not in merged:
                merged[status] = copy.deepcopy(doc)
                continue
            current = merged[status]
            current["description"] = " ".join(dict.fromkeys([current["description"], doc["description"]]))
            for media_type, entry in doc.get("content", {}).items():
                mine = current.setdefault("content", {}).setdefault(media_type, {})
                schemas = [s for s in (mine.get("schema"), entry.get("schema")) if s]
                if schemas:
                    mine["schema"] = _any_of(schemas)
            for key, value in doc.items():
                current.setdefault(key, copy.deepcopy(value))
    return merged


UNAUTHENTICATED: Responses = {
    401: error("No bearer token, or one that is invalid, expired or revoked (envelope A)."),
    404: error("The token's user no longer exists (envelope A)."),
}
ROOM_NOT_FOUND: Responses = {404: error("No room has this id (envelope A).")}
BAD_INPUT: Responses = {
    400: error("The body is not valid JSON, or not a JSON object (envelope A)."),
    413: error("The body is larger than `MAX_BODY_KB` (1 MiB by default) (envelope A)."),
}
INVALID_A: Responses = {422: error("Validation failed: Laravel's messages by field (envelope A).", ValidationErrorA)}
INVALID_B: Responses = {422: error("Validation failed: Laravel's messages by field (envelope B).", ValidationErrorB)}

# Added to operations by build_document (see the module docstring).
RATE_LIMITED: ResponseDoc = {
    "description": "Too many requests from this client IP (every path but the probes exempted by "
    "RATE_LIMIT_EXEMPT_PATHS, by default /live, /ready and /metrics).",
    "headers": {
        "Retry-After": {"description": "Seconds to wait.", "required": True, "schema": {"type": "integer"}},
        "X-RateLimit-Limit": {"description": "Requests allowed in the window.", "schema": {"type": "integer"}},
        "X-RateLimit-Remaining": {"description": "Requests left in the window.", "schema": {"type": "integer"}},
        "X-RateLimit-Reset": {"description": "When the window resets (epoch seconds).", "schema": {"type": "integer"}},
    },
    "content": {JSON: {"schema": ref(RateLimited)}},
}
SERVER_ERROR: ResponseDoc = {
    "description": "An unexpected error: the request id to quote, never a trace (envelope A).",
    "content": {JSON: {"schema": ref(ServerError)}},
}
UNAVAILABLE: ResponseDoc = {
    "description": "The database is unreachable or saturated; try again later (envelope A).",
    "headers": {"Retry-After": {"description": "Seconds to wait.", "required": True, "schema": {"type": "integer"}}},
    "content": {JSON: {"schema": ref(ServerError)}},
}

SECURITY_SCHEMES = {
    "bearerAuth": {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": "The token from `POST /api/auth/login` or `/api/auth/register`.",
    },
    "tokenQuery": {
        "type": "apiKey",
        "in": "query",
        "name": "token",
        "description": "The same token as a query parameter, for clients that cannot send headers (audio elements).",
    },
}
SECURITY: list[dict[str, list[str]]] = [{"bearerAuth": []}, {"tokenQuery": []}]


BINARY = {"schema": {"type": "string", "format": "binary"}}
_VALIDATORS = {
    "ETag": {"description": "From the file's inode, size and modification time.", "schema": {"type": "string"}},
    "Last-Modified": {"description": "The file's modification time (HTTP date).", "schema": {"type": "string"}},
    "Cache-Control": {"schema": {"type": "string"}},
}


def file_responses(media_type: str, what: str) -> Responses:
    """A stored file served with ranges and conditional requests (``spotik.tracks.streaming``): 200/206/304/416."""
    full = {
        **_VALIDATORS,
        "Accept-Ranges": {"schema": {"type": "string", "const": "bytes"}},
        "Content-Disposition": {"description": "`inline`, with the file's name.", "schema": {"type": "string"}},
    }
    content_range = {"description": "`bytes first-last/size`.", "required": True, "schema": {"type": "string"}}
    return {
        200: {
            "description": f"The whole {what} (also for a malformed or multi-range `Range`).",
            "headers": full,
            "content": {media_type: BINARY},
        },
        206: {
            "description": f"One byte range of the {what} (`Range: bytes=first-last`, `first-` or `-suffix`).",
            "headers": {**full, "Content-Range": content_range},
            "content": {media_type: BINARY},
        },
        304: {
            "description": "Not modified (`If-None-Match`, or `If-Modified-Since` without it).",
            "headers": _VALIDATORS,
        },
        416: {
            "description": "The range starts past the end of the file, or ends before it starts (envelope B).",
            "headers": {"Content-Range": {**content_range, "description": "`bytes */size`."}},
            "content": {JSON: {"schema": ref(ErrorB)}},
        },
    }


def _header(name: str, description: str) -> dict[str, Any]:
    return {"name": name, "in": "header", "required": False, "description": description, "schema": {"type": "string"}}


FILE_REQUEST_HEADERS: dict[str, Any] = {
    "parameters": [
        _header("Range", "One byte range: `bytes=first-last`, `bytes=first-` or `bytes=-suffix`."),
        _header("If-Range", "Serve the range only if the file still has this ETag or date."),
        _header("If-None-Match", "ETags the client has: 304 if the file still matches one."),
        _header("If-Modified-Since", "304 if the file has not changed since (ignored with `If-None-Match`)."),
    ]
}


# --- request bodies ----------------------------------------------------------------------------------------------


def request_body(
    model: Any,
    *media_types: str,
    required: bool = True,
    description: str | None = None,
    encoding: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, Any]:
    """``openapi_extra`` declaring a request body that the handler reads itself (FastAPI validates nothing).

    ``media_types`` default to what ``read_input`` accepts (JSON, urlencoded and multipart forms). ``model`` becomes
    a component of the document (see :func:`build_document`).
    """
    content: dict[str, Any] = {}
    for media_type in media_types or READ_INPUT_MEDIA_TYPES:
        entry: dict[str, Any] = {"schema": ref(model, "validation")}
        if encoding and media_type == MULTIPART:
            entry["encoding"] = {field: dict(spec) for field, spec in encoding.items()}
        content[media_type] = entry
    body: dict[str, Any] = {"required": required, "content": content}
    if description:
        body["description"] = description
    return {"requestBody": body}


# --- the document ------------------------------------------------------------------------------------------------

DESCRIPTION = """\
Collaborative listening rooms: the API of the Spotik web client (a drop-in replacement for its Laravel backend).

**Envelopes.** Auth, rooms, playback, genres and playlists answer in envelope A: `{success, message, data?}`, and
errors `{success: false, message, error?, errors?}`. Tracks, votes, audio files and covers answer with a bare
object (envelope B), and errors `{error, message?, errors?}`; their authentication and room errors come from the
shared dependencies, in envelope A. Validation errors (422) carry Laravel's messages by field in `errors`.

**Timestamps** are ISO-8601 UTC with microseconds: `2026-11-25T10:15:30.123456Z`.

**Authentication.** `Authorization: Bearer <token>` (or `?token=<token>` where headers cannot be sent).

**Real time.** The WebSocket endpoint `/ws` is not described here (OpenAPI cannot describe it).
"""
TAGS = [
    {"name": "health", "description": "Ping, server time, health and the liveness/readiness probes."},
    {"name": "auth", "description": "Registration, login and JWT tokens (envelope A)."},
    {"name": "rooms", "description": "Listening rooms and their participants (envelope A)."},
    {"name": "tracks", "description": "The queue, uploads, votes and audio files (envelope B)."},
    {"name": "playback", "description": "What plays in a room: administrator controls and status (envelope A)."},
    {"name": "genres", "description": "Genres (envelope A)."},
    {"name": "playlists", "description": "Playlists of tracks (envelope A)."},
    {"name": "covers", "description": "Room covers and the public storage (envelope B)."},
    {"name": "performance", "description": "Performance figures, health and operator actions."},
    {"name": "monitoring", "description": "The Prometheus exposition."},
]
_METHOD_SUFFIX = re.compile(r"_(get|head|post|put|patch|delete|options)$")


Dependency = Callable[..., Any]


def configure_openapi(app: FastAPI, *, token: Dependency, session: Dependency) -> None:
    """Make ``app.openapi()`` (``/openapi.json``, ``/docs``) serve :func:`build_document`, built once per app.

    ``token`` and ``session`` are the dependencies that read a bearer token and open a database session: an operation
    that uses the first needs authentication, one that uses the second can answer 503 when the database is down.
    """

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = build_document(app, token=token, session=session)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def build_document(app: FastAPI, *, token: Dependency, session: Dependency) -> dict[str, Any]:
    """FastAPI's document of the app's routes, completed: cross-cutting responses, security, components."""
    with warnings.catch_warnings():
        # A GET+HEAD route is one route: FastAPI gives both operations its one id (renamed below).
        warnings.filterwarnings("ignore", message="Duplicate Operation ID", category=UserWarning)
        document = get_openapi(
            title=app.title, version=app.version, description=DESCRIPTION, routes=app.routes, tags=TAGS
        )
    schemas: dict[str, Any] = document.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):  # FastAPI's 422 body: this app never renders it
        schemas.pop(unused, None)
    for name, schema in component_schemas(list(_COMPONENTS.values())).items():
        schemas.setdefault(name, schema)
    document["components"] = {"schemas": dict(sorted(schemas.items())), "securitySchemes": SECURITY_SCHEMES}

    for path, methods, route in _documented_routes(app):
        calls = set(_dependency_calls(route.dependant))
        for method in methods:
            operation = document["paths"][path][method.lower()]
            if len(methods) > 1:
                operation["operationId"] = _METHOD_SUFFIX.sub("", operation["operationId"]) + f"_{method.lower()}"
            if token in calls:
                operation["security"] = SECURITY
            answers: dict[str, Any] = operation.setdefault("responses", {})
            if _is_fastapi_422(answers.get("422")):
                del answers["422"]  # routes declare their real 422s, in the app's envelopes
            if path not in PROBE_PATHS:
                _add_response(answers, "429", RATE_LIMITED)
            _add_response(answers, "500", SERVER_ERROR)
            if session in calls:
                _add_response(answers, "503", UNAVAILABLE)
            operation["responses"] = dict(sorted(answers.items()))
    document["components"]["schemas"] = _referenced(document["paths"], schemas)
    return document


def component_schemas(models: list[tuple[Any, JsonSchemaMode]]) -> dict[str, Any]:
    """JSON schemas of ``models`` (and what they refer to), named by class as FastAPI names its components."""
    adapters = [(model.__name__, mode, TypeAdapter(model)) for model, mode in models]
    keyed, definitions = TypeAdapter.json_schemas(adapters, ref_template=REF_PREFIX + "{model}")
    schemas: dict[str, Any] = dict(definitions.get("$defs", {}))
    for (name, _mode), schema in keyed.items():
        ref = schema.get("$ref", "")
        if ref.startswith(REF_PREFIX) and ref != REF_PREFIX + name:
            schemas.setdefault(name, schemas[ref.removeprefix(REF_PREFIX)])
        elif not ref:
            schemas[name] = schema
    return schemas


def _add_response(answers: dict[str, Any], status: str, doc: ResponseDoc) -> None:
    """Add a cross-cutting response; one the route declares already keeps its shapes and gains this one."""
    declared = answers.get(status)
    if declared is None:
        answers[status] = copy.deepcopy(doc)
        return
    ours = doc["content"][JSON]["schema"]
    theirs = declared.setdefault("content", {}).setdefault(JSON, {}).get("schema")
    if theirs is None or theirs == ours:
        declared["content"][JSON]["schema"] = ours
    else:
        options = theirs["anyOf"] if "anyOf" in theirs else [theirs]
        declared["content"][JSON]["schema"] = {"anyOf": [*options, ours]}
    declared["description"] = f"{doc['description']} {declared.get('description', '')}".strip()


def _referenced(paths: dict[str, Any], schemas: dict[str, Any]) -> dict[str, Any]:
    """The schemas the operations refer to, directly or through other schemas (a shape whose route this app lacks is
    left out)."""
    names: set[str] = set()
    pending = [paths]
    while pending:
        node = pending.pop()
        if isinstance(node, dict):
            target = node.get("$ref")
            if isinstance(target, str) and target.startswith(REF_PREFIX):
                name = target.removeprefix(REF_PREFIX)
                if name not in names:
                    names.add(name)
                    pending.append(schemas.get(name, {}))
            pending.extend(node.values())
        elif isinstance(node, list):
            pending.extend(node)
    return {name: schema for name, schema in schemas.items() if name in names}


def _documented_routes(app: FastAPI) -> Iterator[tuple[str, list[str], APIRoute]]:
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema and context.path_format and context.methods:
            yield context.path_format, sorted(context.methods), route


def _dependency_calls(dependant: Dependant) -> Iterator[Callable[..., Any]]:
    for dependency in dependant.dependencies:
        if dependency.call is not None:
            yield dependency.call
        yield from _dependency_calls(dependency)


def _is_fastapi_422(response: Any) -> bool:
    schema = (response or {}).get("content", {}).get(JSON, {}).get("schema", {})
    return isinstance(schema, dict) and schema.get("$ref") == f"{REF_PREFIX}HTTPValidationError"
