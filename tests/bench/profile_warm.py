"""CPU per request of the whole gateway stack on the warm path, in process (no HTTP):
the tool to find what a warm request spends, not a target (``make bench`` judges those).

The real app (``create_app``) with its real lifespan (embedded Postgres, the bundled demo
upstream, sources at ``ttl_s = 3600``) is driven through ASGI with the FrontPage query of
:mod:`tests.bench.bench_warm` and 20 variable sets, after a warm-up. It prints wall and
CPU µs per request; ``--profile`` adds cProfile's top functions (cProfile roughly triples
the time: compare shares, not totals).

Usage: ``.venv/bin/python -m tests.bench.profile_warm [--mode nocache|vars20|identical|newdoc]
[--requests N] [--profile] [--query TEXT]``. ``nocache`` turns the response cache off
(``response_cache_ttl_ms=0``): execution itself, the case the cache cannot help.
``newdoc`` sends a document never seen before with every request (the query with a
numbered comment), the cache off: parsing, validation and the estimate, then execution.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import orjson

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.settings import Settings
from tests.bench.bench_warm import QUERY
from tests.conftest import demo_sources

HEADERS = [
    (b"host", b"127.0.0.1:8000"),
    (b"accept", b"application/json"),
    (b"content-type", b"application/json"),
    (b"user-agent", b"profile_warm"),
]


async def _call(app: Any, body: bytes, state: dict[str, Any]) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive() -> dict[str, Any]:
        if messages:
            return messages.pop()
        await asyncio.Event().wait()  # the client never disconnects
        raise AssertionError("unreachable")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 40000), "scheme": "http", "method": "POST",
        "root_path": "", "path": "/graphql", "raw_path": b"/graphql", "query_string": b"",
        "headers": [*HEADERS, (b"content-length", str(len(body)).encode())], "state": dict(state),
    }
    await app(scope, receive, send)
    return sent


async def run(mode: str, requests: int, profile: bool, query: str) -> None:
    data_dir = Path(tempfile.mkdtemp(prefix="profile-warm-"))
    with DemoServer() as demo:
        settings = Settings(
            sources=tuple(replace(s, ttl_s=3600) for s in demo_sources(demo.url)), data_dir=data_dir,
            maintenance=False,
        )
        if mode in ("nocache", "newdoc"):
            settings = replace(settings, response_cache_ttl_ms=0)
        settings = replace(settings, edge=replace(settings.edge, rate_limit_burst=10**9, rate_limit_per_s=1e8))
        app = create_app(settings)
        async with app.router.lifespan_context(app) as state:
            variables = [{"first": 5}] if mode == "identical" else [{"first": 5 + i} for i in range(20)]
            warm = max(200, 3 * len(variables))
            if mode == "newdoc":  # numbered comments: every text new, in the warm-up and after
                texts = [f"{query}\n# {i}" for i in range(warm + requests)]
                bodies = [orjson.dumps({"query": t, "variables": {"first": 5}}) for t in texts]
            else:
                bodies = [orjson.dumps({"query": query, "variables": v}) for v in variables]
            for i in range(warm):
                sent = await _call(app, bodies[i % len(bodies)], state)
                assert sent[0]["status"] == 200, sent
            profiler = cProfile.Profile() if profile else None
            wall, cpu = time.perf_counter(), time.process_time()
            if profiler:
                profiler.enable()
            for i in range(warm, warm + requests):
                await _call(app, bodies[i % len(bodies)], state)
            if profiler:
                profiler.disable()
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            print(f"{mode}: {wall / requests * 1e6:.0f} µs/request wall, {cpu / requests * 1e6:.0f} µs CPU"
                  f" ({len(sent[1]['body'])} bytes)")
            if profiler:
                pstats.Stats(profiler).sort_stats("tottime").print_stats(30)
                pstats.Stats(profiler).sort_stats("cumulative").print_stats(40)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mode", choices=("nocache", "vars20", "identical", "newdoc"), default="nocache")
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--query", default=QUERY)
    args = parser.parse_args()
    asyncio.run(run(args.mode, args.requests, args.profile, args.query))


if __name__ == "__main__":
    main()
