"""merge_page: lazy k-way merge of per-source lists, dedupe, cursors, filters."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from gateway.errors import BadUserInput
from gateway.paging import Stream, decode_cursor, encode_cursor, merge_page
from gateway.sources.base import NormalizedArticle, newest_first_key

T0 = datetime(2026, 11, 1, tzinfo=timezone.utc)


def art(aid: str, hours: float | None, source: str = "s", title: str = "t") -> NormalizedArticle:
    when = None if hours is None else T0 - timedelta(hours=hours)
    return NormalizedArticle(id=aid, source_id=source, title=title, url=f"https://x/{aid}", published_at=when)


def stream(*articles: NormalizedArticle, needle: str | None = None) -> Stream:
    ordered = sorted(articles, key=newest_first_key)
    keys = [newest_first_key(a) for a in ordered]
    return Stream(ordered, keys, {k[2]: k for k in keys}, needle)


def ids(page: list[NormalizedArticle]) -> list[str]:
    return [a.id for a in page]


def test_merges_newest_first_and_undated_last() -> None:
    a = stream(art("a1", 1), art("a3", 3), art("a-undated", None))
    b = stream(art("b2", 2), art("b4", 4))
    page, more = merge_page([a, b], first=10)
    assert ids(page) == ["a1", "b2", "a3", "b4", "a-undated"] and not more


def test_walking_cursors_visits_every_article_once_even_with_duplicates() -> None:
    # "dup" is in both sources with different dates: it belongs where its newest copy sorts
    a = stream(*(art(f"a{i}", i) for i in range(0, 20, 2)), art("dup", 5))
    b = stream(*(art(f"b{i}", i) for i in range(1, 20, 2)), art("dup", 11))
    everything, _ = merge_page([a, b], first=100)
    assert len(everything) == len(set(ids(everything))) == 21
    seen: list[str] = []
    after = None
    while True:
        page, more = merge_page([a, b], first=4, after=after)
        seen += ids(page)
        if not more:
            break
        after = decode_cursor(encode_cursor(page[-1]))
    assert seen == ids(everything)


def test_since_stops_at_the_first_older_article() -> None:
    a = stream(art("new", 1), art("old", 30), art("undated", None))
    page, more = merge_page([a], first=10, since=T0 - timedelta(hours=2))
    assert ids(page) == ["new"] and not more


def test_local_search_applies_only_to_its_stream() -> None:
    a = stream(art("match", 1, title="Rust news"), art("miss", 2, title="Other"), needle="rust")
    b = stream(art("server-filtered", 3, title="Anything"))
    page, _ = merge_page([a, b], first=10)
    assert ids(page) == ["match", "server-filtered"]


def test_bad_cursor() -> None:
    with pytest.raises(BadUserInput):
        decode_cursor("bm9wZQ")


def test_one_kept_view_pages_like_a_merge_made_for_each_page() -> None:
    import random

    from gateway.paging import MergedFeeds

    rng = random.Random(7)
    pool = [art(f"x{i}", rng.choice([None, *range(40)]), title=rng.choice(["cat", "dog"])) for i in range(60)]
    streams = [stream(*rng.sample(pool, 25)), stream(*rng.sample(pool, 25), needle="cat"), stream(*rng.sample(pool, 10))]
    kept = MergedFeeds(streams)
    everything, _ = merge_page(streams, first=200)
    cursors = [None, *(decode_cursor(encode_cursor(a)) for a in everything)]
    asks = [(first, after, since) for first in (0, 1, 3, 10) for after in cursors
            for since in (None, T0 - timedelta(hours=20))]
    rng.shuffle(asks)  # pages asked in any order: the kept view materialises as far as each needs
    for first, after, since in asks:
        start, stop, more = kept.page(first=first, after=after, since=since)
        assert (kept.articles[start:stop], more) == merge_page(streams, first=first, after=after, since=since)
        assert [kept.cursor(i) for i in range(start, stop)] == [encode_cursor(a) for a in kept.articles[start:stop]]


def test_views_are_kept_while_their_feeds_are_current() -> None:
    import gc

    from gateway.outcomes import CachedFeed
    from gateway.paging import PageViews
    from gateway.sources.base import Validators

    def feed(*articles: NormalizedArticle) -> CachedFeed:
        return CachedFeed.build(articles, 0, T0, Validators())

    def streams_of(*feeds: CachedFeed | None) -> list[Stream]:
        return [Stream(f.articles, f.sort_keys, f.key_by_id) if f else Stream((), (), {}) for f in feeds]

    views = PageViews(max_views=2)
    a, b = feed(art("a1", 1), art("a2", 2)), feed(art("b1", 1.5))
    first = views.view([a, b, None], streams_of(a, b, None))
    assert views.view([a, b, None], streams_of(a, b, None)) is first and views.built == 1
    assert ids(first.articles[slice(*first.page(first=5)[:2])]) == ["a1", "b1", "a2"]
    b2 = feed(art("b1", 1.5), art("b0", 0.5))  # b refreshed: a new feed object, a new view
    second = views.view([a, b2, None], streams_of(a, b2, None))
    assert second is not first and views.built == 2 and len(views) == 2
    del first, b
    gc.collect()
    assert len(views) == 1  # b is gone: so is the view over it
    views.view([b2], streams_of(b2))
    views.view([a], streams_of(a))
    assert len(views) == 2  # bounded: the least recently used went first
