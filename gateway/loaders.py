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

from aiodataloader import DataLoader

from gateway.errors import DatabaseUnavailable
from gateway.outcomes import SourceOutcome
from gateway.resilience.deadline import Deadline
from gateway.service import SourceService
from gateway.sources.base import HNItem, NormalizedArticle


@dataclass(frozen=True, slots=True)
class FeedKey:
    """One upstream request: a source and the search it is asked (None: latest)."""

    source_id: str
    search: str | None = None


class FeedLoader(DataLoader[FeedKey, SourceOutcome]):
    """Source outcomes by (source, search): one upstream request per distinct key per
    request, however deeply the query nests ``articles``."""

    def __init__(self, service: SourceService, deadline: Deadline) -> None:
        super().__init__()
        self._service = service
        self._deadline = deadline

    async def batch_load_fn(self, keys: Sequence[FeedKey]) -> list[SourceOutcome]:
        settings = self._service.settings
        return list(
            await asyncio.gather(
                *(self._service.fetch(settings.source(k.source_id), k.search, self._deadline) for k in keys)  # type: ignore[arg-type]
            )
        )


class ArticleLoader(DataLoader[str, "NormalizedArticle | None"]):
    """Articles by id from Postgres: one ``WHERE id = ANY($1)`` per batch."""

    def __init__(self, service: SourceService, deadline: Deadline) -> None:
        super().__init__()
        self._service = service
        self._deadline = deadline

    async def batch_load_fn(self, keys: Sequence[str]) -> list[NormalizedArticle | None | Exception]:
        try:
            found = await self._service.articles_by_id(keys, self._deadline)
        except DatabaseUnavailable as exc:
            return [exc for _ in keys]
        return [found.get(k) for k in keys]


class HNItemLoader(DataLoader[tuple[str, int], "HNItem | None"]):
    """Hacker News items by (source id, item id). A comment tree loads one level per
    batch; each item is fetched at most once per request (and per TTL across them)."""

    def __init__(self, service: SourceService, deadline: Deadline) -> None:
        super().__init__()
        self._service = service
        self._deadline = deadline

    async def batch_load_fn(self, keys: Sequence[tuple[str, int]]) -> list[HNItem | None | BaseException]:
        by_source: dict[str, list[int]] = defaultdict(list)
        for source_id, item_id in keys:
            by_source[source_id].append(item_id)
        settings = self._service.settings
        results = await asyncio.gather(
            *(
                self._service.hn_items(settings.source(sid), ids, self._deadline)  # type: ignore[arg-type]
                for sid, ids in by_source.items()
            )
        )
        merged = {sid: r for sid, r in zip(by_source, results, strict=True)}
        return [merged[sid].get(item_id) for sid, item_id in keys]


@dataclass(slots=True)
class Loaders:
    feeds: FeedLoader
    articles: ArticleLoader
    hn_items: HNItemLoader

    @classmethod
    def create(cls, service: SourceService, deadline: Deadline) -> Loaders:
        return cls(FeedLoader(service, deadline), ArticleLoader(service, deadline), HNItemLoader(service, deadline))
