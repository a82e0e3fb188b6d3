"""Runs the real `spotik serve` process on a free loopback port for end-to-end tests."""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx2


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class ServerProcess:
    def __init__(self, storage: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.lines: queue.Queue[str] = queue.Queue()
        self.log: list[str] = []
        base = {k: v for k, v in os.environ.items() if not k.startswith(("DB_", "DATABASE_", "REDIS_", "JWT_"))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "spotik", "serve", "--port", str(self.port)],
            env={**base, "SPOTIK_ENV": "testing", "STORAGE_PATH": str(storage), "LOG_LEVEL": "info", **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._pump_thread = threading.Thread(target=self._pump, daemon=True)
        self._pump_thread.start()

    def _pump(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.put(line)

    def wait_for_log(self, fragment: str, timeout: float = 30.0) -> str:
        """Block until a log line contains ``fragment`` (bounded; fails loudly with the log so far)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            self.log.append(line)
            if fragment in line:
                return line
        raise AssertionError(f"no log line with {fragment!r} within {timeout}s; log:\n{''.join(self.log)}")

    def wait_until_serving(self) -> None:
        self.wait_for_log("Uvicorn running on")
        response = httpx2.get(f"{self.base_url}/api/ping", timeout=5)
        assert response.status_code == 200

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            code = self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait(timeout=10)
        self._pump_thread.join(timeout=10)
        if self.process.stderr is not None:
            self.process.stderr.close()
        return code
