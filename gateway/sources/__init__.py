"""Source adapters: one per upstream kind. Each knows how to ask its upstream and
how to turn the answer into :class:`~gateway.sources.base.NormalizedArticle` values.

Adapters do no caching, retrying or breaking: they talk to the upstream through a
:class:`SourceIO` the :class:`~gateway.service.SourceService` hands them, which
carries all of that. Parsing is done by pure functions (``newsapi``, ``feed``,
``hackernews`` modules) that ``SourceIO.parse`` may run in a worker process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any, ClassVar, Protocol

from gateway.settings import SourceConfig
from gateway.sources.base import HNItem, NormalizedArticle, Parsed, trim_newest

# Imported eagerly: a first import of feedparser costs ~50 ms, which would
# otherwise land on the event loop in the middle of the first refresh.
from gateway.sources.feed import parse_feed
from gateway.sources.hackernews import parse_topstories, story_to_article
from gateway.sources.newsapi import parse_newsapi
from gateway.upstream import UpstreamResponse


@dataclass(frozen=True, slots=True)
class Validators:
    """What makes the next request conditional."""

    etag: str | None = None
    last_modified: str | None = None

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.etag:
            h["If-None-Match"] = self.etag
        if self.last_modified:
            h["If-Modified-Since"] = self.last_modified
        return h


@dataclass(slots=True)
class FetchResult:
    articles: list[NormalizedArticle] = field(default_factory=list)
    dropped: int = 0
    not_modified: bool = False
    validators: Validators = field(default_factory=Validators)


class SourceIO(Protocol):
    """The upstream as an adapter sees it (resilience included)."""

    async def get(
        self,
        url: str,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
        parse: Callable[[UpstreamResponse], Awaitable[Any]] | None = None,
    ) -> Any:
        """The response, or with ``parse`` what ``parse(response)`` returns (not
        called for a 304). A BadPayload from ``parse`` counts as an upstream failure."""

    async def parse_articles(self, kind: str, body: bytes) -> Parsed: ...

    async def hn_items(self, ids: Sequence[int]) -> Mapping[int, HNItem | None]: ...


def _validators_of(resp: UpstreamResponse) -> Validators:
    return Validators(resp.headers.get("ETag"), resp.headers.get("Last-Modified"))


async def _articles_of(io: SourceIO, kind: str, resp: UpstreamResponse) -> FetchResult:
    parsed = await io.parse_articles(kind, resp.content)
    return FetchResult(parsed.articles, parsed.dropped, validators=_validators_of(resp))


class Adapter:
    kind: ClassVar[str]
    #: Whether the upstream filters by ``search`` itself; otherwise we filter locally.
    supports_search: ClassVar[bool] = False

    def request_key(self, search: str | None) -> str:
        """Cache key of one upstream request (per source)."""
        if self.supports_search and search:
            return f"q={search.strip().lower()}"
        return "latest"

    async def fetch(
        self, source: SourceConfig, search: str | None, io: SourceIO, validators: Validators | None
    ) -> FetchResult:
        raise NotImplementedError


class NewsAPIAdapter(Adapter):
    kind = "newsapi"
    supports_search = True

    async def fetch(
        self, source: SourceConfig, search: str | None, io: SourceIO, validators: Validators | None
    ) -> FetchResult:
        params = {"pageSize": str(min(source.page_size, 100))}
        if search:
            params["q"] = search
        headers = {"X-Api-Key": source.api_key} if source.api_key else {}
        return await io.get(source.url, params=params, headers=headers, parse=partial(_articles_of, io, self.kind))


class FeedAdapter(Adapter):
    kind = "feed"

    async def fetch(
        self, source: SourceConfig, search: str | None, io: SourceIO, validators: Validators | None
    ) -> FetchResult:
        result = await io.get(
            source.url,
            headers=validators.headers() if validators else None,
            parse=partial(_articles_of, io, self.kind),
        )
        if isinstance(result, UpstreamResponse):  # 304: parse was not called
            return FetchResult(not_modified=True, validators=validators or Validators())
        return result


class HackerNewsAdapter(Adapter):
    kind = "hackernews"

    async def fetch(
        self, source: SourceConfig, search: str | None, io: SourceIO, validators: Validators | None
    ) -> FetchResult:
        async def top_ids(resp: UpstreamResponse) -> tuple[list[int], Validators]:
            return parse_topstories(resp.content)[: source.page_size], _validators_of(resp)

        result = await io.get(
            hn_url(source, "topstories.json"), headers=validators.headers() if validators else None, parse=top_ids
        )
        if isinstance(result, UpstreamResponse):
            return FetchResult(not_modified=True, validators=validators or Validators())
        ids, new_validators = result
        items = await io.hn_items(ids)
        articles: list[NormalizedArticle] = []
        dropped = 0
        for item_id in ids:
            item = items.get(item_id)
            article = story_to_article(item, source.id) if item is not None else None
            if article is None:
                dropped += 1
            else:
                articles.append(article)
        return FetchResult(articles, dropped, validators=new_validators)


def hn_url(source: SourceConfig, path: str) -> str:
    return source.url.rstrip("/") + "/" + path


ADAPTERS: dict[str, Adapter] = {a.kind: a for a in (NewsAPIAdapter(), FeedAdapter(), HackerNewsAdapter())}


def parse_articles(body: bytes, kind: str, source_id: str, limit: int) -> Parsed:
    """Parse a whole payload and keep the ``limit`` newest rows. Module-level and
    pure, so it can run in a worker process; trimming there keeps what crosses
    back to the event loop small however big the feed."""
    if kind == "newsapi":
        parsed = parse_newsapi(body, source_id)
    elif kind == "feed":
        parsed = parse_feed(body, source_id)
    else:
        raise ValueError(f"no article parser for kind {kind!r}")
    return trim_newest(parsed, limit)
