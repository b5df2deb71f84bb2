"""The offline demo upstream, over real sockets: shapes, paging, conditional GETs,
every fault knob, counters and controls.

One server serves the whole module (starting one costs ~0.1 s); an autouse fixture
resets its counters and faults before each test so tests stay independent.
"""

from __future__ import annotations

import threading
import time
from calendar import timegm
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import feedparser
import httpx
import orjson
import pytest

from gateway.demo.data import (
    FEED_DEFECTS,
    HN_FIRST_ID,
    NEWSAPI_DEFECTS,
    SHARED_ARTICLE_URL,
    SHARED_TECH_TRACKING,
    SHARED_TECH_URL,
    DemoDataset,
)
from gateway.demo.server import DemoControl, DemoServer

ANCHOR = datetime(2025, 1, 6, 10, 0, tzinfo=UTC)
ARTICLE_KEYS = {"source", "author", "title", "description", "url", "urlToImage", "publishedAt", "content"}


@pytest.fixture(scope="module")
def demo() -> Iterator[DemoServer]:
    with DemoServer(anchor=ANCHOR) as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_demo(demo: DemoServer) -> None:
    demo.control.reset()


@pytest.fixture
def client(demo: DemoServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=demo.url, timeout=5.0) as c:
        yield c


def _entry_time(entry: Any) -> Any:
    # Plain dict lookups: FeedParserDict.get("updated_parsed") falls back to
    # published_parsed with a DeprecationWarning, which this project treats as an error.
    return dict.get(entry, "published_parsed") or dict.get(entry, "updated_parsed")


def _parse_iso(value: str) -> datetime:
    return datetime.fromisoformat(value.replace("Z", "+00:00"))


# --- NewsAPI ---------------------------------------------------------------------


def test_top_headlines_has_the_newsapi_v2_shape(client: httpx.Client) -> None:
    r = client.get("/newsapi/v2/top-headlines", params={"sources": "bbc-news"})
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    body = r.json()
    assert body["status"] == "ok"
    assert body["totalResults"] == 30
    articles = body["articles"]
    assert len(articles) == 20  # default pageSize
    for a in articles:
        assert set(a) == ARTICLE_KEYS
        assert a["source"] == {"id": "bbc-news", "name": "BBC News"}
        assert isinstance(a["title"], str) and a["url"].startswith("https://")
        assert _parse_iso(a["publishedAt"]) <= ANCHOR
    dates = [_parse_iso(a["publishedAt"]) for a in articles]
    assert dates == sorted(dates, reverse=True)  # newest first


def test_everything_pages_through_several_sources(client: httpx.Client) -> None:
    def page(n: int) -> dict[str, Any]:
        r = client.get("/newsapi/v2/everything", params={"sources": "bbc-news, reuters", "pageSize": 50, "page": n})
        assert r.status_code == 200
        body: dict[str, Any] = r.json()
        return body

    pages = [page(n) for n in (1, 2, 3)]
    assert {p["totalResults"] for p in pages} == {120}
    assert [len(p["articles"]) for p in pages] == [50, 50, 20]
    everything = [a for p in pages for a in p["articles"]]
    assert len({a["url"] for a in everything}) == 120
    assert {a["source"]["id"] for a in everything} == {"bbc-news", "reuters"}
    dates = [_parse_iso(a["publishedAt"]) for a in everything]
    assert dates == sorted(dates, reverse=True)
    assert page(4)["articles"] == []


def test_top_headlines_without_sources_serves_all_sources(client: httpx.Client) -> None:
    body = client.get("/newsapi/v2/top-headlines", params={"pageSize": 100}).json()
    assert body["totalResults"] == 90
    assert {a["source"]["id"] for a in body["articles"]} == {"bbc-news", "reuters", "the-verge"}


