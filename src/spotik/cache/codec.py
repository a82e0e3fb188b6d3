"""Values in the cache are stored as bytes: one flag byte, then the JSON (orjson) or msgpack body, zlib-compressed
when the namespace asks for it and the body is larger than the threshold.

**Why encoded.** The in-process tier hands out a fresh decoded copy on every hit, so a caller that mutates what it
got cannot change what the next caller gets, and the Redis tier stores the very same bytes (no second encoding).
The price is a decode per hit: measured with bench/cache_store.py, a small-entry ``CacheStore.get`` takes 0.68 µs
median, about half of it ``orjson.loads``, well under the 2 µs target. Keeping decoded (frozen) values for the
uncompressed namespaces would save that half but needs deep-immutable containers (callers index dicts and lists
and would get ``MappingProxyType``/tuples instead), a second size estimate for the byte budget, and an encode per
Redis write anyway; at this cost it is not worth it.

**Never pickle**: unpickling bytes read back from a shared Redis runs arbitrary code. Only JSON-shaped data (and,
with msgpack, bytes) goes in; anything else raises :class:`CacheCodecError` at ``set`` time, so a bad value is found
by the caller that cached it, not by a later reader. JSON turns tuples into lists (msgpack does the same) and, with
orjson, NaN and ±infinity into null: callers get back what a JSON API would give them.

**The flag byte** says how the body was written: its low bits name the codec, bit 7 says zlib. ``decode`` reads the
flag, not the namespace's current configuration, so an entry written by an instance with another configuration
(through Redis) or before a configuration change still decodes.
"""

from __future__ import annotations

import zlib
from enum import StrEnum
from typing import Any

import msgpack
import orjson

JSON_FLAG = 0x01
MSGPACK_FLAG = 0x02
ZLIB_FLAG = 0x80
ZLIB_LEVEL = 1  # STACK.md: level 1 takes ~12 µs on 3 KB, level 6 ~21 µs; cached values are read far more than written


class Codec(StrEnum):
    JSON = "json"
    MSGPACK = "msgpack"


class CacheCodecError(TypeError):
    """A value the cache cannot encode (it holds only JSON-shaped data, and bytes with msgpack)."""


def encode(value: Any, codec: Codec, compress_above: int | None = None) -> bytes:
    """``value`` as flag byte + body; compressed when ``compress_above`` is set, the body is larger than that, and
    compression actually makes it smaller."""
    try:
        if codec is Codec.JSON:
            body: bytes = orjson.dumps(value)
            flag = JSON_FLAG
        else:
            body = msgpack.packb(value, use_bin_type=True, datetime=False)
            flag = MSGPACK_FLAG
    except (TypeError, ValueError, OverflowError) as exc:  # orjson.JSONEncodeError is a TypeError
        raise CacheCodecError(
            f"cannot cache a {type(value).__name__} with the {codec.value} codec ({exc}); cache JSON-shaped data "
            "(dict, list, str, int, float, bool, None), e.g. a pydantic model's model_dump(mode='json')"
        ) from exc
    if compress_above is not None and len(body) > compress_above:
        packed = zlib.compress(body, ZLIB_LEVEL)
        if len(packed) < len(body):
            body, flag = packed, flag | ZLIB_FLAG
    return bytes((flag,)) + body


def decode(blob: bytes) -> Any:
    """The value ``encode`` wrote (a fresh object on every call)."""
    flag = blob[0]
    body = blob[1:]
    if flag & ZLIB_FLAG:
        body = zlib.decompress(body)
    if flag & MSGPACK_FLAG:
        return msgpack.unpackb(body, raw=False)
    return orjson.loads(body)


def is_compressed(blob: bytes) -> bool:
    return bool(blob[0] & ZLIB_FLAG)
