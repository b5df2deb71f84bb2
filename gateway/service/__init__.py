"""SourceService: the one way data gets from an upstream (or its cache) to a resolver.

::

    fetch(source, search, deadline)                           this module: thin, maps errors to statuses
      ├─ FeedCache: memory ─► Postgres       fresh (age < ttl)?             ─► CACHED
      │                                      within stale-while-revalidate? ─► STALE, refresh in background
      ├─ RefreshCoordinator: singleflight, lease, peer wait (one refresh per key, all processes)
      │    └─ Refresher: adapter request ─► SourceClient (breaker ─► bulkheads ─► retries ─► HTTP)
      │         └─ adapter parse (off the loop when large), HN items ─► FeedCache.store  ─► FRESH
      └─ no new copy (failed, deadline, breaker open):
           a copy no older than max_stale_s?  ─► STALE (with the error)   else ─► FAILED / TIMEOUT / SKIPPED

Data flows one way: nothing below calls back up. Refreshes are shielded from callers,
so a caller giving up does not cancel the upstream call whose result everyone after it
will use.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING

from gateway.errors import CircuitOpen, DeadlineExceeded, SourceError, SourceInternalError
from gateway.outcomes import CachedFeed, SourceOutcome, SourceStatus, status_of
from gateway.resilience.breaker import BreakerState
from gateway.resilience.clock import Clock
from gateway.resilience.deadline import Deadline
from gateway.resilience.singleflight import SingleFlight
from gateway.service.client import MIN_WAIT_S, SourceClient, SourceStats
from gateway.service.coordinator import NOT_BID, Lease, RefreshCoordinator
from gateway.service.feedcache import FeedCache, FeedKey
from gateway.service.items import HNItems, ItemResult
from gateway.service.refresh import Refresher
from gateway.service.tasks import BackgroundTasks
from gateway.settings import SourceConfig
from gateway.sources import ADAPTERS, Adapter
from gateway.sources.base import NormalizedArticle
from gateway.store import articles as article_queries
from gateway.store.db import Database

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from gateway.ops.metrics import Metrics

log = logging.getLogger("gateway.service")

READ_YOUR_WRITES_WAIT_S = 0.5  # article(id:) waits this long at most for pending cache writes


@dataclass(slots=True)
class SourceService:
    db: Database | None
    cache: FeedCache
    coordinator: RefreshCoordinator
    refresher: Refresher
    client: SourceClient
    items: HNItems
    tasks: BackgroundTasks
    clock: Clock
    metrics: Metrics | None = None
    tracer: Tracer | None = None
    _resolves: SingleFlight[tuple[SourceStatus, CachedFeed]] = field(default_factory=SingleFlight, init=False)

    @property
    def stats(self) -> dict[str, SourceStats]:
        return self.client.stats

    async def aclose(self) -> None:
        await self._resolves.aclose()
        await self.coordinator.aclose()
        await self.writes_done(timeout_s=5)  # let pending cache writes land
        await self.items.aclose()

    async def settle(self, *, timeout_s: float) -> None:
        """Wait (bounded) until the work started so far is done: refreshes in flight
        (stale-while-revalidate ones too), then the cache writes behind them."""
        await self._resolves.wait_idle(timeout_s=timeout_s)
        await self.coordinator.wait_idle(timeout_s=timeout_s)
        await self.writes_done(timeout_s=timeout_s)

    async def writes_done(self, *, timeout_s: float) -> None:
        """Wait (bounded) for the cache writes and lease releases pending now, the
        writes held back by the write-behind delay sent at once."""
        self.cache.flush()
        await self.tasks.drain(timeout_s=timeout_s)

    def adapter(self, source: SourceConfig) -> Adapter:
        return ADAPTERS[source.kind]

    # -- articles ---------------------------------------------------------------
    async def fetch(self, source: SourceConfig, search: str | None, deadline: Deadline) -> SourceOutcome:
        """Articles of one source for one request, with an honest status. Never raises
        for upstream or database trouble: that is what the status is for."""
        if self.tracer is None:
            outcome = await self._fetch(source, search, deadline)
        else:
            with self.tracer.start_as_current_span("source fetch", attributes={"gateway.source.id": source.id}) as span:
                outcome = await self._fetch(source, search, deadline)
                span.set_attribute("gateway.source.status", outcome.status.value)
                if outcome.error is not None:
                    span.set_attribute("gateway.source.error", outcome.error.code)
        if self.metrics is not None:
            self.metrics.source_result(source.id, outcome.status.value)
        return outcome

    def fetch_fresh(self, source: SourceConfig, search: str | None) -> SourceOutcome | None:
        """What :meth:`fetch` answers when this process holds a fresh copy, without
        awaiting anything (a loader then needs no task per source); None otherwise."""
        if self.tracer is not None:
            return None  # fetch() makes a span of every fetch
        key: FeedKey = (source.id, self.adapter(source).request_key(search))
        cache = self.cache
        cache.note_read(key, search)
        entry = cache.get(key)
        if entry is None:
            return None
        age = cache.age(entry)
        if age >= source.ttl_s:
            return None
        # As _outcome() for CACHED, which needs no breaker; read from memory, in no time.
        outcome = SourceOutcome(source, SourceStatus.CACHED, entry, latency_ms=0, age_s=int(age))
        if self.metrics is not None:
            self.metrics.source_result(source.id, SourceStatus.CACHED.value)
        return outcome

    async def _fetch(self, source: SourceConfig, search: str | None, deadline: Deadline) -> SourceOutcome:
        key: FeedKey = (source.id, self.adapter(source).request_key(search))
        started = self.clock.monotonic()
        self.cache.note_read(key, search)
        entry = self.cache.get(key)
        if entry is not None:
            age = self.cache.age(entry)
            if age < source.ttl_s:  # as fetch_fresh
                return self._outcome(source, SourceStatus.CACHED, entry, started)
            if self.coordinator.in_flight(key) and _revalidating(source, age):
                return self._outcome(source, SourceStatus.STALE, entry, started)  # a refresh is on its way

        # Everything slower goes through one task per key, shared by every request
        # that wants the key meanwhile: one cache read, at most one refresh.
        task = self._resolves.start(key, partial(self._resolve, source, key, search))
        error: SourceError
        try:
            async with asyncio.timeout(deadline.remaining()):
                status, feed = await asyncio.shield(task)
        except TimeoutError:
            error = DeadlineExceeded(f"{source.id}: no answer before the request deadline")
        except SourceError as exc:
            error = exc
        except Exception:  # a bug or an unexpected database error: this source fails, not the request
            log.exception("unexpected error fetching %s", source.id)
            error = SourceInternalError("internal error while fetching this source")
        else:
            return self._outcome(source, status, feed, started)

        # stale-if-error: the resolve left any copy it found in memory
        entry = self.cache.get(key)
        if entry is not None and self.cache.age(entry) <= source.max_stale_s:
            outcome = self._outcome(source, SourceStatus.STALE, entry, started)
            outcome.error = error
            return outcome
        return SourceOutcome(source, status_of(error), error=error, latency_ms=self._ms_since(started))

    def _outcome(self, source: SourceConfig, status: SourceStatus, feed: CachedFeed, started: float) -> SourceOutcome:
        outcome = SourceOutcome(
            source, status, feed, latency_ms=self._ms_since(started), age_s=int(self.cache.age(feed))
        )
        breaker = self.client.breakers[source.id]
        if status is SourceStatus.STALE and breaker.state is not BreakerState.CLOSED:
            outcome.error = CircuitOpen(f"{source.id}: circuit {breaker.state.value.lower()}")
        return outcome

    def _ms_since(self, started: float) -> int:
        return int((self.clock.monotonic() - started) * 1000)

    async def _resolve(self, source: SourceConfig, key: FeedKey, search: str | None) -> tuple[SourceStatus, CachedFeed]:
        # Missing or expired here; another worker or replica may have refreshed it.
        # Cold (nothing in memory): read and bid for the refresh lease in one go.
        lease: Lease = NOT_BID
        if self.cache.get(key) is None:
            stored, lease = await self.coordinator.bid(key)
        else:
            stored = await self.cache.read(*key)
        entry = self.cache.adopt(key, stored)
        fetch = partial(self.refresher.fetch, source, search, entry)
        if entry is not None:
            age = self.cache.age(entry)
            if age < source.ttl_s:
                if lease is True:  # another process refreshed it just now: not needed after all
                    self.coordinator.give_back(key)
                return SourceStatus.CACHED, entry
            if _revalidating(source, age):
                # stale-while-revalidate: answer now, refresh once in the background
                self.coordinator.start(key, source, fetch, entry)
                return SourceStatus.STALE, entry
        return SourceStatus.FRESH, await self.coordinator.refresh(key, source, fetch, entry, lease)

    async def refresh_ahead(self, source: SourceConfig, search: str | None, *, due_age_s: float) -> bool:
        """Refresh (``source``, ``search``) before it expires, if its newest copy (here
        or in Postgres) is at least ``due_age_s`` old: through the coordinator, so one
        call per key across every process (a refresh in flight anywhere is joined, not
        repeated). True when a new copy came; raises the SourceError that ended it."""
        key: FeedKey = (source.id, self.adapter(source).request_key(search))
        entry = self.cache.adopt(key, await self.cache.read(*key))
        if entry is not None and self.cache.age(entry) < due_age_s:
            return False  # somebody refreshed it meanwhile
        fetch = partial(self.refresher.fetch, source, search, entry)
        await self.coordinator.refresh(key, source, fetch, entry)
        return True

    # -- Hacker News items and articles by id -----------------------------------
    async def hn_items(self, source: SourceConfig, ids: Sequence[int], deadline: Deadline) -> dict[int, ItemResult]:
        return await self.items.get(source, ids, deadline)

    async def articles_by_id(self, ids: Sequence[str], deadline: Deadline) -> dict[str, NormalizedArticle]:
        if self.db is None:
            return {}
        if len(self.tasks):  # read your writes: ids fetched a moment ago may still be on their way
            await self.writes_done(timeout_s=min(READ_YOUR_WRITES_WAIT_S, deadline.remaining()))
        return await self.db.run(
            lambda conn: article_queries.get_many(conn, ids), timeout_s=max(deadline.remaining(), MIN_WAIT_S)
        )


def _revalidating(source: SourceConfig, age: float) -> bool:
    """Within the stale-while-revalidate window (one TTL past expiry)."""
    return age < source.ttl_s * 2 and age <= source.max_stale_s


__all__ = ["SourceService", "SourceStats"]
