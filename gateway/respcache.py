"""The response cache in the process, and HTTP caching headers for ``/graphql``.

::

    HTTP ─► ResponseCacheMiddleware ─► CoalesceIdentical ─► GatewayGraphQL
              key: method, query string, body, Accept, Content-Type
              hit ─► (charge the client's cost: ``on_hit``) ─► answer, ages recomputed
              miss ─► one execution per key at a time (singleflight); its ReadLog
                      says what it read ─► store (if cacheable) ─► answer

In front of the persisted documents and the edge's gate, :class:`ResponseCacheFront`
answers hits, and lets a request identical to one being executed join that execution
at once (``join``: the gate charges it as it charged the first, then formats the
shared answer for it), instead of reading, parsing and estimating it again only to
wait for the same answer further in. Under a cold stampede that keeps the first
request's way to its upstream calls free of everybody else's preprocessing.

The key is the request as sent, so it covers the document (or persisted id),
operation name, variables and the format asked for; client-visible settings are
the app's own (one cache per app). Nothing is shared between apps.

**What an answer read.** Execution fills a :class:`~gateway.reads.ReadLog` (the
per-request context's ``reads``): each source outcome's key and freshness, articles
and items read by id, and whether live process state (health, breakers) was shown.

**Entry life.** At most ``GATEWAY_RESPONSE_CACHE_TTL_MS``, and never past the moment
the first source read would stop being fresh (its status would then say STALE, not
CACHED). Answers with a FRESH source are not stored (the next request would say
CACHED); answers with STALE, FAILED, TIMEOUT or SKIPPED sources, or with errors, live
:data:`PARTIAL_TTL_S` at most; answers showing live state are never stored.
Entries are tagged ``source|request key`` and dropped when the NOTIFY listener hears
that key written, by this process or any other (see :meth:`ResponseCache.invalidate`).

**Truthful ages.** ``ageSeconds`` resolves through a resolver that records where in
the answer it is and when its data was fetched; a hit recomputes those ages with the
clock and re-encodes the answer only when one of them changed (once a second at most).

**HTTP caching (GET only).** ``Cache-Control: public, max-age`` = seconds left before
the first source read expires, ``stale-while-revalidate``/``stale-if-error`` from the
sources' ``ttl_s``/``max_stale_s``, and a strong ``ETag`` (``If-None-Match`` gets 304).
``no-store`` for POST, for authenticated clients (``Authorization`` or ``X-Api-Key``)
and for answers with errors, failed sources or live state.

Hand-written: no ASGI caching library knows GraphQL answers' freshness or tags.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.asgi import run_captured
from gateway.edge.streams import STREAM, wants_event_stream
from gateway.reads import READS_KEY, ReadLog
from gateway.resilience.clock import Clock
from gateway.resilience.singleflight import SingleFlight

#: The request's cache key, set by :class:`ResponseCacheFront` for the layers inside it
#: (which may rewrite the request, e.g. a persisted id into its text).
CACHE_KEY = "gateway.respcache.key"
#: Set by the edge's gate on a miss and kept with the answer, so that a hit can be
#: charged and formatted without reading the request again.
REQUESTED_COST = "gateway.edge.requested"
NEGOTIATED_MEDIA = "gateway.edge.media"
#: Longest life of an answer with a stale or failed source, or with errors.
PARTIAL_TTL_S = 0.2
#: max-age of an answer that read no source (only configuration: it changes on deploy).
STATIC_MAX_AGE_S = 60
#: Rough bookkeeping bytes per entry beyond its body (key, headers, dict slots).
ENTRY_OVERHEAD_BYTES = 512
#: A decoded answer kept for re-encoding costs about this many times its JSON size.
DECODED_FACTOR = 8

_NO_STORE = b"no-store"


def _outcome(result: dict[str, Any] | None) -> str:
    """As the operation observer counts it: ok, partial (data and errors), error."""
    if result is None or (result.get("errors") and result.get("data") is None):
        return "error"
    return "partial" if result.get("errors") else "ok"


def _error_codes(result: dict[str, Any] | None) -> tuple[str | None, ...]:
    errors = (result or {}).get("errors") or ()
    return tuple((e.get("extensions") or {}).get("code") for e in errors if isinstance(e, dict))


def _etag(body: bytes) -> bytes:
    return b'"' + hashlib.blake2b(body, digest_size=16).hexdigest().encode() + b'"'


@dataclass(slots=True)
class Answer:
    """One executed answer: what is sent, and what decides its headers and life."""

    status: int
    headers: list[tuple[bytes, bytes]]  # without content-length, cache-control, etag
    body: bytes
    etag: bytes | None  # of ``body``; None until asked for (only GETs that may be cached send one)
    result: dict[str, Any] | None  # kept only when ages must be recomputed
    ages: list[tuple[list[str | int], float]]
    last_ages: tuple[int, ...]
    publishable: bool  # may a shared cache (CDN) keep it
    fresh_until: float
    swr_s: float
    sie_s: float
    unknown_freshness: bool
    read_sources: bool
    cost: int | None
    #: What a hit repeats for metrics: (operation name, type, outcome) and source statuses.
    operation: tuple[str | None, str, str] | None = None
    statuses: tuple[tuple[str, str], ...] = ()
    #: What the edge's gate decided on the miss, for charging a hit without parsing the
    #: request again: the cost it charged up front and the media type it negotiated.
    requested: int | None = None
    media: str | None = None
    #: The codes of the answer's errors, for the log line of each request it answers.
    error_codes: tuple[str | None, ...] = ()
    #: Whatever the hit hook derives once per answer (the metrics it moves).
    memo: Any = None
    ages_until: float = -math.inf  # epoch seconds: the recomputed ages hold until then
    # cache bookkeeping
    key: tuple[bytes, ...] = ()
    tags: frozenset[str] = frozenset()
    expires: float = 0.0  # monotonic
    size: int = 0

    def current(self, now_ts: float) -> bytes:
        """The body as of ``now_ts``: ``ageSeconds`` recomputed from when each source's
        data was fetched (as the service computes it, whole seconds)."""
        if not self.ages or self.result is None or now_ts < self.ages_until:
            return self.body
        ages = tuple(int(max(0.0, now_ts - fetched)) for _, fetched in self.ages)
        # The next moment one of these whole seconds ticks over: until then, the same.
        self.ages_until = min(fetched + age + 1 for (_, fetched), age in zip(self.ages, ages, strict=True))
        if ages != self.last_ages:
            data = self.result.get("data")
            for (path, _), age in zip(self.ages, ages, strict=True):
                node: Any = data
                for step in path[:-1]:
                    node = node[step]
                node[path[-1]] = age
            self.body = orjson.dumps(self.result)
            self.etag = None
            self.last_ages = ages
        return self.body

    def tag(self) -> bytes:
        """The strong ETag of the current body (computed once per body)."""
        etag = self.etag
        if etag is None:
            etag = self.etag = _etag(self.body)
        return etag

    def respond(self, scope: Scope, now_ts: float) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Status, headers and body of this answer for this request: ages as of
        ``now_ts``; on GET, ``Cache-Control``, a strong ``ETag`` and 304 for a match."""
        body = self.current(now_ts)
        headers = list(self.headers)
        is_get = scope["method"] == "GET"
        authenticated = bool(_header(scope, b"authorization") or _header(scope, b"x-api-key"))
        cache_control = self.cache_control(now_ts) if is_get and not authenticated else _NO_STORE
        headers.append((b"cache-control", cache_control))
        status = self.status
        if is_get and cache_control != _NO_STORE and self.status == 200:
            etag = self.tag()
            headers.append((b"etag", etag))
            headers.append((b"vary", b"Accept"))  # the format asked for is part of the key
            inm = _header(scope, b"if-none-match")
            # If-None-Match compares weakly (RFC 9110 13.1.2): a W/ prefix still matches.
            if inm and (inm.strip() == b"*" or etag in (t.strip().removeprefix(b"W/") for t in inm.split(b","))):
                status, body = 304, b""
                headers = [(k, v) for k, v in headers if k.lower() != b"content-type"]
        return status, headers, body

    def cache_control(self, now_ts: float) -> bytes:
        if not self.publishable:
            return _NO_STORE
        if not self.read_sources:
            max_age = STATIC_MAX_AGE_S
        elif self.unknown_freshness or self.fresh_until == math.inf:
            max_age = 0
        else:
            max_age = max(0, int(self.fresh_until - now_ts))
        parts = [f"public, max-age={max_age}"]
        if self.read_sources and self.swr_s != math.inf:
            parts.append(f"stale-while-revalidate={int(self.swr_s)}")
        if self.read_sources and self.sie_s != math.inf:
            parts.append(f"stale-if-error={int(self.sie_s)}")
        return ", ".join(parts).encode()


