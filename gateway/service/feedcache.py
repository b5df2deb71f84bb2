"""The feed cache: a bounded memory LRU in front of Postgres (``fetch_cache``), with
writes behind the answer.

Memory answers the hot path with no I/O. Postgres makes a refresh by one process (or
replica) visible to the others and survives restarts, which is what stale-if-error
serves from. Writes go behind the answer: the requests waiting for a refresh have
their data as soon as it is parsed, and the row (with its NOTIFY) follows, after
``write_delay_s`` (GATEWAY_WRITE_BEHIND_DELAY_MS), so that the answers are sent
before the write's work, ours and Postgres's, competes with them: on a cold burst
over three feeds, the answers went out 7-14 ms later with the writes at once. A
write that another process waits for goes at once: that process said so (a
``?source|key`` NOTIFY from its lease bid, :meth:`wanted`). The row's articles
(the ``articles`` table, for ``article(id:)`` and live updates) always wait out the
delay, in a statement of their own: nobody else waits for them. Whatever waits for
the writes themselves (read-your-writes, shutdown, maintenance) has them sent at
once (:meth:`flush`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from typing import TYPE_CHECKING, Any

import asyncpg
from cachetools import LRUCache

from gateway.errors import DatabaseUnavailable
from gateway.outcomes import CachedFeed
from gateway.resilience.clock import Clock
from gateway.service.tasks import BackgroundTasks
from gateway.sources.base import Validators
from gateway.store import cache as cache_queries
from gateway.store.db import Database

if TYPE_CHECKING:
    from gateway.ops.metrics import Metrics

log = logging.getLogger("gateway.service")

#: Longest wait for a cache read before going upstream instead.
DB_READ_TIMEOUT_S = 1.0

FeedKey = tuple[str, str]  # (source id, request key)

#: Keys other processes said they wait for, kept until this process stores them (at
#: most this many, the oldest forgotten first: a forgotten one is written after the
#: delay, which the waiter's poll then finds).
MAX_WANTED = 1024


def feed_of_row(row: cache_queries.CacheRow) -> CachedFeed:
    return CachedFeed.from_payload(row.payload, row.fetched_at, Validators(row.etag, row.last_modified))


class FeedCache:
    def __init__(
        self,
        db: Database | None,
        tasks: BackgroundTasks,
        *,
        capacity: int,
        clock: Clock,
        metrics: Metrics | None = None,
        write_delay_s: float = 0.0,
    ) -> None:
        self.db = db
        self.tasks = tasks
        self.clock = clock
        self.metrics = metrics
        self.write_delay_s = write_delay_s
        self._held: dict[FeedKey, asyncio.Event] = {}  # writes waiting out the delay: set = go now
        self._wanted: OrderedDict[FeedKey, bool] = OrderedDict()  # see wanted()
        self.hastened = 0  # writes not held back for the whole delay (a peer waits, or flush())
        self._memory: LRUCache[FeedKey, CachedFeed] = LRUCache(maxsize=capacity)
        #: Keys requests asked for since the last take_reads(): the search they came
        #: from and when (monotonic). Bounded like the memory cache.
        self._reads: dict[FeedKey, tuple[str | None, float]] = {}

    def get(self, key: FeedKey) -> CachedFeed | None:
        feed = self._memory.get(key)
        self.count("memory", feed is not None)
        return feed

    def count(self, layer: str, hit: bool) -> None:
        if self.metrics is not None:
            self.metrics.bump(self.metrics.child(self.metrics.cache_operations, layer, "hit" if hit else "miss"))

    def note_read(self, key: FeedKey, search: str | None) -> None:
        """A request asked for ``key``: the maintenance leader refreshes keys read
        lately ahead of their expiry (see gateway/ops/maintenance.py)."""
        reads = self._reads
        if key in reads or len(reads) < self._memory.maxsize:
            reads[key] = (search, self.clock.monotonic())

    def take_reads(self) -> dict[FeedKey, tuple[str | None, float]]:
        """The reads noted since the last call (and forget them)."""
        reads, self._reads = self._reads, {}
        return reads

    def age(self, feed: CachedFeed) -> float:
        return max(0.0, (self.clock.now() - feed.fetched_at).total_seconds())

    def adopt(self, key: FeedKey, stored: CachedFeed | None) -> CachedFeed | None:
        """Keep ``stored`` (read from Postgres) if it is newer than what memory has;
        return whichever is newest."""
        current = self._memory.get(key)
        if stored is not None and (current is None or stored.fetched_at > current.fetched_at):
            self._memory[key] = stored
            return stored
        return current

    async def read(self, source_id: str, request_key: str) -> CachedFeed | None:
        """The row in Postgres, or None (also when the database is away)."""
        if self.db is None or not self.db.available:
            return None
        try:
            row = await self.db.run(
                lambda conn: cache_queries.get(conn, source_id, request_key), timeout_s=DB_READ_TIMEOUT_S
            )
        except DatabaseUnavailable:
            return None
        self.count("postgres", row is not None)
        return feed_of_row(row) if row is not None else None

    def store(
        self,
        key: FeedKey,
        feed: CachedFeed,
        *,
        then: Callable[[], Coroutine[Any, Any, None]] | None = None,
    ) -> None:
        """Keep ``feed`` in memory now, and write it behind the answer: its row (with
        the NOTIFY), then ``then`` (a lease release) once that is done or failed, then
        its articles. The row waits out the write-behind delay unless another process
        waits for it; the articles always do (nobody waits for them: this process's
        own readers flush them)."""
        self._memory[key] = feed
        waited_for = self._wanted.pop(key, False)  # another process said it waits
        if self.db is None:
            if then is not None:
                self.tasks.spawn(then())
            return
        self.hastened += waited_for
        self.tasks.spawn(self._write(key, feed, then, row_now=waited_for or self.write_delay_s <= 0))

    async def _write(
        self, key: FeedKey, feed: CachedFeed, then: Callable[[], Coroutine[Any, Any, None]] | None, *, row_now: bool
    ) -> None:
        if not row_now:
            self.hastened += await self._held_back(key)
        # The whole row even after a 304: the earlier write may never have landed
        # (Postgres was down), and a touch of a missing row would keep it missing.
        row = cache_queries.CacheRow(  # built here: off the path of the waiting requests
            key[0], key[1], feed.to_payload(), feed.fetched_at, feed.validators.etag, feed.validators.last_modified
        )
        try:
            await self.quietly(lambda conn: cache_queries.put_refreshed(conn, row))
        finally:
            if then is not None:  # after the row is visible: see put_refreshed
                await then()
        if row_now and self.write_delay_s > 0:
            await self._held_back(key)
        await self.quietly(lambda conn: cache_queries.put_articles(conn, row))

    async def _held_back(self, key: FeedKey) -> bool:
        """Wait out the write-behind delay, or until :meth:`wanted` or :meth:`flush`
        says to go now (True)."""
        go = self._held.get(key)
        if go is None:
            go = self._held[key] = asyncio.Event()
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.write_delay_s):
                    await go.wait()
                return True
            return False
        finally:
            if self._held.get(key) is go:
                del self._held[key]

    def wanted(self, source_id: str, request_key: str) -> None:
        """Another process waits for this key's refresh: write it at once, now if its
        write is held back, or when it is stored."""
        key = (source_id, request_key)
        go = self._held.get(key)
        if go is not None:
            go.set()
            return
        self._wanted[key] = True
        self._wanted.move_to_end(key)
        while len(self._wanted) > MAX_WANTED:
            self._wanted.popitem(last=False)

    def flush(self) -> None:
        """Send every held-back write now (before waiting for the background tasks)."""
        for go in self._held.values():
            go.set()

    async def quietly(self, fn: Callable[[asyncpg.Connection], Coroutine[Any, Any, object]]) -> None:
        """A write behind the answer: a database that is down costs the cache, not the answer."""
        if self.db is None:
            return
        try:
            await self.db.run(fn)
        except DatabaseUnavailable as exc:
            log.warning("cache write skipped: %s", exc)
        except asyncpg.PostgresError as exc:  # e.g. a read-only standby after failover
            log.error("cache write failed: %s: %s", type(exc).__name__, exc)
