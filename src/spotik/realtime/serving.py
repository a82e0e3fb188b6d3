"""Running under uvicorn with a graceful WebSocket shutdown (contract D3: server shutdown → 1001), and a garbage
collector that leaves the start-up objects alone.

On SIGTERM uvicorn closes every open WebSocket itself with 1012 ("service restart") and only *then* runs the
lifespan shutdown, so ``Realtime.stop()`` in the lifespan would find no socket left to close with 1001. This server
stops the gateway first — flush every queue, close every socket with 1001 — and then lets uvicorn shut down.

Once the app has started, every object allocated so far (modules, routes, models, SQLAlchemy metadata: about
150,000 here) lives as long as the process, yet each automatic full collection would traverse them all again (full
collections paused the loop 85–97 ms in a serving process with idle sockets), and a broadcast waits for them.
``gc.freeze()`` moves them out of the collector's sight (the standard remedy since Python 3.7; Instagram's
write-up). Done here, in the process that serves, not in ``create_app``: test processes build many apps and must
not freeze their garbage.
"""

from __future__ import annotations

import gc
import socket

import structlog
import uvicorn

from spotik.realtime.gateway import Realtime

log = structlog.get_logger("spotik.serving")


class RealtimeServer(uvicorn.Server):
    def realtime(self) -> Realtime | None:
        lifespan = getattr(self, "lifespan", None)
        app_state = (getattr(lifespan, "state", None) or {}).get("spotik")
        realtime = getattr(app_state, "realtime", None)
        return realtime if isinstance(realtime, Realtime) else None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        gc.collect()
        gc.freeze()
        log.info("start-up objects frozen for the garbage collector", objects=gc.get_freeze_count())

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        realtime = self.realtime()
        if realtime is not None:
            await realtime.stop()
        await super().shutdown(sockets)


def serve(config: uvicorn.Config) -> None:
    """``uvicorn.run`` for one process (no reload, no workers) with the graceful WebSocket shutdown."""
    RealtimeServer(config).run()
