"""Streaming multipart uploads straight to disk (docs/decisions.md#d8).

Why not ``await request.form()``: Starlette's parser spools every file into a ``SpooledTemporaryFile`` (1 MiB in
memory, then the system temp directory), reads the *whole* body before the handler sees anything, and has no size
limit for file parts. FastAPI 0.165's per-route ``max_body_size`` is fixed when the route is declared, while our
limit comes from settings at run time (tests build apps with different limits side by side).

So the body is fed, 64 KiB at a time, to python-multipart's ``MultipartParser`` (the parser Starlette itself
uses) and each file part is written to a temporary file **in the directory where it will finally live**
(``audio_root/tracks`` for audio), so publishing it is an atomic same-filesystem rename. Writes are batched
(256 KiB) and run in a worker thread. Limits are enforced while reading:

* the declared ``Content-Length`` is checked before the first byte is read (:func:`check_declared_length`);
* the whole body is counted as it arrives (chunked bodies have no ``Content-Length``);
* each file part has its own limit, checked before its bytes are buffered.

Breaking a limit stops reading at once; so does a full disk (``ENOSPC``/``EDQUOT`` while a part is written:
:class:`StorageFull`, answered 507). Whatever happens (limit, malformed body, full disk, client disconnect, an error
in the caller), leaving :func:`receive_multipart` removes every temporary file that was not moved away by the caller.
A process killed mid-upload cannot do that: :func:`remove_stale_temporary_files` removes such leftovers when the
server starts (they are never served meanwhile: no row names them).
"""

from __future__ import annotations

import codecs
import errno
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, Final

import anyio
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.requests import Request

if TYPE_CHECKING:
    from python_multipart.multipart import MultipartCallbacks

__all__ = [
    "BodyTooLarge",
    "FileRule",
    "FileTooLarge",
    "MalformedUpload",
    "ReceivedFile",
    "ReceivedForm",
    "StorageFull",
    "UploadError",
    "check_declared_length",
    "receive_multipart",
    "remove_stale_temporary_files",
]

FEED_SIZE: Final = 64 * 1024
"""Bytes handed to the parser at a time, whatever size the server's chunks have (bounds the buffers)."""
FLUSH_SIZE: Final = 256 * 1024
"""A file part's buffer is written to disk (in a thread) once it holds this much."""
HEAD_SIZE: Final = 64
"""Bytes of each file kept in memory for magic-number checks."""
MAX_FIELD_BYTES: Final = 64 * 1024
MAX_HEADER_BYTES: Final = 64 * 1024
"""Longest header line of a part. python-multipart's default (4 KiB) would make a long file name a malformed body;
the name is shortened to 255 characters instead (``original_name``), so a 10,000-character name is accepted."""
MAX_PARTS: Final = 32
TEMP_PREFIX: Final = ".upload-"
TEMP_SUFFIX: Final = ".part"


class UploadError(Exception):
    """The body cannot be accepted; nothing of it is kept."""


class BodyTooLarge(UploadError):
    """The whole body is (or is declared to be) larger than allowed."""


class FileTooLarge(UploadError):
    def __init__(self, field_name: str, limit: int) -> None:
        super().__init__(f"{field_name} is larger than {limit} bytes")
        self.field_name = field_name
        self.limit = limit


class StorageFull(UploadError):
    """The storage has no space left (or the quota is reached) for a part of the upload."""


NO_SPACE: Final = frozenset({errno.ENOSPC, errno.EDQUOT})


class MalformedUpload(UploadError):
    """Not parseable as multipart/form-data (or cut short before its closing boundary)."""


@dataclass(frozen=True, slots=True)
class FileRule:
    """Where a file field is written while it arrives, and how large it may be."""

    directory: Path
    max_bytes: int


@dataclass(slots=True)
class ReceivedFile:
    field_name: str
    client_name: str  # as sent in Content-Disposition (may be empty or a path); never trusted
    path: Path  # the temporary file; the caller renames it to publish it
    size: int
    head: bytes  # the first HEAD_SIZE bytes


@dataclass(slots=True)
class ReceivedForm:
    fields: dict[str, str] = field(default_factory=dict)
    files: dict[str, ReceivedFile] = field(default_factory=dict)


