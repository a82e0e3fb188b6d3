"""Every response the suite receives from a Spotik app is checked against the app's own OpenAPI document.

Install the checks on a client with its event hooks::

    httpx2.AsyncClient(transport=httpx2.ASGITransport(app=...), event_hooks=contract_hooks(app))  # in process
    httpx2.Client(base_url=server.base_url, event_hooks=live_contract_hooks(server.base_url))    # a real server

For each response the operation is found by method and path (as the app routes it), then schemathesis' own
response checks run (``Case.validate_response``): the status code is documented, the content type is documented,
documented headers are present and valid, and a JSON body is valid against the documented schema (formats
included: ``uuid``, ``date-time``). A response that does not conform fails the test that received it, with an
:class:`OpenApiViolation` naming the request, the operation and what differs.

The parsed document is cached per route set (the document depends only on the app's routes), so the hundreds of
apps the suite builds parse it once.

What is not checked (narrow rules, each because no operation is involved):

* WebSocket handshakes (``Upgrade: websocket``): ``/ws`` cannot be described by OpenAPI and is left out of it;
* CORS preflights (``OPTIONS`` with ``Access-Control-Request-Method``): the CORS middleware answers them before
  routing;
* routes the app leaves out of its document on purpose (``include_in_schema=False``: ``/openapi.json``, ``/docs``,
  ``/redoc``, the plain-HTTP ``GET /ws``);
* the successful answers of routes a test adds to the app (``/test/...``, ``/api/explode``: endpoints outside the
  ``spotik`` package) are the test's own; their errors (>= 400) come from the app's middleware and are checked.

A path that no route matches must get the framework's 404, and a method that its route does not take the
framework's 405, both in envelope A (``ErrorA``), unless the rate limiter answered first (429, ``RateLimited``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx2
import jsonschema
import requests
import schemathesis
from fastapi import FastAPI
from fastapi.routing import iter_route_contexts
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [status_code_conformance, content_type_conformance, response_headers_conformance, response_schema_conformance]
# What a request that reaches no operation may get: the framework's 404/405 (spotik.app._http_error), or the rate
# limiter's 429 (it answers before routing).
UNROUTED = {404: "ErrorA", 405: "ErrorA", 429: "RateLimited"}
_PARAMETER = re.compile(r"\{([^}]+)\}")


class OpenApiViolation(AssertionError):
    """A response that the app's OpenAPI document does not allow."""


@dataclass(frozen=True, slots=True)
class Route:
    template: str
    pattern: re.Pattern[str]
    methods: frozenset[str]
    documented: bool
    fixture: bool = False  # added by a test (its endpoint lives outside the spotik package)


@dataclass(frozen=True, slots=True)
class Match:
    route: Route | None  # None: no route has this path (404)
    method_allowed: bool  # False: the path's route does not take this method (405)
    parameters: dict[str, str]


