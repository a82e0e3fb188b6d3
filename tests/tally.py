"""A pytest plugin that counts what the tests send, for the figures of docs/security.md.

Enabled with ``-p tests.tally`` (``make security-figures``): every HTTP request an ``httpx2`` client sends, every
WebSocket message a ``websockets`` client sends, and every raw write of the hand-made requests (``StreamWriter.write``,
``socket.sendall``) is counted against the test module that sent it; the totals are printed at the end of the run.
It only counts: each call goes on unchanged.
"""

from __future__ import annotations

import asyncio
import socket
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import httpx2
import pytest
from websockets.asyncio.connection import Connection
from websockets.sync.connection import Connection as SyncConnection

_sent: Counter[tuple[str, str]] = Counter()
_module = ["(setup)"]
PATCHED: list[tuple[Any, str, str]] = [
    (httpx2.AsyncClient, "send", "http"),
    (httpx2.Client, "send", "http"),
    (Connection, "send", "ws"),
    (SyncConnection, "send", "ws"),
    (asyncio.StreamWriter, "write", "raw"),
    (socket.socket, "sendall", "raw"),
]


def _counting(kind: str, original: Callable[..., Any]) -> Callable[..., Any]:
    def counted(*args: Any, **kwargs: Any) -> Any:
        _sent[_module[0], kind] += 1
        return original(*args, **kwargs)

    return counted


def pytest_configure(config: pytest.Config) -> None:
    for owner, name, kind in PATCHED:
        setattr(owner, name, _counting(kind, getattr(owner, name)))


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item) -> Iterator[None]:
    _module[0] = item.module.__name__ if isinstance(item, pytest.Function) else item.nodeid
    return (yield)


def pytest_terminal_summary(terminalreporter: Any) -> None:
    modules = sorted({module for module, _ in _sent})
    terminalreporter.section("sent by the tests (tests/tally.py)")
    for module in modules:
        counts = {kind: _sent[module, kind] for kind in ("http", "ws", "raw")}
        terminalreporter.write_line(f"{module}: " + ", ".join(f"{n} {kind}" for kind, n in counts.items()))
    total = {kind: sum(n for (_, k), n in _sent.items() if k == kind) for kind in ("http", "ws", "raw")}
    terminalreporter.write_line("total: " + ", ".join(f"{n} {kind}" for kind, n in total.items()))
