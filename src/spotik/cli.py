"""``spotik serve | migrate | bench``: the operator's entry points."""

from __future__ import annotations

import argparse
import importlib
import sys
from pathlib import Path

from pydantic import ValidationError

from spotik.settings import Settings, describe_validation_error


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        print(f"spotik: {describe_validation_error(exc)}", file=sys.stderr)
        raise SystemExit(2) from None
    except ValueError as exc:  # e.g. a config/*.yml file that is not a mapping
        print(f"spotik: invalid configuration: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def serve(settings: Settings, host: str | None, port: int | None) -> None:
    import uvicorn

    from spotik.app import create_app
    from spotik.covers.storage import TRACK_COVERS
    from spotik.db.migrate import migrate
    from spotik.logs import configure_logging
    from spotik.performance.middleware.security import SecurityHeaders
    from spotik.realtime.serving import RequestTimeouts, WebSocketProtocol, http_protocol
    from spotik.realtime.serving import serve as serve_with_realtime
    from spotik.tracks.service import TRACKS_DIR
    from spotik.tracks.uploads import remove_stale_temporary_files

    configure_logging(settings)
    if settings.auto_migrate:
        print(f"spotik: {migrate(settings).describe()}", file=sys.stderr)
    # Uploads cut short by a crash (kill -9, power loss) leave `.upload-*.part` files that no row names.
    folders = [settings.audio_root / TRACKS_DIR, settings.public_root / TRACK_COVERS]
    removed = remove_stale_temporary_files(folders, older_than=settings.upload_temp_max_age)
    print(f"spotik: removed {removed} stale temporary upload file(s)", file=sys.stderr)
    app = create_app(settings)
    security = (
        SecurityHeaders.from_settings(settings, app.services.monitoring.proxies).headers
        if settings.security_headers_enabled
        else []
    )
    config = uvicorn.Config(
        app,
        host=host or settings.host,
        port=port or settings.port,
        log_config=None,
        access_log=False,
        proxy_headers=False,
        timeout_graceful_shutdown=int(settings.graceful_shutdown_timeout),
        timeout_keep_alive=settings.http_keep_alive_timeout,
        # httptools, its own 400 for malformed HTTP with the security headers too, and 408 for too slow a client
        http=http_protocol(
            security,
            RequestTimeouts(
                header=settings.http_header_timeout,
                body=settings.http_body_timeout,
                min_rate=settings.http_body_min_rate,
                min_rate_window=settings.http_body_min_rate_window,
            ),
        ),
        ws=WebSocketProtocol,  # uvicorn's websockets-sansio, freeing a closed socket at once (realtime/serving.py)
        ws_per_message_deflate=settings.ws_per_message_deflate,  # off: ~33 KiB per socket, 2-3x slower broadcasts
        ws_ping_interval=settings.ws_ping_interval,
        ws_ping_timeout=settings.ws_ping_timeout,
        ws_max_size=settings.ws_max_message_bytes,
    )
    # Closes every WebSocket with 1001 after flushing its queue before uvicorn's own shutdown (which would use 1012).
    serve_with_realtime(config, app.services.realtime)


def bench(argv: list[str]) -> int:
    """The benchmark suite of a source checkout (``bench/spotikbench``, beside ``src/``), with this interpreter."""
    folder = Path(__file__).resolve().parents[2] / "bench"
    if not (folder / "spotikbench").is_dir():
        print(f"spotik bench: needs a source checkout ({folder}/spotikbench not found)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(folder))
    return int(importlib.import_module("spotikbench.suite").main(argv))


def main(argv: list[str] | None = None) -> None:
    given = sys.argv[1:] if argv is None else argv
    if given[:1] == ["bench"]:  # its options are the suite's own (spotik bench --help)
        raise SystemExit(bench(given[1:]))
    parser = argparse.ArgumentParser(prog="spotik", description="Spotik collaborative listening rooms")
    commands = parser.add_subparsers(dest="command", required=True)
    serve_parser = commands.add_parser("serve", help="run the HTTP and WebSocket server")
    serve_parser.add_argument("--host", help="interface to bind (default from settings: 127.0.0.1)")
    serve_parser.add_argument("--port", type=int, help="port to bind (default from settings: 8000)")
    commands.add_parser("migrate", help="apply database migrations to the configured database")
    commands.add_parser("bench", help="run the benchmarks and write bench/report/REPORT.md (--quick, --smoke, --help)")
    args = parser.parse_args(argv)

    settings = load_settings()
    if args.command == "serve":
        serve(settings, args.host, args.port)
    elif args.command == "migrate":
        from spotik.db.migrate import migrate
        from spotik.logs import configure_logging

        configure_logging(settings)
        print(f"spotik: {migrate(settings).describe()}", file=sys.stderr)
