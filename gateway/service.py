"""SourceService: the one way data gets from an upstream (or its cache) to a resolver.

::

    fetch(source, search, deadline)
      ├─ memory cache ─► Postgres cache          fresh (age < ttl)?        ─► CACHED
      │                                          within stale-while-revalidate? ─► STALE, refresh in background
      ├─ singleflight (one refresh per key in flight, owned by no caller)
      │    └─ refresh: adapter.fetch(io) ─► io.get: breaker ─► bulkheads ─► UpstreamClient (timeout, retries)
      │         └─ writes memory + Postgres (cache row and articles), returns the new copy    ─► FRESH
      └─ refresh failed / deadline passed / breaker open:
           a copy no older than max_stale_s?  ─► STALE (with the error)   else ─► FAILED / TIMEOUT / SKIPPED

Our own rejections (deadline, full bulkhead, a caller that went away) never count
against a breaker; refreshes are shielded from callers, so a caller giving up
does not cancel the upstream call whose result everyone after it will use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import random
import socket
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime
from functools import partial
from typing import Any, Generic, TypeVar

import asyncpg
from aiodataloader import DataLoader

from gateway.errors import (
    BadPayload,
    CircuitOpen,
    DatabaseUnavailable,
    DeadlineExceeded,
    SourceError,
    UpstreamError,
    UpstreamHTTPError,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from gateway.outcomes import SourceOutcome, SourceStatus
from gateway.resilience.breaker import BreakerState, CircuitBreaker
from gateway.resilience.bulkhead import Bulkhead
from gateway.resilience.clock import Clock
from gateway.resilience.deadline import Deadline
from gateway.resilience.singleflight import SingleFlight
from gateway.settings import Settings, SourceConfig
from gateway.sources import ADAPTERS, Adapter, Validators, hn_url, parse_articles
from gateway.sources.base import (
    HNItem,
    NormalizedArticle,
    Parsed,
    SortKey,
    newest_first_key,
)
from gateway.sources.hackernews import parse_item
from gateway.store import articles as article_queries
from gateway.store import cache as cache_queries
from gateway.store import leases as lease_queries
from gateway.store.db import Database
from gateway.store.listener import CacheListener
from gateway.upstream import UpstreamClient, UpstreamResponse

log = logging.getLogger("gateway.service")

K = TypeVar("K")
V = TypeVar("V")

MAX_ATTEMPTS = 3  # one call plus at most two retries
RETRY_BASE_S = 0.1
RETRY_CAP_S = 1.0
RETRY_BUDGET_RATIO = 0.2  # retries may add at most 20% to a source's calls ...
RETRY_BUDGET_WINDOW_S = 60.0  # ... over this window
LEASE_MARGIN_S = 1.0  # a lease outlives its holder's budget by this much, then expires
PEER_POLL_S = 0.25  # how often a process waiting on another's refresh re-checks
LEASE_WAIT_S = 0.5  # longest wait for the database to grant or refuse a lease
DB_READ_TIMEOUT_S = 1.0  # longest wait for a cache read before going upstream
READ_YOUR_WRITES_WAIT_S = 0.5  # article(id:) waits this long at most for pending cache writes

#: Every statement SourceService runs, prepared on each pooled connection when it
#: opens (see GatewayConnection.cache_statements).
STATEMENTS = (
    lease_queries.READ_AND_TRY_ACQUIRE_MANY,
    lease_queries.TRY_ACQUIRE,
    lease_queries.PEER_STATE,
    lease_queries.RELEASE,
    cache_queries.GET_MANY,
    cache_queries.PUT_REFRESHED,
    cache_queries.PUT_MANY,
    article_queries.GET_MANY,
)


@dataclass(frozen=True, slots=True)
class CachedFeed:
    """One cached upstream answer, normalised, newest first. Sorted once here, with
    the sort keys kept, so a request merges pre-sorted lists lazily instead of
    sorting everything every time."""

    articles: tuple[NormalizedArticle, ...]
    sort_keys: tuple[SortKey, ...]
    key_by_id: Mapping[str, SortKey]
    dropped: int
    fetched_at: datetime
    validators: Validators

    @classmethod
    def build(
        cls, articles: Iterable[NormalizedArticle], dropped: int, fetched_at: datetime, validators: Validators
    ) -> CachedFeed:
        keyed = sorted((newest_first_key(a), a) for a in dict((a.id, a) for a in articles).values())
        keys = tuple(k for k, _ in keyed)
        return cls(tuple(a for _, a in keyed), keys, {k[2]: k for k in keys}, dropped, fetched_at, validators)

    def to_payload(self) -> dict[str, Any]:
        return {"articles": [a.to_json() for a in self.articles], "dropped": self.dropped}

    @classmethod
    def from_row(cls, row: cache_queries.CacheRow) -> CachedFeed:
        payload = row.payload
        return cls.build(
            (NormalizedArticle.from_json(a) for a in payload.get("articles", ())),
            int(payload.get("dropped", 0)),
            row.fetched_at,
            Validators(row.etag, row.last_modified),
        )


@dataclass(slots=True)
class SourceStats:
    """Per-source counters for health and operators."""

    upstream_calls: int = 0
    retries: int = 0
    not_modified: int = 0
    dropped_rows: int = 0
    last_success_at: datetime | None = None
    last_error: SourceError | None = None
    last_error_at: datetime | None = None


class LRU(Generic[K, V]):
    """A bounded mapping that forgets the least recently used entry."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._data: OrderedDict[K, V] = OrderedDict()

    def get(self, key: K) -> V | None:
        value = self._data.get(key)
        if value is not None:
            self._data.move_to_end(key)
        return value

    def put(self, key: K, value: V) -> None:
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.capacity:
            self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class Parser:
    """Runs parsers inline for small payloads and in a worker process for large ones,
    so a 5 MB feed never holds the event loop (threads would: the GIL)."""

    def __init__(self, offloop_bytes: int) -> None:
        self.offloop_bytes = offloop_bytes
        self._pool: ProcessPoolExecutor | None = None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: forking a process that runs threads and an event loop is unsafe.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
        return self._pool

    async def start(self) -> None:
        """Start the worker process now (in a thread: starting it blocks), so the first
        big payload does not pay for it on the event loop."""
        pool = self._ensure_pool()
        await asyncio.to_thread(lambda: pool.submit(_warm_up).result(timeout=60))

    async def run(self, fn: Callable[..., V], body: bytes, *args: Any) -> V:
        if len(body) < self.offloop_bytes:
            return fn(body, *args)
        self._ensure_pool()
        try:
            return await asyncio.get_running_loop().run_in_executor(self._ensure_pool(), fn, body, *args)
        except BrokenProcessPool:
            self._pool = None  # a worker died (OOM?): start a fresh pool next time
            raise BadPayload("the parser process died on this payload") from None

    async def aclose(self) -> None:
        """Stop the worker process and wait for it (in a thread), so its semaphores and
        pipes are released rather than reported as leaked at exit."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _warm_up() -> None:
    """Import the parsers in the worker process ahead of the first payload."""
    import gateway.sources  # noqa: F401


class RetryBudget:
    """At most ``ratio`` retries per original call over a sliding window."""

    def __init__(self, clock: Clock, ratio: float = RETRY_BUDGET_RATIO, window_s: float = RETRY_BUDGET_WINDOW_S):
        self._clock = clock
        self._ratio = ratio
        self._window_s = window_s
        self._calls: deque[float] = deque()
        self._retries: deque[float] = deque()

    def _trim(self) -> None:
        horizon = self._clock.monotonic() - self._window_s
        for q in (self._calls, self._retries):
            while q and q[0] < horizon:
                q.popleft()

    def record_call(self) -> None:
        self._trim()
        self._calls.append(self._clock.monotonic())

    def try_spend(self) -> bool:
        self._trim()
        if len(self._retries) + 1 <= self._ratio * len(self._calls):
            self._retries.append(self._clock.monotonic())
            return True
        return False


class _SourceIO:
    """The upstream as an adapter sees it for one refresh: breaker, bulkheads,
    timeouts and retries applied to every GET, all within ``budget``."""

    def __init__(self, service: SourceService, source: SourceConfig, budget: Deadline) -> None:
        self._svc = service
        self._source = source
        self._budget = budget

    async def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        parse: Callable[[UpstreamResponse], Awaitable[Any]] | None = None,
    ) -> Any:
        """GET ``url``; with ``parse``, return ``await parse(response)`` instead, so an
        unusable body (BadPayload) counts against the breaker like a failed call."""
        svc, source = self._svc, self._source
        breaker = svc.breakers[source.id]
        stats = svc.stats[source.id]
        budget = svc.retry_budgets[source.id]
        attempt = 1
        while True:
            remaining = self._budget.remaining()
            if remaining <= 0:
                raise DeadlineExceeded(f"{source.id}: request deadline reached before calling the upstream")
            permit = breaker.acquire()  # CircuitOpen propagates: never retry into an open breaker
            capped = False
            try:
                async with svc.global_bulkhead.slot(timeout_s=remaining), svc.bulkheads[source.id].slot(
                    timeout_s=remaining
                ):
                    stats.upstream_calls += 1
                    budget.record_call()
                    # After the bulkhead wait: what is left of our budget may be less
                    # than the source's timeout, and then a timeout is ours, not theirs.
                    timeout = min(source.timeout_s, self._budget.remaining())
                    capped = timeout < source.timeout_s
                    resp = await svc.upstream.get(
                        url,
                        timeout_s=max(timeout, 0.001),
                        params=params,
                        headers=headers,
                        follow_redirects=not source.api_key,
                    )
                async with asyncio.timeout(max(self._budget.remaining(), 0.001)):
                    result = resp if parse is None or resp.not_modified else await parse(resp)
            except TimeoutError:  # parsing outlived the budget: our limit, not the upstream's fault
                breaker.ignore(permit)
                raise DeadlineExceeded(f"{source.id}: parsing the answer outlived the request deadline") from None
            except UpstreamTimeout:
                if capped:  # we cut the call short for our own deadline: not the upstream's fault
                    breaker.ignore(permit)
                    raise DeadlineExceeded(f"{source.id}: request deadline reached while waiting for the upstream") from None
                breaker.failure(permit)
                raise
            except BadPayload:
                breaker.failure(permit)
                raise
            except UpstreamError as exc:
                breaker.failure(permit)
                delay = self._retry_delay(exc, attempt)
                if delay is None or not budget.try_spend():
                    raise
                stats.retries += 1
                log.info("retrying %s in %.2f s after %s (attempt %d)", source.id, delay, exc.code, attempt + 1)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            except BaseException:  # BulkheadFull, cancellation, bugs: say nothing about the upstream
                breaker.ignore(permit)
                raise
            breaker.success(permit)
            return result

    def _retry_delay(self, exc: UpstreamError, attempt: int) -> float | None:
        """Seconds to wait before the next attempt, or None when we must not retry."""
        if not exc.retryable or attempt >= MAX_ATTEMPTS:
            return None
        # Full jitter (AWS architecture blog): spreads retries of many clients apart.
        delay = random.uniform(0, min(RETRY_CAP_S, RETRY_BASE_S * 2**attempt))
        if isinstance(exc, UpstreamHTTPError) and exc.retry_after_s is not None:
            delay = max(delay, exc.retry_after_s)
        # Not when the wait alone would eat what is left of the budget.
        if delay + 0.05 > self._budget.remaining():
            return None
        return delay

    async def parse_articles(self, kind: str, body: bytes) -> Parsed:
        return await self._svc.parser.run(parse_articles, body, kind, self._source.id, self._source.page_size)

    async def hn_items(self, ids: Sequence[int]) -> Mapping[int, HNItem | None]:
        """Stories of one refresh. Any item we could not get fails the refresh: a
        partial list must not replace a complete copy (stale-if-error serves that)."""
        results = await self._svc.hn_items(self._source, ids, self._budget)
        usable: dict[int, HNItem | None] = {}
        for item_id, result in results.items():
            if isinstance(result, BadPayload):
                usable[item_id] = None  # one malformed item is a bad row: dropped and counted
            elif isinstance(result, SourceError):
                raise result
            elif isinstance(result, BaseException):
                raise UpstreamUnavailable(f"{self._source.id}: item fetch failed ({type(result).__name__})")
            else:
                usable[item_id] = result
        return usable


#: A cold key's cache row (None: no row) and whether this process took its lease.
_Bid = tuple[asyncpg.Record | None, bool]


class _LeaseBids(DataLoader[tuple[str, str], _Bid]):
    """Cache reads and lease bids for cold keys, batched across the process: the keys
    that go cold in the same loop turn (one query over several sources, or several
    requests at once) share one statement: one round-trip and one commit instead of
    one per key, which under a cold stampede is also fewer backends waking at once.
    No cache: every load is a fresh read (the per-key singleflight in front of this
    already makes one load per key at a time)."""

    def __init__(
        self, read: Callable[[Sequence[tuple[str, str]]], Awaitable[dict[tuple[str, str], _Bid]]]
    ) -> None:
        super().__init__(cache=False)
        self._read = read

    async def batch_load_fn(
        self, keys: Sequence[tuple[str, str]]
    ) -> list[_Bid | Exception]:
        try:
            found = await self._read(keys)
        except DatabaseUnavailable as exc:
            return [exc for _ in keys]
        except Exception:
            if len(keys) == 1:
                raise
            # Not the database being away but one key it refuses (or a bug): keys of
            # other requests share this batch, so give each its own answer.
            return list(await asyncio.gather(*(self._one(k) for k in keys)))
        return [found[k] for k in keys]

    async def _one(self, key: tuple[str, str]) -> _Bid | Exception:
        try:
            return (await self._read([key]))[key]
        except Exception as exc:  # noqa: BLE001 - this key's own failure, handed to its caller
            return exc


class _Unknown:
    """No lease bid made yet (distinct from None: no database to bid with)."""


_UNKNOWN = _Unknown()


@dataclass(frozen=True, slots=True)
class _CachedItem:
    item: HNItem | None  # None: the upstream says there is no such item
    fetched_mono: float


@dataclass(slots=True)
class SourceService:
    settings: Settings
    db: Database | None
    upstream: UpstreamClient
    breakers: dict[str, CircuitBreaker]
    global_bulkhead: Bulkhead
    bulkheads: dict[str, Bulkhead]
    parser: Parser
    clock: Clock
    listener: CacheListener | None = None
    holder_id: str = field(default_factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    stats: dict[str, SourceStats] = field(default_factory=dict)
    retry_budgets: dict[str, RetryBudget] = field(default_factory=dict)
    _memory: LRU[tuple[str, str], CachedFeed] = field(init=False)
    _items: LRU[tuple[str, int], _CachedItem] = field(init=False)
    _flights: SingleFlight[CachedFeed] = field(default_factory=SingleFlight)  # refreshes
    _resolves: SingleFlight[tuple[SourceStatus, CachedFeed]] = field(default_factory=SingleFlight)
    _tasks: set[asyncio.Future[None]] = field(default_factory=set)  # write-behind
    _item_flights: SingleFlight[HNItem | None] = field(default_factory=SingleFlight)
    _bids: _LeaseBids | None = None

    def __post_init__(self) -> None:
        self._memory = LRU(self.settings.memory_cache_entries)
        self._items = LRU(self.settings.memory_cache_entries * 50)
        for s in self.settings.sources:
            self.stats.setdefault(s.id, SourceStats())
            self.retry_budgets.setdefault(s.id, RetryBudget(self.clock))

    async def aclose(self) -> None:
        await self._resolves.aclose()
        await self._flights.aclose()
        await self.drain(timeout_s=5)  # let pending cache writes land
        await self._item_flights.aclose()
        await self.parser.aclose()

    # -- articles ---------------------------------------------------------------
    def adapter(self, source: SourceConfig) -> Adapter:
        return ADAPTERS[source.kind]

    async def fetch(self, source: SourceConfig, search: str | None, deadline: Deadline) -> SourceOutcome:
        """Articles of one source for one request, with an honest status. Never raises
        for upstream or database trouble: that is what the status is for."""
        adapter = self.adapter(source)
        key = adapter.request_key(search)
        started = time.perf_counter()
        fkey = (source.id, key)
        entry = self._memory.get(fkey)
        if entry is not None:
            age = self._age(entry)
            if age < source.ttl_s:
                return self._outcome(source, SourceStatus.CACHED, entry, started)
            if self._flights.in_flight(fkey) and self._revalidating(source, age):
                return self._outcome(source, SourceStatus.STALE, entry, started)  # a refresh is on its way

        # Everything slower goes through one task per key, shared by every request
        # that wants the key meanwhile: one cache read, at most one refresh.
        task = self._resolves.start(fkey, partial(self._resolve, source, adapter, key, search))
        status: SourceStatus
        error: SourceError
        try:
            async with asyncio.timeout(deadline.remaining()):
                status, feed = await asyncio.shield(task)
        except TimeoutError:
            status, error = SourceStatus.TIMEOUT, DeadlineExceeded(f"{source.id}: no answer before the request deadline")
        except (UpstreamTimeout, DeadlineExceeded) as exc:
            status, error = SourceStatus.TIMEOUT, exc
        except CircuitOpen as exc:
            status, error = SourceStatus.SKIPPED, exc
        except SourceError as exc:
            status, error = SourceStatus.FAILED, exc
        except Exception:  # a bug or an unexpected database error: this source fails, not the request
            log.exception("unexpected error fetching %s", source.id)
            status, error = SourceStatus.FAILED, SourceError("internal error while fetching this source", code="INTERNAL")
        else:
            return self._outcome(source, status, feed, started)

        # stale-if-error: the resolve left any copy it found in memory
        entry = self._memory.get(fkey)
        if entry is not None and self._age(entry) <= source.max_stale_s:
            outcome = self._outcome(source, SourceStatus.STALE, entry, started)
            outcome.error = error
            return outcome
        return SourceOutcome(source, status, error=error, latency_ms=_ms_since(started))

    def _revalidating(self, source: SourceConfig, age: float) -> bool:
        """Within the stale-while-revalidate window (one TTL past expiry)."""
        return age < source.ttl_s * 2 and age <= source.max_stale_s

    def _age(self, entry: CachedFeed) -> float:
        return max(0.0, (self.clock.now() - entry.fetched_at).total_seconds())

    def _outcome(self, source: SourceConfig, status: SourceStatus, entry: CachedFeed, started: float) -> SourceOutcome:
        outcome = SourceOutcome(
            source,
            status,
            articles=entry.articles,
            sort_keys=entry.sort_keys,
            key_by_id=entry.key_by_id,
            latency_ms=_ms_since(started),
            age_s=int(self._age(entry)),
            dropped=entry.dropped,
            fetched_at=entry.fetched_at,
        )
        if status is SourceStatus.STALE and self.breakers[source.id].state is not BreakerState.CLOSED:
            outcome.error = CircuitOpen(f"{source.id}: circuit {self.breakers[source.id].state.value.lower()}")
        return outcome

    async def _resolve(
        self, source: SourceConfig, adapter: Adapter, key: str, search: str | None
    ) -> tuple[SourceStatus, CachedFeed]:
        fkey = (source.id, key)
        entry = self._memory.get(fkey)
        # Missing or expired here; another worker or replica may have refreshed it.
        # Cold (nothing in memory): read and bid for the refresh lease in one go.
        lease: bool | None | _Unknown = _UNKNOWN
        if entry is None:
            stored, lease = await self._read_cache_and_lease(source, key)
        else:
            stored = await self._read_cache(source, key)
        if stored is not None and (entry is None or stored.fetched_at > entry.fetched_at):
            self._memory.put(fkey, stored)
            entry = stored
        refresh = partial(self._refresh, source, adapter, key, search, entry, lease=lease)
        if entry is not None:
            age = self._age(entry)
            if age < source.ttl_s:
                if lease is True:  # another process refreshed it just now: not needed after all
                    self._background(self._release_lease(source.id, key))
                return SourceStatus.CACHED, entry
            if self._revalidating(source, age):
                # stale-while-revalidate: answer now, refresh once in the background
                self._flights.start(fkey, refresh)
                return SourceStatus.STALE, entry
        return SourceStatus.FRESH, await self._flights.do(fkey, refresh)

    async def _read_cache_and_lease(self, source: SourceConfig, key: str) -> tuple[CachedFeed | None, bool | None]:
        if self.db is None or not self.db.available:
            return None, None
        if self._bids is None:  # built here, inside the running loop it belongs to
            self._bids = _LeaseBids(self._read_and_lease_many)
        try:
            row, acquired = await self._bids.load((source.id, key))
        except DatabaseUnavailable:
            return None, None
        return (CachedFeed.from_row(cache_queries.row_of(row)) if row is not None else None), acquired

    async def _read_and_lease_many(
        self, keys: Sequence[tuple[str, str]]
    ) -> dict[tuple[str, str], _Bid]:
        assert self.db is not None
        ttl = self.settings.request_deadline_ms / 1000 + LEASE_MARGIN_S
        return await self.db.run(
            lambda conn: lease_queries.read_and_try_acquire_many(conn, keys, self.holder_id, ttl),
            timeout_s=DB_READ_TIMEOUT_S,
        )

    async def _read_cache(self, source: SourceConfig, key: str) -> CachedFeed | None:
        if self.db is None or not self.db.available:
            return None
        try:
            row = await self.db.run(
                lambda conn: cache_queries.get(conn, source.id, key), timeout_s=DB_READ_TIMEOUT_S
            )
        except DatabaseUnavailable:
            return None
        return CachedFeed.from_row(row) if row is not None else None

    async def _refresh(
        self,
        source: SourceConfig,
        adapter: Adapter,
        key: str,
        search: str | None,
        entry: CachedFeed | None,
        *,
        lease: bool | None | _Unknown = _UNKNOWN,
    ) -> CachedFeed:
        """One refresh of one key, in this process (singleflight) and across processes
        (a lease row): the lease holder calls the upstream, the others wait for its write.
        ``lease`` is the outcome of a bid already made (True, False, None: no database),
        or _UNKNOWN to bid now."""
        budget = Deadline.after(self.settings.request_deadline_ms / 1000)
        leased = await self._try_lease(source, key, budget) if isinstance(lease, _Unknown) else lease
        if leased is False:
            peer = await self._await_peer(source, key, entry, budget)
            if peer is not None:
                return peer
            leased = await self._try_lease(source, key, budget)  # the peer gave up or died
            if leased is False:
                raise DeadlineExceeded(f"{source.id}: another worker is still refreshing this source")
        try:
            return await self._fetch_and_store(source, adapter, key, search, entry, budget, leased=bool(leased))
        except BaseException:
            if leased:
                self._background(self._release_lease(source.id, key))
            raise

    async def _fetch_and_store(
        self,
        source: SourceConfig,
        adapter: Adapter,
        key: str,
        search: str | None,
        entry: CachedFeed | None,
        budget: Deadline,
        *,
        leased: bool,
    ) -> CachedFeed:
        stats = self.stats[source.id]
        io = _SourceIO(self, source, budget)
        try:
            result = await adapter.fetch(source, search, io, entry.validators if entry else None)
        except SourceError as exc:
            self._note_error(source, exc)
            raise
        now = self.clock.now()
        if result.not_modified and entry is not None:
            fresh = replace(entry, fetched_at=now)
            stats.not_modified += 1
        else:
            fresh = CachedFeed.build(result.articles, result.dropped, now, result.validators)
            stats.dropped_rows += result.dropped

        async def write() -> None:
            # The whole row even after a 304: the earlier write may never have landed
            # (Postgres was down), and a touch of a missing row would keep it missing.
            row = cache_queries.CacheRow(  # built here: off the path of the waiting requests
                source.id, key, fresh.to_payload(), now, fresh.validators.etag, fresh.validators.last_modified
            )
            try:
                await self._db_quietly(lambda conn: cache_queries.put_refreshed(conn, row))
            finally:
                if leased:  # after the row is visible: see put_refreshed
                    await self._release_lease(source.id, key)

        self._memory.put((source.id, key), fresh)
        stats.last_success_at = now
        # Write-behind: waiters here have their answer now; the row (and the NOTIFY
        # that other processes wait for) follows a moment later.
        self._background(write())
        return fresh

    async def drain(self, *, timeout_s: float) -> None:
        """Wait (bounded) for pending write-behind work: read-your-writes for callers
        about to query Postgres for what was just fetched."""
        if self._tasks and timeout_s > 0:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)

    def _background(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _release_lease(self, source_id: str, key: str) -> None:
        await self._db_quietly(lambda conn: lease_queries.release(conn, source_id, key, self.holder_id))

    async def _try_lease(self, source: SourceConfig, key: str, budget: Deadline) -> bool | None:
        """True: ours. False: another process holds it. None: no database to coordinate
        through (we refresh on our own, which is the best a lone process can do)."""
        if self.db is None or not self.db.available:
            return None
        try:
            return await self.db.run(
                lambda conn: lease_queries.try_acquire(
                    conn, source.id, key, self.holder_id, budget.remaining() + LEASE_MARGIN_S
                ),
                # A busy pool must not eat the refresh's budget: without a lease in
                # time we refresh anyway (at worst one duplicate call).
                timeout_s=min(LEASE_WAIT_S, max(budget.remaining(), 0.001)),
            )
        except DatabaseUnavailable:
            return None

    async def _await_peer(
        self, source: SourceConfig, key: str, entry: CachedFeed | None, budget: Deadline
    ) -> CachedFeed | None:
        """Wait for another process's refresh: its NOTIFY wakes us; we also poll, in case
        the notification was lost. None if the lease went away with no newer row."""
        assert self.db is not None
        db = self.db
        with self.listener.watch(source.id, key) if self.listener else _no_watch() as event:
            while budget.remaining() > 0:
                try:
                    row, held = await db.run(
                        lambda conn: lease_queries.peer_state(conn, source.id, key),
                        timeout_s=max(budget.remaining(), 0.001),
                    )
                except DatabaseUnavailable:
                    return None
                if row is not None and (entry is None or row["fetched_at"] > entry.fetched_at):
                    fresh = CachedFeed.from_row(cache_queries.row_of(row))
                    self._memory.put((source.id, key), fresh)
                    return fresh
                if not held:
                    return None
                event.clear()
                try:
                    async with asyncio.timeout(min(PEER_POLL_S, budget.remaining())):
                        await event.wait()
                except TimeoutError:
                    pass
        return None

    def _note_error(self, source: SourceConfig, exc: SourceError) -> None:
        stats = self.stats[source.id]
        stats.last_error = exc
        stats.last_error_at = self.clock.now()
        log.info("source %s failed: %s %s", source.id, exc.code, exc.message)

    async def _db_quietly(self, fn: Callable[[Any], Any]) -> None:
        """Write-behind to Postgres; a database that is down costs the cache, not the answer."""
        if self.db is None:
            return
        try:
            await self.db.run(fn)
        except DatabaseUnavailable as exc:
            log.warning("cache write skipped: %s", exc)
        except asyncpg.PostgresError as exc:  # e.g. a read-only standby after failover
            log.error("cache write failed: %s: %s", type(exc).__name__, exc)

    # -- Hacker News items ------------------------------------------------------
    async def hn_items(
        self, source: SourceConfig, ids: Sequence[int], deadline: Deadline
    ) -> dict[int, HNItem | None | BaseException]:
        """Items by id: memory, then one Postgres query, then the upstream, each item
        fetched at most once however many callers ask at the same time."""
        out: dict[int, HNItem | None | BaseException] = {}
        now_mono = self.clock.monotonic()
        missing: list[int] = []
        for item_id in dict.fromkeys(ids):
            cached = self._items.get((source.id, item_id))
            if cached is not None and now_mono - cached.fetched_mono < source.ttl_s:
                out[item_id] = cached.item
            else:
                missing.append(item_id)
        if missing and self.db is not None and self.db.available:
            keys = [f"item:{i}" for i in missing if not self._item_flights.in_flight((source.id, i))]
            try:
                rows = await self.db.run(
                    lambda conn: cache_queries.get_many(conn, source.id, keys), timeout_s=max(deadline.remaining(), 0.001)
                ) if keys else {}
            except DatabaseUnavailable:
                rows = {}
            now = self.clock.now()
            for row in rows.values():
                age = (now - row.fetched_at).total_seconds()
                if age < source.ttl_s:
                    item_id = int(row.request_key.removeprefix("item:"))
                    stored = row.payload.get("item")  # {"item": null}: HN has no such item
                    item = HNItem.from_json(stored) if stored else None
                    self._items.put((source.id, item_id), _CachedItem(item, now_mono - age))
                    out[item_id] = item
            missing = [i for i in missing if i not in out]
        if not missing:
            return out
        # The fetches are shared with other callers: they get a budget of their own,
        # not the deadline of whichever caller happened to start them.
        io = _SourceIO(self, source, Deadline.after(self.settings.request_deadline_ms / 1000))
        tasks = [self._item_flights.start((source.id, i), partial(self._fetch_item, source, i, io)) for i in missing]
        try:
            async with asyncio.timeout(deadline.remaining()):
                results = await asyncio.gather(*(asyncio.shield(t) for t in tasks), return_exceptions=True)
        except TimeoutError:
            results = [
                t.result() if t.done() and not t.cancelled() and t.exception() is None else DeadlineExceeded("item deadline")
                for t in tasks
            ]
        fetched: list[cache_queries.CacheRow] = []
        now = self.clock.now()
        for item_id, result in zip(missing, results, strict=True):
            out[item_id] = result
            if not isinstance(result, BaseException):
                payload = {"item": result.to_json() if result else None}
                fetched.append(cache_queries.CacheRow(source.id, f"item:{item_id}", payload, now, None, None))
        if fetched:
            self._background(self._db_quietly(lambda conn: cache_queries.put_many(conn, fetched)))
        return out

    async def _fetch_item(self, source: SourceConfig, item_id: int, io: _SourceIO) -> HNItem | None:
        async def parse(resp: UpstreamResponse) -> HNItem | None:
            return parse_item(resp.content)

        item = await io.get(hn_url(source, f"item/{item_id}.json"), parse=parse)
        self._items.put((source.id, item_id), _CachedItem(item, self.clock.monotonic()))
        return item

    # -- articles by id -----------------------------------------------------------
    async def articles_by_id(self, ids: Sequence[str], deadline: Deadline) -> dict[str, NormalizedArticle]:
        if self.db is None:
            return {}
        if self._tasks:  # read your writes: ids fetched a moment ago may still be on their way
            await self.drain(timeout_s=min(READ_YOUR_WRITES_WAIT_S, deadline.remaining()))
        return await self.db.run(
            lambda conn: article_queries.get_many(conn, ids), timeout_s=max(deadline.remaining(), 0.001)
        )


@contextlib.contextmanager
def _no_watch() -> Iterator[asyncio.Event]:
    yield asyncio.Event()


def _ms_since(started: float) -> int:
    return int((time.perf_counter() - started) * 1000)

