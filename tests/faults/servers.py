"""The real ``spotik serve`` process (tests/e2e/server.py) with the settings of the fault scenarios."""

from __future__ import annotations

import queue
import signal
from pathlib import Path

from tests.conftest import TEST_JWT_SECRET
from tests.e2e.server import ServerProcess

# Small timeouts so that every fault shows within seconds (each is a setting; docs/api.md lists them).
FAULT_ENV: dict[str, str] = {
    "JWT_SECRET": TEST_JWT_SECRET,
    "BCRYPT_COST": "4",
    "DB_POOL_MAX": "10",
    "DB_POOL_TIMEOUT": "1",
    "DB_CONNECT_TIMEOUT": "1",
    "RATE_LIMITING_ENABLED": "false",
    "WS_MAX_CONNECTIONS": "5000",
    "WS_MAX_CONNECTIONS_PER_ROOM": "1000",
    "GRACEFUL_SHUTDOWN_TIMEOUT": "10",
    "MEMORY_WARNING_MB": "65536",
    "MEMORY_CRITICAL_MB": "131072",
}


class Server(ServerProcess):
    def __init__(self, storage: Path, env: dict[str, str]) -> None:
        super().__init__(storage, {**FAULT_ENV, **env})
        self.storage = storage

    @property
    def ws_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    def kill9(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def sigterm(self) -> None:
        self.process.send_signal(signal.SIGTERM)

    def output(self) -> str:
        """Everything the server has logged so far."""
        while True:
            try:
                self.log.append(self.lines.get_nowait())
            except queue.Empty:
                return "".join(self.log)
