"""Merging per-source article lists into one page, and the opaque cursors over it.

Every source's articles are cached newest first with their sort keys
(:class:`~gateway.service.CachedFeed`), so a page is a lazy k-way merge that goes
only as far as ``first + 1`` articles past the cursor: the cost of a request grows
with the page size, not with how many articles the sources hold. The merge of a set
of feeds is kept (:class:`PageViews`) while those feeds are current, so the requests
that page through the same feeds continue one merge instead of each starting over.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import weakref
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping, Sequence
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


class MergedFeeds:
    """The merged, deduplicated, newest-first order of some streams, materialised only
    as far as pages have asked, with each position's cursor computed once.

    Kept across requests by :class:`PageViews` for as long as its feeds are current, so
    the requests that read the same feeds (a front page with 20 page sizes, the next
    page, the one after) share one merge instead of repeating it.

    A page starting ``after`` a cursor is the same slice of this order that a merge
    starting there would produce: duplicates of an article share its sort key, so a
    cursor never falls between them, and skipping ones already taken (or not
    matching the search) does not depend on where the page starts."""

    __slots__ = ("_source", "_seen", "keys", "articles", "_cursors", "_exhausted", "__weakref__")

    def __init__(self, streams: Sequence[Stream]) -> None:
        self._source = heapq.merge(*(_entries(streams, i, None) for i in range(len(streams))), key=itemgetter(0))
        self._seen: set[str] = set()
        self.keys: list[SortKey] = []
        self.articles: list[NormalizedArticle] = []
        self._cursors: list[str | None] = []
        self._exhausted = False

    def _fill(self, wanted: int | None = None, past: SortKey | None = None) -> None:
        """Materialise until ``wanted`` articles are known, or one after ``past``."""
        if self._exhausted:
            return
        keys, articles, seen = self.keys, self.articles, self._seen
        for key, article, needle in self._source:
            if article.id in seen or (needle is not None and not _matches(article, needle)):
                continue
            seen.add(article.id)
            keys.append(key)
            articles.append(article)
            if (wanted is not None and len(articles) >= wanted) or (past is not None and key > past):
                return
        self._exhausted = True

    def page(self, *, first: int, after: SortKey | None = None, since: datetime | None = None) -> tuple[int, int, bool]:
        """``(start, stop, has_next)``: positions of the ``first`` newest articles after
        ``after`` (and published at or after ``since``), and whether more follow."""
        if after is None:
            start = 0
        else:
            if not self.keys or self.keys[-1] <= after:
                self._fill(past=after)
            start = bisect_right(self.keys, after)
        if len(self.articles) < start + first + 1:
            self._fill(wanted=start + first + 1)
        stop = min(start + first + 1, len(self.articles))
        if since is not None:
            articles = self.articles
            for i in range(start, stop):
                published = articles[i].published_at
                if published is None or published < since:
                    stop = i  # newest first, undated last: nothing after this can qualify
                    break
        if stop - start > first:
            return start, start + first, True
        return start, stop, False

    def cursor(self, i: int) -> str:
        cursors = self._cursors
        if len(cursors) <= i:
            cursors.extend([None] * (len(self.articles) - len(cursors)))
        cursor = cursors[i]
        if cursor is None:
            cursor = cursors[i] = encode_cursor(self.articles[i])
        return cursor


def merge_page(
    streams: Sequence[Stream], *, first: int, after: SortKey | None = None, since: datetime | None = None
) -> tuple[list[NormalizedArticle], bool]:
    """The ``first`` newest articles after ``after`` (deduplicated by id), and whether
    more follow (one merge, not kept: :class:`PageViews` keeps them)."""
    view = MergedFeeds(streams)
    start, stop, has_next = view.page(first=first, after=after, since=since)
    return view.articles[start:stop], has_next


#: How many merged views :class:`PageViews` keeps (each distinct set of sources and search
#: text is one; a view's memory is references to its feeds' articles, plus cursors).
PAGE_VIEWS_MAX = 128


class PageViews:
    """Merged views of feeds, kept while every feed in them is current (process-lifetime).

    Keyed by the feeds' identities (and each stream's local search): a refresh brings
    a new feed object, so a view never outlives the data it merged. Feeds are held
    weakly: when the cache lets one go, the views over it go too. At most
    :data:`PAGE_VIEWS_MAX`, least recently used out first."""

    def __init__(self, max_views: int = PAGE_VIEWS_MAX) -> None:
        self.max_views = max_views
        self._views: OrderedDict[tuple, tuple[tuple[weakref.ref, ...], MergedFeeds]] = OrderedDict()
        self.built = 0

    def __len__(self) -> int:
        return len(self._views)

    def view(self, feeds: Sequence[object | None], streams: Sequence[Stream]) -> MergedFeeds:
        """The view of ``streams``, which were made of ``feeds`` (None: a source without
        data); a new one when this combination is not kept."""
        key = tuple((id(feed), stream.needle) for feed, stream in zip(feeds, streams, strict=True))
        entry = self._views.get(key)
        if entry is not None:
            refs, view = entry
            if all(ref() is feed for ref, feed in zip(refs, feeds, strict=True)):
                self._views.move_to_end(key)
                return view
        view = MergedFeeds(streams)
        self.built += 1
        forget = self._forgetter(key)
        refs = tuple(_no_feed if feed is None else weakref.ref(feed, forget) for feed in feeds)
        self._views[key] = (refs, view)
        if len(self._views) > self.max_views:
            self._views.popitem(last=False)
        return view

    def _forgetter(self, key: tuple) -> Callable[[weakref.ref], None]:
        views = weakref.ref(self._views)

        def forget(_ref: weakref.ref) -> None:
            held = views()
            if held is not None:
                held.pop(key, None)

        return forget


def _no_feed() -> None:
    """Stands in for the weak reference of a missing feed: calling it gives None."""
    return None