def test_q_filters_title_and_description_case_insensitively(client: httpx.Client) -> None:
    body = client.get("/newsapi/v2/everything", params={"sources": "the-verge", "q": "JSON PARSER", "pageSize": 100}).json()
    assert body["totalResults"] >= 1
    assert len(body["articles"]) == body["totalResults"]
    for a in body["articles"]:
        assert "json parser" in (a["title"] + " " + (a["description"] or "")).lower()
    assert SHARED_TECH_URL in {a["url"] for a in body["articles"]}
    none = client.get("/newsapi/v2/everything", params={"q": "no-such-words-anywhere"}).json()
    assert none == {"status": "ok", "totalResults": 0, "articles": []}


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({"pageSize": "0"}, "parameterInvalid"),
        ({"pageSize": "101"}, "parameterInvalid"),
        ({"pageSize": "lots"}, "parameterInvalid"),
        ({"page": "0"}, "parameterInvalid"),
        ({"sources": "bbc-news,nope"}, "sourceDoesNotExist"),
    ],
)
def test_bad_newsapi_parameters_get_newsapi_errors(client: httpx.Client, params: dict[str, str], code: str) -> None:
    r = client.get("/newsapi/v2/top-headlines", params=params)
    assert r.status_code == 400
    body = r.json()
    assert body["status"] == "error" and body["code"] == code and body["message"]


# --- feeds -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "version", "media_type"),
    [
        ("rss", "rss20", "application/rss+xml"),
        ("atom", "atom10", "application/atom+xml"),
        ("rdf", "rss10", "application/rdf+xml"),
    ],
)
def test_feeds_parse_with_feedparser_and_dates_are_right(client: httpx.Client, fmt: str, version: str, media_type: str) -> None:
    r = client.get(f"/feeds/science.{fmt}")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith(media_type)
    parsed = feedparser.parse(r.content)
    assert not parsed.bozo, parsed.get("bozo_exception")
    assert parsed.version == version
    assert len(parsed.entries) == 40
    expected = DemoDataset(ANCHOR).feed_items("science")
    for entry, item in zip(parsed.entries, expected, strict=True):
        assert entry.title == item.title
        assert entry.link == item.link
        # Every zone spelling (GMT, UT, EST, PST, +0200, RFC 3339 offsets) means the same instant.
        struct = _entry_time(entry)
        assert datetime.fromtimestamp(timegm(struct), UTC) == item.published


def test_rss_dates_use_varied_rfc822_zones(client: httpx.Client) -> None:
    dates = [e.published for e in feedparser.parse(client.get("/feeds/tech.rss").content).entries]
    zones = {d.rsplit(" ", 1)[-1] for d in dates}
    assert {"GMT", "EST", "+0200"} <= zones
    atom = client.get("/feeds/tech.atom").text
    assert "Z</published>" in atom and "+02:00</published>" in atom


def test_feed_summaries_carry_hostile_html(client: httpx.Client) -> None:
    for fmt in ("rss", "atom"):
        # feedparser sanitises by default; turn that off to see what the upstream sent.
        entries = feedparser.parse(client.get(f"/feeds/world.{fmt}").content, sanitize_html=False).entries
        summaries = [e.summary for e in entries]
        assert any("<script>" in s for s in summaries)
        assert any("onclick=" in s for s in summaries)
        assert sum("<script>" in s for s in summaries) <= 5  # "a few", not every item


def test_shared_urls_support_cross_source_dedupe(client: httpx.Client) -> None:
    bbc = client.get("/newsapi/v2/top-headlines", params={"sources": "bbc-news", "pageSize": 100}).json()
    world = feedparser.parse(client.get("/feeds/world.atom").content)
    assert SHARED_ARTICLE_URL in {a["url"] for a in bbc["articles"]}
    assert SHARED_ARTICLE_URL in {e.link for e in world.entries}
    tech = feedparser.parse(client.get("/feeds/tech.rss").content)
    assert SHARED_TECH_URL + SHARED_TECH_TRACKING in {e.link for e in tech.entries}


def test_unknown_feed_is_404_and_bad_items_is_400(client: httpx.Client) -> None:
    assert client.get("/feeds/nope.rss").status_code == 404
    assert client.get("/feeds/tech.rss", params={"items": "-1"}).status_code == 400
    assert client.get("/feeds/tech.rss", params={"items": "many"}).status_code == 400


def test_items_param_extends_a_feed_keeping_its_head(client: httpx.Client) -> None:
    small = feedparser.parse(client.get("/feeds/tech.rss").content).entries
    big = feedparser.parse(client.get("/feeds/tech.rss", params={"items": 120}).content).entries
    assert len(big) == 120
    assert [e.link for e in big[:40]] == [e.link for e in small]


