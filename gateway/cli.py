"""``gateway serve | worker | migrate | cache purge | export-schema | demo-upstream | check-sources``.

Configuration problems (a port already taken included) end with one clear line on
stderr and exit status 2, never a traceback; so does Ctrl-C (exit status 130).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import socket
import sys
import tempfile
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING

from gateway import __version__
from gateway.errors import ConfigError, DatabaseUnavailable
from gateway.settings import DEFAULT_HOST, DEFAULT_LOG_LEVEL, DEFAULT_PORT, DEFAULT_WORKERS, LOG_LEVELS, Settings

if TYPE_CHECKING:
    import asyncpg

EXIT_CONFIG = 2
EXIT_INTERRUPTED = 130
#: After a SIGTERM (and the drain), in-flight requests get this long to finish.
GRACEFUL_SHUTDOWN_S = 10
DEMO_PORT = 9100
#: How the serving parent tells its workers the log level.
LOG_LEVEL_ENV = "GATEWAY_LOG_LEVEL"


def _parser() -> argparse.ArgumentParser:
    fmt = argparse.ArgumentDefaultsHelpFormatter  # every option's help shows its default
    p = argparse.ArgumentParser(
        prog="gateway", description="GraphQL gateway over upstream news sources.", formatter_class=fmt
    )
    p.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (uvicorn)", formatter_class=fmt)
    serve.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    serve.add_argument(
        "--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)), help="port to listen on ($PORT if set)"
    )
    serve.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="worker processes (one event loop each)")
    serve.add_argument(
        "--sources", default=None, help="sources file (None: $GATEWAY_SOURCES, else the bundled demo sources)"
    )
    serve.add_argument(
        "--log-level",
        default=os.environ.get(LOG_LEVEL_ENV) or DEFAULT_LOG_LEVEL,
        choices=LOG_LEVELS,
        help="log level ($GATEWAY_LOG_LEVEL if set)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per request (off by default: uvicorn writes each one synchronously on the event loop)",
    )
    serve.add_argument(
        "--no-maintenance",
        action="store_true",
        help="take no part in maintenance (cache GC, refresh-ahead): leave it to `gateway worker` "
        "(same as GATEWAY_MAINTENANCE=false)",
    )

    worker = sub.add_parser(
        "worker", help="run only the maintenance (one leader across processes): cache GC, refresh-ahead",
        formatter_class=fmt,
    )
    worker.add_argument(
        "--sources", default=None, help="sources file (None: $GATEWAY_SOURCES, else the bundled demo sources)"
    )
    worker.add_argument(
        "--log-level", default=os.environ.get(LOG_LEVEL_ENV) or DEFAULT_LOG_LEVEL, choices=LOG_LEVELS,
        help="log level ($GATEWAY_LOG_LEVEL if set)",
    )

    sub.add_parser("migrate", help="apply the database migrations and exit", formatter_class=fmt)

    cache = sub.add_parser("cache", help="manage the shared cache", formatter_class=fmt)
    cache_sub = cache.add_subparsers(dest="cache_command", required=True)
    purge = cache_sub.add_parser("purge", help="delete cached upstream answers (every process refetches)",
                                 formatter_class=fmt)
    purge.add_argument("--source", default=None, help="only this source's answers (None: every source)")

    sub.add_parser("export-schema", help="print the GraphQL schema (SDL) to stdout", formatter_class=fmt)

    demo = sub.add_parser("demo-upstream", help="run the offline demo upstream (NewsAPI, feeds, HN)",
                          formatter_class=fmt)
    demo.add_argument("--host", default=DEFAULT_HOST, help="address to listen on")
    demo.add_argument("--port", type=int, default=DEMO_PORT, help="port to listen on")
    demo.add_argument("--access-log", action="store_true", help="log every request")

    check = sub.add_parser("check-sources", help="validate a sources file and exit", formatter_class=fmt)
    check.add_argument("file", help="the sources file (TOML)")

    persisted = sub.add_parser("persisted", help="manage persisted (trusted) documents", formatter_class=fmt)
    persisted_sub = persisted.add_subparsers(dest="persisted_command", required=True)
    add = persisted_sub.add_parser(
        "add",
        help="store the documents of a manifest (GraphQL Code Generator persisted-documents.json, "
        "or an Apollo persisted query manifest) as trusted, in the gateway's database",
        formatter_class=fmt,
    )
    add.add_argument("file", help="the manifest (JSON)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "worker":
            return _worker(args)
        if args.command == "migrate":
            return _with_database(Settings.from_env(), _migrate)
        if args.command == "cache":
            return _with_database(Settings.from_env(), lambda conn: _purge(conn, args.source))
        if args.command == "export-schema":
            from gateway.schema import export_sdl

            sys.stdout.write(export_sdl())
            return 0
        if args.command == "demo-upstream":
            from gateway.demo.server import run

            check_port(args.host, args.port)
            run(args.host, args.port, access_log=args.access_log)
            return 0
        if args.command == "persisted":
            return _persisted_add(args.file)
        if args.command == "check-sources":
            settings = Settings.from_env(sources_file=args.file)
            print(f"{args.file}: ok, {len(settings.sources)} source(s): {', '.join(s.id for s in settings.sources)}")
            return 0
    except (ConfigError, DatabaseUnavailable) as exc:
        print(f"gateway: error: {exc.message}", file=sys.stderr)
        return EXIT_CONFIG
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    return 0


def check_port(host: str, port: int) -> None:
    """Fail with one line, before anything says "ready", when ``host:port`` cannot be
    listened on (taken, or not ours); uvicorn would report it only after startup.
    Bound the way uvicorn binds (SO_REUSEADDR), then released for it."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(address)
        except OSError as exc:
            raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.ops import logging as gateway_logging
    from gateway.ops.metrics import MULTIPROC_ENV
    from gateway.store.embedded import EmbeddedPostgres

    if args.sources:
        os.environ["GATEWAY_SOURCES"] = args.sources
    if args.no_maintenance:
        os.environ["GATEWAY_MAINTENANCE"] = "false"  # the workers build their settings from the env
    settings = Settings.from_env()  # validate here, once, with a clean error
    check_port(args.host, args.port)
    # Workers configure their own logging (create_app_from_env) at this level.
    os.environ[LOG_LEVEL_ENV] = args.log_level
    gateway_logging.configure(settings.log_format, args.log_level)
    metrics_dir: str | None = None
    if args.workers > 1 and not os.environ.get(MULTIPROC_ENV):
        # Several workers: each keeps its metrics in files here, and a scrape of any
        # one of them sums them all (prometheus-client's multiprocess mode).
        metrics_dir = tempfile.mkdtemp(prefix="gateway-metrics-")
        os.environ[MULTIPROC_ENV] = metrics_dir

    # uvicorn re-raises the SIGTERM it handled once it has shut down; with the default
    # action the process would die before the embedded Postgres is stopped below.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))

    # One embedded Postgres for all workers, owned by this (parent) process.
    embedded: EmbeddedPostgres | None = None
    if settings.database_url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        os.environ["GATEWAY_DATABASE_URL"] = embedded.start_sync()
    else:
        asyncio.run(_check_database(settings.database_url))
    try:
        print(
            f"gateway: {len(settings.sources)} source(s) from {settings.sources_file}; "
            f"GraphiQL at http://{args.host}:{args.port}/graphql",
            flush=True,
        )
        uvicorn.run(
            "gateway.app:create_app_from_env",
            factory=True,
            host=args.host,
            port=args.port,
            workers=args.workers,
            log_level=args.log_level,
            log_config=None,  # our own structlog setup, in every worker
            lifespan="on",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
            # WebSocket pings (graphql-transport-ws subscriptions) as often as SSE heartbeats.
            ws_ping_interval=settings.subscription_heartbeat_s,
            # Off: uvicorn would believe X-Forwarded-For from 127.0.0.1 by default. Which
            # peers may speak for a client is GATEWAY_TRUSTED_PROXIES, decided in one
            # place (gateway/edge/identity.py), for Forwarded too.
            proxy_headers=False,
            # uvicorn's access log formats and writes a line per request, on the event
            # loop, synchronously: in a 100-request burst that was ~40% of the cost of
            # sending the answers. Opt-in until logging moves off the loop.
            access_log=args.access_log,
        )
    finally:
        if embedded is not None:
            embedded.stop_sync()
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)
    return 0


