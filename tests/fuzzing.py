"""Fuzzing a real Spotik server from its own OpenAPI document, with schemathesis.

Two runs against one server (``tests/e2e/test_fuzz.py`` starts it, on SQLite and on PostgreSQL):

* **Every operation** (:func:`fuzz_operations`): for each operation of ``/openapi.json``, ``examples`` cases of
  positive data (valid by the schema) and ``examples`` of negative data (invalid by it), drawn by schemathesis'
  hypothesis strategies. Requests are authenticated as the fuzzing user, a **member** of two rooms (administrator
  of one, plain member of the other). Path parameters mostly point at real things — a room, a track, its stored
  file, a playlist, a genre, a cover that exist — and sometimes keep the generated value (malformed or unknown ids).
  Destructive operations get a fresh victim for each case (a new room to delete, a new track, genre, playlist,
  playlist entry, a fresh token for logout and refresh) so that the rest of the run still has its resources, and
  leaving a room is followed by joining it again. Uploads and covers sometimes carry a real WAV or PNG, and
  ``track_id``/``genre_id`` in bodies sometimes name real rows, so the success paths are fuzzed too.
* **Stateful** (:func:`fuzz_stateful`): schemathesis' state machine over OpenAPI links added to the document here
  (register → create room → join → upload → vote → play → pause/resume/seek/skip/stop, genres and playlists too,
  besides the links schemathesis infers). Each scenario acts as a user registered for it, and switches to the user
  a successful ``register`` created; uploads carry a real WAV.

Every response of both runs goes through the same checks, and nothing stops at the first failure: each failure is
recorded (check, operation, status, a ``curl`` to reproduce it) and the test asserts at the end that there is none.

* schemathesis: ``not_a_server_error`` (no 5xx), ``status_code_conformance`` (the status is documented),
  ``content_type_conformance``, ``response_headers_conformance`` and ``response_schema_conformance`` (the body is
  valid against the documented schema);
* ``response_hygiene`` (``tests/hygiene.py``): no stack trace, SQL, path or secret; security headers;
  ``Cache-Control: no-store`` on authenticated JSON; no cookies.

A request uvicorn refuses as malformed HTTP before any app code runs (a control character in a generated header, a
``Content-Length`` that is not a number) gets uvicorn's own 400, which no operation documents: it is counted
(``refused_as_malformed_http``) and checked for hygiene only.

``negative_data_rejection`` and ``positive_data_acceptance`` are not among the checks. Tried on this API, the first
only reported what the contract allows or what the fuzzer itself did: unknown query parameters are ignored
(docs/api.md "Conventions"), and the fuzzer replaces a generated ``Authorization`` header, path ids and files with
valid ones after generation. The second only reported rules a JSON schema cannot state (unique names and e-mails,
``password_confirmation``, an audio file's content, a playback position within the track).

Sizes come from the environment: ``SPOTIK_FUZZ_EXAMPLES`` (cases per operation and mode, default 10: the bounded
run of ``make test``), ``SPOTIK_FUZZ_SCENARIOS`` (stateful scenarios, default 20), ``SPOTIK_FUZZ_STEPS`` (at most per
scenario, default 12), ``SPOTIK_FUZZ_SEED`` (replays the stateless run; the seed is in every report).
``make fuzz`` runs a deeper one. ``SPOTIK_FUZZ_TRACE=1`` prints every stateful step.
"""

from __future__ import annotations

import copy
import json
import os
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import httpx2
import hypothesis
import requests
import schemathesis
from hypothesis import HealthCheck, Phase
from hypothesis import strategies as st
from hypothesis.errors import Flaky, Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import Failure, FailureGroup
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.transport.serialization import Binary

from tests.hygiene import Secrets, response_problems
from tests.openapi_contract import Contract, OpenApiViolation, routes_of

CHECKS: dict[str, Any] = {
    "not_a_server_error": not_a_server_error,
    "status_code_conformance": status_code_conformance,
    "content_type_conformance": content_type_conformance,
    "response_headers_conformance": response_headers_conformance,
    "response_schema_conformance": response_schema_conformance,
}
HYGIENE = "response_hygiene"
TIMEOUT = 30.0
PASSWORD = "fuzz-password-9f3c1e7a"  # every account of the run; must never come back in a response


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    return int(value) if value else default