def test_a_five_megabyte_feed_can_be_produced(client: httpx.Client) -> None:
    r = client.get("/feeds/big.rss", params={"items": 12000})
    assert r.status_code == 200
    assert len(r.content) >= 5 * 1024 * 1024
    assert r.content.startswith(b"<?xml") and r.content.rstrip().endswith(b"</rss>")
    assert r.content.count(b"<item>") == 12000
    again = client.get("/feeds/big.rss", params={"items": 12000})  # served from the cache
    assert again.headers["etag"] == r.headers["etag"]


# --- conditional GETs ------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/feeds/tech.rss", "/feeds/world.atom", "/feeds/science.rdf", "/hn/v0/topstories.json"])
def test_conditional_get_answers_304(client: httpx.Client, path: str) -> None:
    first = client.get(path)
    assert first.status_code == 200
    etag, last_modified = first.headers["etag"], first.headers["last-modified"]

    by_etag = client.get(path, headers={"If-None-Match": etag})
    assert by_etag.status_code == 304 and by_etag.content == b""
    assert by_etag.headers["etag"] == etag
    assert client.get(path, headers={"If-None-Match": 'W/"other", ' + etag}).status_code == 304
    assert client.get(path, headers={"If-None-Match": '"other"'}).status_code == 200

    assert client.get(path, headers={"If-Modified-Since": last_modified}).status_code == 304
    older = format_datetime(ANCHOR - timedelta(days=1), usegmt=True)
    assert client.get(path, headers={"If-Modified-Since": older}).status_code == 200
    # If-None-Match wins over If-Modified-Since (RFC 9110 §13.2.2).
    assert client.get(path, headers={"If-None-Match": '"other"', "If-Modified-Since": last_modified}).status_code == 200


# --- Hacker News ---------------------------------------------------------------------------


def test_hacker_news_topstories_and_items(client: httpx.Client) -> None:
    ids = client.get("/hn/v0/topstories.json").json()
    assert len(ids) == 100 and all(isinstance(i, int) for i in ids)
    items = {i: client.get(f"/hn/v0/item/{i}.json").json() for i in ids}
    for item in items.values():
        assert item["type"] == "story"
        assert {"id", "by", "time", "title", "score", "descendants"} <= set(item)
        assert ("url" in item) != ("text" in item)  # link story or Ask HN, never both
    asks = [s for s in items.values() if "url" not in s]
    assert asks and all(s["title"].startswith("Ask HN") for s in asks)
    assert SHARED_TECH_URL in {s.get("url") for s in items.values()}

    # Walk every comment tree: parents link back, depth <= 4, some deleted and dead.
    seen: list[dict[str, Any]] = []

    def walk(item: dict[str, Any], depth: int) -> None:
        for kid in item.get("kids", []):
            comment = client.get(f"/hn/v0/item/{kid}.json").json()
            assert comment["type"] == "comment" and comment["parent"] == item["id"]
            assert depth <= 4
            seen.append(comment)
            walk(comment, depth + 1)

    for story in list(items.values())[:40]:
        walk(story, 1)
    assert any(c.get("deleted") and "by" not in c and "text" not in c for c in seen)
    assert any(c.get("dead") and "text" in c for c in seen)


def test_hacker_news_unknown_and_invalid_ids(client: httpx.Client) -> None:
    r = client.get("/hn/v0/item/1.json")
    assert r.status_code == 200 and r.json() is None  # as the real API does
    assert client.get("/hn/v0/item/abc.json").status_code == 400
    assert client.get(f"/hn/v0/item/{HN_FIRST_ID}.json").json()["id"] == HN_FIRST_ID


# --- determinism ------------------------------------------------------------------------------


def test_same_anchor_gives_byte_identical_payloads(client: httpx.Client) -> None:
    paths = ["/feeds/tech.rss", "/feeds/world.atom", "/feeds/science.rdf", "/hn/v0/topstories.json",
             f"/hn/v0/item/{HN_FIRST_ID}.json", "/newsapi/v2/everything?sources=reuters&pageSize=100"]
    with DemoServer(anchor=ANCHOR) as other, httpx.Client(base_url=other.url, timeout=5.0) as other_client:
        for path in paths:
            assert client.get(path).content == other_client.get(path).content, path
    later = DemoDataset(ANCHOR + timedelta(hours=1))
    assert later.render_feed("tech", "rss")[0] != DemoDataset(ANCHOR).render_feed("tech", "rss")[0]
    # URLs do not move with the anchor: only the times do.
    assert [i.link for i in later.feed_items("tech")] == [i.link for i in DemoDataset(ANCHOR).feed_items("tech")]


