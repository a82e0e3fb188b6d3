"""Codecs: what goes in comes back, compression is flagged and used only when asked and worth it, pickle never."""

from __future__ import annotations

import os
import pickle
import zlib
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from spotik.cache.codec import (
    JSON_FLAG,
    MSGPACK_FLAG,
    ZLIB_FLAG,
    CacheCodecError,
    Codec,
    decode,
    encode,
    is_compressed,
)

TEXT = st.text(alphabet=st.characters(codec="utf-8"), max_size=20)
SCALARS = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False) | TEXT
FINITE = st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_infinity=False, allow_nan=False)
JSON_VALUES = st.recursive(
    FINITE | TEXT, lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5), max_leaves=30
)
MSGPACK_VALUES = st.recursive(
    SCALARS | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(TEXT, inner, max_size=5),
    max_leaves=30,
)


@given(JSON_VALUES, st.sampled_from([None, 0, 64]))
def test_json_values_round_trip(value: Any, compress_above: int | None) -> None:
    blob = encode(value, Codec.JSON, compress_above)
    assert blob[0] & ~ZLIB_FLAG == JSON_FLAG
    assert decode(blob) == value


@given(MSGPACK_VALUES, st.sampled_from([None, 0, 64]))
def test_msgpack_values_round_trip_bytes_included(value: Any, compress_above: int | None) -> None:
    blob = encode(value, Codec.MSGPACK, compress_above)
    assert blob[0] & ~ZLIB_FLAG == MSGPACK_FLAG
    assert decode(blob) == value


def test_json_has_no_infinity_so_it_comes_back_as_null_as_in_any_json_api() -> None:
    assert decode(encode([float("inf"), float("nan")], Codec.JSON)) == [None, None]
    assert decode(encode([float("inf")], Codec.MSGPACK)) == [float("inf")]


def test_tuples_come_back_as_lists_as_a_json_api_would_give_them() -> None:
    assert decode(encode({"ids": (1, 2)}, Codec.JSON)) == {"ids": [1, 2]}
    assert decode(encode({"ids": (1, 2)}, Codec.MSGPACK)) == {"ids": [1, 2]}


class Track:
    pass


@pytest.mark.parametrize("codec", list(Codec))
@pytest.mark.parametrize("value", [{1, 2}, Track(), {"nested": [Track()]}, 2**70], ids=repr)
def test_an_unsupported_value_raises_a_clear_error(codec: Codec, value: Any) -> None:
    with pytest.raises(CacheCodecError, match=rf"cannot cache a \w+ with the {codec.value} codec"):
        encode(value, codec)


def test_msgpack_refuses_datetimes_instead_of_guessing_a_representation() -> None:
    with pytest.raises(CacheCodecError):
        encode({"at": datetime(2026, 1, 1, tzinfo=UTC)}, Codec.MSGPACK)


class Tripwire:
    fired = False

    def __reduce__(self) -> tuple[Any, ...]:
        return (setattr, (Tripwire, "fired", True))


@pytest.mark.parametrize("flag", [JSON_FLAG, MSGPACK_FLAG, JSON_FLAG | ZLIB_FLAG, MSGPACK_FLAG | ZLIB_FLAG, 0])
def test_decoding_never_unpickles(flag: int) -> None:
    payload = pickle.dumps(Tripwire())
    body = zlib.compress(payload) if flag & ZLIB_FLAG else payload
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do; running the payload will not
        decode(bytes((flag,)) + body)
    assert not Tripwire.fired


def test_compression_only_above_the_threshold() -> None:
    small = {"name": "a" * 10}
    large = {"name": "a" * 5000}
    assert not is_compressed(encode(small, Codec.JSON, 1024))
    packed = encode(large, Codec.JSON, 1024)
    assert is_compressed(packed)
    assert len(packed) < 5000
    assert decode(packed) == large
    assert not is_compressed(encode(large, Codec.JSON, None))  # a namespace without compression


def test_incompressible_values_are_stored_plain() -> None:
    noise = os.urandom(4096)
    blob = encode(noise, Codec.MSGPACK, 1024)
    assert not is_compressed(blob)
    assert decode(blob) == noise