@dataclass(frozen=True, slots=True)
class Budget:
    examples: int  # per operation and generation mode
    scenarios: int  # stateful scenarios
    steps: int  # at most, per scenario
    seed: int

    @classmethod
    def from_env(cls) -> Budget:
        seed = os.environ.get("SPOTIK_FUZZ_SEED", "").strip()
        return cls(
            examples=env_int("SPOTIK_FUZZ_EXAMPLES", 10),
            scenarios=env_int("SPOTIK_FUZZ_SCENARIOS", 20),
            steps=env_int("SPOTIK_FUZZ_STEPS", 12),
            seed=int(seed) if seed else random.SystemRandom().randrange(2**32),
        )


# --- the report -------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Finding:
    check: str
    operation: str
    status: int | None
    detail: str
    reproduce: str

    def __str__(self) -> str:
        reproduce = self.reproduce if len(self.reproduce) <= 800 else self.reproduce[:800] + "… (cut)"
        return f"[{self.check}] {self.operation} -> {self.status}: {self.detail}\n    {reproduce}"


@dataclass
class Report:
    """What a run did and found; ``figures()`` is what ``make fuzz`` prints and docs/security.md quotes."""

    database: str
    seed: int
    operations: set[str] = field(default_factory=set)
    examples: int = 0
    by_mode: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    succeeded: set[str] = field(default_factory=set)  # operations that answered 2xx at least once
    stateful_succeeded: set[str] = field(default_factory=set)  # the same, in the stateful run
    scenarios: int = 0
    stateful_steps: int = 0
    elsewhere: int = 0  # requests a generated path parameter sent to another route than the case's
    not_http: int = 0  # requests uvicorn refused as malformed HTTP before the app saw them
    restarts: int = 0  # stateful runs started again after Hypothesis found a replay diverging
    findings: list[Finding] = field(default_factory=list)
    unsatisfiable: set[str] = field(default_factory=set)
    seconds: float = 0.0
    failures: Counter[str] = field(default_factory=Counter)  # failing responses, by check
    _seen: set[tuple[str, str, int | None, str]] = field(default_factory=set)

    def record(self, finding: Finding) -> None:
        key = (finding.check, finding.operation, finding.status, finding.detail[:200])
        if key not in self._seen:  # the same failure on every case of an operation is listed once
            self._seen.add(key)
            self.findings.append(finding)
        self.failures[finding.check] += 1

    def figures(self) -> dict[str, Any]:
        return {
            "database": self.database,
            "seed": self.seed,
            "operations_fuzzed": len(self.operations),
            "operations_answering_2xx": len(self.succeeded),
            "operations_never_2xx": sorted(self.operations - self.succeeded),
            "stateful_operations_2xx": sorted(self.stateful_succeeded),
            "examples_sent": self.examples,
            "examples_by_mode": dict(self.by_mode),
            "stateful_scenarios": self.scenarios,
            "stateful_steps": self.stateful_steps,
            "stateful_restarts": self.restarts,
            "responses_by_status": {str(k): v for k, v in sorted(self.statuses.items())},
            "refused_as_malformed_http": self.not_http,
            "reached_another_route": self.elsewhere,
            "server_errors_5xx": sum(v for k, v in self.statuses.items() if k >= 500),
            "failures_by_check": {
                name: self.failures.get(name, 0) for name in [*CHECKS, "conformance_elsewhere", HYGIENE, "transport"]
            },
            "no_negative_data_possible": sorted(self.unsatisfiable),
            "seconds": round(self.seconds, 1),
        }

    def summary(self, since: int = 0) -> str:
        """The figures, then the distinct failures (those recorded after the first ``since`` ones)."""
        lines = [json.dumps(self.figures(), indent=2)]
        findings = self.findings[since:]
        if findings:
            lines.append(f"{len(findings)} distinct failure(s):")
            lines.extend(str(finding) for finding in findings[:50])
        return "\n".join(lines)