def check_declared_length(request: Request, max_body: int) -> None:
    """Refuse a body whose ``Content-Length`` is over ``max_body`` before reading any of it."""
    declared = request.headers.get("content-length", "").strip()
    if declared.isascii() and declared.isdigit() and int(declared) > max_body:
        raise BodyTooLarge(f"Content-Length {declared} is over {max_body}")


def _decode(value: bytes) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return value.decode("latin-1")


class _Sink:
    """One file part being written to a temporary file; data is buffered and written from a thread."""

    def __init__(self, field_name: str, client_name: str, rule: FileRule) -> None:
        self.field_name = field_name
        self.client_name = client_name
        self.rule = rule
        self.path = rule.directory / f"{TEMP_PREFIX}{uuid.uuid4().hex}{TEMP_SUFFIX}"
        self.size = 0
        self.head = b""
        self.buffer = bytearray()
        self.file: BinaryIO | None = None
        self.created = False
        self.complete = False  # the parser saw the end of the part
        self.closed = False  # everything is on disk and the file is closed

    def take(self, data: bytes) -> None:
        if self.size + len(data) > self.rule.max_bytes:
            raise FileTooLarge(self.field_name, self.rule.max_bytes)
        if len(self.head) < HEAD_SIZE:
            self.head += data[: HEAD_SIZE - len(self.head)]
        self.size += len(data)
        self.buffer += data

    def _open(self) -> BinaryIO:
        self.rule.directory.mkdir(parents=True, exist_ok=True)
        handle = self.path.open("xb")
        self.created = True
        return handle

    def _write(self, data: bytes, *, close: bool) -> None:
        if self.file is None:
            self.file = self._open()
        if data:
            self.file.write(data)
        if close:
            self.file.close()
            self.closed = True

    async def flush(self, *, final: bool = False) -> None:
        if not final and len(self.buffer) < FLUSH_SIZE:
            return
        data = bytes(self.buffer)
        self.buffer.clear()
        try:
            await anyio.to_thread.run_sync(lambda: self._write(data, close=final))
        except OSError as exc:
            if exc.errno in NO_SPACE:
                raise StorageFull(f"no space left for {self.field_name}") from None
            raise

    def remove(self) -> None:
        """Close and delete the temporary file (a no-op once the caller has renamed it away)."""
        if self.file is not None and not self.file.closed:
            try:
                self.file.close()  # may flush a last buffer and fail (a full disk): the file goes anyway
            except OSError:
                pass
        if self.created:
            self.path.unlink(missing_ok=True)

    def received(self) -> ReceivedFile:
        return ReceivedFile(self.field_name, self.client_name, self.path, self.size, self.head)


class _Collector:
    """python-multipart callbacks (synchronous): route each part's bytes to a field, a file sink or nowhere."""

    def __init__(self, rules: Mapping[str, FileRule], charset: str) -> None:
        self.rules = rules
        self.charset = charset
        self.form = ReceivedForm()
        self.sinks: list[_Sink] = []
        self.parts = 0
        self.ended = False
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._field: bytearray | None = None
        self._field_name = ""
        self._sink: _Sink | None = None
        self._sink_names: set[str] = set()

    def callbacks(self) -> MultipartCallbacks:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise MalformedUpload(f"more than {MAX_PARTS} parts")
        self._disposition = b""
        self._field = None
        self._sink = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.strip().lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        _kind, options = parse_options_header(self._disposition)
        if b"name" not in options:
            raise MalformedUpload('a part has no Content-Disposition "name"')
        name = _decode(options[b"name"])
        rule = self.rules.get(name)
        if b"filename" in options:
            if rule is not None and name not in self._sink_names:
                self._sink_names.add(name)
                self._sink = _Sink(name, _decode(options[b"filename"]), rule)
                self.sinks.append(self._sink)
            # Any other file part (unknown field, or a second file for the same field) is read and dropped.
            return
        self._field_name = name
        self._field = bytearray()

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._sink is not None:
            self._sink.take(data[start:end])
        elif self._field is not None:
            if len(self._field) + (end - start) > MAX_FIELD_BYTES:
                raise BodyTooLarge(f"field {self._field_name!r} is over {MAX_FIELD_BYTES} bytes")
            self._field += data[start:end]

    def on_part_end(self) -> None:
        if self._sink is not None:
            self._sink.complete = True
        elif self._field is not None:
            value = codecs.decode(bytes(self._field), self.charset, errors="replace")
            self.form.fields.setdefault(self._field_name, value)
        self._sink = None
        self._field = None

    def on_end(self) -> None:
        self.ended = True

    @property
    def current(self) -> _Sink | None:
        return self._sink


