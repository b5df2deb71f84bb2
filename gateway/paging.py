"""Merging per-source article lists into one page, and the opaque cursors over it.

Every source's articles are cached newest first with their sort keys
(:class:`~gateway.service.CachedFeed`), so a page is a lazy k-way merge that
stops as soon as it has ``first + 1`` articles: the cost of a request grows with
the page size, not with how many articles the sources hold.
"""

from __future__ import annotations

import base64
import binascii
import heapq
from bisect import bisect_right
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from operator import itemgetter

from gateway.errors import BadUserInput
from gateway.sources.base import NormalizedArticle, SortKey

_CURSOR_VERSION = "v1"


def encode_cursor(article: NormalizedArticle) -> str:
    stamp = article.published_at.isoformat() if article.published_at else ""
    return base64.urlsafe_b64encode(f"{_CURSOR_VERSION}|{stamp}|{article.id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> SortKey:
    """The sort key a cursor stands for; a cursor survives its article leaving the cache."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        version, stamp, article_id = raw.split("|", 2)
        if version != _CURSOR_VERSION or not article_id:
            raise ValueError(version)
        if not stamp:
            return (True, 0.0, article_id)
        return (False, -datetime.fromisoformat(stamp).timestamp(), article_id)
    except (ValueError, UnicodeDecodeError, binascii.Error):
        raise BadUserInput("`after` is not a cursor issued by this API") from None


@dataclass(frozen=True, slots=True)
class Stream:
    """One source's articles, newest first, with their sort keys."""

    articles: Sequence[NormalizedArticle]
    keys: Sequence[SortKey]
    key_by_id: Mapping[str, SortKey]
    needle: str | None = None  # filter locally by this (lower-case) text


def _matches(article: NormalizedArticle, needle: str) -> bool:
    return needle in article.title.lower() or (article.summary is not None and needle in article.summary.lower())


def _entries(
    streams: Sequence[Stream], i: int, after: SortKey | None
) -> Iterator[tuple[SortKey, NormalizedArticle, str | None]]:
    stream = streams[i]
    others = [s.key_by_id for j, s in enumerate(streams) if j != i]
    start = bisect_right(stream.keys, after) if after is not None else 0
    needle = stream.needle
    for key, article in islice(zip(stream.keys, stream.articles, strict=True), start, None):
        # The same URL from two sources is one article, placed where its newest copy
        # sorts; skipping the others here keeps that true across pages too.
        article_id = article.id
        for o in others:  # a loop, not any(<generator>): this runs for every article merged
            k = o.get(article_id)
            if k is not None and k < key:
                break
        else:
            yield key, article, needle


def merge_page(
    streams: Sequence[Stream], *, first: int, after: SortKey | None = None, since: datetime | None = None
) -> tuple[list[NormalizedArticle], bool]:
    """The ``first`` newest articles after ``after`` (deduplicated by id), and whether
    more follow."""
    page: list[NormalizedArticle] = []
    seen: set[str] = set()
    for _key, article, needle in heapq.merge(*(_entries(streams, i, after) for i in range(len(streams))), key=itemgetter(0)):
        if since is not None and (article.published_at is None or article.published_at < since):
            break  # newest first, undated last: nothing after this can qualify
        if article.id in seen or (needle is not None and not _matches(article, needle)):
            continue
        seen.add(article.id)
        page.append(article)
        if len(page) > first:
            return page[:first], True
    return page, False
