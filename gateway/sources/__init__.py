"""Source adapters: one per upstream kind, pure functions of their input.

An adapter builds :class:`~gateway.sources.base.RequestSpec` values from a source's
configuration and a search, and turns response bodies into normalised results. It
does no I/O: the source service sends the requests (with caching, breakers,
bulkheads and retries) and hands the bodies back to :func:`parse_body`, which may
run in a worker process. Hacker News is two-phase: the story ids, then one request
per item (:meth:`HackerNewsAdapter.item_request`), assembled by
:meth:`HackerNewsAdapter.assemble`.

Nothing here imports network, database or service code (a test checks).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from gateway.settings import SOURCE_KINDS, SourceConfig
from gateway.sources.base import (
    HNItem,
    NormalizedArticle,
    Parsed,
    RequestSpec,
    StoryIds,
    Validators,
    trim_newest,
    with_query,
)

# Imported eagerly: a first import of feedparser costs ~50 ms, which would
# otherwise land on the event loop in the middle of the first refresh.
from gateway.sources.feed import parse_feed
from gateway.sources.hackernews import parse_item, parse_topstories, story_to_article
from gateway.sources.newsapi import parse_newsapi

#: NewsAPI's largest page.
NEWSAPI_MAX_PAGE_SIZE = 100


class Adapter:
    kind: ClassVar[str]
    #: Whether the upstream filters by ``search`` itself; otherwise we filter locally.
    supports_search: ClassVar[bool] = False
    #: Whether a refresh has a second phase of item requests (Hacker News).
    has_items: ClassVar[bool] = False

    def request_key(self, search: str | None) -> str:
        """Cache key of one upstream request (per source)."""
        if self.supports_search and search:
            return f"q={search.strip().lower()}"
        return "latest"

    def request(self, source: SourceConfig, search: str | None, validators: Validators | None) -> RequestSpec:
        raise NotImplementedError


class NewsAPIAdapter(Adapter):
    kind = "newsapi"
    supports_search = True

    def request(self, source: SourceConfig, search: str | None, validators: Validators | None) -> RequestSpec:
        params = {"pageSize": str(min(source.page_size, NEWSAPI_MAX_PAGE_SIZE))}
        if search:
            params["q"] = search
        headers = {"X-Api-Key": source.api_key} if source.api_key else {}
        return RequestSpec(with_query(source.url, params), headers, follow_redirects=not source.api_key)


class FeedAdapter(Adapter):
    kind = "feed"

    def request(self, source: SourceConfig, search: str | None, validators: Validators | None) -> RequestSpec:
        return RequestSpec(source.url, validators.headers() if validators else {})


class HackerNewsAdapter(Adapter):
    kind = "hackernews"
    has_items = True

    def request(self, source: SourceConfig, search: str | None, validators: Validators | None) -> RequestSpec:
        return RequestSpec(_hn_url(source, "topstories.json"), validators.headers() if validators else {})

    def item_request(self, source: SourceConfig, item_id: int) -> RequestSpec:
        return RequestSpec(_hn_url(source, f"item/{item_id}.json"))

    def assemble(self, source: SourceConfig, ids: StoryIds, items: Mapping[int, HNItem | None]) -> Parsed:
        """The articles of the stories in ``ids`` (rank order); an item missing from
        ``items``, or not a live story, is a dropped row."""
        articles: list[NormalizedArticle] = []
        dropped = 0
        for item_id in ids.ids:
            item = items.get(item_id)
            article = story_to_article(item, source.id) if item is not None else None
            if article is None:
                dropped += 1
            else:
                articles.append(article)
        return Parsed(articles, dropped)


def _hn_url(source: SourceConfig, path: str) -> str:
    return source.url.rstrip("/") + "/" + path


ADAPTERS: dict[str, Adapter] = {a.kind: a for a in (NewsAPIAdapter(), FeedAdapter(), HackerNewsAdapter())}
assert tuple(ADAPTERS) == SOURCE_KINDS, "every source kind has exactly one adapter"


def parse_body(body: bytes, kind: str, source_id: str, limit: int) -> Parsed | StoryIds:
    """Parse a whole first-phase payload: articles (the ``limit`` newest) or, for Hacker
    News, the first ``limit`` story ids. Module-level and pure, so it can run in a
    worker process; trimming there keeps what crosses back to the event loop small
    however big the feed."""
    if kind == "newsapi":
        return trim_newest(parse_newsapi(body, source_id), limit)
    if kind == "feed":
        return trim_newest(parse_feed(body, source_id), limit)
    if kind == "hackernews":
        return StoryIds(tuple(parse_topstories(body)[:limit]))
    raise ValueError(f"no parser for kind {kind!r}")


__all__ = [
    "ADAPTERS",
    "Adapter",
    "HackerNewsAdapter",
    "HNItem",
    "Parsed",
    "RequestSpec",
    "StoryIds",
    "Validators",
    "parse_body",
    "parse_item",
]
