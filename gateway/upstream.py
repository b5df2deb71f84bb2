"""The one shared HTTP client: timeouts, body limits and error mapping.

httpx is the interface (tests inject an ``httpx`` transport, as httpx itself
recommends); the default transport is aiohttp-backed (``httpx-aiohttp``) because
httpcore's connection pool contends badly with hundreds of requests in flight.

When the client is the one :func:`build_http_client` made with its default
transport, :class:`UpstreamClient` sends through that transport's aiohttp session
directly: httpx's own per-request work (URL parsing, header merging, the cookie
jar, the response stream layers) costs more CPU than aiohttp's whole request, and
``tests/bench/bench_upstream.py`` shows it would keep the gateway under half of
aiohttp's throughput. Both paths share the connection pool, the headers, the
timeouts, the redirect limit and the error mapping. Every failure leaves here as
a :mod:`gateway.errors` ``UpstreamError`` with a stable code.
"""

from __future__ import annotations

import asyncio
import email.utils
import time
import urllib.request
import weakref
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

import aiohttp
import httpx
from httpx_aiohttp import AiohttpTransport

from gateway import __version__
from gateway.errors import BadPayload, UpstreamHTTPError, UpstreamTimeout, UpstreamUnavailable

USER_AGENT = f"news-gateway/{__version__}"
KEEPALIVE_EXPIRY_S = 30.0
CONNECT_TIMEOUT_S = 5.0
MAX_REDIRECTS = 5
DEFAULT_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
READ_CHUNK_BYTES = 64 * 1024


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


class _SessionTransport(AiohttpTransport):
    """httpx-aiohttp's transport, also lending its aiohttp session to UpstreamClient."""

    def session(self) -> aiohttp.ClientSession:
        # Created lazily (inside the running loop), exactly as handle_async_request
        # does, so both paths share one pool and aclose() closes it either way.
        if not isinstance(self.client, aiohttp.ClientSession):
            self.client = self.get_client()
        return self.client


#: Clients made by build_http_client over the default transport -> that transport.
_DIRECT: weakref.WeakKeyDictionary[httpx.AsyncClient, _SessionTransport] = weakref.WeakKeyDictionary()


def build_transport(max_connections: int) -> httpx.AsyncBaseTransport:
    """The default transport: aiohttp underneath, httpx on top."""

    def session_factory() -> aiohttp.ClientSession:
        connector = aiohttp.TCPConnector(
            limit=max_connections,
            limit_per_host=0,
            keepalive_timeout=KEEPALIVE_EXPIRY_S,
            ttl_dns_cache=300,
        )
        # Our own asyncio.timeout() bounds every call; aiohttp's default 5-minute
        # total timeout must not fire first with a confusing error. The connect
        # timeout and the default headers matter to the direct path only (httpx
        # passes its own on every request it sends).
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
            headers=DEFAULT_HEADERS,
        )

    return _SessionTransport(client=session_factory)


def build_http_client(max_connections: int, *, transport: httpx.AsyncBaseTransport | None = None) -> httpx.AsyncClient:
    """Build the process-wide client. ``transport`` lets tests swap the network."""
    transport = transport or build_transport(max_connections)
    client = httpx.AsyncClient(
        transport=transport,
        headers=DEFAULT_HEADERS,
        timeout=httpx.Timeout(None, connect=CONNECT_TIMEOUT_S),
        limits=httpx.Limits(max_connections=max_connections, keepalive_expiry=KEEPALIVE_EXPIRY_S),
        follow_redirects=True,
        max_redirects=MAX_REDIRECTS,
    )
    # Proxies from the environment are httpx's business (aiohttp's trust_env would
    # cost a thread hop per request), so they turn the direct path off.
    if isinstance(transport, _SessionTransport) and not urllib.request.getproxies():
        _DIRECT[client] = transport
    return client