# --- the fuzzing user and the resources it may touch ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Account:
    id: str
    username: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}


class World:
    """The server's resources the fuzzing user can point at, and factories for the ones a case destroys."""

    def __init__(self, base_url: str, session: requests.Session, *, wav: bytes, png: bytes) -> None:
        self.base_url = base_url
        self.session = session
        self.wav = wav
        self.png = png
        self._serial = 0

    def request(self, method: str, path: str, account: Account | None, expect: int, **kwargs: Any) -> Any:
        headers = account.headers if account is not None else {}
        response = self.session.request(method, self.base_url + path, headers=headers, timeout=TIMEOUT, **kwargs)
        assert response.status_code == expect, f"{method} {path}: {response.status_code} {response.text[:500]}"
        return response.json() if response.content else None

    def name(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}{self._serial}-{uuid.uuid4().hex[:6]}"

    def register(self, prefix: str, username: str | None = None) -> Account:
        username = username or self.name(prefix)
        body = {
            "username": username,
            "email": f"{username}@example.com",
            "password": PASSWORD,
            "password_confirmation": PASSWORD,
        }
        data = self.request("POST", "/api/auth/register", None, 201, json=body)["data"]
        return Account(data["user"]["id"], username, data["token"])

    def login(self, account: Account) -> Account:
        body = {"email": f"{account.username}@example.com", "password": PASSWORD}
        data = self.request("POST", "/api/auth/login", None, 200, json=body)["data"]
        return Account(account.id, account.username, data["token"])

    def create_room(self, owner: Account) -> str:
        room: str = self.request("POST", "/api/rooms", owner, 201, json={"name": self.name("room ")})["data"]["id"]
        return room

    def upload(self, account: Account, room: str, genre: int | None = None) -> dict[str, Any]:
        data = {"genre_id": str(genre)} if genre is not None else {}
        files = {"audio_file": ("tone.wav", self.wav, "audio/wav")}
        track: dict[str, Any] = self.request("POST", f"/api/rooms/{room}/tracks", account, 201, files=files, data=data)[
            "track"
        ]
        return track

    def create_genre(self, account: Account) -> int:
        genre: int = self.request("POST", "/api/genres", account, 201, json={"name": self.name("genre ")})["data"]["id"]
        return genre

    def create_playlist(self, account: Account, *, public: bool = False, track: str | None = None) -> int:
        body = {"name": self.name("list "), "is_public": public}
        playlist: int = self.request("POST", "/api/playlists", account, 201, json=body)["data"]["id"]
        if track is not None:
            self.request("POST", f"/api/playlists/{playlist}/tracks", account, 200, json={"track_id": track})
        return playlist

    def setup(self, fuzzer_name: str) -> None:
        """The fuzzing user administers room A (track TA, a cover, a playlist, a genre TA uses) and is a plain
        member of room B, administered by ``host`` (track TB, a public playlist)."""
        self.fuzzer = self.register("fuzzer", fuzzer_name)
        self.host = self.register("host")
        self.room_a = self.create_room(self.fuzzer)
        self.genre = self.create_genre(self.fuzzer)
        self.track_a = self.upload(self.fuzzer, self.room_a, genre=self.genre)
        files = {"cover_image": ("cover.png", self.png, "image/png")}
        self.request("POST", f"/api/rooms/{self.room_a}/cover", self.fuzzer, 200, files=files)
        self.room_b = self.create_room(self.host)
        self.request("POST", f"/api/rooms/{self.room_b}/join", self.fuzzer, 200)
        self.track_b = self.upload(self.host, self.room_b)
        self.playlist_a = self.create_playlist(self.fuzzer, track=self.track_a["id"])
        self.playlist_b = self.create_playlist(self.host, public=True, track=self.track_b["id"])

    def cover_path(self) -> str:
        """Where room A's cover is now (a cover upload may have changed its extension)."""
        room = self.request("GET", f"/api/rooms/{self.room_a}", self.fuzzer, 200)["data"]
        url = room.get("cover_url") or f"/api/storage/room_covers/{self.room_a}.png"
        return str(url).split("/api/storage/", 1)[-1]

    # Path parameters for each operation: each entry gives one set (and may create what it names).
    def targets(self, label: str) -> list[Callable[[], dict[str, str]]]:
        a, b = self.room_a, self.room_b
        ta, tb = self.track_a, self.track_b
        fuzzer = self.fuzzer
        fixed: dict[str, list[dict[str, str]]] = {
            "room": [{"room": a}, {"room": b}],
            "track": [{"track": ta["id"]}, {"track": tb["id"]}],
            "room,track": [
                {"room": a, "track": ta["id"]},
                {"room": b, "track": tb["id"]},
                {"room": a, "track": tb["id"]},  # a track of another room
            ],
            "filename": [{"filename": ta["filename"]}, {"filename": tb["filename"]}],
            "genre": [{"genre": str(self.genre)}, {"genre": "1"}],
            "playlist": [{"playlist": str(self.playlist_a)}, {"playlist": str(self.playlist_b)}],
            "playlist,track": [
                {"playlist": str(self.playlist_a), "track": ta["id"]},
                {"playlist": str(self.playlist_b), "track": tb["id"]},
            ],
        }

        def fresh_room() -> dict[str, str]:
            return {"room": self.create_room(fuzzer)}

        def fresh_track() -> dict[str, str]:
            return {"room": a, "track": self.upload(fuzzer, a)["id"]}

        def fresh_genre() -> dict[str, str]:
            return {"genre": str(self.create_genre(fuzzer))}

        def fresh_playlist() -> dict[str, str]:
            return {"playlist": str(self.create_playlist(fuzzer))}

        def fresh_entry() -> dict[str, str]:
            return {"playlist": str(self.create_playlist(fuzzer, track=ta["id"])), "track": ta["id"]}

        def constant(values: dict[str, str]) -> Callable[[], dict[str, str]]:
            return lambda: values

        destructive: dict[str, list[Callable[[], dict[str, str]]]] = {
            "DELETE /api/rooms/{room}": [fresh_room, constant({"room": b})],
            "DELETE /api/rooms/{room}/tracks/{track}": [
                fresh_track,
                constant({"room": b, "track": tb["id"]}),
                constant({"room": a, "track": tb["id"]}),
            ],
            "DELETE /api/genres/{genre}": [fresh_genre, constant({"genre": str(self.genre)})],  # in use: 409
            "DELETE /api/playlists/{playlist}": [fresh_playlist, constant({"playlist": str(self.playlist_b)})],
            "DELETE /api/playlists/{playlist}/tracks/{track}": [
                fresh_entry,
                constant({"playlist": str(self.playlist_b), "track": tb["id"]}),
            ],
        }
        if label in destructive:
            return destructive[label]
        if label.endswith("/api/storage/{path}"):
            return [lambda: {"path": self.cover_path()}]
        path = label.split(" ", 1)[1]
        names = ",".join(name for name in ("room", "playlist", "track", "filename", "genre") if f"{{{name}}}" in path)
        return [constant(values) for values in fixed.get(names, [])]

    def auth(self, label: str) -> Callable[[], dict[str, str]]:
        """The token a case sends: the fuzzing user's, or a fresh one where the operation revokes it."""
        if label in ("POST /api/auth/logout", "POST /api/auth/refresh"):
            return lambda: self.login(self.fuzzer).headers
        return lambda: self.fuzzer.headers

    def prepare(self, label: str) -> Callable[[], None] | None:
        """What to do before a case so that its success path is reachable: room A playing (paused, for resume)."""
        if not label.startswith("POST /api/rooms/{room}/playback/"):
            return None
        room, track = self.room_a, self.track_a["id"]

        def playing() -> None:
            self.request("POST", f"/api/rooms/{room}/tracks/{track}/play", self.fuzzer, 200)
            if label.endswith("/resume"):
                self.request("POST", f"/api/rooms/{room}/playback/pause", self.fuzzer, 200)

        return playing

    def repair(self, label: str) -> Callable[[], None] | None:
        """What to do after a case so the next one still finds the world as it was."""
        if label != "POST /api/rooms/{room}/leave":
            return None

        def join_again() -> None:
            self.request("POST", f"/api/rooms/{self.room_b}/join", self.fuzzer, 200)

        return join_again

    # Request bodies: the generated one, or the generated one with a real file / real id put in.
    def body_variants(self, label: str) -> list[Callable[[Any], None]]:
        def put(values: dict[str, Any], drop: tuple[str, ...] = ()) -> Callable[[Any], None]:
            files = any(isinstance(value, Binary) for value in values.values())

            def apply(case: Any) -> None:
                if files and case.media_type != "multipart/form-data":
                    return  # a file only travels in multipart
                if isinstance(case.body, dict):
                    case.body = {**{k: v for k, v in case.body.items() if k not in drop}, **values}

            return apply

        wav, png = Binary(self.wav), Binary(self.png)
        if label == "POST /api/rooms/{room}/tracks":
            files = ("genre_id", "cover_image")
            return [
                put({"audio_file": wav}, drop=files),
                put({"audio_file": wav, "genre_id": self.genre}, drop=files),
                put({"audio_file": wav, "cover_image": png}, drop=files),
                put({"audio_file": wav}),
            ]
        if label == "POST /api/rooms/{room}/cover":
            return [put({"cover_image": png}, drop=("cover_data",)), put({"cover_image": png})]
        if label == "POST /api/auth/login":
            return [put({"email": f"{self.fuzzer.username}@example.com", "password": PASSWORD})]
        if label == "POST /api/playlists/{playlist}/tracks":
            return [put({"track_id": self.track_a["id"]}), put({"track_id": self.track_b["id"]})]
        return []


