"""Per-request DataLoaders (aiodataloader): batch and deduplicate within one request.

Each batch function returns one value or exception per key, in key order. They
are built per request by :func:`gateway.context.build_context`, inside the
running loop, so nothing cached here outlives the request (the durable and
cross-request caching is :class:`~gateway.service.SourceService`'s job).
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from aiodataloader import DataLoader

from gateway.errors import DatabaseUnavailable, UnknownSource
from gateway.outcomes import SourceOutcome, SourceStatus
from gateway.resilience.deadline import Deadline
from gateway.service import SourceService
from gateway.settings import Settings, SourceConfig
from gateway.sources.base import HNItem, NormalizedArticle

if TYPE_CHECKING:
    from gateway.reads import ReadLog


@dataclass(frozen=True, slots=True)
class FeedKey:
    """One upstream request: a source and the search it is asked (None: latest)."""

    source_id: str
    search: str | None = None


class FeedLoader(DataLoader[FeedKey, SourceOutcome]):
    """Source outcomes by (source, search): one upstream request per distinct key per
    request, however deeply the query nests ``articles``."""

    def __init__(
        self, settings: Settings, service: SourceService, deadline: Deadline, outcomes: list[SourceOutcome],
        reads: ReadLog | None = None,
    ) -> None:
        super().__init__()
        self._settings = settings
        self._service = service
        self._deadline = deadline
        self._outcomes = outcomes
        self._reads = reads
        self._asked: set[FeedKey] = set()  # every key asked of this loader, by any path
        # Outcomes prime_fresh() found, put into the DataLoader's own cache only if the
        # key is loaded again (that costs a future each; most requests never do).
        self._primed: dict[FeedKey, SourceOutcome] = {}

    def load(self, key: FeedKey) -> asyncio.Future[SourceOutcome]:
        self._asked.add(key)
        primed = self._primed.pop(key, None)
        if primed is not None:
            self.prime(key, primed)
        return super().load(key)

    def prime_fresh(self, keys: Sequence[FeedKey]) -> list[SourceOutcome] | None:
        """Primes this loader with the keys this process holds fresh and nobody asked yet;
        their outcomes, in key order, when that is every key: then the caller needs no
        batch, no task and no turn of the event loop. None otherwise (``load_many`` then
        answers the primed keys from the cache and batches the rest)."""
        settings, service = self._settings, self._service
        complete = True
        fresh: dict[FeedKey, SourceOutcome] = {}
        for key in dict.fromkeys(keys):
            source = settings.source(key.source_id) if key not in self._asked else None
            outcome = service.fetch_fresh(source, key.search) if source is not None else None
            if outcome is None:
                complete = False
                continue
            self._asked.add(key)
            self._primed[key] = outcome
            self._record(key, outcome)
            fresh[key] = outcome
        return [fresh[key] for key in keys] if complete else None

    def _record(self, key: FeedKey, outcome: SourceOutcome) -> None:
        self._outcomes.append(outcome)
        if self._reads is not None:
            self._reads.outcome(outcome, self._service.adapter(outcome.source).request_key(key.search))

    async def batch_load_fn(self, keys: Sequence[FeedKey]) -> list[SourceOutcome]:
        settings = self._settings

        async def one(key: FeedKey) -> SourceOutcome:
            source = settings.source(key.source_id)
            if source is None:  # removed from the sources file since an article was cached
                removed = SourceConfig(id=key.source_id, name=key.source_id, kind="feed", url="http://removed.invalid/")
                return SourceOutcome(removed, SourceStatus.SKIPPED, error=UnknownSource("source no longer configured"))
            return await self._service.fetch(source, key.search, self._deadline)

        # Warm keys answer at once; only the others need a task each (gather's).
        service = self._service
        found: list[SourceOutcome | None] = []
        for key in keys:
            source = settings.source(key.source_id)
            found.append(service.fetch_fresh(source, key.search) if source is not None else None)
        missing = [i for i, outcome in enumerate(found) if outcome is None]
        if missing:
            fetched = await asyncio.gather(*(one(keys[i]) for i in missing))
            for i, outcome in zip(missing, fetched, strict=True):
                found[i] = outcome
        for key, outcome in zip(keys, found, strict=True):
            self._record(key, outcome)  # type: ignore[arg-type]  # every one filled in
        return found  # type: ignore[return-value]


class ArticleLoader(DataLoader[str, "NormalizedArticle | None"]):
    """Articles by id from Postgres: one ``WHERE id = ANY($1)`` per batch."""

    def __init__(self, service: SourceService, deadline: Deadline, reads: ReadLog | None = None) -> None:
        super().__init__()
        self._service = service
        self._deadline = deadline
        self._reads = reads

    async def batch_load_fn(self, keys: Sequence[str]) -> list[NormalizedArticle | None | Exception]:
        try:
            found = await self._service.articles_by_id(keys, self._deadline)
        except DatabaseUnavailable as exc:
            return [exc for _ in keys]
        if self._reads is not None:
            self._reads.articles(found.values(), missing=len(found) < len(set(keys)))
        return [found.get(k) for k in keys]


class HNItemLoader(DataLoader[tuple[str, int], "HNItem | None"]):
    """Hacker News items by (source id, item id). A comment tree loads one level per
    batch; each item is fetched at most once per request (and per TTL across them)."""

    def __init__(
        self, settings: Settings, service: SourceService, deadline: Deadline, reads: ReadLog | None = None
    ) -> None:
        super().__init__()
        self._settings = settings
        self._service = service
        self._deadline = deadline
        self._reads = reads

    async def batch_load_fn(self, keys: Sequence[tuple[str, int]]) -> list[HNItem | None]:
        if self._reads is not None:
            self._reads.items(keys)
        by_source: dict[str, list[int]] = defaultdict(list)
        for source_id, item_id in keys:
            by_source[source_id].append(item_id)
        settings = self._settings

        async def items_of(sid: str, ids: list[int]) -> dict[int, HNItem | None | BaseException]:
            source = settings.source(sid)
            if source is None:  # an article cached by a source since removed from the sources file
                return {}
            return await self._service.hn_items(source, ids, self._deadline)

        results = await asyncio.gather(*(items_of(sid, ids) for sid, ids in by_source.items()))
        merged = {sid: r for sid, r in zip(by_source, results, strict=True)}
        # An item we could not get is left out (None), not raised: comment lists are
        # non-null, and one missing comment must not null the whole answer.
        out: list[HNItem | None] = []
        for sid, item_id in keys:
            item = merged[sid].get(item_id)
            out.append(None if isinstance(item, BaseException) else item)
        return out


class Loaders:
    """The request's loaders, each built on first use: most queries need one of them."""

    __slots__ = ("_settings", "_service", "_deadline", "_outcomes", "_reads", "_feeds", "_articles", "_hn_items")

    def __init__(
        self, settings: Settings, service: SourceService, deadline: Deadline, *, outcomes: list[SourceOutcome],
        reads: ReadLog | None = None,
    ) -> None:
        self._settings = settings
        self._service = service
        self._deadline = deadline
        self._outcomes = outcomes
        self._reads = reads
        self._feeds: FeedLoader | None = None
        self._articles: ArticleLoader | None = None
        self._hn_items: HNItemLoader | None = None

    @classmethod
    def create(
        cls, settings: Settings, service: SourceService, deadline: Deadline, *, outcomes: list[SourceOutcome],
        reads: ReadLog | None = None,
    ) -> Loaders:
        return cls(settings, service, deadline, outcomes=outcomes, reads=reads)

    @property
    def feeds(self) -> FeedLoader:
        if self._feeds is None:
            self._feeds = FeedLoader(self._settings, self._service, self._deadline, self._outcomes, self._reads)
        return self._feeds

    @property
    def articles(self) -> ArticleLoader:
        if self._articles is None:
            self._articles = ArticleLoader(self._service, self._deadline, self._reads)
        return self._articles

    @property
    def hn_items(self) -> HNItemLoader:
        if self._hn_items is None:
            self._hn_items = HNItemLoader(self._settings, self._service, self._deadline, self._reads)
        return self._hn_items
