"""Hacker News items by id: memory, then one Postgres query, then the upstream, each
item fetched at most once however many callers (refreshes, comment trees) ask at the
same time."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial

from cachetools import LRUCache

from gateway.errors import BadPayload, DatabaseUnavailable, DeadlineExceeded, SourceError, UpstreamUnavailable
from gateway.resilience.clock import Clock
from gateway.resilience.deadline import Deadline
from gateway.resilience.singleflight import SingleFlight
from gateway.service.client import MIN_WAIT_S, SourceClient
from gateway.service.feedcache import FeedCache
from gateway.settings import SourceConfig
from gateway.sources import ADAPTERS, HackerNewsAdapter
from gateway.sources.base import HNItem
from gateway.sources.hackernews import parse_item
from gateway.store import cache as cache_queries
from gateway.upstream import UpstreamResponse

ITEM_KEY_PREFIX = "item:"

ItemResult = HNItem | None | BaseException  # None: HN has no such item


@dataclass(frozen=True, slots=True)
class _CachedItem:
    item: HNItem | None
    fetched_mono: float


class HNItems:
    def __init__(
        self, client: SourceClient, cache: FeedCache, *, capacity: int, fetch_budget_s: float, clock: Clock
    ) -> None:
        self.client = client
        self.cache = cache
        self.fetch_budget_s = fetch_budget_s
        self.clock = clock
        self._memory: LRUCache[tuple[str, int], _CachedItem] = LRUCache(maxsize=capacity)
        self._flights: SingleFlight[HNItem | None] = SingleFlight()

    async def aclose(self) -> None:
        await self._flights.aclose()

    async def get(self, source: SourceConfig, ids: Sequence[int], deadline: Deadline) -> dict[int, ItemResult]:
        """Items by id (an exception for one we could not get), within ``deadline``."""
        out: dict[int, ItemResult] = {}
        now_mono = self.clock.monotonic()
        missing: list[int] = []
        for item_id in dict.fromkeys(ids):
            cached = self._memory.get((source.id, item_id))
            if cached is not None and now_mono - cached.fetched_mono < source.ttl_s:
                out[item_id] = cached.item
            else:
                missing.append(item_id)
        if missing:
            out.update(await self._stored(source, missing, deadline))
            missing = [i for i in missing if i not in out]
        if not missing:
            return out
        # The fetches are shared with other callers: they get a budget of their own,
        # not the deadline of whichever caller happened to start them.
        budget = Deadline.after(self.fetch_budget_s, self.clock)
        tasks = [self._flights.start((source.id, i), partial(self._fetch, source, i, budget)) for i in missing]
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
                fetched.append(cache_queries.CacheRow(source.id, f"{ITEM_KEY_PREFIX}{item_id}", payload, now, None, None))
        if fetched:
            self.cache.tasks.spawn(self.cache.quietly(lambda conn: cache_queries.put_many(conn, fetched)))
        return out

    async def stories(self, source: SourceConfig, ids: Sequence[int], budget: Deadline) -> Mapping[int, HNItem | None]:
        """The stories of one refresh. Any item we could not get fails the refresh: a
        partial list must not replace a complete copy (stale-if-error serves that)."""
        usable: dict[int, HNItem | None] = {}
        for item_id, result in (await self.get(source, ids, budget)).items():
            if isinstance(result, BadPayload):
                usable[item_id] = None  # one malformed item is a bad row: dropped and counted
            elif isinstance(result, SourceError):
                raise result
            elif isinstance(result, BaseException):
                raise UpstreamUnavailable(f"{source.id}: item fetch failed ({type(result).__name__})")
            else:
                usable[item_id] = result
        return usable

    async def _stored(self, source: SourceConfig, ids: list[int], deadline: Deadline) -> dict[int, HNItem | None]:
        db = self.cache.db
        keys = [f"{ITEM_KEY_PREFIX}{i}" for i in ids if not self._flights.in_flight((source.id, i))]
        if not keys or db is None or not db.available:
            return {}
        try:
            rows = await db.run(
                lambda conn: cache_queries.get_many(conn, source.id, keys), timeout_s=max(deadline.remaining(), MIN_WAIT_S)
            )
        except DatabaseUnavailable:
            return {}
        now = self.clock.now()
        now_mono = self.clock.monotonic()
        out: dict[int, HNItem | None] = {}
        for row in rows.values():
            age = (now - row.fetched_at).total_seconds()
            if age < source.ttl_s:
                item_id = int(row.request_key.removeprefix(ITEM_KEY_PREFIX))
                stored = row.payload.get("item")  # {"item": null}: HN has no such item
                item = HNItem.from_json(stored) if stored else None
                self._memory[(source.id, item_id)] = _CachedItem(item, now_mono - age)
                out[item_id] = item
        return out

    async def _fetch(self, source: SourceConfig, item_id: int, budget: Deadline) -> HNItem | None:
        adapter = ADAPTERS[source.kind]
        assert isinstance(adapter, HackerNewsAdapter)

        async def parse(resp: UpstreamResponse) -> HNItem | None:
            return parse_item(resp.content)

        item = await self.client.call(source, adapter.item_request(source, item_id), budget, parse)
        self._memory[(source.id, item_id)] = _CachedItem(item, self.clock.monotonic())
        return item
