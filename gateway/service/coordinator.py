"""One refresh per key: in this process (singleflight) and across processes and
replicas (a lease row in Postgres).

::

    refresh(key)
      ├─ in flight here?            ─► join it (singleflight, owned by no caller)
      ├─ lease ours (or no database) ─► fetch, then store: memory now, row behind, release
      │                                  failed? release + NOTIFY the failure to every process
      └─ lease held by a peer        ─► wait for its NOTIFY (poll as a fallback), at most the
                                         source's timeout + PEER_WAIT_MARGIN_S:
                                         its row ─► done; its failure ─► the same error here;
                                         lease gone, no row (it died) ─► take the lease ourselves

The waiting processes learn of a failure at once instead of waiting out the request
deadline, and then serve stale-if-error or fail with the peer's error code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from functools import partial

import asyncpg
from aiodataloader import DataLoader

from gateway.errors import DatabaseUnavailable, DeadlineExceeded, SourceError, source_error_of
from gateway.outcomes import CachedFeed
from gateway.resilience.clock import Clock
from gateway.resilience.deadline import Deadline
from gateway.resilience.singleflight import SingleFlight
from gateway.service.client import MIN_WAIT_S
from gateway.service.feedcache import FeedCache, FeedKey, feed_of_row
from gateway.service.tasks import BackgroundTasks
from gateway.settings import SourceConfig
from gateway.store import cache as cache_queries
from gateway.store import leases as lease_queries
from gateway.store.db import Database
from gateway.store.listener import CacheListener, Watch

log = logging.getLogger("gateway.service")

LEASE_MARGIN_S = 1.0  # a lease outlives its holder's budget by this much, then expires
PEER_POLL_S = 0.25  # how often a process waiting on another's refresh re-checks
PEER_WAIT_MARGIN_S = 0.1  # a waiter waits the source's timeout plus this, no longer
LEASE_WAIT_S = 0.5  # longest wait for the database to grant or refuse a lease
BID_TIMEOUT_S = 1.0  # longest wait for a cold key's read-and-bid
FAILURE_NOTICE_S = 0.05  # how long a lease gone without a row waits for the failure's NOTIFY

#: A cold key's cache row (None: no row) and whether this process took its lease.
Bid = tuple[asyncpg.Record | None, bool]
#: Fetches a new copy within the budget it is given (not stored: the coordinator does).
Fetch = Callable[[Deadline], Awaitable[CachedFeed]]


class NotBid:
    """No lease bid made yet (distinct from None: no database to bid with)."""


NOT_BID = NotBid()
Lease = bool | None | NotBid


class LeaseBids(DataLoader[FeedKey, Bid]):
    """Cache reads and lease bids for cold keys, batched across the process: the keys
    that go cold in the same loop turn (one query over several sources, or several
    requests at once) share one statement: one round-trip and one commit instead of
    one per key, which under a cold stampede is also fewer backends waking at once.
    No cache: every load is a fresh read (the per-key singleflight in front of this
    already makes one load per key at a time)."""

    def __init__(self, read: Callable[[Sequence[FeedKey]], Awaitable[dict[FeedKey, Bid]]]) -> None:
        super().__init__(cache=False)
        self._read = read

    async def batch_load_fn(self, keys: Sequence[FeedKey]) -> list[Bid | Exception]:
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

    async def _one(self, key: FeedKey) -> Bid | Exception:
        try:
            return (await self._read([key]))[key]
        except Exception as exc:  # noqa: BLE001 - this key's own failure, handed to its caller
            return exc


class RefreshCoordinator:
    def __init__(
        self,
        cache: FeedCache,
        listener: CacheListener | None,
        tasks: BackgroundTasks,
        *,
        holder_id: str,
        refresh_budget_s: float,
        clock: Clock,
    ) -> None:
        self.cache = cache
        self.db: Database | None = cache.db
        self.listener = listener
        self.tasks = tasks
        self.holder_id = holder_id
        self.refresh_budget_s = refresh_budget_s
        self.clock = clock
        self._flights: SingleFlight[CachedFeed] = SingleFlight()
        self._bids: LeaseBids | None = None

    async def aclose(self) -> None:
        await self._flights.aclose()

    def in_flight(self, key: FeedKey) -> bool:
        return self._flights.in_flight(key)

    async def wait_idle(self, *, timeout_s: float) -> None:
        """Wait (bounded) for the refreshes in flight now, background ones included."""
        await self._flights.wait_idle(timeout_s=timeout_s)

    # -- bids ---------------------------------------------------------------------
    async def bid(self, key: FeedKey) -> tuple[CachedFeed | None, bool | None]:
        """A cold key's stored copy and whether we took its refresh lease, in one
        round-trip shared with the other keys going cold now (None: no database)."""
        if self.db is None or not self.db.available:
            return None, None
        if self._bids is None:  # built here, inside the running loop it belongs to
            self._bids = LeaseBids(self._read_and_bid_many)
        try:
            row, acquired = await self._bids.load(key)
        except DatabaseUnavailable:
            return None, None
        self.cache.count("postgres", row is not None)
        return (feed_of_row(cache_queries.row_of(row)) if row is not None else None), acquired

    async def _read_and_bid_many(self, keys: Sequence[FeedKey]) -> dict[FeedKey, Bid]:
        assert self.db is not None
        ttl = self.refresh_budget_s + LEASE_MARGIN_S
        return await self.db.run(
            lambda conn: lease_queries.read_and_try_acquire_many(conn, keys, self.holder_id, ttl),
            timeout_s=BID_TIMEOUT_S,
        )

    def give_back(self, key: FeedKey) -> None:
        """A lease we won but do not need (another process refreshed the key just now)."""
        self.tasks.spawn(self._release(key))

    # -- refreshes ----------------------------------------------------------------
    def start(self, key: FeedKey, source: SourceConfig, fetch: Fetch, entry: CachedFeed | None) -> None:
        """Refresh in the background (stale-while-revalidate), unless one is in flight."""
        self._flights.start(key, partial(self._refresh, key, source, fetch, entry, NOT_BID))

    async def refresh(
        self, key: FeedKey, source: SourceConfig, fetch: Fetch, entry: CachedFeed | None, lease: Lease = NOT_BID
    ) -> CachedFeed:
        """The new copy of ``key``, from this process's fetch or a peer's. ``lease`` is
        a bid already made (True, False, None: no database), or NOT_BID to bid now."""
        return await self._flights.do(key, partial(self._refresh, key, source, fetch, entry, lease))

    async def _refresh(
        self, key: FeedKey, source: SourceConfig, fetch: Fetch, entry: CachedFeed | None, lease: Lease
    ) -> CachedFeed:
        # The refresh is shared: it gets a budget of its own, not the deadline of
        # whichever request happened to start it.
        budget = Deadline.after(self.refresh_budget_s, self.clock)
        leased = await self._try_lease(key, budget) if isinstance(lease, NotBid) else lease
        if leased is False:
            peer = await self._await_peer(key, source, entry, budget)
            if peer is not None:
                return peer
            leased = await self._try_lease(key, budget)  # the peer died or gave up silently
            if leased is False:
                raise DeadlineExceeded(f"{source.id}: another worker is still refreshing this source")
        try:
            feed = await fetch(budget)
        except BaseException as exc:
            if leased:
                self.tasks.spawn(self._release_failed(key, exc))
            raise
        self.cache.store(key, feed, then=partial(self._release, key) if leased else None)
        return feed

    async def _try_lease(self, key: FeedKey, budget: Deadline) -> bool | None:
        """True: ours. False: another process holds it. None: no database to coordinate
        through (we refresh on our own, which is the best a lone process can do)."""
        if self.db is None or not self.db.available:
            return None
        try:
            return await self.db.run(
                lambda conn: lease_queries.try_acquire(
                    conn, key[0], key[1], self.holder_id, budget.remaining() + LEASE_MARGIN_S
                ),
                # A busy pool must not eat the refresh's budget: without a lease in
                # time we refresh anyway (at worst one duplicate call).
                timeout_s=min(LEASE_WAIT_S, max(budget.remaining(), MIN_WAIT_S)),
            )
        except DatabaseUnavailable:
            return None

    async def _release(self, key: FeedKey) -> None:
        await self.cache.quietly(lambda conn: lease_queries.release(conn, key[0], key[1], self.holder_id))

    async def _release_failed(self, key: FeedKey, exc: BaseException) -> None:
        if isinstance(exc, SourceError):
            code, status = exc.code, exc.http_status
        elif isinstance(exc, asyncio.CancelledError):  # abandoned (shutdown): the others must not wait for us
            code, status = DeadlineExceeded.code, None
        else:
            code, status = "INTERNAL", None
        await self.cache.quietly(
            lambda conn: lease_queries.release_failed(conn, key[0], key[1], self.holder_id, code, status)
        )

    async def _await_peer(
        self, key: FeedKey, source: SourceConfig, entry: CachedFeed | None, budget: Deadline
    ) -> CachedFeed | None:
        """Wait for another process's refresh: its NOTIFY wakes us (success or failure);
        we also poll, in case the notification was lost. Raises the peer's error if it
        failed, DeadlineExceeded if it did not finish within the source's timeout (plus a
        margin); None if the lease went away with no newer row (the peer died)."""
        assert self.db is not None
        db = self.db
        wait = budget.within(source.timeout_s + PEER_WAIT_MARGIN_S)
        with self._watch(key) as watch:
            while wait.remaining() > 0:
                if watch.failure is not None:
                    code, status = watch.failure
                    raise source_error_of(code, f"{source.id}: refresh failed in another worker ({code})",
                                          http_status=status)
                try:
                    row, held = await db.run(
                        lambda conn: lease_queries.peer_state(conn, key[0], key[1]),
                        timeout_s=max(wait.remaining(), MIN_WAIT_S),
                    )
                except DatabaseUnavailable:
                    return None
                if row is not None and (entry is None or row["fetched_at"] > entry.fetched_at):
                    return self.cache.adopt(key, feed_of_row(cache_queries.row_of(row)))
                if not held:
                    if watch.failure is None:
                        await self._failure_notice(watch)
                    if watch.failure is not None:
                        continue  # the failure arrived while we polled: report it
                    return None
                watch.event.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(min(PEER_POLL_S, wait.remaining())):
                        await watch.event.wait()
        raise DeadlineExceeded(f"{source.id}: another worker's refresh did not finish within the source's timeout")

    async def _failure_notice(self, watch: Watch) -> None:
        """The lease is gone and no newer row came: the peer failed, or died. A failure
        releases the lease and sends its NOTIFY in one commit, but the NOTIFY reaches
        us on the listener's connection, which may be read after our poll's answer:
        concluding "died" then would call the upstream again, a second wait of the
        source's timeout for every request here (seen under a hanging upstream). So
        give it a moment (only a peer that died, which sends nothing, waits it out)."""
        if self.listener is None:
            return
        watch.event.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(FAILURE_NOTICE_S):
                await watch.event.wait()

    @contextlib.contextmanager
    def _watch(self, key: FeedKey) -> Iterator[Watch]:
        if self.listener is None:
            yield Watch()
        else:
            with self.listener.watch(*key) as watch:
                yield watch
