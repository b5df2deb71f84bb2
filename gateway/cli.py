"""``gateway serve | export-schema | demo-upstream | check-sources``.

Configuration problems end with one clear line on stderr and exit status 2, never a
traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence

from gateway.errors import ConfigError, DatabaseUnavailable
from gateway.settings import DEFAULT_HOST, DEFAULT_LOG_LEVEL, DEFAULT_PORT, DEFAULT_WORKERS, LOG_LEVELS, Settings

EXIT_CONFIG = 2
#: How the serving parent tells its workers the log level.
LOG_LEVEL_ENV = "GATEWAY_LOG_LEVEL"


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gateway", description="GraphQL gateway over upstream news sources.")
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the gateway (uvicorn)")
    serve.add_argument("--host", default=DEFAULT_HOST)
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", DEFAULT_PORT)))
    serve.add_argument("--workers", type=int, default=DEFAULT_WORKERS)
    serve.add_argument("--sources", help="sources file (default: $GATEWAY_SOURCES, else the bundled demo sources)")
    serve.add_argument(
        "--log-level",
        default=os.environ.get("GATEWAY_LOG_LEVEL") or DEFAULT_LOG_LEVEL,
        choices=LOG_LEVELS,
        help="log level (default: $GATEWAY_LOG_LEVEL, else %(default)s)",
    )
    serve.add_argument(
        "--access-log",
        action="store_true",
        help="log a line per request (off by default: uvicorn writes each one synchronously on the event loop)",
    )

    sub.add_parser("export-schema", help="print the GraphQL schema (SDL) to stdout")

    demo = sub.add_parser("demo-upstream", help="run the offline demo upstream (NewsAPI, feeds, HN)")
    demo.add_argument("--host", default=DEFAULT_HOST)
    demo.add_argument("--port", type=int, default=9100)
    demo.add_argument("--access-log", action="store_true", help="log every request")

    check = sub.add_parser("check-sources", help="validate a sources file and exit")
    check.add_argument("file")

    persisted = sub.add_parser("persisted", help="manage persisted (trusted) documents")
    persisted_sub = persisted.add_subparsers(dest="persisted_command", required=True)
    add = persisted_sub.add_parser(
        "add", help="store the documents of a manifest (GraphQL Code Generator persisted-documents.json, "
        "or an Apollo persisted query manifest) as trusted, in the gateway's database"
    )
    add.add_argument("file")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "serve":
            return _serve(args)
        if args.command == "export-schema":
            from gateway.schema import export_sdl

            sys.stdout.write(export_sdl())
            return 0
        if args.command == "demo-upstream":
            from gateway.demo.server import run

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
        return 130
    return 0


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from gateway.ops import logging as gateway_logging
    from gateway.ops.metrics import MULTIPROC_ENV
    from gateway.store.embedded import EmbeddedPostgres

    if args.sources:
        os.environ["GATEWAY_SOURCES"] = args.sources
    settings = Settings.from_env()  # validate here, once, with a clean error
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
            timeout_graceful_shutdown=10,
            proxy_headers=True,
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