# --- faults ------------------------------------------------------------------------------------


def test_fault_500_and_503(demo: DemoServer, client: httpx.Client) -> None:
    demo.control.set_fault("feeds.rss", fault=500)
    r = client.get("/feeds/tech.rss")
    assert r.status_code == 500 and r.text == "upstream exploded"
    demo.control.set_fault("feeds.rss", fault="503", retry_after_s=7)
    r = client.get("/feeds/tech.rss")
    assert r.status_code == 503 and r.headers["retry-after"] == "7"


def test_fault_429_sends_retry_after(demo: DemoServer, client: httpx.Client) -> None:
    demo.control.set_fault("hn.topstories", fault="429")
    r = client.get("/hn/v0/topstories.json")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    demo.control.set_fault("newsapi.everything", fault="429", retry_after_s=30)
    r = client.get("/newsapi/v2/everything", params={"sources": "reuters"})
    assert r.status_code == 429 and r.headers["retry-after"] == "30"
    assert r.json()["code"] == "rateLimited"  # NewsAPI's own error shape


def test_fault_hang_times_the_client_out(demo: DemoServer, client: httpx.Client) -> None:
    demo.control.set_fault("hn.item", fault="hang")
    started = time.perf_counter()
    with pytest.raises(httpx.ReadTimeout):
        client.get(f"/hn/v0/item/{HN_FIRST_ID}.json", timeout=0.3)
    assert time.perf_counter() - started < 2
    assert demo.control.count("hn.item") == 1


def test_fault_hang_gives_up_after_hang_max_s(demo: DemoServer, client: httpx.Client) -> None:
    demo.control.set_fault("hn.item", fault="hang", hang_max_s=0.2)
    assert client.get(f"/hn/v0/item/{HN_FIRST_ID}.json").status_code == 504


@pytest.mark.parametrize("path", ["/newsapi/v2/top-headlines?sources=bbc-news", "/feeds/tech.rss", "/hn/v0/topstories.json"])
def test_fault_garbage_is_a_200_that_does_not_parse(demo: DemoServer, client: httpx.Client, path: str) -> None:
    healthy = client.get(path)
    demo.control.set_fault("*", fault="garbage")
    r = client.get(path)
    assert r.status_code == 200
    assert r.headers["content-type"] == healthy.headers["content-type"]  # the lie is the point
    assert r.content.startswith(b"<html>")
    with pytest.raises(UnicodeDecodeError):
        r.content.decode("utf-8")


