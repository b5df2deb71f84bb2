"""The shared upstream client against real local servers: the production (direct
aiohttp) path and the injected-transport (httpx) path must behave alike."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator

import httpx
import pytest
from aiohttp import web
from httpx_aiohttp import AiohttpTransport

from gateway.errors import BadPayload, UpstreamHTTPError, UpstreamTimeout, UpstreamUnavailable
from gateway.upstream import UpstreamClient, build_http_client, parse_retry_after

LIMIT = 10_000


async def handler(request: web.Request) -> web.StreamResponse:
    path = request.path
    if path == "/echo":
        return web.json_response({"query": dict(request.query), "ua": request.headers.get("User-Agent")})
    if path == "/304":
        return web.Response(status=304)
    if path == "/503":
        return web.Response(status=503, headers={"Retry-After": "7"})
    if path == "/redirect":
        raise web.HTTPFound("/echo?via=redirect")
    if path == "/loop":
        raise web.HTTPFound("/loop")
    if path == "/big":
        return web.Response(body=b"x" * (LIMIT + 1))
    if path == "/big-chunked":
        resp = web.StreamResponse()
        await resp.prepare(request)
        for _ in range(20):
            await resp.write(b"y" * 1000)
        await resp.write_eof()
        return resp
    if path == "/gzip":
        return web.Response(body=gzip.compress(b"hello " * 100), headers={"Content-Encoding": "gzip"})
    if path == "/slow":
        await asyncio.sleep(2)
        return web.Response(text="late")
    if path == "/cut":
        resp = web.StreamResponse(headers={"Content-Length": "1000"})
        await resp.prepare(request)
        await resp.write(b"partial")
        request.transport.close()  # type: ignore[union-attr]
        return resp
    return web.Response(status=404)


@pytest.fixture
async def server() -> AsyncIterator[str]:
    runner = web.AppRunner(web.Application(handler_args=None, middlewares=[]), handle_signals=False)
    runner.app.router.add_route("GET", "/{tail:.*}", handler)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture(params=["direct", "httpx"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[UpstreamClient]:
    if request.param == "direct":
        http = build_http_client(20)
    else:  # what an injected transport gets: the same aiohttp transport, through httpx
        http = build_http_client(20, transport=AiohttpTransport())
    c = UpstreamClient(http, max_body_bytes=LIMIT)
    assert (c._direct is not None) == (request.param == "direct")  # noqa: SLF001
    yield c
    await c.aclose()


async def test_params_are_added_to_the_urls_own_query(server: str, client: UpstreamClient) -> None:
    resp = await client.get(f"{server}/echo?sources=bbc-news", timeout_s=2, params={"pageSize": "5", "q": "a b&c"})
    body = json.loads(resp.content)
    assert body["query"] == {"sources": "bbc-news", "pageSize": "5", "q": "a b&c"}
    assert body["ua"].startswith("news-gateway/")


async def test_statuses_and_errors(server: str, client: UpstreamClient) -> None:
    assert (await client.get(f"{server}/304", timeout_s=2)).not_modified
    with pytest.raises(UpstreamHTTPError) as info:
        await client.get(f"{server}/503", timeout_s=2)
    assert info.value.code == "UPSTREAM_HTTP_503" and info.value.retry_after_s == 7 and info.value.retryable
    with pytest.raises(UpstreamHTTPError, match="HTTP 404"):
        await client.get(f"{server}/nope", timeout_s=2)
    assert b"redirect" in (await client.get(f"{server}/redirect", timeout_s=2)).content
    with pytest.raises(UpstreamUnavailable, match="redirect"):
        await client.get(f"{server}/loop", timeout_s=2)


async def test_body_limits_and_decoding(server: str, client: UpstreamClient) -> None:
    with pytest.raises(BadPayload):
        await client.get(f"{server}/big", timeout_s=2)
    with pytest.raises(BadPayload):
        await client.get(f"{server}/big-chunked", timeout_s=2)
    assert (await client.get(f"{server}/gzip", timeout_s=2)).content == b"hello " * 100


async def test_timeouts_and_dead_peers(server: str, client: UpstreamClient) -> None:
    with pytest.raises(UpstreamTimeout):
        await client.get(f"{server}/slow", timeout_s=0.2)
    with pytest.raises(UpstreamUnavailable):
        await client.get(f"{server}/cut", timeout_s=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(UpstreamUnavailable):
        await client.get(f"http://127.0.0.1:{free}/", timeout_s=2)


def test_retry_after_parsing() -> None:
    assert parse_retry_after("120") == 120
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert httpx  # the interface stays httpx


async def test_redirects_can_be_refused(server: str, client: UpstreamClient) -> None:
    """Requests carrying an API key must not follow a redirect to another host."""
    with pytest.raises(UpstreamHTTPError) as info:
        await client.get(f"{server}/redirect", timeout_s=2, follow_redirects=False)
    assert info.value.status == 302
