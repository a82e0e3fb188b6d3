"""The baselines of bench/realtime.py: WebSocket servers that do nothing but hold, echo and broadcast.

``--kind starlette`` is a minimal Starlette app served by uvicorn with the options ``spotik serve`` uses (no
per-message deflate, the same keepalive and frame size limit, no logging config, no access log; uvicorn's default
WebSocket implementation, websockets-sansio):

* ``/ws`` accepts every socket and echoes every text frame (the bench's "join" message comes back as its reply);
* ``POST /broadcast?seq=N&size=B`` sends one JSON text frame of B bytes to every connected socket and, with
  ``--redis-url``, publishes it on a Redis channel first; every instance relays what the other instances publish
  to its own sockets (a tiny subscriber task), the way Spotik fans out room events across instances;
* ``GET /ping`` answers ``{"status": "ok", "connections": n, "subscribed": bool}``.

``--kind websockets`` is a bare ``websockets.asyncio.server.serve`` echo server (compression off), a second anchor
for memory per idle connection.

    python bench/baseline_ws_app.py --kind starlette --port 8001 [--redis-url redis://… --channel NAME]
    python bench/baseline_ws_app.py --kind websockets --port 8002
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import json
import signal
import uuid
from collections.abc import AsyncIterator
from typing import Any


def frame(seq: int, size: int) -> str:
    """``{"type": "bench_broadcast", "data": {"seq": N, "pad": "…"}, "timestamp": …}`` padded to ``size`` bytes."""
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")

    def encode(pad: str) -> str:
        body = {"type": "bench_broadcast", "data": {"seq": seq, "pad": pad}, "timestamp": stamp}
        return json.dumps(body, separators=(",", ":"))

    return encode("x" * max(0, size - len(encode(""))))


def build_app(redis_url: str | None, channel: str) -> Any:
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route, WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    clients: set[WebSocket] = set()
    origin = uuid.uuid4().hex
    state: dict[str, Any] = {"subscribed": False, "redis": None}

    async def deliver(text: str) -> int:
        sent = 0
        for websocket in list(clients):
            try:
                await websocket.send_text(text)
                sent += 1
            except (WebSocketDisconnect, RuntimeError, OSError):
                clients.discard(websocket)
        return sent

    async def ws_endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        clients.add(websocket)
        try:
            while True:
                await websocket.send_text(await websocket.receive_text())
        except (WebSocketDisconnect, RuntimeError, OSError):
            pass
        finally:
            clients.discard(websocket)

    async def broadcast(request: Request) -> JSONResponse:
        text = frame(int(request.query_params.get("seq", "0")), int(request.query_params.get("size", "800")))
        redis = state["redis"]
        if redis is not None:
            await redis.publish(channel, f"{origin}|{text}")
        sent = await deliver(text)
        return JSONResponse({"sent": sent, "bytes": len(text)})

    async def ping(_request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok", "connections": len(clients), "subscribed": state["subscribed"]})

    async def relay(pubsub: Any) -> None:
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            sender, _, text = message["data"].decode().partition("|")
            if sender != origin:
                await deliver(text)

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if not redis_url:
            yield
            return
        from redis.asyncio import Redis

        redis = Redis.from_url(redis_url)
        pubsub = redis.pubsub()
        await pubsub.subscribe(channel)
        state["redis"], state["subscribed"] = redis, True
        task = asyncio.get_running_loop().create_task(relay(pubsub))
        try:
            yield
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
            with contextlib.suppress(Exception):
                await pubsub.aclose()  # type: ignore[no-untyped-call]
                await redis.aclose()

    return Starlette(
        routes=[
            WebSocketRoute("/ws", ws_endpoint),
            Route("/broadcast", broadcast, methods=["POST"]),
            Route("/ping", ping),
        ],
        lifespan=lifespan,
    )


def serve_starlette(args: argparse.Namespace) -> None:
    import uvicorn

    config = uvicorn.Config(
        build_app(args.redis_url, args.channel),
        host="127.0.0.1",
        port=args.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=10,
        ws_per_message_deflate=False,
        ws_ping_interval=args.ping_interval,
        ws_ping_timeout=args.ping_timeout,
        ws_max_size=args.max_size,
    )
    uvicorn.Server(config).run()


async def serve_websockets(args: argparse.Namespace) -> None:
    from websockets.asyncio.server import ServerConnection, serve
    from websockets.exceptions import ConnectionClosed

    async def echo(websocket: ServerConnection) -> None:
        with contextlib.suppress(ConnectionClosed):
            async for message in websocket:
                await websocket.send(message)

    loop = asyncio.get_running_loop()
    stop = loop.create_future()

    def finish() -> None:
        if not stop.done():
            stop.set_result(None)

    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, finish)
    async with serve(
        echo,
        "127.0.0.1",
        args.port,
        compression=None,
        ping_interval=args.ping_interval,
        ping_timeout=args.ping_timeout,
        max_size=args.max_size,
    ):
        await stop


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="WebSocket baselines for bench/realtime.py")
    parser.add_argument("--kind", choices=["starlette", "websockets"], default="starlette")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--redis-url", default=None, help="fan out broadcasts to the other instances through Redis")
    parser.add_argument("--channel", default="bench:baseline:broadcast")
    parser.add_argument("--ping-interval", type=float, default=30.0)
    parser.add_argument("--ping-timeout", type=float, default=20.0)
    parser.add_argument("--max-size", type=int, default=65_536)
    args = parser.parse_args(argv)
    if args.kind == "starlette":
        serve_starlette(args)
    else:
        asyncio.run(serve_websockets(args))


if __name__ == "__main__":
    main()