def test_fault_truncated_cuts_the_payload_in_half(demo: DemoServer, client: httpx.Client) -> None:
    healthy = client.get("/newsapi/v2/everything", params={"sources": "reuters"}).content
    demo.control.set_fault("newsapi.everything", fault="truncated")
    r = client.get("/newsapi/v2/everything", params={"sources": "reuters"})
    assert r.status_code == 200
    assert r.content == healthy[: len(healthy) // 2]
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(r.content)
    demo.control.set_fault("feeds.atom", fault="truncated")
    assert feedparser.parse(client.get("/feeds/tech.atom").content).bozo


def test_fault_drip_sends_the_body_slowly(demo: DemoServer, client: httpx.Client) -> None:
    healthy = client.get("/feeds/science.rss").content
    demo.control.set_fault("feeds.rss:science", fault="drip", drip_chunks=5, drip_delay_ms=60)
    started = time.perf_counter()
    with client.stream("GET", "/feeds/science.rss") as r:
        headers_after = time.perf_counter() - started
        chunks = list(r.iter_raw())
    elapsed = time.perf_counter() - started
    assert r.status_code == 200
    assert b"".join(chunks) == healthy  # slow, but complete and correct
    assert headers_after < elapsed / 2  # headers come at once: only the body crawls
    assert elapsed >= 5 * 0.060 * 0.9


def test_fault_malformed_newsapi_rows(demo: DemoServer, client: httpx.Client) -> None:
    demo.control.set_fault("newsapi.top-headlines:bbc-news", fault="malformed")
    body = client.get("/newsapi/v2/top-headlines", params={"sources": "bbc-news"}).json()
    rows = body["articles"]
    assert body["status"] == "ok" and len(rows) == 20
    bad = dict(zip(NEWSAPI_DEFECTS, rows[1::2], strict=False))
    assert "title" not in bad["missing-title"]
    assert "url" not in bad["missing-url"]
    assert bad["bad-date"]["publishedAt"] == "yesterday around noon"
    assert isinstance(bad["title-number"]["title"], int)
    assert isinstance(bad["title-object"]["title"], dict)
    assert bad["null-row"] is None
    assert bad["bad-url"]["url"] == "not a url"
    assert isinstance(bad["source-string"]["source"], str)
    assert isinstance(bad["date-number"]["publishedAt"], int)
    for row in rows[0::2]:  # the good rows stay good
        assert set(row) == ARTICLE_KEYS and isinstance(row["title"], str)
    # The specific key only: other sources are healthy.
    other = client.get("/newsapi/v2/top-headlines", params={"sources": "reuters"}).json()["articles"]
    assert all(isinstance(a, dict) and "title" in a for a in other)


@pytest.mark.parametrize("fmt", ["rss", "atom", "rdf"])
def test_fault_malformed_feed_items(demo: DemoServer, client: httpx.Client, fmt: str) -> None:
    demo.control.set_fault(f"feeds.{fmt}", fault="malformed")
    parsed = feedparser.parse(client.get(f"/feeds/tech.{fmt}").content)
    assert not parsed.bozo  # still well-formed XML: only rows are bad
    entries = parsed.entries
    assert len(entries) == 40
    bad = dict(zip(FEED_DEFECTS, entries[1::2], strict=False))
    assert "title" not in bad["missing-title"]
    # (feedparser may promote an Atom <id> to .link; it is never an http URL here)
    assert not str(bad["missing-link"].get("link", "")).startswith("http")
    assert _entry_time(bad["bad-date"]) is None
    assert bad["empty-title"].get("title", "").strip() == ""
    assert bad["javascript-link"].link.startswith("javascript:")
    assert _entry_time(bad["future-date"]).tm_year > ANCHOR.year + 10


def test_fault_malformed_hacker_news(demo: DemoServer, client: httpx.Client) -> None:
    healthy = client.get("/hn/v0/topstories.json").json()
    demo.control.set_fault("hn.topstories", fault="malformed")
    ids = client.get("/hn/v0/topstories.json").json()
    assert len(ids) == len(healthy)
    assert isinstance(ids[1], str) and ids[3] is None and ids[5] < 0 and isinstance(ids[7], float)
    demo.control.set_fault("hn.item", fault="malformed")
    item = client.get(f"/hn/v0/item/{healthy[0]}.json").json()
    assert item["_defect"]


def test_fail_times_applies_the_fault_n_times_then_reverts(demo: DemoServer, client: httpx.Client) -> None:
    demo.control.set_fault("hn.topstories", fault="500", fail_times=2)
    statuses = [client.get("/hn/v0/topstories.json").status_code for _ in range(4)]
    assert statuses == [500, 500, 200, 200]
    assert demo.control.faults() == {}


def test_fail_times_is_exact_under_concurrency(demo: DemoServer) -> None:
    demo.control.set_fault("hn.item", fault="503", fail_times=5)
    results: list[int] = []

    def fetch() -> None:
        with httpx.Client(base_url=demo.url, timeout=5.0) as c:
            results.append(c.get(f"/hn/v0/item/{HN_FIRST_ID}.json").status_code)

    threads = [threading.Thread(target=fetch) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results) == [200] * 7 + [503] * 5


def test_latency_delays_the_answer(demo: DemoServer, client: httpx.Client) -> None:
    demo.control.set_fault("feeds.atom:world", latency_ms=300)
    started = time.perf_counter()
    assert client.get("/feeds/world.atom").status_code == 200
    assert time.perf_counter() - started >= 0.3
    started = time.perf_counter()
    client.get("/feeds/tech.atom")  # another feed: not delayed
    assert time.perf_counter() - started < 0.25


def test_most_specific_fault_key_wins(demo: DemoServer, client: httpx.Client) -> None:
    demo.control.set_fault("*", fault="503")
    demo.control.set_fault("feeds.rss", fault="500")
    demo.control.set_fault("feeds.rss:tech")  # an explicit healthy entry shadows the rest
    assert client.get("/feeds/tech.rss").status_code == 200
    assert client.get("/feeds/world.rss").status_code == 500
    assert client.get("/feeds/world.atom").status_code == 503
    demo.control.clear_faults()
    assert client.get("/feeds/world.atom").status_code == 200


def test_bad_fault_settings_are_rejected(demo: DemoServer) -> None:
    control: DemoControl = demo.control
    with pytest.raises(ValueError, match="fault key"):
        control.set_fault("feeds.json", fault="500")
    with pytest.raises(ValueError, match="fault"):
        control.set_fault("feeds.rss", fault="explode")
    with pytest.raises(ValueError, match="unknown knob"):
        control.set_fault("feeds.rss", latency=5)
    with pytest.raises(ValueError, match="fail_times"):
        control.set_fault("feeds.rss", fault="500", fail_times=0)
    assert control.faults() == {}


# --- counters and the HTTP control surface ---------------------------------------------------------


def test_requests_are_counted_per_route_and_per_qualifier(demo: DemoServer, client: httpx.Client) -> None:
    client.get("/feeds/tech.rss")
    client.get("/feeds/tech.rss")
    client.get("/feeds/world.rss")
    client.get("/newsapi/v2/top-headlines", params={"sources": "bbc-news"})
    client.get("/hn/v0/topstories.json")
    client.get(f"/hn/v0/item/{HN_FIRST_ID}.json")
    client.get("/_demo/stats")  # control requests are not counted
    stats = client.get("/_demo/stats").json()
    assert stats == {
        "requests": {
            "feeds.rss": 3,
            "feeds.rss:tech": 2,
            "feeds.rss:world": 1,
            "hn.item": 1,
            f"hn.item:{HN_FIRST_ID}": 1,
            "hn.topstories": 1,
            "newsapi.top-headlines": 1,
            "newsapi.top-headlines:bbc-news": 1,
        },
        "total": 6,
    }
    assert demo.control.stats() == stats
    assert demo.control.count("feeds.rss:tech") == 2 and demo.control.count("feeds.atom") == 0
    assert client.post("/_demo/reset").json() == {"requests": {}, "total": 0}
    assert demo.control.count("feeds.rss") == 0


def test_faults_can_be_driven_over_http(demo: DemoServer, client: httpx.Client) -> None:
    r = client.put("/_demo/faults", json={"feeds.rss:tech": {"fault": "500"}, "hn.item": {"latency_ms": 10}})
    assert r.status_code == 200
    assert set(r.json()["faults"]) == {"feeds.rss:tech", "hn.item"}
    assert client.get("/feeds/tech.rss").status_code == 500
    client.put("/_demo/faults", json={"feeds.rss:tech": None})  # merge: null removes one key
    assert set(client.get("/_demo/faults").json()["faults"]) == {"hn.item"}
    assert client.get("/feeds/tech.rss").status_code == 200
    bad = client.put("/_demo/faults", json={"hn.item": {"fault": "boom"}})
    assert bad.status_code == 400 and "fault" in bad.json()["error"]
    assert client.put("/_demo/faults", content=b"not json").status_code == 400
    assert client.delete("/_demo/faults").json() == {"faults": {}}
    client.put("/_demo/faults", json={"*": {"fault": "500"}})
    client.post("/_demo/reset")
    assert demo.control.faults() == {}


# --- lifecycle ------------------------------------------------------------------------------------------


def test_stopping_releases_hanging_requests() -> None:
    outcome: list[object] = []
    server = DemoServer(anchor=ANCHOR).start()
    server.control.set_fault("*", fault="hang")

    def hang() -> None:
        try:
            with httpx.Client(timeout=10.0) as c:
                outcome.append(c.get(f"{server.url}/hn/v0/topstories.json").status_code)
        except httpx.HTTPError as exc:
            outcome.append(exc)

    thread = threading.Thread(target=hang)
    thread.start()
    deadline = time.monotonic() + 5
    while server.control.count("hn.topstories") == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    started = time.perf_counter()
    server.stop()
    thread.join(5)
    assert time.perf_counter() - started < 2
    assert outcome and outcome[0] != 200
    server.stop()  # idempotent


async def test_async_context_manager_does_not_block_the_loop() -> None:
    async with DemoServer(anchor=ANCHOR) as server, httpx.AsyncClient(base_url=server.url, timeout=5.0) as c:
        r = await c.get("/hn/v0/topstories.json")
        assert r.status_code == 200 and len(r.json()) == 100
    with pytest.raises(RuntimeError):
        _ = server.url