class Contract:
    """An OpenAPI document and the routes it describes, ready to check responses."""

    def __init__(self, document: dict[str, Any], routes: list[Route]) -> None:
        self.document = document
        self.routes = routes
        self.schema = schemathesis.openapi.from_dict(document)
        self.unrouted = {
            status: jsonschema.Draft202012Validator(
                {"$ref": f"#/components/schemas/{name}", "components": document["components"]},
                format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
            )
            for status, name in UNROUTED.items()
        }

    @classmethod
    def of_document(cls, document: dict[str, Any]) -> Contract:
        """For a server seen from outside: its routes are the document's paths (``{name}``: one path segment, except
        ``{path}``, which stands for Starlette's ``{path:path}`` and spans segments, as on ``/api/storage/{path}``)."""
        routes = []
        for template, item in document["paths"].items():
            parts = _PARAMETER.split(template)  # literal, name, literal, name, …
            regex = "".join(
                re.escape(part) if i % 2 == 0 else f"(?P<{part}>{'.+' if part == 'path' else '[^/]+'})"
                for i, part in enumerate(parts)
            )
            routes.append(Route(template, re.compile(f"^{regex}$"), frozenset(m.upper() for m in item), True))
        return cls(document, routes)

    def match(self, method: str, path: str) -> Match:
        """The route Starlette would pick: the first one matching path and method, else the first matching path."""
        partial: Match | None = None
        for route in self.routes:
            found = route.pattern.match(path)
            if found is None:
                continue
            if method in route.methods:
                return Match(route, True, found.groupdict())
            partial = partial or Match(route, False, found.groupdict())
        return partial or Match(None, False, {})

    def applies(self, response: httpx2.Response) -> bool:
        """Whether ``response`` is checked at all (see the module's docstring); decided before its body is read."""
        request = response.request
        if _not_an_operation(request):
            return False
        match = self.match(request.method, request.url.path)
        if match.route is None or not match.method_allowed:
            return True
        return match.route.documented and not (match.route.fixture and response.status_code < 400)

    def check(self, response: httpx2.Response, *, body: bytes) -> None:
        """Raise :class:`OpenApiViolation` unless the document allows ``response`` (whose JSON body is ``body``)."""
        if not self.applies(response):
            return
        request = response.request
        method, path = request.method, request.url.path
        match = self.match(method, path)
        where = f"{method} {request.url.raw_path.decode('ascii', 'replace')} answered {response.status_code}"
        if match.route is None or not match.method_allowed:
            self._check_framework_error(response, body, expected=404 if match.route is None else 405, where=where)
            return
        operation = self.schema[match.route.template][method]
        case = operation.Case(
            path_parameters=match.parameters,
            query=dict(request.url.params),
            headers=dict(request.headers),
        )
        try:
            case.validate_response(_schemathesis_response(response, body), checks=CHECKS)
        except (Failure, FailureGroup) as exc:
            raise OpenApiViolation(
                f"{where}, which /openapi.json does not allow for {method} {match.route.template}:\n\n{exc}"
            ) from None

    def _check_framework_error(self, response: httpx2.Response, body: bytes, *, expected: int, where: str) -> None:
        kind = "no route has this path" if expected == 404 else "its route does not take this method"
        status = response.status_code
        if status not in (expected, 429):
            raise OpenApiViolation(f"{where}: {kind}, so only the framework's {expected} (or a 429) is allowed")
        errors = [error.message for error in self.unrouted[status].iter_errors(json.loads(body))]
        if errors:
            raise OpenApiViolation(f"{where}: not a {UNROUTED[status]}: {'; '.join(errors)}")


def _not_an_operation(request: httpx2.Request) -> bool:
    headers = request.headers
    if headers.get("upgrade", "").lower() == "websocket":
        return True
    return request.method == "OPTIONS" and "access-control-request-method" in headers


def _is_json(response: httpx2.Response) -> bool:
    media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
    return media_type == "application/json" or media_type.endswith("+json")


def _schemathesis_response(response: httpx2.Response, body: bytes) -> schemathesis.Response:
    """schemathesis' response from an httpx2 one whose body may not have been read (audio, images: not needed)."""
    headers: defaultdict[str, list[str]] = defaultdict(list)
    for name, value in response.headers.multi_items():
        headers[name.lower()].append(value)
    request = response.request
    prepared = requests.Request(request.method, str(request.url), headers=dict(request.headers)).prepare()
    return schemathesis.Response(
        status_code=response.status_code,
        headers=dict(headers),
        content=body,
        request=prepared,
        elapsed=0.0,
        verify=False,
        message=response.reason_phrase,
        http_version=response.http_version.removeprefix("HTTP/"),
        encoding=response.encoding,
    )


# --- in process -----------------------------------------------------------------------------------------------

_BY_ROUTES: dict[tuple[Any, ...], Contract] = {}