def _logging(settings: Settings, level: str) -> None:
    from gateway.ops import logging as gateway_logging

    gateway_logging.configure(settings.log_format, level)


def _worker(args: argparse.Namespace) -> int:
    """The maintenance alone: the same Services as a gateway process (the refreshes go
    through the same source path and leases), with no HTTP server."""
    if args.sources:
        os.environ["GATEWAY_SOURCES"] = args.sources
    settings = replace(Settings.from_env(), maintenance=True)
    _logging(settings, args.log_level)
    asyncio.run(_run_worker(settings))
    return 0


async def _run_worker(settings: Settings) -> None:
    from gateway.resilience.clock import SystemClock
    from gateway.services import Services

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    services = await Services.start(settings, clock=SystemClock())
    try:
        print(f"gateway worker ready: maintenance for {len(settings.sources)} source(s)", flush=True)
        await stop.wait()
    finally:
        await services.aclose()


def _with_database(settings: Settings, fn: Callable[[asyncpg.Connection], Awaitable[str]]) -> int:
    """Run ``fn`` on one connection to GATEWAY_DATABASE_URL (or the embedded server,
    started for the purpose) and print what it says."""
    from gateway.store.embedded import EmbeddedPostgres

    _logging(settings, "warning")
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = embedded.start_sync()
    try:
        print(asyncio.run(_on_connection(url, fn)), flush=True)
    finally:
        if embedded is not None:
            embedded.stop_sync()
    return 0


