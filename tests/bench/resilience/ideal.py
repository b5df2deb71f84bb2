"""The ideal proxy the cold stampede is compared with: a bare Starlette app under the
same uvicorn settings that, per worker process, makes one shared fetch of the same
three upstream URLs (concurrently, the first request starting it) and answers every
request with a GraphQL-shaped document once the bodies are in. No parsing, no
database, no cache: what any gateway on this stack must at least spend on a cold burst.

    BENCH_IDEAL_UPSTREAMS="bbc=http://...,tech=http://..." \\
        python -m uvicorn tests.bench.resilience.ideal:app --workers N --port P
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

UPSTREAMS_ENV = "BENCH_IDEAL_UPSTREAMS"

_shared: asyncio.Future[bytes] | None = None


def _upstreams() -> list[tuple[str, str]]:
    pairs = (p.split("=", 1) for p in os.environ.get(UPSTREAMS_ENV, "").split(",") if "=" in p)
    return [(k, v) for k, v in pairs]


async def _fetch_all() -> bytes:
    upstreams = _upstreams()
    async with aiohttp.ClientSession() as session:

        async def one(url: str) -> int:
            async with session.get(url) as resp:
                return len(await resp.read())

        sizes = await asyncio.gather(*(one(url) for _, url in upstreams))
    sources: list[dict[str, Any]] = [
        {"source": {"id": sid}, "status": "FRESH", "ageSeconds": 0, "error": None, "bytes": size}
        for (sid, _), size in zip(upstreams, sizes, strict=True)
    ]
    return orjson.dumps({"data": {"articles": {"nodes": [], "sources": sources}}})


async def graphql(request: Request) -> Response:
    global _shared
    await request.body()
    if _shared is None:
        _shared = asyncio.ensure_future(_fetch_all())
    return Response(await asyncio.shield(_shared), media_type="application/json")


async def livez(request: Request) -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")


app = Starlette(routes=[Route("/graphql", graphql, methods=["POST"]), Route("/livez", livez)])
