"""The runnable gateway end to end: real HTTP to the demo upstream, a real Postgres."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.app import GC_THRESHOLDS, create_app
from gateway.demo.server import DemoServer
from gateway.settings import Settings
from tests.conftest import sources_of
from tests.helpers import RunningGateway

NEWSAPI_ONLY = (
    {"id": "bbc", "name": "BBC News", "kind": "newsapi", "url": "{demo}/newsapi/v2/top-headlines?sources=bbc-news"},
    {"id": "reuters", "name": "Reuters", "kind": "newsapi", "url": "{demo}/newsapi/v2/top-headlines?sources=reuters"},
)


async def test_first_query_returns_articles_from_the_demo_upstream(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *NEWSAPI_ONLY)))) as gw:
        data = await gw.data("{ articles(first: 5) { nodes { title url } } }")
    nodes = data["articles"]["nodes"]
    assert len(nodes) == 5
    assert all(n["title"] and n["url"].startswith("http") for n in nodes)
    assert demo.control.count("newsapi.top-headlines") == 2  # one call per source
    # the source URL's own query (?sources=...) survives the gateway's pageSize
    assert demo.control.count("newsapi.top-headlines:bbc-news") == 1
    assert demo.control.count("newsapi.top-headlines:reuters") == 1


async def test_second_query_within_ttl_is_served_from_cache(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    query = "{ articles(first: 5) { nodes { id } sources { source { id } status ageSeconds } } }"
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *NEWSAPI_ONLY)))) as gw:
        first = await gw.data(query)
        calls = demo.control.count("newsapi.top-headlines")
        second = await gw.data(query)
        assert demo.control.count("newsapi.top-headlines") == calls == 2
    assert {s["status"] for s in first["articles"]["sources"]} == {"FRESH"}
    assert {s["status"] for s in second["articles"]["sources"]} == {"CACHED"}
    assert first["articles"]["nodes"] == second["articles"]["nodes"]


async def test_cache_survives_a_restart_through_postgres(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(sources_of(demo.url, *NEWSAPI_ONLY))
    query = "{ articles(first: 3) { nodes { id } sources { status } } }"
    async with RunningGateway(create_app(settings)) as gw:
        before = await gw.data(query)
    async with RunningGateway(create_app(settings)) as gw:  # new process state, same database
        after = await gw.data(query)
    assert demo.control.count("newsapi.top-headlines") == 2
    assert {s["status"] for s in after["articles"]["sources"]} == {"CACHED"}
    assert before["articles"]["nodes"] == after["articles"]["nodes"]


async def test_health_reports_database_and_sources(gateway: RunningGateway) -> None:
    data = await gateway.data(
        "{ health { status version uptimeSeconds database { ok latencyMs } sources { source { id } breaker { state } } } }"
    )
    health = data["health"]
    assert health["status"] == "OK"
    assert health["database"]["ok"] is True
    assert {s["breaker"]["state"] for s in health["sources"]} == {"CLOSED"}


async def test_two_apps_in_one_process_share_no_state(
    demo: DemoServer, make_settings: Callable[..., Settings], pg_admin_url: str, tmp_path: Path
) -> None:
    import uuid

    import asyncpg

    from tests.conftest import _with_database

    other_db = f"gw_test_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(pg_admin_url)
    await admin.execute(f'CREATE DATABASE "{other_db}"')
    await admin.close()
    try:
        a = create_app(make_settings(sources_of(demo.url, NEWSAPI_ONLY[0])))
        b = create_app(make_settings(sources_of(demo.url, NEWSAPI_ONLY[1]),
                                     database_url=_with_database(pg_admin_url, other_db)))
        async with RunningGateway(a) as gw_a, RunningGateway(b) as gw_b:
            assert gw_a.services is not gw_b.services
            assert gw_a.services.db.pool is not gw_b.services.db.pool
            ids_a = await gw_a.data("{ sources { id } }")
            ids_b = await gw_b.data("{ sources { id } }")
            assert ids_a == {"sources": [{"id": "bbc"}]} and ids_b == {"sources": [{"id": "reuters"}]}
            await gw_a.data("{ articles { nodes { id } } }")
            # b's caches are its own: it must still go upstream for its first query
            calls = demo.control.count("newsapi.top-headlines")
            result = await gw_b.data("{ articles { sources { status } } }")
            assert result["articles"]["sources"] == [{"status": "FRESH"}]
            assert demo.control.count("newsapi.top-headlines") == calls + 1
            # breaking a's breaker leaves b's alone
            for _ in range(10):
                gw_a.services.breakers["bbc"].failure(gw_a.services.breakers["bbc"].acquire()) if \
                    gw_a.services.breakers["bbc"].state.value == "CLOSED" else None
            assert gw_a.services.breakers["bbc"].state.value == "OPEN"
            assert gw_b.services.breakers["reuters"].state.value == "CLOSED"
    finally:
        admin = await asyncpg.connect(pg_admin_url)
        await admin.execute(f'DROP DATABASE IF EXISTS "{other_db}" WITH (FORCE)')
        await admin.close()


async def test_the_collector_runs_less_often_while_the_app_runs(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    import gc

    before = gc.get_threshold()
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, NEWSAPI_ONLY[0])))):
        assert gc.get_threshold() == GC_THRESHOLDS
    assert gc.get_threshold() == before  # and the process's own again after shutdown


async def test_graphiql_is_served_to_browsers(gateway: RunningGateway) -> None:
    resp = await gateway.client.get("/graphql", headers={"Accept": "text/html"})
    assert resp.status_code == 200
    assert "graphiql" in resp.text.lower()


async def test_get_queries_work(gateway: RunningGateway) -> None:
    resp = await gateway.client.get("/graphql", params={"query": "{ sources { id } }"})
    assert resp.status_code == 200
    assert len(resp.json()["data"]["sources"]) >= 3


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"query": "{ articles(first: 5) { nodes { title } "}, "GRAPHQL_PARSE_FAILED"),
        ({"query": "{ nope }"}, "GRAPHQL_VALIDATION_FAILED"),
        ({"query": "{ articles(first: 1000) { nodes { title } } }"}, "BAD_USER_INPUT"),
        ({"query": "{ articles(first: 99999999999) { nodes { title } } }"}, "GRAPHQL_VALIDATION_FAILED"),
    ],
)
async def test_bad_queries_get_clear_coded_errors(gateway: RunningGateway, body: dict, code: str) -> None:
    resp = await gateway.client.post("/graphql", json=body)
    assert resp.status_code in (200, 400)
    payload = resp.json()
    assert payload["errors"][0]["extensions"]["code"] == code
    assert "Traceback" not in resp.text


async def test_wrong_content_type_and_broken_json_are_4xx(gateway: RunningGateway) -> None:
    resp = await gateway.client.post("/graphql", content=b"{ sources { id } }", headers={"Content-Type": "text/plain"})
    assert 400 <= resp.status_code < 500
    resp = await gateway.client.post("/graphql", content=b'{"query": ', headers={"Content-Type": "application/json"})
    assert resp.status_code == 400


async def test_identical_concurrent_requests_share_one_execution(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    import asyncio

    from gateway.coalesce import CoalesceIdentical

    demo.control.set_fault("*", latency_ms=200)
    app = create_app(make_settings(sources_of(demo.url, *NEWSAPI_ONLY)))
    coalescer = next(r.app for r in app.routes if getattr(r, "path", None) == "/graphql")
    while not isinstance(coalescer, CoalesceIdentical):  # under the gate, the response cache, persisted documents
        coalescer = coalescer.app
    async with RunningGateway(app) as gw:
        query = "{ articles(first: 3) { nodes { id } sources { status } } }"
        same = await asyncio.gather(*(gw.post(query) for _ in range(30)))
        assert {r.status_code for r in same} == {200}
        assert len({r.content for r in same}) == 1
        assert coalescer.executions == 1
        other = await asyncio.gather(gw.post("{ sources { id } }"), gw.post(query, {"x": 1}))
        assert all(r.status_code == 200 for r in other)
        assert coalescer.executions == 3  # different bodies are not shared


async def test_oversized_bodies_are_refused(gateway: RunningGateway) -> None:
    resp = await gateway.client.post("/graphql", json={"query": "{ sources { id } }", "pad": "x" * 2_000_000})
    assert resp.status_code == 413
    assert resp.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"


@pytest.mark.parametrize(
    "query",
    [
        "{ " + " ".join(f"a{i}: sources {{ id }}" for i in range(31)) + " }",
        "{ articles { nodes { comments { replies { replies { replies { replies { replies { replies { replies"
        " { replies { replies { replies { id } } } } } } } } } } } } } }",
    ],
    ids=["aliases", "depth"],
)
async def test_query_cost_limits(gateway: RunningGateway, query: str) -> None:
    result = await gateway.query(query)
    assert result.get("data") is None
    # the depth case is refused by the cost estimate (11 comment levels) before validation runs
    assert result["errors"][0]["extensions"]["code"] in ("GRAPHQL_VALIDATION_FAILED", "QUERY_TOO_EXPENSIVE")
    assert gateway.services.source_service.stats["bbc"].upstream_calls == 0
