"""The one HTTP path to upstreams: aiohttp, with one overall deadline per call, a
body-size cap, and one table that maps transport errors to ours.

Why aiohttp and not httpx: ``tests/bench/bench_upstream.py`` measured httpx's own
per-request work (URL parsing, header merging, the cookie jar, the response stream
layers) at more CPU than aiohttp's whole request: httpx with its default transport
reached 2% of raw aiohttp at 200 requests in flight, and 32% over an aiohttp
transport. So production, the tests and the benchmark all send through this one
client on one aiohttp session; there is no second, injectable path. Tests point it
at real servers on 127.0.0.1.

Every failure leaves here as a :mod:`gateway.errors` ``UpstreamError``.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone

import aiohttp
from multidict import CIMultiDictProxy
from yarl import URL

from gateway import __version__
from gateway.errors import BadPayload, UpstreamError, UpstreamHTTPError, UpstreamTimeout, UpstreamUnavailable
from gateway.resilience.clock import Clock
from gateway.sources.base import RequestSpec

USER_AGENT = f"news-gateway/{__version__}"
KEEPALIVE_EXPIRY_S = 30.0
CONNECT_TIMEOUT_S = 5.0
MAX_REDIRECTS = 5
DNS_CACHE_S = 300
DEFAULT_HEADERS = {"User-Agent": USER_AGENT, "Accept-Encoding": "gzip, deflate"}
READ_CHUNK_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class UpstreamResponse:
    """A fully read upstream response (2xx or 304)."""

    status: int
    headers: CIMultiDictProxy[str]
    content: bytes

    @property
    def not_modified(self) -> bool:
        return self.status == 304


#: Transport errors -> ours, first match wins (the one mapping table, in the spirit of
#: httpx's ``map_exceptions``); a subclass comes before its base. ``{host}``, ``{name}``
#: (the exception's class) and ``{timeout_ms}`` are filled in. aiohttp's own timeouts
#: (connect) subclass TimeoutError, and so does our overall deadline (asyncio.timeout).
ERROR_MAP: tuple[tuple[type[BaseException], type[UpstreamError], str], ...] = (
    (aiohttp.TooManyRedirects, UpstreamUnavailable, "too many redirects from {host}"),
    (aiohttp.ServerTimeoutError, UpstreamTimeout, "{host} timed out ({name})"),
    (aiohttp.ClientError, UpstreamUnavailable, "{host} unreachable ({name})"),
    (TimeoutError, UpstreamTimeout, "no complete answer from {host} within {timeout_ms} ms"),
    (OSError, UpstreamUnavailable, "{host} unreachable ({name})"),
)


_MAPPED = tuple(kind for kind, _, _ in ERROR_MAP)


@contextlib.contextmanager
def map_errors(url: str, timeout_s: float) -> Iterator[None]:
    """Turn whatever the transport raises into an ``UpstreamError``."""
    try:
        yield
    except UpstreamError:
        raise
    except _MAPPED as exc:
        for kind, ours, template in ERROR_MAP:
            if isinstance(exc, kind):
                message = template.format(host=_host(url), name=type(exc).__name__, timeout_ms=round(timeout_s * 1000))
                raise ours(message) from None
        raise  # unreachable: the except clause matched one of the kinds


class UpstreamClient:
    """GET with a hard overall timeout and a body-size cap, mapping every failure.
    One aiohttp session (and connection pool) per process, created lazily inside the
    running loop."""

    def __init__(self, *, max_connections: int, max_body_bytes: int, clock: Clock) -> None:
        self._max_connections = max_connections
        self._max_body_bytes = max_body_bytes
        self._clock = clock
        self._session: aiohttp.ClientSession | None = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector = aiohttp.TCPConnector(
                limit=self._max_connections,
                limit_per_host=0,
                keepalive_timeout=KEEPALIVE_EXPIRY_S,
                ttl_dns_cache=DNS_CACHE_S,
            )
            self._session = aiohttp.ClientSession(
                connector=connector,
                # Our own asyncio.timeout() bounds every call; aiohttp's default
                # 5-minute total must not fire first with a confusing error.
                timeout=aiohttp.ClientTimeout(total=None, sock_connect=CONNECT_TIMEOUT_S),
                headers=DEFAULT_HEADERS,
                # Proxies from the environment (HTTP(S)_PROXY, NO_PROXY) only when some
                # are set: trust_env also reads ~/.netrc on every request.
                trust_env=bool(urllib.request.getproxies()),
            )
        return self._session

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def get(self, spec: RequestSpec, *, timeout_s: float) -> UpstreamResponse:
        """Send ``spec`` (GET) and read the whole answer within ``timeout_s``: connect,
        headers and a slowly dripping body alike."""
        session = self._ensure_session()
        with map_errors(spec.url, timeout_s):
            async with asyncio.timeout(timeout_s):
                async with session.get(
                    spec.url,
                    headers=spec.headers or None,
                    allow_redirects=spec.follow_redirects,
                    max_redirects=MAX_REDIRECTS,
                ) as resp:
                    content = await self._read_body(resp, spec.url)
        status = resp.status
        if status == 304 or 200 <= status < 300:
            return UpstreamResponse(status, resp.headers, content)
        raise UpstreamHTTPError(
            status,
            f"{_host(spec.url)} answered HTTP {status}",
            retry_after_s=parse_retry_after(resp.headers.get("Retry-After"), now=self._clock.now()),
        )

    async def _read_body(self, resp: aiohttp.ClientResponse, url: str) -> bytes:
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
        return b"".join(chunks)


def parse_retry_after(value: str | None, *, now: datetime) -> float | None:
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
    return max(0.0, (when - now).total_seconds())


def _host(url: str) -> str:
    try:
        return URL(url).host or url
    except ValueError:
        return url
