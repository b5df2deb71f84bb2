"""The one upstream HTTP path against a real local server: statuses, redirects, body
caps, decoding, timeouts and dead peers, each mapped to the gateway's errors."""

from __future__ import annotations

import asyncio
import gzip
import json
import socket
from collections.abc import AsyncIterator
from datetime import datetime, timezone

import pytest
from aiohttp import web

from gateway.errors import BadPayload, UpstreamHTTPError, UpstreamTimeout, UpstreamUnavailable
from gateway.sources.base import RequestSpec, with_query
from gateway.upstream import ERROR_MAP, UpstreamClient, parse_retry_after
from tests.clock import FakeClock

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
    if path == "/gzip-bomb":  # a small body that inflates past the limit
        return web.Response(body=gzip.compress(b"z" * (LIMIT * 4)), headers={"Content-Encoding": "gzip"})
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
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}"
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[UpstreamClient]:
    c = UpstreamClient(max_connections=20, max_body_bytes=LIMIT, clock=FakeClock())
    yield c
    await c.aclose()


def get(client: UpstreamClient, url: str, *, timeout_s: float, follow_redirects: bool = True):  # type: ignore[no-untyped-def]
    return client.get(RequestSpec(url, follow_redirects=follow_redirects), timeout_s=timeout_s)


async def test_params_are_added_to_the_urls_own_query(server: str, client: UpstreamClient) -> None:
    url = with_query(f"{server}/echo?sources=bbc-news&pageSize=1", {"pageSize": "5", "q": "a b&c"})
    resp = await get(client, url, timeout_s=2)
    body = json.loads(resp.content)
    assert body["query"] == {"sources": "bbc-news", "pageSize": "5", "q": "a b&c"}
    assert body["ua"].startswith("news-gateway/")


async def test_statuses_and_errors(server: str, client: UpstreamClient) -> None:
    assert (await get(client, f"{server}/304", timeout_s=2)).not_modified
    with pytest.raises(UpstreamHTTPError) as info:
        await get(client, f"{server}/503", timeout_s=2)
    assert info.value.code == "UPSTREAM_HTTP_ERROR" and info.value.retry_after_s == 7 and info.value.retryable
    with pytest.raises(UpstreamHTTPError, match="HTTP 404"):
        await get(client, f"{server}/nope", timeout_s=2)
    assert b"redirect" in (await get(client, f"{server}/redirect", timeout_s=2)).content
    with pytest.raises(UpstreamUnavailable, match="redirect"):
        await get(client, f"{server}/loop", timeout_s=2)


async def test_body_limits_and_decoding(server: str, client: UpstreamClient) -> None:
    with pytest.raises(BadPayload):
        await get(client, f"{server}/big", timeout_s=2)
    with pytest.raises(BadPayload):
        await get(client, f"{server}/big-chunked", timeout_s=2)
    assert (await get(client, f"{server}/gzip", timeout_s=2)).content == b"hello " * 100
    with pytest.raises(BadPayload, match="more than"):  # counted as decompressed, not as sent
        await get(client, f"{server}/gzip-bomb", timeout_s=2)


async def test_timeouts_and_dead_peers(server: str, client: UpstreamClient) -> None:
    with pytest.raises(UpstreamTimeout):
        await get(client, f"{server}/slow", timeout_s=0.2)
    with pytest.raises(UpstreamUnavailable):
        await get(client, f"{server}/cut", timeout_s=2)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    with pytest.raises(UpstreamUnavailable):
        await get(client, f"http://127.0.0.1:{free}/", timeout_s=2)


def test_retry_after_parsing() -> None:
    now = datetime(2015, 10, 21, 7, 27, tzinfo=timezone.utc)
    assert parse_retry_after("120", now=now) == 120
    assert parse_retry_after("garbage", now=now) is None
    assert parse_retry_after(None, now=now) is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=now) == 60.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:20:00 GMT", now=now) == 0.0


def test_one_error_table_ends_with_the_catch_alls() -> None:
    """First match wins: specific aiohttp errors come before their base classes."""
    kinds = [kind for kind, _, _ in ERROR_MAP]
    for i, kind in enumerate(kinds):
        assert not any(issubclass(kind, earlier) for earlier in kinds[:i]), f"{kind} is shadowed"


async def test_redirects_can_be_refused(server: str, client: UpstreamClient) -> None:
    """Requests carrying an API key must not follow a redirect to another host."""
    with pytest.raises(UpstreamHTTPError) as info:
        await get(client, f"{server}/redirect", timeout_s=2, follow_redirects=False)
    assert info.value.http_status == 302