class UpstreamClient:
    """GET with a hard overall timeout and a body-size cap, mapping every failure."""

    def __init__(self, client: httpx.AsyncClient, *, max_body_bytes: int) -> None:
        self._client = client
        self._max_body_bytes = max_body_bytes
        self._direct = _DIRECT.get(client)  # None: go through httpx (e.g. a test transport)

    async def aclose(self) -> None:
        await self._client.aclose()

    async def get(
        self,
        url: str,
        *,
        timeout_s: float,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        follow_redirects: bool = True,
    ) -> UpstreamResponse:
        """``follow_redirects=False`` for requests carrying a secret (an API key header
        would follow a redirect to any host: only ``Authorization`` is stripped)."""
        started = time.perf_counter()
        if params:
            # Added to the URL's own query (a source URL such as ...?sources=bbc-news
            # keeps it); httpx's ``params=`` would replace that query instead.
            url = str(httpx.URL(url).copy_merge_params(params))
        try:
            # One deadline for connect + headers + a slowly dripping body alike.
            async with asyncio.timeout(timeout_s):
                if self._direct is not None:
                    status, resp_headers, content = await self._get_direct(
                        self._direct, url, headers, follow_redirects
                    )
                else:
                    async with self._client.stream(
                        "GET", url, headers=headers, follow_redirects=follow_redirects
                    ) as resp:
                        content = await self._read_body(resp, url)
                    status, resp_headers = resp.status_code, resp.headers
        except TimeoutError:
            raise UpstreamTimeout(f"no complete answer from {_host(url)} within {timeout_s * 1000:.0f} ms") from None
        except httpx.TooManyRedirects:
            raise UpstreamUnavailable(f"too many redirects from {_host(url)}") from None
        except httpx.HTTPError as exc:
            raise _map_transport_error(exc, url) from None
        except aiohttp.ClientError as exc:  # anything the transport did not map
            raise UpstreamUnavailable(f"{_host(url)}: {type(exc).__name__}") from None
        elapsed_ms = (time.perf_counter() - started) * 1000
        if status == 304 or 200 <= status < 300:
            return UpstreamResponse(status, resp_headers, content, elapsed_ms)
        raise UpstreamHTTPError(
            status,
            f"{_host(url)} answered HTTP {status}",
            retry_after_s=parse_retry_after(resp_headers.get("Retry-After")),
        )

    async def _get_direct(
        self,
        transport: _SessionTransport,
        url: str,
        headers: Mapping[str, str] | None,
        follow_redirects: bool,
    ) -> tuple[int, httpx.Headers, bytes]:
        """The same GET straight on aiohttp; aiohttp errors are mapped here.

        (They must not reach get()'s ``except TimeoutError``: aiohttp's connect
        timeout subclasses TimeoutError but is not our overall deadline.)
        """
        try:
            async with transport.session().get(
                url, headers=headers, allow_redirects=follow_redirects, max_redirects=MAX_REDIRECTS
            ) as resp:
                declared = resp.content_length
                if declared is not None and declared > self._max_body_bytes:
                    raise BadPayload(f"{_host(url)} sent {declared} bytes; the limit is {self._max_body_bytes}")
                chunks: list[bytes] = []
                size = 0
                async for chunk in resp.content.iter_chunked(READ_CHUNK_BYTES):  # decompressed
                    size += len(chunk)
                    if size > self._max_body_bytes:
                        raise BadPayload(f"{_host(url)} sent more than {self._max_body_bytes} bytes")
                    chunks.append(chunk)
                return resp.status, httpx.Headers(resp.raw_headers), b"".join(chunks)
        except aiohttp.TooManyRedirects:
            raise UpstreamUnavailable(f"too many redirects from {_host(url)}") from None
        except aiohttp.ServerTimeoutError:
            raise UpstreamTimeout(f"{_host(url)} timed out") from None
        except aiohttp.ClientError as exc:
            raise UpstreamUnavailable(f"{_host(url)} unreachable ({type(exc).__name__})") from None

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
