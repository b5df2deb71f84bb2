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