class ResponseCache:
    """Answers by request key, bounded in bytes, tagged by the source keys they read."""

    def __init__(self, *, ttl_ms: int, max_mb: int, clock: Clock) -> None:
        self.ttl_s = ttl_ms / 1000
        self.max_bytes = max_mb * 1024 * 1024
        self.clock = clock
        self._entries: OrderedDict[tuple[bytes, ...], Answer] = OrderedDict()
        self._by_tag: dict[str, set[tuple[bytes, ...]]] = {}
        self._bytes = 0
        self.hits = 0
        self.misses = 0
        self.stores = 0
        self.invalidated = 0  # entries dropped by invalidate()
        self.notified = 0  # invalidate() calls
        #: Answers being produced now, for keys that missed (also with the cache off).
        self.flights = Flights()

    @property
    def enabled(self) -> bool:
        return self.ttl_s > 0

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size_bytes(self) -> int:
        return self._bytes

    def get(self, key: tuple[bytes, ...], *, count: bool = True) -> Answer | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires <= self.clock.monotonic():
            self._drop(key)
            entry = None
        if entry is None:
            self.misses += count
            return None
        self._entries.move_to_end(key)
        self.hits += count
        return entry

    def life_s(self, reads: ReadLog, status: int) -> float:
        """How long an answer may be served from here; 0: not at all."""
        if not self.enabled or status != 200 or reads.volatile or reads.fresh or reads.results != 1:
            return 0.0
        life = self.ttl_s
        result = reads.result or {}
        if reads.partial or reads.stale or result.get("errors"):
            life = min(life, PARTIAL_TTL_S)
        if reads.fresh_until != math.inf and not (reads.partial or reads.stale):
            life = min(life, reads.fresh_until - self.clock.now().timestamp())
        return max(0.0, life)

    def put(self, key: tuple[bytes, ...], answer: Answer, tags: set[str], life_s: float) -> None:
        if life_s <= 0:
            return
        size = ENTRY_OVERHEAD_BYTES + sum(len(k) for k in key) + len(answer.body)
        if answer.result is not None:
            size += DECODED_FACTOR * len(answer.body)
        if size > self.max_bytes // 8:
            return  # one huge answer must not flush everything else
        self._drop(key)
        now = self.clock.monotonic()
        # Expired entries are dropped when asked for, and here from the cold end, so
        # the cache holds about one TTL's worth of answers, not MB of dead ones.
        while self._entries:
            oldest = next(iter(self._entries.values()))
            if oldest.expires > now:
                break
            self._drop(oldest.key)
        answer.key, answer.tags, answer.size = key, frozenset(tags), size
        answer.expires = now + life_s
        self._entries[key] = answer
        self._bytes += size
        for tag in answer.tags:
            self._by_tag.setdefault(tag, set()).add(key)
        self.stores += 1
        while self._bytes > self.max_bytes and self._entries:
            self._drop(next(iter(self._entries)))

    def invalidate(self, payload: str | None) -> None:
        """A cache write was announced (``source_id|request_key``), or None: the
        listener reconnected and may have missed some, so forget everything."""
        self.notified += 1
        if payload is None:
            self.invalidated += len(self._entries)
            self._entries.clear()
            self._by_tag.clear()
            self._bytes = 0
            return
        source_id = payload.partition("|")[0]
        for tag in (payload, f"{source_id}|*", "*"):
            for key in list(self._by_tag.get(tag, ())):
                self._drop(key)
                self.invalidated += 1

    def _drop(self, key: tuple[bytes, ...]) -> None:
        entry = self._entries.pop(key, None)
        if entry is None:
            return
        self._bytes -= entry.size
        for tag in entry.tags:
            keys = self._by_tag.get(tag)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self._by_tag[tag]