# --- checking one response --------------------------------------------------------------------------------------


class Checker:
    def __init__(self, report: Report, secrets: Secrets, contract: Contract) -> None:
        self.report = report
        self.secrets = secrets
        self.contract = contract  # finds the route a request really reached

    def __call__(self, case: Any, response: Any, headers: dict[str, str]) -> None:
        label = case.operation.label
        report = self.report
        report.operations.add(label)
        report.examples += 1
        report.statuses[response.status_code] += 1
        if 200 <= response.status_code < 300:
            report.succeeded.add(label)
        if _rejected_by_http_server(response):
            # The request was not valid HTTP (a control character in a header, a malformed Content-Length …):
            # uvicorn answered 400 before any operation ran, so the document has nothing to say about it. The
            # hygiene checks below still apply.
            report.not_http += 1
        elif self._reached(case, response):
            self._conformance(case, response, headers)
        else:
            # A generated path parameter with a raw "?", "#" or "/" in it (a value a link copied from a response)
            # sent the request to another route, or to none: judge the answer by the route it reached.
            report.elsewhere += 1
            self._conformance_elsewhere(case, response, headers)
        pairs = [(name, value) for name, values in response.headers.items() for value in values]
        problems = response_problems(pairs, response.content, self.secrets, credentials=True)
        if problems:
            detail = "; ".join(problems)
            report.record(Finding(HYGIENE, label, response.status_code, detail, case.as_curl_command(headers=headers)))

    def _conformance(self, case: Any, response: Any, headers: dict[str, str]) -> None:
        label = case.operation.label
        report = self.report
        for name, check in CHECKS.items():
            try:
                case.validate_response(response, checks=[check], headers=headers)
            except (Failure, FailureGroup) as exc:
                failures = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
                curl = case.as_curl_command(headers=headers)
                for failure in failures:
                    detail = f"{failure.title}: {failure.message}".strip()
                    report.record(Finding(name, label, response.status_code, detail[:1500], curl))

    def _reached(self, case: Any, response: Any) -> bool:
        request = response.request
        match = self.contract.match(str(request.method), unquote(urlsplit(str(request.url)).path))  # as routed
        return match.route is not None and match.method_allowed and match.route.template == case.operation.path

    def _conformance_elsewhere(self, case: Any, response: Any, headers: dict[str, str]) -> None:
        request = response.request
        sent = httpx2.Request(str(request.method), str(request.url), headers=dict(request.headers))
        decoded = ("content-encoding", "content-length", "transfer-encoding")  # requests already decoded the body
        pairs = [(n, v) for n, values in response.headers.items() if n.lower() not in decoded for v in values]
        answer = httpx2.Response(response.status_code, headers=pairs, content=response.content, request=sent)
        try:
            self.contract.check(answer, body=response.content)
        except OpenApiViolation as exc:
            curl = case.as_curl_command(headers=headers)
            self.report.record(
                Finding("conformance_elsewhere", case.operation.label, response.status_code, str(exc), curl)
            )


