"""The offline demo upstream: NewsAPI, RSS/Atom/RDF feeds and Hacker News over real HTTP.

``gateway demo-upstream --port 9100`` runs :func:`run`; tests embed it with
:class:`DemoServer`. The data comes from :mod:`gateway.demo.data` and is
deterministic for a given anchor time.

Routes and their *route keys* (used for request counting and fault knobs)::

    GET /newsapi/v2/top-headlines   newsapi.top-headlines   qualifier: the sources param
    GET /newsapi/v2/everything      newsapi.everything      qualifier: the sources param
    GET /feeds/{name}.rss           feeds.rss               qualifier: the feed name
    GET /feeds/{name}.atom          feeds.atom              qualifier: the feed name
    GET /feeds/{name}.rdf           feeds.rdf               qualifier: the feed name
    GET /hn/v0/topstories.json      hn.topstories           (no qualifier)
    GET /hn/v0/item/{id}.json       hn.item                 qualifier: the item id

A request is counted under its route key *and*, when it has a qualifier, under
``route:qualifier`` (``feeds.rss:tech``, ``newsapi.everything:bbc-news,reuters``,
``hn.item:41000123``). The qualifier of NewsAPI routes is the ``sources`` value with
blanks removed, ids in the order given.

Fault knobs are looked up most-specific first: ``route:qualifier``, then ``route``,
then ``*`` (every route). The winning entry applies alone (no inheritance between
levels). Knobs of an entry:

=================  =======================================================================
``latency_ms``     delay before answering (applies to faults too: a slow failure)
``fault``          ``none`` | ``500`` | ``503`` | ``429`` | ``hang`` | ``garbage`` |
                   ``truncated`` | ``drip`` | ``malformed``
``retry_after_s``  ``Retry-After`` of ``429`` (default 1) and of ``503`` (only if set)
``drip_delay_ms``  pause before each chunk of a ``drip`` body (default 200)
``drip_chunks``    how many chunks a ``drip`` body is cut into (default 10), so a drip
                   takes about ``drip_chunks * drip_delay_ms``
``hang_max_s``     a ``hang`` gives up (504) after this long (default 300); it also ends
                   when the client disconnects or the server stops
``fail_times``     the entry applies to the next N matching requests, then removes itself
=================  =======================================================================

Control endpoints (never counted): ``GET /_demo/stats``, ``POST /_demo/reset``,
``GET|PUT|DELETE /_demo/faults`` (PUT merges ``{key: {knobs} | null}``: a key's entry
is replaced whole, ``null`` removes it). :class:`DemoControl` offers the same from Python.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import random
import socket
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import asdict, dataclass, fields, replace
from datetime import datetime
from types import TracebackType
from typing import Any

# anyio loads its asyncio backend on the first CancelScope, i.e. the first
# request.is_disconnected() of a sleeping handler: ~10 ms with the event loop held,
# which delayed every other request arriving meanwhile (a cold-stampede benchmark
# saw two of its three upstream calls answer 15 ms late). Load it up front.
import anyio._backends._asyncio  # noqa: F401
import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse
from starlette.routing import Route

from gateway.demo.data import (
    FEEDS,
    MAX_FEED_ITEMS,
    NEWSAPI_SOURCES,
    DemoDataset,
    http_date,
    malformed_hn_item,
    malformed_hn_top,
    malformed_newsapi_rows,
)

logger = logging.getLogger(__name__)

ROUTE_KEYS = (
    "newsapi.top-headlines",
    "newsapi.everything",
    "feeds.rss",
    "feeds.atom",
    "feeds.rdf",
    "hn.topstories",
    "hn.item",
)
FAULTS = ("none", "500", "503", "429", "hang", "garbage", "truncated", "drip", "malformed")
_BODYLESS_FAULTS = frozenset({"500", "503", "429", "hang"})  # answered without a payload
WILDCARD_KEY = "*"

DEFAULT_PORT = 9100
NEWSAPI_DEFAULT_PAGE_SIZE = 20
NEWSAPI_MAX_PAGE_SIZE = 100
#: Rendered big feeds are cached; this bounds the cache by size, not entry count.
FEED_CACHE_MAX_BYTES = 96 * 1024 * 1024
#: How often sleeping handlers check for a disconnected client or a stopping server.
POLL_INTERVAL_S = 0.05
SHUTDOWN_GRACE_S = 2.0
STARTUP_TIMEOUT_S = 10.0

JSON_TYPE = "application/json; charset=utf-8"
FEED_TYPES = {
    "rss": "application/rss+xml; charset=utf-8",
    "atom": "application/atom+xml; charset=utf-8",
    "rdf": "application/rdf+xml; charset=utf-8",
}
#: What a ``garbage`` fault serves with the route's usual content type: a proxy's
#: HTML error page followed by binary noise (invalid UTF-8), so both "wrong
#: format" and "cannot decode" paths are exercised. Fixed bytes: deterministic.
GARBAGE_BODY = (
    b"<html><head><title>502 Bad Gateway</title></head><body>"
    b"<h1>Bad Gateway</h1><p>The proxy server received an invalid response.</p></body></html>\n"
    + random.Random("demo-garbage").randbytes(256)
)


# --- fault knobs and the control surface ---------------------------------------


#: Numeric knobs: name -> (minimum, must be an integer).
_NUMERIC_KNOBS: dict[str, tuple[int, bool]] = {
    "latency_ms": (0, False),
    "retry_after_s": (0, True),
    "drip_delay_ms": (0, False),
    "drip_chunks": (1, True),
    "hang_max_s": (0, False),
    "fail_times": (1, True),
}
_NULLABLE_KNOBS = ("retry_after_s", "fail_times")


@dataclass(frozen=True, slots=True)
class FaultKnobs:
    """One fault entry; see the module docstring for what each knob does."""

    fault: str = "none"
    latency_ms: float = 0.0
    retry_after_s: int | None = None
    drip_delay_ms: float = 200.0
    drip_chunks: int = 10
    hang_max_s: float = 300.0
    fail_times: int | None = None

    @classmethod
    def parse(cls, knobs: Mapping[str, Any]) -> FaultKnobs:
        """Validate knobs from Python or JSON; raises ``ValueError`` naming the bad knob."""
        allowed = {f.name for f in fields(cls)}
        unknown = set(knobs) - allowed
        if unknown:
            raise ValueError(f"unknown knob(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
        values = dict(knobs)
        fault = values.get("fault", "none")
        if isinstance(fault, int) and not isinstance(fault, bool):
            fault = str(fault)  # fault=500 reads naturally in Python and JSON
        if fault not in FAULTS:
            raise ValueError(f"knob 'fault' must be one of {', '.join(FAULTS)}, got {fault!r}")
        values["fault"] = fault
        for name, (minimum, integral) in _NUMERIC_KNOBS.items():
            value: Any = values.get(name)
            if value is None and (name not in values or name in _NULLABLE_KNOBS):
                continue
            # bool is an int in Python; never accept it for a number (fail_times=True).
            typed = not isinstance(value, bool) and isinstance(value, int if integral else (int, float))
            if not typed or value < minimum:
                kind = "an integer" if integral else "a number"
                raise ValueError(f"knob {name!r} must be {kind} >= {minimum}, got {value!r}")
        return cls(**values)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


_NO_FAULT = FaultKnobs()


def _check_key(key: str) -> None:
    route, _, qualifier = key.partition(":")
    if key == WILDCARD_KEY:
        return
    if route not in ROUTE_KEYS or (":" in key and not qualifier):
        raise ValueError(f"bad fault key {key!r}: use '*', a route key ({', '.join(ROUTE_KEYS)}) or 'route:qualifier'")


class DemoControl:
    """Request counters and fault knobs of one demo app, safe to use from any thread.

    Tests usually drive it from the test thread while the server runs in its own
    thread, hence the lock: every read and update happens under it."""

    def __init__(self, data: DemoDataset) -> None:
        self.data = data
        self._lock = threading.Lock()
        self._counts: dict[str, int] = {}
        self._total = 0
        self._faults: dict[str, FaultKnobs] = {}
        # Set when the server stops, so hangs, latency and drips end promptly.
        self.stopping = threading.Event()

    @property
    def anchor(self) -> datetime:
        return self.data.anchor

    def stats(self) -> dict[str, Any]:
        """``{"requests": {key: count}, "total": n}`` (control requests are not counted)."""
        with self._lock:
            return {"requests": dict(sorted(self._counts.items())), "total": self._total}

    def count(self, key: str) -> int:
        """Requests seen for a route key or ``route:qualifier`` key (0 if none)."""
        with self._lock:
            return self._counts.get(key, 0)

    def set_fault(self, key: str, **knobs: Any) -> None:
        """Install (replace) the fault entry for ``key``; no knobs means "no fault" (an
        explicit healthy entry that shadows less specific ones)."""
        self.update_faults({key: knobs})

    def update_faults(self, entries: Mapping[str, Mapping[str, Any] | None]) -> None:
        """Merge several entries at once (``None`` removes a key); all-or-nothing."""
        parsed: dict[str, FaultKnobs | None] = {}
        for key, knobs in entries.items():
            _check_key(key)
            if knobs is not None and not isinstance(knobs, Mapping):
                raise ValueError(f"fault entry for {key!r} must be an object or null")
            parsed[key] = None if knobs is None else FaultKnobs.parse(knobs)
        with self._lock:
            for key, entry in parsed.items():
                if entry is None:
                    self._faults.pop(key, None)
                else:
                    self._faults[key] = entry

    def faults(self) -> dict[str, dict[str, Any]]:
        """The installed entries (``fail_times`` shows what is left)."""
        with self._lock:
            return {k: v.to_json() for k, v in sorted(self._faults.items())}

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset(self) -> None:
        """Clear counters and faults."""
        with self._lock:
            self._faults.clear()
            self._counts.clear()
            self._total = 0

    def on_request(self, route: str, qualifier: str | None) -> FaultKnobs:
        """Count a request and pick the knobs for it, in one atomic step so that
        ``fail_times=N`` hits exactly N concurrent requests."""
        specific = f"{route}:{qualifier}" if qualifier is not None else None
        with self._lock:
            self._total += 1
            self._counts[route] = self._counts.get(route, 0) + 1
            if specific is not None:
                self._counts[specific] = self._counts.get(specific, 0) + 1
            for key in (specific, route, WILDCARD_KEY):
                if key is not None and key in self._faults:
                    entry = self._faults[key]
                    if entry.fail_times is not None:
                        if entry.fail_times <= 1:
                            del self._faults[key]
                        else:
                            self._faults[key] = replace(entry, fail_times=entry.fail_times - 1)
                    return entry
            return _NO_FAULT


# --- payloads ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Payload:
    """What a route would answer when healthy (faults then bend it)."""

    body: bytes
    media_type: str
    status: int = 200
    etag: str | None = None
    last_modified: datetime | None = None


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:24] + '"'


def _json(data: Any, *, status: int = 200, sort_keys: bool = False) -> _Payload:
    option = orjson.OPT_SORT_KEYS if sort_keys else 0
    return _Payload(orjson.dumps(data, option=option), JSON_TYPE, status)


def _newsapi_error(code: str, message: str, status: int = 400) -> _Payload:
    return _json({"status": "error", "code": code, "message": message}, status=status)


def _not_modified(request: Request, payload: _Payload) -> bool:
    """RFC 9110 §13.2.2: If-None-Match decides when present, else If-Modified-Since."""
    inm = request.headers.get("if-none-match")
    if inm is not None:
        if payload.etag is None:
            return False
        tags = {t.strip().removeprefix("W/") for t in inm.split(",")}
        return "*" in tags or payload.etag in tags
    ims = request.headers.get("if-modified-since")
    if ims is None or payload.last_modified is None:
        return False
    try:
        since = email.utils.parsedate_to_datetime(ims)
    except (TypeError, ValueError):
        return False  # an unparseable date is ignored, as the RFC says
    if since.tzinfo is None:
        return False
    return payload.last_modified.replace(microsecond=0) <= since


class _FeedCache:
    """Rendered feeds by (name, format, items, malformed), LRU-bounded by total size.

    Rendering a 10 MB feed takes a fraction of a second, so benchmarks that fetch
    it repeatedly must measure parsing, not our generation."""

    def __init__(self, max_bytes: int) -> None:
        self._max_bytes = max_bytes
        self._entries: OrderedDict[tuple[str, str, int, bool], _Payload] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()  # filled from worker threads

    def get(self, key: tuple[str, str, int, bool]) -> _Payload | None:
        with self._lock:
            payload = self._entries.get(key)
            if payload is not None:
                self._entries.move_to_end(key)
            return payload

    def put(self, key: tuple[str, str, int, bool], payload: _Payload) -> None:
        with self._lock:
            if key in self._entries:
                return
            self._entries[key] = payload
            self._size += len(payload.body)
            while self._size > self._max_bytes and len(self._entries) > 1:
                _, old = self._entries.popitem(last=False)
                self._size -= len(old.body)


# --- the app -------------------------------------------------------------------------


class _DemoUpstream:
    """Request handlers, bound to one dataset, control and cache (no module state)."""

    def __init__(self, control: DemoControl) -> None:
        self.control = control
        self.data = control.data
        self.feed_cache = _FeedCache(FEED_CACHE_MAX_BYTES)
        # Fixed per anchor, so serialise once.
        top = orjson.dumps(self.data.hn_top)
        self.hn_top = _Payload(top, JSON_TYPE, etag=_etag(top), last_modified=self.data.anchor)

    # -- shared machinery --

    async def pause(self, seconds: float, request: Request | None = None) -> bool:
        """Sleep up to ``seconds`` in small steps; False if cut short because the
        client went away or the server is stopping (so shutdown never waits on us)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return True
            if self.control.stopping.is_set():
                return False
            if request is not None and await request.is_disconnected():
                return False
            await asyncio.sleep(min(remaining, POLL_INTERVAL_S))

    async def serve(
        self,
        request: Request,
        route: str,
        qualifier: str | None,
        build: Callable[[bool], Awaitable[_Payload]],
    ) -> Response:
        """Count, apply latency and faults, build the payload, answer (maybe 304).

        The payload is built before the latency elapses, not after: ``latency_ms`` is
        the time to answer, so rendering a feed does not add to it."""
        knobs = self.control.on_request(route, qualifier)
        started = time.monotonic()
        fault = knobs.fault
        payload = await build(fault == "malformed") if fault not in _BODYLESS_FAULTS else None
        headers = {"X-Demo-Route": f"{route}:{qualifier}" if qualifier is not None else route}
        latency_s = knobs.latency_ms / 1000 - (time.monotonic() - started)
        if latency_s > 0 and not await self.pause(latency_s, request):
            return PlainTextResponse("demo upstream: request abandoned", 503, headers=headers)
        if fault == "500":
            return PlainTextResponse("upstream exploded", 500, headers=headers)
        if fault == "503":
            if knobs.retry_after_s is not None:
                headers["Retry-After"] = str(knobs.retry_after_s)
            return PlainTextResponse("upstream unavailable", 503, headers=headers)
        if fault == "429":
            headers["Retry-After"] = str(1 if knobs.retry_after_s is None else knobs.retry_after_s)
            if route.startswith("newsapi."):
                body = _newsapi_error("rateLimited", "You have made too many requests recently.", 429)
                return Response(body.body, 429, headers=headers, media_type=body.media_type)
            return PlainTextResponse("rate limited", 429, headers=headers)
        if fault == "hang":
            if await self.pause(knobs.hang_max_s, request):
                return PlainTextResponse("upstream hung", 504, headers=headers)
            return PlainTextResponse("demo upstream: request abandoned", 503, headers=headers)

        assert payload is not None
        if payload.etag is not None:
            headers["ETag"] = payload.etag
        if payload.last_modified is not None:
            headers["Last-Modified"] = http_date(payload.last_modified)
        if fault == "garbage":
            return Response(GARBAGE_BODY, 200, headers=headers, media_type=payload.media_type)
        if fault == "truncated":
            half = payload.body[: len(payload.body) // 2]
            return Response(half, payload.status, headers=headers, media_type=payload.media_type)
        if fault == "drip":
            # Content-Length up front: the headers look healthy, only the body crawls.
            headers["Content-Length"] = str(len(payload.body))
            return StreamingResponse(
                self._drip(payload.body, knobs), payload.status, headers=headers, media_type=payload.media_type
            )
        if payload.status == 200 and _not_modified(request, payload):
            return Response(status_code=304, headers=headers)
        return Response(payload.body, payload.status, headers=headers, media_type=payload.media_type)

    async def _drip(self, body: bytes, knobs: FaultKnobs) -> AsyncIterator[bytes]:
        size = max(1, -(-len(body) // knobs.drip_chunks))  # ceil: exactly drip_chunks pieces
        for start in range(0, len(body), size):
            if not await self.pause(knobs.drip_delay_ms / 1000):
                return  # server stopping: end the body early rather than block shutdown
            yield body[start : start + size]

    # -- NewsAPI --

    async def newsapi(self, request: Request) -> Response:
        endpoint = request.url.path.rsplit("/", 1)[-1]
        raw_sources = request.query_params.get("sources")
        sources = [s.strip() for s in raw_sources.split(",") if s.strip()] if raw_sources else []
        qualifier = ",".join(sources) or None

        async def build(malformed: bool) -> _Payload:
            return self._newsapi_payload(request, endpoint, sources, malformed)

        return await self.serve(request, f"newsapi.{endpoint}", qualifier, build)

    def _newsapi_payload(self, request: Request, endpoint: str, sources: list[str], malformed: bool) -> _Payload:
        params = request.query_params
        unknown = [s for s in sources if s not in NEWSAPI_SOURCES]
        if unknown:
            return _newsapi_error(
                "sourceDoesNotExist",
                f"You have requested a source which does not exist: {unknown[0]}. "
                f"Demo sources: {', '.join(NEWSAPI_SOURCES)}.",
            )
        try:
            page_size = _int_param(params, "pageSize", NEWSAPI_DEFAULT_PAGE_SIZE, 1, NEWSAPI_MAX_PAGE_SIZE)
            page = _int_param(params, "page", 1, 1, None)
        except ValueError as exc:
            return _newsapi_error("parameterInvalid", str(exc))
        articles = self.data.newsapi_articles(sources, top_headlines=endpoint == "top-headlines")
        q = (params.get("q") or "").strip().lower()
        if q:
            articles = [a for a in articles if a.matches(q)]
        start = (page - 1) * page_size
        rows: list[Any] = [a.to_json() for a in articles[start : start + page_size]]
        if malformed:
            rows = malformed_newsapi_rows(rows)
        return _json({"status": "ok", "totalResults": len(articles), "articles": rows})

    # -- feeds --

    async def feed(self, request: Request) -> Response:
        fmt = request.url.path.rsplit(".", 1)[-1]
        name = request.path_params["name"]

        async def build(malformed: bool) -> _Payload:
            if name not in FEEDS:
                return _Payload(f"no such feed: {name}\n".encode(), "text/plain; charset=utf-8", 404)
            try:
                count = _int_param(request.query_params, "items", FEEDS[name].default_items, 0, MAX_FEED_ITEMS)
            except ValueError as exc:
                return _Payload(f"{exc}\n".encode(), "text/plain; charset=utf-8", 400)
            key = (name, fmt, count, malformed)
            payload = self.feed_cache.get(key)
            if payload is None:
                # Big feeds take a while to render: keep the event loop free.
                payload = await run_in_threadpool(self._render_feed, name, fmt, count, malformed)
                self.feed_cache.put(key, payload)
            return payload

        return await self.serve(request, f"feeds.{fmt}", name, build)

    def _render_feed(self, name: str, fmt: str, count: int, malformed: bool) -> _Payload:
        body, last_modified = self.data.render_feed(name, fmt, count, malformed=malformed)
        return _Payload(body, FEED_TYPES[fmt], etag=_etag(body), last_modified=last_modified)

    # -- Hacker News --

    async def hn_topstories(self, request: Request) -> Response:
        async def build(malformed: bool) -> _Payload:
            if malformed:
                return _json(malformed_hn_top(self.data.hn_top))
            return self.hn_top

        return await self.serve(request, "hn.topstories", None, build)

    async def hn_item(self, request: Request) -> Response:
        raw_id: str = request.path_params["item_id"]

        async def build(malformed: bool) -> _Payload:
            if not raw_id.isdigit():
                return _json({"error": "Invalid item id"}, status=400)
            item = self.data.hn_items.get(int(raw_id))
            if item is None:
                return _json(None)  # the real API answers 200 "null" for unknown ids
            return _json(malformed_hn_item(item) if malformed else item, sort_keys=True)

        return await self.serve(request, "hn.item", raw_id, build)

    # -- control (never counted) --

    async def index(self, request: Request) -> Response:
        base = str(request.base_url).rstrip("/")
        return JSONResponse(
            {
                "anchor": self.data.anchor.isoformat(),
                "newsapi_sources": list(NEWSAPI_SOURCES),
                "feeds": {name: [f"{base}/feeds/{name}.{fmt}" for fmt in FEED_TYPES] for name in FEEDS},
                "hackernews": f"{base}/hn/v0",
                "route_keys": list(ROUTE_KEYS),
                "faults": list(FAULTS),
            }
        )

    async def stats(self, request: Request) -> Response:
        return JSONResponse(self.control.stats())

    async def reset(self, request: Request) -> Response:
        self.control.reset()
        return JSONResponse(self.control.stats())

    async def faults(self, request: Request) -> Response:
        if request.method == "PUT":
            try:
                entries = orjson.loads(await request.body())
                if not isinstance(entries, dict):
                    raise ValueError("body must be a JSON object {key: {knobs} | null}")
                self.control.update_faults(entries)
            except (ValueError, TypeError) as exc:  # orjson.JSONDecodeError is a ValueError
                return JSONResponse({"error": str(exc)}, status_code=400)
        elif request.method == "DELETE":
            self.control.clear_faults()
        return JSONResponse({"faults": self.control.faults()})


def _int_param(params: Mapping[str, str], name: str, default: int, minimum: int, maximum: int | None) -> int:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"The {name} parameter must be an integer, got {raw!r}.") from None
    if value < minimum or (maximum is not None and value > maximum):
        bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
        raise ValueError(f"The {name} parameter must be {bound}, got {value}.")
    return value


def create_demo_app(*, anchor: datetime | None = None) -> Starlette:
    """A Starlette app serving the demo data; ``app.state.demo`` is its :class:`DemoControl`.

    ``anchor`` fixes the data (default: now, rounded down to the hour)."""
    control = DemoControl(DemoDataset(anchor))
    upstream = _DemoUpstream(control)
    routes = [
        Route("/", upstream.index, methods=["GET"]),
        Route("/newsapi/v2/top-headlines", upstream.newsapi, methods=["GET"]),
        Route("/newsapi/v2/everything", upstream.newsapi, methods=["GET"]),
        Route("/feeds/{name}.rss", upstream.feed, methods=["GET"]),
        Route("/feeds/{name}.atom", upstream.feed, methods=["GET"]),
        Route("/feeds/{name}.rdf", upstream.feed, methods=["GET"]),
        Route("/hn/v0/topstories.json", upstream.hn_topstories, methods=["GET"]),
        Route("/hn/v0/item/{item_id}.json", upstream.hn_item, methods=["GET"]),
        Route("/_demo/stats", upstream.stats, methods=["GET"]),
        Route("/_demo/reset", upstream.reset, methods=["POST"]),
        Route("/_demo/faults", upstream.faults, methods=["GET", "PUT", "DELETE"]),
    ]
    app = Starlette(routes=routes)
    app.state.demo = control
    return app


# --- running it -------------------------------------------------------------------------


class _DemoUvicornServer(uvicorn.Server):
    """uvicorn's server, releasing our sleeping handlers as soon as shutdown begins.

    Without this, a ``hang`` in flight holds shutdown for the whole graceful timeout
    and is then cancelled with a traceback in the log."""

    def __init__(self, config: uvicorn.Config, control: DemoControl) -> None:
        super().__init__(config)
        self._control = control

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._control.stopping.set()
        await super().shutdown(sockets=sockets)


def run(
    host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, anchor: datetime | None = None, access_log: bool = False
) -> None:
    """Serve the demo upstream in the foreground (the ``gateway demo-upstream`` command).
    Access logs are off by default: under ``make run`` they would drown the gateway's."""
    app = create_demo_app(anchor=anchor)
    control: DemoControl = app.state.demo
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="info",
        access_log=access_log,
        timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
    )
    # uvicorn.Config has configured uvicorn's loggers by now; ours may have no handler.
    logging.getLogger("uvicorn.error").info(
        "demo upstream: data anchored at %s; controls at /_demo/stats and /_demo/faults", control.anchor.isoformat()
    )
    _DemoUvicornServer(config, control).run()


class DemoServer:
    """The demo upstream on 127.0.0.1 and a free port, in its own thread and event loop.

    Use ``with DemoServer() as demo:`` (or ``async with``: start and stop then run in a
    worker thread so the caller's loop keeps going). ``demo.url`` is the base URL,
    ``demo.control`` the :class:`DemoControl`. Stopping releases hanging requests
    first, so a test that leaves a ``hang`` fault behind still shuts down promptly."""

    def __init__(self, *, anchor: datetime | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = create_demo_app(anchor=anchor)
        self.control: DemoControl = self.app.state.demo
        self.host = host
        self._requested_port = port
        self._sock: socket.socket | None = None
        self._server: _DemoUvicornServer | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self.port = 0

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("DemoServer is not running")
        return f"http://{self.host}:{self.port}"

    def start(self) -> DemoServer:
        if self._thread is not None:
            raise RuntimeError("DemoServer already started")
        # Binding here (not in uvicorn) gives us the port before the thread starts
        # and removes any race for it. proto must be IPPROTO_TCP, not the default 0:
        # asyncio only sets TCP_NODELAY on accepted sockets whose proto says TCP, and
        # without it keep-alive responses stall ~40 ms on Nagle + delayed ACK.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((self.host, self._requested_port))
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            log_config=None,  # leave the host process's logging configuration alone
            access_log=False,
            lifespan="off",
            loop="asyncio",
            timeout_graceful_shutdown=int(SHUTDOWN_GRACE_S),
        )
        self._server = _DemoUvicornServer(config, self.control)
        self._thread = threading.Thread(target=self._run, name=f"demo-upstream-{self.port}", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"demo upstream failed to start: {self._error!r}")
            time.sleep(0.005)
        return self

    def _run(self) -> None:
        assert self._server is not None and self._sock is not None
        try:
            self._server.run(sockets=[self._sock])
        except BaseException as exc:  # uvicorn sys.exit()s on startup errors; report, don't crash the thread
            self._error = exc

    def stop(self) -> None:
        """Stop serving and join the thread; idempotent."""
        self.control.stopping.set()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(SHUTDOWN_GRACE_S + 5)
            if self._thread.is_alive() and self._server is not None:
                self._server.force_exit = True
                self._thread.join(5)
            if self._thread.is_alive():
                logger.warning("demo upstream thread did not stop")
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        self.port = 0

    def __enter__(self) -> DemoServer:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.stop()

    async def __aenter__(self) -> DemoServer:
        return await asyncio.to_thread(self.start)

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.stop)