@dataclass(frozen=True, slots=True)
class Flight:
    """An answer being produced for a request key, by a task no request owns; with what
    the request that started it was charged up front and the media type it negotiated
    (set by the edge's gate; None without one)."""

    task: asyncio.Task[Answer]
    requested: int | None
    media: str | None


class Flights:
    """The executions in progress, one per request key (singleflight): started on the
    miss path, joined there or, earlier, by the front."""

    def __init__(self) -> None:
        self._calls: SingleFlight[Answer] = SingleFlight()
        self._flights: dict[tuple[bytes, ...], Flight] = {}
        self.joined = 0  # requests the front handed to a flight (answered or refused there)

    def __len__(self) -> int:
        return len(self._flights)

    def get(self, key: tuple[bytes, ...]) -> Flight | None:
        return self._flights.get(key)

    def start(self, key: tuple[bytes, ...], scope: Scope, produce: Callable[[], Awaitable[Answer]]) -> Flight:
        flight = self._flights.get(key)
        if flight is None:
            task = self._calls.start(key, produce)
            flight = self._flights[key] = Flight(task, scope.get(REQUESTED_COST), scope.get(NEGOTIATED_MEDIA))
            task.add_done_callback(lambda _t, k=key, f=flight: self._forget(k, f))
        return flight

    def _forget(self, key: tuple[bytes, ...], flight: Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]