def _rejected_by_http_server(response: Any) -> bool:
    """uvicorn's own 400 for bytes that are not HTTP: no ``X-Request-ID`` (the app gives every response one)."""
    return (
        response.status_code == 400
        and "x-request-id" not in {name.lower() for name in response.headers}
        and response.content == b"Invalid HTTP request received."
    )


def _call(case: Any, session: requests.Session, headers: dict[str, str], report: Report) -> Any | None:
    try:
        return case.call(session=session, headers=headers, timeout=TIMEOUT)
    except requests.RequestException as exc:  # the server hung up or died: as bad as a 500
        detail = f"{type(exc).__name__}: {exc}"
        report.record(Finding("transport", case.operation.label, None, detail, case.as_curl_command(headers=headers)))
        return None


# --- the two runs -----------------------------------------------------------------------------------------------


def served_contract(document: dict[str, Any]) -> Contract:
    """The server's contract, its routes as Starlette matches them (``/api/storage/{path}`` spans slashes): read from
    an app built here from the same code, never started."""
    from spotik.app import create_app
    from tests.conftest import make_settings

    folder = Path("/nonexistent/spotik-fuzz-routes")  # nothing is created: the app is never started
    app = create_app(make_settings(f"sqlite:///{folder}/unused.sqlite3", folder))
    return Contract(document, routes_of(app))


