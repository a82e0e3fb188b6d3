"""Running under uvicorn with a graceful WebSocket shutdown (contract D3: server shutdown → 1001).

On SIGTERM uvicorn closes every open WebSocket itself with 1012 ("service restart") and only *then* runs the
lifespan shutdown, so ``Realtime.stop()`` in the lifespan would find no socket left to close with 1001. This server
stops the gateway first — flush every queue, close every socket with 1001 — and then lets uvicorn shut down.
"""

from __future__ import annotations

import socket

import uvicorn

from spotik.realtime.gateway import Realtime


class RealtimeServer(uvicorn.Server):
    def realtime(self) -> Realtime | None:
        lifespan = getattr(self, "lifespan", None)
        app_state = (getattr(lifespan, "state", None) or {}).get("spotik")
        realtime = getattr(app_state, "realtime", None)
        return realtime if isinstance(realtime, Realtime) else None

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        realtime = self.realtime()
        if realtime is not None:
            await realtime.stop()
        await super().shutdown(sockets)


def serve(config: uvicorn.Config) -> None:
    """``uvicorn.run`` for one process (no reload, no workers) with the graceful WebSocket shutdown."""
    RealtimeServer(config).run()
