"""What adapters take and produce: request specs, validators, normalised articles
and HN items.

Adapters turn a source's configuration into :class:`RequestSpec` values and one
upstream's payload into :class:`NormalizedArticle` values. Everything here is pure
data; parsing functions are module-level so they can run in a worker process (off
the event loop) for large payloads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit


@dataclass(frozen=True, slots=True)
class RequestSpec:
    """One GET to send to an upstream, as an adapter wants it."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    #: False for requests carrying a secret: an API key header would follow a redirect
    #: to any host.
    follow_redirects: bool = True


@dataclass(frozen=True, slots=True)
class Validators:
    """What makes the next request conditional."""

    etag: str | None = None
    last_modified: str | None = None

    @classmethod
    def of(cls, headers: Mapping[str, str]) -> Validators:
        """From a response's headers (a case-insensitive mapping)."""
        return cls(headers.get("ETag"), headers.get("Last-Modified"))

    def headers(self) -> dict[str, str]:
        h: dict[str, str] = {}
        if self.etag:
            h["If-None-Match"] = self.etag
        if self.last_modified:
            h["If-Modified-Since"] = self.last_modified
        return h


@dataclass(frozen=True, slots=True)
class StoryIds:
    """The first phase of a Hacker News refresh: the story ids, in rank order."""

    ids: tuple[int, ...]


def with_query(url: str, params: Mapping[str, str]) -> str:
    """``url`` with ``params`` merged into its own query: a source URL such as
    ``...?sources=bbc-news`` keeps its parameters, and ours replace same-named ones."""
    if not params:
        return url
    parts = urlsplit(url)
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True) if k not in params]
    return urlunsplit(parts._replace(query=urlencode([*kept, *params.items()], quote_via=quote)))


@dataclass(frozen=True, slots=True)
class NormalizedArticle:
    """One upstream item in the gateway's single ``Article`` shape."""

    id: str  # stable: derived from the canonical URL, or the upstream id without one
    source_id: str
    title: str
    url: str
    summary: str | None = None  # sanitised HTML / text, never scripts or event attributes
    author: str | None = None
    image_url: str | None = None
    published_at: datetime | None = None  # always timezone-aware UTC
    score: int | None = None  # hackernews only
    comment_count: int | None = None  # hackernews only
    comment_ids: tuple[int, ...] = ()  # hackernews only: top-level comment ids ("kids")

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "source_id": self.source_id,
            "title": self.title,
            "url": self.url,
            "summary": self.summary,
            "author": self.author,
            "image_url": self.image_url,
            "published_at": self.published_at.isoformat() if self.published_at else None,
            "score": self.score,
            "comment_count": self.comment_count,
            "comment_ids": list(self.comment_ids),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> NormalizedArticle:
        published = data.get("published_at")
        return cls(
            id=data["id"],
            source_id=data["source_id"],
            title=data["title"],
            url=data["url"],
            summary=data.get("summary"),
            author=data.get("author"),
            image_url=data.get("image_url"),
            published_at=datetime.fromisoformat(published) if published else None,
            score=data.get("score"),
            comment_count=data.get("comment_count"),
            comment_ids=tuple(data.get("comment_ids") or ()),
        )


@dataclass(frozen=True, slots=True)
class HNItem:
    """A Hacker News item as the gateway keeps it (stories and comments alike)."""

    id: int
    type: str
    by: str | None = None
    time: datetime | None = None
    text: str | None = None  # sanitised HTML
    title: str | None = None
    url: str | None = None
    score: int | None = None
    descendants: int | None = None
    kids: tuple[int, ...] = ()
    deleted: bool = False
    dead: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "by": self.by,
            "time": self.time.isoformat() if self.time else None,
            "text": self.text,
            "title": self.title,
            "url": self.url,
            "score": self.score,
            "descendants": self.descendants,
            "kids": list(self.kids),
            "deleted": self.deleted,
            "dead": self.dead,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> HNItem:
        t = data.get("time")
        return cls(
            id=data["id"],
            type=data["type"],
            by=data.get("by"),
            time=datetime.fromisoformat(t) if t else None,
            text=data.get("text"),
            title=data.get("title"),
            url=data.get("url"),
            score=data.get("score"),
            descendants=data.get("descendants"),
            kids=tuple(data.get("kids") or ()),
            deleted=bool(data.get("deleted")),
            dead=bool(data.get("dead")),
        )


@dataclass(slots=True)
class Parsed:
    """A parse result: the usable articles, and how many rows were dropped as bad."""

    articles: list[NormalizedArticle] = field(default_factory=list)
    dropped: int = 0


def utc(dt: datetime) -> datetime:
    """Return ``dt`` as an aware UTC datetime (naive values are taken to be UTC)."""
    if dt.tzinfo is None:
        return dt.replace(tzinfo=timezone.utc)
    return dt.astimezone(timezone.utc)


SortKey = tuple[bool, float, str]


def newest_first_key(article: NormalizedArticle) -> SortKey:
    """Sort key: newest first, undated last, then by id (stable across sources and calls)."""
    if article.published_at is None:
        return (True, 0.0, article.id)
    return (False, -article.published_at.timestamp(), article.id)


def trim_newest(parsed: Parsed, limit: int) -> Parsed:
    """Keep the ``limit`` newest articles (feeds can carry thousands of items)."""
    if len(parsed.articles) > limit:
        parsed.articles = sorted(parsed.articles, key=newest_first_key)[:limit]
    return parsed
