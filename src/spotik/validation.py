"""Laravel-style input validation: the same rules, the same messages, ``errors: {field: [messages]}``.

The web client shows Laravel's messages as they are, so they are reproduced word for word (Laravel 11 wording).
Input is normalised the way Laravel's global middleware does: strings are trimmed (except passwords) and empty
strings become null. A rule returns a message or None; after the first failing *type* rule of a field the
remaining rules of that field are skipped, as Laravel does once a value has the wrong type.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from spotik.errors import Envelope, ValidationFailed

Rule = Callable[[str, Any, Mapping[str, Any]], str | None]

UNTRIMMED = frozenset({"password", "password_confirmation", "current_password"})
# Laravel's default `email` rule (RFC validation) accepts far more than this, but every address it accepts that
# matters in practice has this shape: something@something, no spaces, one @.
EMAIL = re.compile(r"^[^@\s]+@[^@\s]+$")


def label(name: str) -> str:
    return name.replace("_", " ")


# What no database Spotik runs on can store in a text column: NUL (PostgreSQL refuses it; SQLite would keep it) and
# lone UTF-16 surrogates (not encodable as UTF-8: a JSON escape like "\ud800", or an undecodable byte of a form value,
# which spotik.http.input keeps as a surrogate with Python's "surrogateescape").
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def storable(text: str) -> bool:
    """Whether ``text`` can be stored as it is on SQLite and PostgreSQL alike (the shared check for every text a
    client sends: body fields, file names)."""
    return _UNSTORABLE.search(text) is None


def unstorable_message(name: str) -> str:
    """The one message for text that :func:`storable` refuses (Laravel has none: its PostgreSQL driver fails)."""
    return f"The {label(name)} field contains characters that cannot be stored."


def normalise(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, str):
            if key not in UNTRIMMED:
                value = value.strip()
            if value == "":
                value = None
        out[key] = value
    return out


def string(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
    return None if isinstance(value, str) else f"The {label(name)} field must be a string."


# ASCII digits only, as PHP's FILTER_VALIDATE_INT (Python's int() also reads other scripts' digits), and no more of
# them than int() converts (sys.get_int_max_str_digits(), 4300 by default): no later int() of a valid value can fail.
_INTEGER_TEXT = re.compile(r"[+-]?[0-9]{1,4300}")


def integer(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
    if isinstance(value, bool):
        return f"The {label(name)} field must be an integer."
    if isinstance(value, int):
        return None
    if isinstance(value, str) and _INTEGER_TEXT.fullmatch(value):
        return None
    return f"The {label(name)} field must be an integer."


def boolean(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
    if value in (True, False, 0, 1, "0", "1", "true", "false"):
        return None
    return f"The {label(name)} field must be true or false."


def email(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
    return None if EMAIL.match(str(value)) else f"The {label(name)} field must be a valid email address."


def parse_uuid(value: object) -> uuid.UUID | None:
    """The one parser of ids from clients (paths, bodies, WebSocket messages): a UUID, or None for anything else."""
    if isinstance(value, uuid.UUID):
        return value
    try:
        return uuid.UUID(str(value))
    except ValueError:
        return None


def uuid_rule(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
    return None if parse_uuid(value) is not None else f"The {label(name)} field must be a valid UUID."


# PHP's is_numeric for strings: optional sign, digits with an optional fraction (or a bare fraction), exponent.
NUMERIC = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def numeric(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
    if isinstance(value, bool):
        return f"The {label(name)} field must be a number."
    if isinstance(value, int | float) or (isinstance(value, str) and NUMERIC.fullmatch(value)):
        return None
    return f"The {label(name)} field must be a number."


def max_chars(limit: int) -> Rule:
    def rule(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
        if isinstance(value, str) and len(value) > limit:
            return f"The {label(name)} field must not be greater than {limit} characters."
        return None

    return rule


def min_chars(limit: int) -> Rule:
    def rule(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
        if isinstance(value, str) and len(value) < limit:
            return f"The {label(name)} field must be at least {limit} characters."
        return None

    return rule


def max_bytes(limit: int) -> Rule:
    def rule(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
        if isinstance(value, str) and len(value.encode()) > limit:
            return f"The {label(name)} field must not be greater than {limit} bytes."
        return None

    return rule


def min_value(limit: int) -> Rule:
    def rule(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
        if int(value) < limit:
            return f"The {label(name)} field must be at least {limit}."
        return None

    return rule


def regex(pattern: str) -> Rule:
    compiled = re.compile(pattern)

    def rule(name: str, value: Any, _data: Mapping[str, Any]) -> str | None:
        return None if compiled.fullmatch(str(value)) else f"The {label(name)} field format is invalid."

    return rule


def confirmed(name: str, value: Any, data: Mapping[str, Any]) -> str | None:
    if data.get(f"{name}_confirmation") != value:
        return f"The {label(name)} field confirmation does not match."
    return None


TYPE_RULES: frozenset[Rule] = frozenset({string, integer, boolean})


@dataclass(frozen=True)
class Field:
    rules: tuple[Rule, ...] = ()
    required: bool = True


def validate(
    data: Mapping[str, Any], fields: Mapping[str, Field], *, envelope: Envelope = Envelope.A
) -> dict[str, Any]:
    """Check ``data`` against ``fields``; return the normalised values of the declared fields or raise 422."""
    clean = normalise(data)
    errors: dict[str, list[str]] = {}
    for name, spec in fields.items():
        value = clean.get(name)
        if value is None:
            if spec.required:
                errors[name] = [f"The {label(name)} field is required."]
            continue
        if isinstance(value, str) and not storable(value):  # before any rule: none of them may see it
            errors[name] = [unstorable_message(name)]
            continue
        messages: list[str] = []
        for rule in spec.rules:
            message = rule(name, value, clean)
            if message:
                messages.append(message)
                if rule in TYPE_RULES:
                    break
        if messages:
            errors[name] = messages
    if errors:
        raise ValidationFailed(errors, envelope=envelope)
    return {name: clean.get(name) for name in fields}


def unique_taken(name: str) -> str:
    return f"The {label(name)} has already been taken."