def routes_of(app: FastAPI) -> list[Route]:
    routes = []
    for context in iter_route_contexts(app.routes):
        methods = getattr(context, "methods", None)
        if not methods or not context.path_format:
            continue  # WebSocket routes
        route = context.original_route
        documented = bool(getattr(route, "include_in_schema", False))
        fixture = not getattr(getattr(route, "endpoint", None), "__module__", "spotik").startswith("spotik.")
        routes.append(Route(context.path_format, context.path_regex, frozenset(methods), documented, fixture))
    return routes


def _shape(routes: list[Any], prefix: str = "") -> Iterator[tuple[Any, ...]]:
    """What the document is built from, read cheaply (FastAPI builds its route contexts once per app, slowly)."""
    for route in routes:
        included = getattr(route, "original_router", None)
        if included is not None:
            yield from _shape(included.routes, prefix + route.include_context.prefix)
            continue
        methods = frozenset(getattr(route, "methods", None) or ())
        yield (
            prefix + getattr(route, "path", ""),
            methods,
            getattr(route, "name", None),
            getattr(route, "include_in_schema", None),
        )


def contract_of(app: FastAPI) -> Contract:
    """The app's contract, parsed once per route set (the document depends only on the routes)."""
    key = (app.title, app.version, tuple(_shape(app.routes)))
    contract = _BY_ROUTES.get(key)
    if contract is None:
        contract = _BY_ROUTES[key] = Contract(app.openapi(), routes_of(app))
    return contract


Hook = Callable[[httpx2.Response], Awaitable[None]]


def contract_hooks(app: FastAPI, contract: Contract | None = None) -> dict[str, list[Hook]]:
    """Event hooks for an ``AsyncClient`` on ``app`` (in process): every response checked against its document
    (or against ``contract``, e.g. a document broken on purpose)."""

    async def check(response: httpx2.Response) -> None:
        if _not_an_operation(response.request):
            return
        checked = contract or contract_of(app)
        if checked.applies(response):
            checked.check(response, body=await response.aread() if _is_json(response) else b"")

    return {"response": [check]}


def with_contract(client: httpx2.AsyncClient, app: FastAPI) -> httpx2.AsyncClient:
    """``client`` with the contract hooks of ``app`` added (for clients built elsewhere)."""
    hooks = client.event_hooks
    client.event_hooks = {**hooks, "response": [*hooks.get("response", []), *contract_hooks(app)["response"]]}
    return client


# --- a real server ------------------------------------------------------------------------------------------------

_BY_DOCUMENT: dict[str, Contract] = {}


def _served(raw: bytes) -> Contract:
    digest = hashlib.sha256(raw).hexdigest()
    contract = _BY_DOCUMENT.get(digest)
    if contract is None:
        contract = _BY_DOCUMENT[digest] = Contract.of_document(json.loads(raw))
    return contract


def live_contract_hooks(base_url: str) -> dict[str, list[Callable[[httpx2.Response], None]]]:
    """Event hooks for a sync ``Client`` of a real server: checked against the document that server serves."""

    served: list[Contract] = []

    def check(response: httpx2.Response) -> None:
        if _not_an_operation(response.request):
            return
        body = response.read() if _is_json(response) else b""
        if not served:
            served.append(_served(httpx2.get(f"{base_url}/openapi.json", timeout=10).raise_for_status().content))
        served[0].check(response, body=body)

    return {"response": [check]}


def live_async_contract_hooks(base_url: str) -> dict[str, list[Hook]]:
    """Event hooks for an ``AsyncClient`` of a real server: checked against the document that server serves."""

    served: list[Contract] = []

    async def check(response: httpx2.Response) -> None:
        if _not_an_operation(response.request):
            return
        body = await response.aread() if _is_json(response) else b""
        if not served:
            async with httpx2.AsyncClient(timeout=10) as plain:
                served.append(_served((await plain.get(f"{base_url}/openapi.json")).raise_for_status().content))
        served[0].check(response, body=body)

    return {"response": [check]}