async def _on_connection(url: str, fn: Callable[[asyncpg.Connection], Awaitable[str]]) -> str:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=5)
    except Exception as exc:  # any failure here is the operator's to fix
        raise DatabaseUnavailable(f"cannot connect to the database: {type(exc).__name__}: {exc}") from None
    try:
        return await fn(conn)
    finally:
        await conn.close()


async def _migrate(conn: asyncpg.Connection) -> str:
    from gateway.store.migrate import migrate

    applied = await migrate(conn)
    return f"applied migration(s) {', '.join(f'{v:04d}' for v in applied)}" if applied else "migrations: up to date"


async def _purge(conn: asyncpg.Connection, source_id: str | None) -> str:
    from gateway.store.maintenance import purge
    from gateway.store.migrate import migrate

    await migrate(conn)  # a fresh database has no fetch_cache yet
    deleted = await purge(conn, source_id)
    return f"purged {deleted} cached answer(s){f' of source {source_id}' if source_id else ''}"


async def _check_database(url: str) -> None:
    import asyncpg

    try:
        conn = await asyncpg.connect(url, timeout=5)
    except Exception as exc:  # any failure here is the operator's to fix
        raise DatabaseUnavailable(f"cannot connect to GATEWAY_DATABASE_URL: {type(exc).__name__}: {exc}") from None
    await conn.close()


def _persisted_add(path: str) -> int:
    import orjson

    from gateway.persisted import add_manifest, parse_manifest
    from gateway.resilience.clock import SystemClock
    from gateway.store.db import Database
    from gateway.store.embedded import EmbeddedPostgres
    from gateway.store.migrate import migrate

    try:
        raw = open(path, "rb").read()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"manifest {path}: invalid JSON: {exc}") from None
    docs = parse_manifest(data, origin=path)
    settings = Settings.from_env()
    embedded: EmbeddedPostgres | None = None
    url = settings.database_url
    if url is None:
        embedded = EmbeddedPostgres(settings.data_dir)
        url = embedded.start_sync()

    async def run() -> tuple[int, int]:
        db = await Database.connect(url, min_size=1, max_size=1, connect_timeout_s=settings.db_connect_timeout_s,
                                    command_timeout_s=30, clock=SystemClock(), setup=migrate)
        try:
            return await add_manifest(db, docs, max_documents=settings.persisted_max)
        finally:
            await db.close()

    try:
        inserted, existing = asyncio.run(run())
    finally:
        if embedded is not None:
            embedded.stop_sync()
    print(f"{path}: {len(docs)} document(s): {inserted} added, {existing} already stored; trusted from now on")
    return 0
