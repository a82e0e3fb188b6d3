"""The real server process on loopback: the quick start works, and SIGTERM finishes in-flight requests."""

from __future__ import annotations

import json
import signal
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx2
import pytest

from tests.e2e.server import ServerProcess
from tests.openapi_contract import live_contract_hooks

pytestmark = pytest.mark.e2e


@pytest.fixture
def server(tmp_path: Path) -> Iterator[ServerProcess]:
    process = ServerProcess(tmp_path / "storage")
    try:
        process.wait_until_serving()
        yield process
    finally:
        process.stop()


def test_register_login_and_me_over_real_http(server: ServerProcess, tmp_path: Path) -> None:
    with httpx2.Client(
        base_url=server.base_url, timeout=10, event_hooks=live_contract_hooks(server.base_url)
    ) as client:
        credentials = {
            "username": "e2e",
            "email": "e2e@example.com",
            "password": "password-e2e",
            "password_confirmation": "password-e2e",
        }
        assert client.post("/api/auth/register", json=credentials).status_code == 201
        login = client.post("/api/auth/login", json={"email": "e2e@example.com", "password": "password-e2e"})
        assert login.status_code == 200
        token = login.json()["data"]["token"]
        me = client.get("/api/auth/me", headers={"Authorization": f"Bearer {token}"})
        assert me.status_code == 200 and me.json()["data"]["user"]["username"] == "e2e"
        assert client.get("/api/health").json()["status"] == "healthy"
    assert (tmp_path / "storage" / "spotik.sqlite3").is_file()  # created and migrated on first start


def test_sigterm_finishes_the_in_flight_request_then_closes_the_pool(server: ServerProcess) -> None:
    body = json.dumps(
        {
            "username": "late",
            "email": "late@example.com",
            "password": "password-late",
            "password_confirmation": "password-late",
        }
    ).encode()
    head = (
        f"POST /api/auth/register HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection(("127.0.0.1", server.port), timeout=30) as connection:
        connection.sendall(head + body[:10])  # the request is now in flight, its body half sent
        server.process.send_signal(signal.SIGTERM)
        server.wait_for_log("Shutting down")
        connection.sendall(body[10:])
        response = b""
        while chunk := connection.recv(65536):
            response += chunk
    assert response.startswith(b"HTTP/1.1 201"), response[:200]
    # uvicorn re-raises the captured SIGTERM once shutdown is complete, so the exit status is "terminated".
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    server.wait_for_log("connection pool closed")
    server.wait_for_log("Finished server process")
    with pytest.raises(httpx2.ConnectError):
        httpx2.get(f"{server.base_url}/api/ping", timeout=2)


def test_the_start_up_objects_are_frozen_for_the_garbage_collector(server: ServerProcess) -> None:
    """The serving process hides what start-up allocated from the collector (spotik.realtime.serving)."""
    line = server.wait_for_log("start-up objects frozen")
    frozen = int(line.split("objects=")[1].split()[0])
    assert frozen > 10_000  # modules, routes, models, metadata: far more than a handful
