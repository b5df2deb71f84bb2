"""The full schema against the demo upstream: batching counts, per-source outcomes,
pagination, dedupe, every source kind and its malformed variants."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone

import pytest

from gateway.app import create_app
from gateway.context import build_context
from gateway.demo.server import DemoServer
from gateway.schema import build_schema
from gateway.settings import Settings
from tests.conftest import demo_sources, sources_of
from tests.helpers import RunningGateway

THREE = (
    {"id": "bbc", "name": "BBC News", "kind": "newsapi", "url": "{demo}/newsapi/v2/top-headlines?sources=bbc-news"},
    {"id": "tech", "name": "Tech Wire", "kind": "feed", "url": "{demo}/feeds/tech.rss"},
    {"id": "world", "name": "World Report", "kind": "feed", "url": "{demo}/feeds/world.atom"},
)
HN = {"id": "hn", "name": "Hacker News", "kind": "hackernews", "url": "{demo}/hn/v0", "max_concurrency": 8}


@pytest.fixture
async def gw3(demo: DemoServer, make_settings: Callable[..., Settings]) -> RunningGateway:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *THREE)))) as gw:
        yield gw  # type: ignore[misc]


async def test_nested_sources_make_one_upstream_call_per_source(gw3: RunningGateway, demo: DemoServer) -> None:
    query = "{ sources { articles(first: 5) { title source { name } } } }"
    data = await gw3.data(query)
    assert [len(s["articles"]) for s in data["sources"]] == [5, 5, 5]
    assert data["sources"][1]["articles"][0]["source"]["name"] == "Tech Wire"
    assert demo.control.stats()["total"] == 3


async def test_root_articles_next_to_nested_ones_add_no_calls(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    # a fresh gateway (cold caches): the combined query alone must still make 3 calls
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *THREE)))) as gw:
        await gw.data(
            "{ sources { articles(first: 5) { title source { name } } }"
            "  articles(first: 10) { nodes { title } sources { status } }"
            "  again: articles(first: 3) { nodes { id } } }"
        )
    assert demo.control.stats()["total"] == 3


async def test_warm_articles_are_one_outcome_per_source_however_asked(gw3: RunningGateway) -> None:
    query = (
        "{ a: articles(first: 2) { sources { status } } sources { articles(first: 1) { id } }"
        "  b: articles(first: 3) { nodes { id } sources { status } } }"
    )
    await gw3.data(query)  # cold: fetched once per source
    await gw3.services.source_service.settle(timeout_s=10)
    ctx = build_context(gw3.services)
    result = await build_schema().execute(query, context_value=ctx)
    assert not result.errors
    # the first `articles` primes the loader from the warm cache; the nested and the
    # second one reuse those outcomes: one each, all CACHED, in sources-file order
    assert [o.source.id for o in ctx.outcomes] == ["bbc", "tech", "world"]
    assert {o.status.value for o in ctx.outcomes} == {"CACHED"}
    assert result.data["a"]["sources"] == result.data["b"]["sources"] == [{"status": "CACHED"}] * 3


async def test_ten_aliased_articles_by_id_are_one_sql_query(gw3: RunningGateway) -> None:
    data = await gw3.data("{ articles(first: 10) { nodes { id title } } }")
    ids = [n["id"] for n in data["articles"]["nodes"]]
    assert len(ids) == 10
    aliases = " ".join(f'a{i}: article(id: "{article_id}") {{ id title }}' for i, article_id in enumerate(ids))
    db = gw3.services.db
    await gw3.services.source_service.tasks.drain(timeout_s=5)  # the first query's cache writes
    db.query_log = []
    result = await gw3.data("{ " + aliases + ' missing: article(id: "a_nope") { id } }')
    assert db.query_log is not None and len(db.query_log) == 1, "\n---\n".join(db.query_log)
    assert "ANY" in db.query_log[0]
    assert [result[f"a{i}"]["id"] for i in range(10)] == ids
    assert result["missing"] is None


async def test_hn_top_30_with_two_comment_levels_fetches_each_item_once(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, HN)))) as gw:
        data = await gw.data(
            "{ articles(first: 30) { nodes { id title score commentCount"
            "    comments(first: 10) { id author text postedAt replies(first: 10) { id text } } } } }"
        )
    nodes = data["articles"]["nodes"]
    assert 25 <= len(nodes) <= 30  # reposts of one URL are one article
    stats = demo.control.stats()["requests"]
    item_counts = {k: v for k, v in stats.items() if k.startswith("hn.item:")}
    assert item_counts and set(item_counts.values()) == {1}, item_counts
    assert stats["hn.topstories"] == 1
    comment_ids = {c["id"] for n in nodes for c in n["comments"]}
    reply_ids = {r["id"] for n in nodes for c in n["comments"] for r in c["replies"]}
    assert comment_ids and reply_ids
    assert {f"hn.item:{i}" for i in comment_ids | reply_ids} <= set(item_counts)
    assert any(n["score"] is not None for n in nodes)


async def test_articles_by_id_work_for_anything_seen(gw3: RunningGateway) -> None:
    data = await gw3.data("{ articles(first: 1, sources: [\"tech\"]) { nodes { id title url source { id } } } }")
    node = data["articles"]["nodes"][0]
    again = await gw3.data('query($id: ID!) { article(id: $id) { id title url source { id kind } } }', {"id": node["id"]})
    assert again["article"]["title"] == node["title"]
    assert again["article"]["source"] == {"id": "tech", "kind": "FEED"}


async def test_pagination_is_stable_and_complete(gw3: RunningGateway) -> None:
    everything = await gw3.data("{ articles(first: 100) { nodes { id publishedAt } pageInfo { hasNextPage } } }")
    all_ids = [n["id"] for n in everything["articles"]["nodes"]]
    stamps = [n["publishedAt"] for n in everything["articles"]["nodes"] if n["publishedAt"]]
    assert stamps == sorted(stamps, reverse=True)
    seen: list[str] = []
    after = None
    while True:
        page = await gw3.data(
            "query($after: String) { articles(first: 7, after: $after) {"
            " edges { cursor node { id } } pageInfo { hasNextPage endCursor } } }",
            {"after": after},
        )
        conn = page["articles"]
        seen += [e["node"]["id"] for e in conn["edges"]]
        if not conn["pageInfo"]["hasNextPage"]:
            break
        after = conn["pageInfo"]["endCursor"]
        assert after == conn["edges"][-1]["cursor"]
    assert len(seen) == len(set(seen)) > len(all_ids) == 100
    assert seen[:100] == all_ids


async def test_search_and_since_filter(gw3: RunningGateway) -> None:
    data = await gw3.data('{ articles(first: 100, search: "the") { nodes { title summary } } }')
    assert data["articles"]["nodes"]
    cutoff = datetime.now(timezone.utc).replace(microsecond=0)
    recent = await gw3.data(
        "query($since: DateTime) { articles(first: 100, since: $since) { nodes { publishedAt } } }",
        {"since": "2000-01-01T00:00:00Z"},
    )
    assert recent["articles"]["nodes"]
    future = await gw3.data(
        "query($since: DateTime) { articles(first: 100, since: $since) { nodes { publishedAt } } }",
        {"since": cutoff.replace(year=cutoff.year + 1).isoformat()},
    )
    assert future["articles"]["nodes"] == []


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("{ articles(first: 101) { nodes { id } } }", "`first` must be between 0 and 100, got 101"),
        ("{ articles(first: -1) { nodes { id } } }", "`first` must be between 0 and 100, got -1"),
        ("{ sources { articles(first: 5000) { id } } }", "`first` must be between 0 and 100, got 5000"),
        ('{ articles(after: "garbage!") { nodes { id } } }', "`after` is not a cursor issued by this API"),
        ('{ articles(sources: ["nope"]) { nodes { id } } }', "unknown source 'nope'"),
        ('{ articles(search: "x\\u0000y") { nodes { id } } }', "`search` must not contain control characters"),
        ('{ articles(search: "a\\u0007b") { nodes { id } } }', "`search` must not contain control characters"),
    ],
)
async def test_absurd_arguments_are_clear_errors(gw3: RunningGateway, query: str, fragment: str) -> None:
    result = await gw3.query(query)
    assert result["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"
    assert fragment in result["errors"][0]["message"]


async def test_same_url_from_two_sources_is_one_article(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(demo_sources(demo.url))
    async with RunningGateway(create_app(settings)) as gw:
        data = await gw.data("{ articles(first: 100) { nodes { id url source { id } } } }")
    nodes = data["articles"]["nodes"]
    ids = [n["id"] for n in nodes]
    assert len(ids) == len(set(ids))


async def test_summaries_are_sanitised(gw3: RunningGateway) -> None:
    data = await gw3.data("{ articles(first: 100) { nodes { summary } } }")
    summaries = " ".join(n["summary"] or "" for n in data["articles"]["nodes"]).lower()
    assert "<script" not in summaries and "onclick" not in summaries and "javascript:" not in summaries


async def test_failing_optional_source_shows_only_in_sources(gw3: RunningGateway, demo: DemoServer) -> None:
    demo.control.set_fault("feeds.rss:tech", fault="500")
    data = await gw3.data("{ articles(first: 100) { nodes { source { id } } sources { source { id } status error { code } } } }")
    by_id = {s["source"]["id"]: s for s in data["articles"]["sources"]}
    assert by_id["tech"]["status"] == "FAILED"
    assert by_id["tech"]["error"]["code"] == "UPSTREAM_HTTP_ERROR"
    assert by_id["bbc"]["status"] == "FRESH" and by_id["world"]["status"] == "FRESH"
    assert {n["source"]["id"] for n in data["articles"]["nodes"]} == {"bbc", "world"}


async def test_failing_critical_source_errors_articles_but_not_other_fields(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    tables = [dict(t) for t in THREE]
    tables[0]["critical"] = True
    demo.control.set_fault("newsapi.top-headlines", fault="500")
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *tables)))) as gw:
        result = await gw.query("{ articles { nodes { id } } sources { id } health { status } }")
    assert result["data"]["articles"] is None
    assert result["data"]["sources"] == [{"id": "bbc"}, {"id": "tech"}, {"id": "world"}]
    assert result["data"]["health"]["status"] in ("OK", "DEGRADED")
    (error,) = result["errors"]
    assert error["extensions"]["code"] == "CRITICAL_SOURCE_FAILED"
    assert error["path"] == ["articles"]
    assert "bbc" in error["message"]


@pytest.mark.parametrize("route", ["newsapi.top-headlines", "feeds.rss", "feeds.atom"])
async def test_malformed_rows_are_dropped_and_counted(
    gw3: RunningGateway, demo: DemoServer, route: str
) -> None:
    demo.control.set_fault(route, fault="malformed")
    data = await gw3.data("{ articles(first: 100) { nodes { title url } sources { source { kind } status droppedItems } } }")
    hit = [s for s in data["articles"]["sources"] if s["droppedItems"]]
    assert hit and all(s["status"] == "FRESH" for s in hit)
    assert all(n["title"] and n["url"] for n in data["articles"]["nodes"])


@pytest.mark.parametrize("fault", ["garbage", "truncated"])
@pytest.mark.parametrize("route", ["newsapi.top-headlines", "feeds.rss", "feeds.atom"])
async def test_unusable_payloads_fail_the_source_with_bad_payload(
    gw3: RunningGateway, demo: DemoServer, route: str, fault: str
) -> None:
    demo.control.set_fault(route, fault=fault)
    result = await gw3.query("{ articles(first: 100) { nodes { id } sources { source { id } status error { code } } } }")
    assert "errors" not in result
    failed = [s for s in result["data"]["articles"]["sources"] if s["status"] == "FAILED"]
    assert len(failed) == 1 and failed[0]["error"]["code"] == "BAD_PAYLOAD"


async def test_hn_malformed_and_garbage(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, HN)))) as gw:
        demo.control.set_fault("hn.topstories", fault="garbage")
        result = await gw.data("{ articles { sources { status error { code } } } }")
        assert result["articles"]["sources"] == [{"status": "FAILED", "error": {"code": "BAD_PAYLOAD"}}]
        demo.control.reset()
        demo.control.set_fault("hn.item", fault="malformed")
        result = await gw.data("{ articles(first: 30) { nodes { title } sources { status droppedItems } } }")
        (src,) = result["articles"]["sources"]
        assert src["status"] == "FRESH"


async def test_rdf_feed_parses(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    rdf = {"id": "sci", "name": "Science (RSS 1.0)", "kind": "feed", "url": "{demo}/feeds/science.rdf"}
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, rdf)))) as gw:
        data = await gw.data("{ articles(first: 5) { nodes { title url publishedAt } sources { status } } }")
    assert len(data["articles"]["nodes"]) == 5
    assert all(n["publishedAt"].endswith("+00:00") for n in data["articles"]["nodes"])


async def test_comments_that_fail_are_left_out_not_fatal(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, HN)))) as gw:
        await gw.data("{ articles(first: 30) { nodes { id } } }")  # stories cached
        demo.control.set_fault("hn.item", fault="500")  # every comment fetch fails now
        result = await gw.query(
            "{ articles(first: 30) { nodes { title comments { id replies { id } } } sources { status } } }"
        )
    assert "errors" not in result, result.get("errors")
    nodes = result["data"]["articles"]["nodes"]
    assert len(nodes) >= 25 and all(n["comments"] == [] for n in nodes)
    assert result["data"]["articles"]["sources"] == [{"status": "CACHED"}]


async def test_articles_of_a_removed_source_still_resolve(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *THREE)))) as gw:
        data = await gw.data('{ articles(sources: ["tech"], first: 1) { nodes { id } } }')
        article_id = data["articles"]["nodes"][0]["id"]
        await gw.services.source_service.tasks.drain(timeout_s=5)
    # the operator removed "tech" from the sources file; the article is still in Postgres
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, THREE[0])))) as gw:
        result = await gw.query(
            "query($id: ID!) { article(id: $id) { title comments { id }"
            " source { id name breaker { state } articles(first: 2) { id } } } }",
            {"id": article_id},
        )
    assert "errors" not in result, result.get("errors")
    source = result["data"]["article"]["source"]
    assert source["id"] == "tech" and source["breaker"]["state"] == "CLOSED" and source["articles"] == []