def fetch_document(base_url: str) -> dict[str, Any]:
    document: dict[str, Any] = requests.get(f"{base_url}/openapi.json", timeout=TIMEOUT).json()
    return document


def load_schema(base_url: str, document: dict[str, Any] | None = None) -> Any:
    schema = schemathesis.openapi.from_dict(document if document is not None else fetch_document(base_url))
    schema.config.update(base_url=base_url)
    return schema


def _settings(examples: int) -> hypothesis.settings:
    return hypothesis.settings(
        max_examples=examples,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        verbosity=hypothesis.Verbosity.quiet,
    )


def operations(schema: Any) -> Iterator[Any]:
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), f"an operation schemathesis cannot read: {result}"
        yield result.ok()


def fuzz_operations(
    base_url: str, world: World, report: Report, budget: Budget, secrets: Secrets, session: requests.Session
) -> None:
    """Every operation, positive then negative data, each case checked (see the module's docstring)."""
    document = fetch_document(base_url)
    schema = load_schema(base_url, document)
    check = Checker(report, secrets, served_contract(document))
    for operation in operations(schema):
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            _fuzz_operation(operation, mode, world, report, budget, check, session)


def _fuzz_operation(
    operation: Any,
    mode: GenerationMode,
    world: World,
    report: Report,
    budget: Budget,
    check: Checker,
    session: requests.Session,
) -> None:
    label = operation.label
    auth = world.auth(label)
    prepare = world.prepare(label)
    repair = world.repair(label)
    strategy = st.tuples(
        operation.as_strategy(generation_mode=mode),
        st.sampled_from([*world.targets(label), None]),  # None: keep the generated path parameters
        st.sampled_from([*world.body_variants(label), None]),  # None: keep the generated body
    )

    @hypothesis.seed(budget.seed)
    @_settings(budget.examples)
    @hypothesis.given(strategy)
    def example(drawn: tuple[Any, Any, Any]) -> None:
        case, target, variant = drawn
        if target is not None:
            case.path_parameters = {**(case.path_parameters or {}), **target()}
        if variant is not None:
            variant(case)
        if prepare is not None:
            prepare()
        headers = auth()
        response = _call(case, session, headers, report)
        report.by_mode[mode.value] += 1
        if response is not None:
            check(case, response, headers)
        if repair is not None:
            repair()

    sent = report.examples
    started = time.monotonic()
    try:
        example()
    except Unsatisfiable:  # e.g. no parameters at all: there is no invalid request to make
        report.unsatisfiable.add(f"{label} ({mode.value})")
    if budget.examples > 50:  # a deep run (make fuzz): show it moving (pytest -s)
        took = time.monotonic() - started
        print(f"  {label} [{mode.value}]: {report.examples - sent} cases in {took:.0f}s", flush=True)


