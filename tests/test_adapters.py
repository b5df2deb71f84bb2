"""Adapters are pure: request specs from configuration, results from bodies."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import orjson

from gateway.settings import parse_sources
from gateway.sources import ADAPTERS, HackerNewsAdapter, parse_body
from gateway.sources.base import HNItem, StoryIds, Validators

SOURCES = {
    s.id: s
    for s in parse_sources(
        {
            "sources": [
                {"id": "news", "name": "N", "kind": "newsapi", "url": "https://n.example/v2/top?sources=bbc&pageSize=9",
                 "api_key_env": "KEY"},
                {"id": "feed", "name": "F", "kind": "feed", "url": "https://f.example/rss"},
                {"id": "hn", "name": "H", "kind": "hackernews", "url": "https://hn.example/v0/", "page_size": 3},
            ]
        },
        env={"KEY": "secret"},
    )
}


def test_newsapi_request_keeps_the_url_s_query_adds_ours_and_refuses_redirects() -> None:
    spec = ADAPTERS["newsapi"].request(SOURCES["news"], "climate deal", None)
    query = parse_qs(urlsplit(spec.url).query)
    assert query == {"sources": ["bbc"], "pageSize": ["100"], "q": ["climate deal"]}
    assert spec.headers == {"X-Api-Key": "secret"} and spec.follow_redirects is False
    assert ADAPTERS["newsapi"].request_key(" Climate ") == "q=climate"


def test_feed_requests_are_conditional_when_validators_are_known() -> None:
    adapter = ADAPTERS["feed"]
    assert adapter.request(SOURCES["feed"], None, None).headers == {}
    spec = adapter.request(SOURCES["feed"], "ignored", Validators('"v1"', "Mon, 01 Jan 2024 00:00:00 GMT"))
    assert spec.url == "https://f.example/rss" and spec.follow_redirects
    assert spec.headers == {"If-None-Match": '"v1"', "If-Modified-Since": "Mon, 01 Jan 2024 00:00:00 GMT"}
    assert adapter.request_key("anything") == "latest"  # feeds are filtered locally


def test_hacker_news_is_two_phase() -> None:
    adapter = ADAPTERS["hackernews"]
    assert isinstance(adapter, HackerNewsAdapter) and adapter.has_items
    source = SOURCES["hn"]
    assert adapter.request(source, None, None).url == "https://hn.example/v0/topstories.json"
    ids = parse_body(orjson.dumps([5, "x", 3, 0, 8, 9]), "hackernews", "hn", source.page_size)
    assert ids == StoryIds((5, 3, 8))
    assert adapter.item_request(source, 5).url == "https://hn.example/v0/item/5.json"
    items = {
        5: HNItem(id=5, type="story", title="A story", url="https://a.example/"),
        3: HNItem(id=3, type="comment", text="not a story"),
        8: None,  # HN has no such item
    }
    parsed = adapter.assemble(source, ids, items)
    assert [a.title for a in parsed.articles] == ["A story"] and parsed.dropped == 2
