"""The one shared HTTP client: timeouts, body limits and error mapping.

httpx is the interface (tests inject an ``httpx`` transport, as httpx itself
recommends); the default transport is aiohttp-backed (``httpx-aiohttp``) because
httpcore's connection pool contends badly with hundreds of requests in flight
(``bench/bench_upstream.py`` measures it). Every failure leaves here as a
:mod:`gateway.errors` ``UpstreamError`` with a stable code.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import aiohttp
import httpx

from gateway import __version__
from gateway.errors import BadPayload, UpstreamHTTPError, UpstreamTimeout, UpstreamUnavailable

USER_AGENT = f"news-gateway/{__version__}"
KEEPALIVE_EXPIRY_S = 30.0
CONNECT_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A fully read upstream response (2xx or 304)."""

    status: int
    headers: httpx.Headers
    content: bytes
    elapsed_ms: float

    @property
    def not_modified(self) -> bool:
        return self.status == 304


def build_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """The default transport: aiohttp underneath, httpx on top."""
    from httpx_aiohttp import AiohttpTransport

    def session_factory() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY_S,
            ttl_dns_cache=300,
        )
        # Our own asyncio.timeout() bounds every call; aiohttp's default 5-minute
        # total timeout must not fire first with a confusing error.
        return aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=None))

    return AiohttpTransport(client=session_factory)


def build_http_client(max_connections: int, *, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """Build the process-wide client. ``transport`` lets tests swap the network."""
    return httpx.AsyncClient(
        transport=transport or build_transport(max_connections),
        headers={"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"},
        timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
        limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY_S),
        follow_redirects=True,
        max_redirects=5,
    )


class UpstreamClient:
    """GET with a hard overall timeout and a body-size cap, mapping every failure."""

    def __init__(self, client: httpx.AsyncClient, *, max_body_bytes: int) -> None:
        self._client = client
        self._max_body_bytes = max_body_bytes

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(
        self,
        url: str,
        *,
        timeout_s: float,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> UpstreamResponse:
        started = time.perf_counter()
        try:
            # One deadline for connect + headers + a slowly dripping body alike.
            async with asyncio.timeout(timeout_s):
                async with self._client.stream("GET", url, params=params, headers=headers) as resp:
                    content = await self._read_body(resp, url)
        except TimeoutError:
            raise UpstreamTimeout(f"no complete answer from {_host(url)} within {timeout_s * 1000:.0f} ms") from None
        except httpx.TooManyRedirects:
            raise UpstreamUnavailable(f"too many redirects from {_host(url)}") from None
        except httpx.HTTPError as exc:
            raise _map_transport_error(exc, url) from None
        except aiohttp.ClientError as exc:  # anything the transport did not map
            raise UpstreamUnavailable(f"{_host(url)}: {type(exc).__name__}") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        status = resp.status_code
        if status == 304 or 200 <= status < 300:
            return UpstreamResponse(status, resp.headers, content, elapsed_ms)
        raise UpstreamHTTPError(
            status,
            f"{_host(url)} answered HTTP {status}",
            retry_after_s=parse_retry_after(resp.headers.get("Retry-After")),
        )

    async def _read_body(self, resp: httpx.Response, url: str) -> bytes:
        declared = resp.headers.get("Content-Length")
        if declared and declared.isdigit() and int(declared) > self._max_body_bytes:
            raise BadPayload(f"{_host(url)} sent {declared} bytes; the limit is {self._max_body_bytes}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in resp.aiter_bytes():
            size += len(chunk)
            if size > self._max_body_bytes:
                raise BadPayload(f"{_host(url)} sent more than {self._max_body_bytes} bytes")
            chunks.append(chunk)
        return b"".join(chunks)


def _map_transport_error(exc: httpx.HTTPError, url: str) -> Exception:
    # httpx-aiohttp maps every aiohttp ClientConnectionError (refused, reset,
    # server disconnected) to httpx.ConnectTimeout; look at the cause to tell a
    # genuine timeout from a dead peer.
    cause = exc.__cause__
    if isinstance(cause, aiohttp.ServerTimeoutError | asyncio.TimeoutError) or (
        cause is None and isinstance(exc, httpx.TimeoutException)
    ):
        return UpstreamTimeout(f"{_host(url)} timed out")
    detail = type(cause).__name__ if cause is not None else type(exc).__name__
    return UpstreamUnavailable(f"{_host(url)} unreachable ({detail})")


def parse_retry_after(value: str | None, *, now: datetime | None = None) -> float | None:
    """``Retry-After`` as seconds (delta-seconds or an HTTP date); None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    now = now or datetime.now(timezone.utc)
    return max(0.0, (when - now).total_seconds())


def _host(url: str) -> str:
    try:
        return httpx.URL(url).host or url
    except httpx.InvalidURL:
        return url