# Links added to the document for the stateful run: (source operation, status) -> [(target operation, parameters)].
ROOM = {"room": "$response.body#/data/id"}
SAME_ROOM = {"room": "$request.path.room"}
UPLOADED = {"room": "$request.path.room", "track": "$response.body#/track/id"}
SAME_TRACK = {"room": "$request.path.room", "track": "$request.path.track"}
PLAYBACK = [
    "POST /api/rooms/{room}/playback/pause",
    "POST /api/rooms/{room}/playback/resume",
    "POST /api/rooms/{room}/playback/skip",
    "POST /api/rooms/{room}/playback/stop",
    "POST /api/rooms/{room}/playback/seek",
    "GET /api/rooms/{room}/playback/status",
]
LINKS: dict[tuple[str, str], list[tuple[str, dict[str, str]]]] = {
    ("POST /api/auth/register", "201"): [("POST /api/rooms", {}), ("GET /api/auth/me", {})],
    ("POST /api/rooms", "201"): [
        ("POST /api/rooms/{room}/join", ROOM),
        ("GET /api/rooms/{room}", ROOM),
        ("PUT /api/rooms/{room}", ROOM),
        ("POST /api/rooms/{room}/tracks", ROOM),
        ("GET /api/rooms/{room}/tracks", ROOM),
        ("POST /api/rooms/{room}/cover", ROOM),
        ("DELETE /api/rooms/{room}", ROOM),
    ],
    ("POST /api/rooms/{room}/join", "200"): [
        ("POST /api/rooms/{room}/tracks", SAME_ROOM),
        ("GET /api/rooms/{room}/participants", SAME_ROOM),
        ("POST /api/rooms/{room}/leave", SAME_ROOM),
    ],
    ("POST /api/rooms/{room}/tracks", "201"): [
        ("POST /api/rooms/{room}/tracks/{track}/vote", UPLOADED),
        ("DELETE /api/rooms/{room}/tracks/{track}/vote", UPLOADED),
        ("POST /api/rooms/{room}/tracks/{track}/play", UPLOADED),
        ("DELETE /api/rooms/{room}/tracks/{track}", UPLOADED),
        ("GET /api/tracks/{track}/stream", {"track": "$response.body#/track/id"}),
        ("GET /api/audio/{filename}", {"filename": "$response.body#/track/filename"}),
        ("GET /api/audio/{filename}/metadata", {"filename": "$response.body#/track/filename"}),
        ("POST /api/rooms/{room}/tracks", SAME_ROOM),
    ],
    ("POST /api/rooms/{room}/tracks/{track}/vote", "200"): [
        ("POST /api/rooms/{room}/tracks/{track}/play", SAME_TRACK),
        ("DELETE /api/rooms/{room}/tracks/{track}/vote", SAME_TRACK),
    ],
    ("POST /api/rooms/{room}/tracks/{track}/play", "200"): [(target, SAME_ROOM) for target in PLAYBACK],
    ("POST /api/rooms/{room}/playback/pause", "200"): [
        ("POST /api/rooms/{room}/playback/resume", SAME_ROOM),
        ("POST /api/rooms/{room}/playback/seek", SAME_ROOM),
    ],
    ("POST /api/rooms/{room}/playback/resume", "200"): [(target, SAME_ROOM) for target in PLAYBACK],
    ("POST /api/genres", "201"): [
        ("GET /api/genres/{genre}", {"genre": "$response.body#/data/id"}),
        ("PUT /api/genres/{genre}", {"genre": "$response.body#/data/id"}),
        ("DELETE /api/genres/{genre}", {"genre": "$response.body#/data/id"}),
    ],
}