#: Called on a hit before answering. The app counts the hit as the operation it repeats
#: (metrics); the edge charges the client's cost here (``answer.cost``, which a cost
#: extension sets on the miss through ``info.context.reads.cost``) and may answer
#: itself (e.g. 429) by returning True.
HitHook = Callable[[Scope, Answer, Send], Awaitable[bool]]
#: Called by the front for a request identical to one being executed: the edge charges
#: it, waits for the flight's answer and sends it (True), or declines (False: the
#: request goes the whole way, where it shares the same execution).
JoinHook = Callable[[Scope, Flight, Send], Awaitable[bool]]
#: Called for a request on the miss path that shared an execution already running,
#: before its answer is sent (the app counts and logs it).
SharedHook = Callable[[Scope, "Answer"], None]


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


class ResponseCacheMiddleware:
    """ASGI middleware in front of the GraphQL endpoint (see the module docstring)."""

    def __init__(self, app: ASGIApp, cache: ResponseCache, *, max_body_bytes: int, on_hit: HitHook | None = None,
                 on_shared: SharedHook | None = None):
        self.app = app
        self.cache = cache
        self.max_body_bytes = max_body_bytes
        self.on_hit = on_hit
        self.on_shared = on_shared

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not _cacheable_request(scope):
            await self.app(scope, receive, send)
            return
        read = await _read_bounded(receive, self.max_body_bytes)
        if read is None:
            return  # the client went away
        body, over = read
        if over is not None:
            await self.app(scope, over, send)  # downstream refuses it
            return
        front_key = scope.get(CACHE_KEY)
        # The front counted this lookup already (as a miss); here it only catches an
        # answer a concurrent request stored meanwhile.
        key = front_key if front_key is not None else request_key(scope, body)
        answer = self.cache.get(key, count=front_key is None) if self.cache.enabled else None
        if answer is not None:
            if self.on_hit is not None and await self.on_hit(scope, answer, send):
                return
        else:
            flights = self.cache.flights
            shared = flights.get(key) is not None
            flight = flights.start(key, scope, lambda: self._produce(scope, body, key))
            answer = await asyncio.shield(flight.task)
            if shared and self.on_shared is not None:
                self.on_shared(scope, answer)  # its operation was observed once, for the first
        await self._send(scope, send, answer)

    async def _produce(self, scope: Scope, body: bytes, key: tuple[bytes, ...]) -> Answer:
        reads = ReadLog()
        inner = dict(scope)
        inner[READS_KEY] = reads
        captured = await run_captured(self.app, inner, body)
        assert captured.start is not None
        status = captured.start["status"]
        headers = [
            (k, v) for k, v in captured.start.get("headers", [])
            if k.lower() not in (b"content-length", b"cache-control", b"etag")
        ]
        out = b"".join(captured.body)
        life = self.cache.life_s(reads, status)
        keep_result = bool(reads.ages) and reads.result is not None and reads.results == 1
        errors = bool((reads.result or {}).get("errors")) or reads.results != 1
        answer = Answer(
            status=status,
            headers=headers,
            body=out,
            etag=None,
            result=reads.result if keep_result else None,
            ages=reads.ages if keep_result else [],
            last_ages=tuple(int(max(0.0, self.cache.clock.now().timestamp() - f)) for _, f in reads.ages)
            if keep_result else (),
            publishable=status == 200 and not (reads.volatile or reads.partial or errors),
            fresh_until=reads.fresh_until,
            swr_s=reads.swr_s,
            sie_s=reads.sie_s,
            unknown_freshness=reads.unknown_freshness,
            read_sources=bool(reads.tags),
            cost=reads.cost,
            operation=(*reads.operation, _outcome(reads.result)) if reads.operation else None,
            statuses=tuple(reads.statuses),
            error_codes=_error_codes(reads.result),
            requested=scope.get(REQUESTED_COST),
            media=scope.get(NEGOTIATED_MEDIA),
        )
        if keep_result:
            # The recorded ages are what the service computed a moment ago; make the
            # stored body agree with our own computation from here on.
            answer.current(self.cache.clock.now().timestamp())
        self.cache.put(key, answer, reads.tags, life)
        return answer

    async def _send(self, scope: Scope, send: Send, answer: Answer) -> None:
        status, headers, body = answer.respond(scope, self.cache.clock.now().timestamp())
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body, "more_body": False})