def _multipart_boundary(request: Request) -> tuple[bytes, str] | None:
    """The boundary and charset of a multipart/form-data body; None for any other content type."""
    kind, params = parse_options_header(request.headers.get("content-type", ""))
    if kind != b"multipart/form-data":
        return None
    boundary = params.get(b"boundary")
    if not boundary:
        raise MalformedUpload("multipart body without a boundary")
    charset = _decode(params.get(b"charset", b"utf-8"))
    try:
        charset = codecs.lookup(charset).name
    except LookupError:
        charset = "latin-1"
    return boundary, charset


async def _parse(request: Request, collector: _Collector, boundary: bytes, max_body: int) -> None:
    try:
        parser = MultipartParser(boundary, collector.callbacks(), max_header_size=MAX_HEADER_BYTES)
    except FormParserError as exc:
        raise MalformedUpload(str(exc)) from None
    received = 0
    async with aclosing(request.stream()) as stream:
        async for chunk in stream:
            received += len(chunk)
            if received > max_body:
                raise BodyTooLarge(f"body is over {max_body} bytes")
            for offset in range(0, len(chunk), FEED_SIZE):
                try:
                    parser.write(chunk[offset : offset + FEED_SIZE])
                except FormParserError as exc:
                    raise MalformedUpload(str(exc)) from None
                for sink in collector.sinks:
                    if sink.complete and not sink.closed:
                        await sink.flush(final=True)
                current = collector.current
                if current is not None:
                    await current.flush()
    parser.finalize()
    if not collector.ended:
        raise MalformedUpload("the body ended before the closing boundary")


@asynccontextmanager
async def receive_multipart(
    request: Request, *, files: Mapping[str, FileRule], max_body: int
) -> AsyncIterator[ReceivedForm]:
    """Read a multipart/form-data body, writing the file fields named in ``files`` to temporary files.

    Yields the text fields and the received files. A body of another content type yields an empty form (the
    caller then reports its required fields as missing). On leaving the block, every temporary file that is still
    where it was written is deleted, so the caller must rename the files it keeps.

    Raises :class:`BodyTooLarge`, :class:`FileTooLarge`, :class:`MalformedUpload`, or Starlette's
    ``ClientDisconnect`` when the client goes away mid-body.
    """
    collector: _Collector | None = None
    try:
        found = _multipart_boundary(request)
        if found is not None:
            boundary, charset = found
            collector = _Collector(files, charset)
            await _parse(request, collector, boundary, max_body)
            for sink in collector.sinks:
                collector.form.files[sink.field_name] = sink.received()
        yield collector.form if collector is not None else ReceivedForm()
    finally:
        if collector is not None and collector.sinks:
            sinks = list(collector.sinks)
            # Shielded: the cleanup must finish even when the request is being cancelled.
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(_remove_all, sinks)


def _remove_all(sinks: list[_Sink]) -> None:
    for sink in sinks:
        try:
            sink.remove()
        except OSError:
            pass


def is_temporary_name(name: str) -> bool:
    """Whether ``name`` is one of this module's temporary files (for janitors and tests)."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)


def remove_stale_temporary_files(directories: list[Path], *, older_than: float) -> int:
    """Delete this module's temporary files last modified more than ``older_than`` seconds ago (a crashed process's
    leftovers); how many were removed. Younger ones are kept: another instance sharing the storage may be writing
    them now (a live upload writes at least every ``FLUSH_SIZE`` bytes). Blocking: call it before serving."""
    removed = 0
    limit = time.time() - older_than
    for directory in directories:
        try:
            entries = list(directory.iterdir())
        except FileNotFoundError:
            continue
        for entry in entries:
            try:
                if is_temporary_name(entry.name) and entry.is_file() and entry.stat().st_mtime <= limit:
                    entry.unlink()
                    removed += 1
            except FileNotFoundError:
                continue
    return removed