def with_links(document: dict[str, Any]) -> dict[str, Any]:
    """``document`` with :data:`LINKS` in its responses (a copy)."""
    document = copy.deepcopy(document)
    for (source, status), targets in LINKS.items():
        method, path = source.split(" ", 1)
        response = document["paths"][path][method.lower()]["responses"][status]
        links = response.setdefault("links", {})
        for target, parameters in targets:
            target_method, target_path = target.split(" ", 1)
            operation = document["paths"][target_path][target_method.lower()]
            name = f"{operation['operationId']}_from_{status}"
            links[name] = {"operationId": operation["operationId"], "parameters": parameters}
    return document


def fuzz_stateful(
    base_url: str, world: World, report: Report, budget: Budget, secrets: Secrets, session: requests.Session
) -> None:
    """Scenarios along the links (see the module's docstring), every step checked."""
    document = fetch_document(base_url)
    schema = load_schema(base_url, with_links(document))
    check = Checker(report, secrets, served_contract(document))
    wav = Binary(world.wav)

    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            report.scenarios += 1
            self.identity = world.register("s")

        def before_call(self, case: Any) -> None:
            label = case.operation.label
            body = case.body
            if label == "POST /api/rooms/{room}/tracks" and isinstance(body, dict):
                # a real file; the generated genre id and cover would only be refused (the stateless run tries them)
                kept = {k: v for k, v in body.items() if k not in ("genre_id", "cover_image")}
                case.body = {**kept, "audio_file": wav}
            elif label == "POST /api/auth/register" and isinstance(body, dict):
                password = body.get("password")
                mode = case.meta.generation.mode if case.meta is not None else None
                if mode == GenerationMode.POSITIVE and isinstance(password, str):
                    case.body = {**body, "password_confirmation": password}

        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            return {"session": session, "headers": self.identity.headers, "timeout": TIMEOUT}

        def call(self, case: Any, **kwargs: Any) -> Any:
            report.stateful_steps += 1
            report.by_mode["stateful"] += 1
            response = case.call(**kwargs)
            if os.environ.get("SPOTIK_FUZZ_TRACE"):
                print("STEP", case.operation.label, case.path_parameters, response.status_code, response.text[:150])
            if 200 <= response.status_code < 300:
                report.stateful_succeeded.add(case.operation.label)
            return response

        def after_call(self, response: Any, case: Any) -> None:
            super().after_call(response, case)
            label = case.operation.label
            if label in ("POST /api/auth/register", "POST /api/auth/login") and response.status_code in (200, 201):
                data = response.json()["data"]
                self.identity = Account(data["user"]["id"], data["user"]["username"], data["token"])

        def validate_response(self, response: Any, case: Any, additional_checks: Any = None, **kwargs: Any) -> None:
            check(case, response, dict(kwargs.get("headers") or {}))

    # The server's answers decide which links can be followed, so Hypothesis may find that replaying a scenario
    # does not go the same way (``Flaky``): like schemathesis' own runner, start again for the scenarios left.
    wanted = report.scenarios + budget.scenarios
    for _attempt in range(10):
        left = wanted - report.scenarios
        if left <= 0:
            break
        try:
            Machine.run(settings=hypothesis.settings(_settings(left), stateful_step_count=budget.steps))
        except Exception as exc:
            if not _replay_diverged(exc):
                raise
            report.restarts += 1
        else:
            break


def _replay_diverged(exc: BaseException) -> bool:
    """Hypothesis' complaint that a scenario replayed differently (the server's state moved on)."""
    if isinstance(exc, Flaky):
        return True
    traceback = exc.__traceback__
    while traceback is not None and traceback.tb_next is not None:
        traceback = traceback.tb_next
    module = traceback.tb_frame.f_globals.get("__name__", "") if traceback is not None else ""
    return isinstance(exc, AssertionError) and module.startswith("hypothesis.internal.conjecture")


def audio_and_image(folder: Path) -> tuple[bytes, bytes]:
    from tests.fixtures.audio_files import make_png, make_wav

    wav = make_wav(folder, seconds=1.0, sample_rate=8000, channels=1).read_bytes()
    png = make_png(folder).read_bytes()
    return wav, png