class ResponseCacheFront:
    """Outermost on ``/graphql``: a hit is answered here, before persisted documents
    are resolved or the request is parsed, by ``serve_hit`` (the edge: it charges the
    client's cost and formats the answer for it), which may decline (False). A request
    identical to one being executed (with the cache off too) is handed to ``join``,
    which may decline as well. The rest go on with :data:`CACHE_KEY` set, so the
    answer is stored (and its execution shared) under the request as sent."""

    def __init__(self, app: ASGIApp, cache: ResponseCache, *, max_body_bytes: int, serve_hit: HitHook,
                 join: JoinHook | None = None) -> None:
        self.app = app
        self.cache = cache
        self.max_body_bytes = max_body_bytes
        self.serve_hit = serve_hit
        self.join = join

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not (self.cache.enabled or self.join is not None) or not _cacheable_request(scope):
            await self.app(scope, receive, send)
            return
        read = await _read_bounded(receive, self.max_body_bytes)
        if read is None:
            return
        body, over = read
        if over is not None:
            await self.app(scope, over, send)
            return
        key = request_key(scope, body)
        if self.cache.enabled:
            answer = self.cache.get(key)
            if answer is not None and await self.serve_hit(scope, answer, send):
                return
        if self.join is not None:
            flight = self.cache.flights.get(key)
            if flight is not None and await self.join(scope, flight, send):
                self.cache.flights.joined += 1
                return
        scope[CACHE_KEY] = key
        await self.app(scope, _replay([body], False, receive), send)


def request_key(scope: Scope, body: bytes) -> tuple[bytes, ...]:
    """Everything of the request that can change the answer (one cache per app: its
    settings are the same for every entry)."""
    return (scope["method"].encode(), scope["query_string"], body, _header(scope, b"accept"),
            _header(scope, b"content-type"))


def _cacheable_request(scope: Scope) -> bool:
    if scope["type"] != "http" or scope.get(STREAM):
        return False
    if wants_event_stream(_header(scope, b"accept")):
        return False  # an event stream is not an answer to keep (gateway/edge/streams.py)
    method = scope["method"]
    if method == "POST":
        return True
    # GET, except the GraphiQL page
    return method == "GET" and b"text/html" not in _header(scope, b"accept")


async def _read_bounded(receive: Receive, max_bytes: int) -> tuple[bytes, Receive | None] | None:
    """The whole body; or, past ``max_bytes``, a receive that replays what was read
    (the layers inside refuse it); None if the client went away."""
    chunks: list[bytes] = []
    size = 0
    more = True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        more = message.get("more_body", False)
        if size > max_bytes:
            return b"", _replay(chunks, more, receive)
    return b"".join(chunks), None


def _replay(chunks: list[bytes], more: bool, receive: Receive) -> Receive:
    pending = list(chunks)

    async def replayed() -> Message:
        if pending:
            chunk = pending.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(pending) or more}
        return await receive()

    return replayed
