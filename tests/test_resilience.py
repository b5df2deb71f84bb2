"""Resilience against real loopback upstreams (the demo's fault knobs) and a real
Postgres; a fake clock only where time must jump (TTLs, breaker recovery)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import asyncpg
import orjson
import pytest

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.settings import Settings
from gateway.store import cache as cache_queries
from gateway.store import leases as lease_queries
from gateway.store.migrate import migrate
from tests.clock import FakeClock
from tests.conftest import sources_of
from tests.helpers import RunningGateway

QUERY = "{ articles(first: 5) { nodes { id } sources { source { id } status ageSeconds latencyMs error { code } } } }"


def three(**extra: object) -> tuple[dict, ...]:
    base = (
        {"id": "bbc", "name": "BBC", "kind": "newsapi", "url": "{demo}/newsapi/v2/top-headlines?sources=bbc-news"},
        {"id": "tech", "name": "Tech", "kind": "feed", "url": "{demo}/feeds/tech.rss"},
        {"id": "world", "name": "World", "kind": "feed", "url": "{demo}/feeds/world.atom"},
    )
    return tuple({**t, **extra} for t in base)


def statuses(data: dict) -> dict[str, str]:
    return {s["source"]["id"]: s["status"] for s in data["articles"]["sources"]}


def latencies(data: dict) -> dict[str, int]:
    return {s["source"]["id"]: s["latencyMs"] for s in data["articles"]["sources"]}


def errors(data: dict) -> dict[str, str | None]:
    return {s["source"]["id"]: (s["error"] or {}).get("code") for s in data["articles"]["sources"]}


async def test_deadline_returns_what_finished(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    demo.control.set_fault("feeds.rss:tech", fault="hang")
    settings = make_settings(sources_of(demo.url, *three(timeout_ms=5000)), request_deadline_ms=600)
    async with RunningGateway(create_app(settings)) as gw:
        data = await gw.data(QUERY)
        assert statuses(data) == {"bbc": "FRESH", "tech": "TIMEOUT", "world": "FRESH"}
        assert errors(data)["tech"] == "DEADLINE_EXCEEDED"
        assert 550 <= latencies(data)["tech"] < 5000  # the deadline, not the 5 s source timeout
        # our own deadline is not the upstream's fault
        assert gw.services.breakers["tech"].snapshot().failures == 0


async def test_upstream_timeout_is_timeout_and_counts(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    demo.control.set_fault("feeds.rss:tech", fault="hang")
    settings = make_settings(sources_of(demo.url, *three(timeout_ms=300)), request_deadline_ms=2000)
    async with RunningGateway(create_app(settings)) as gw:
        data = await gw.data(QUERY)
        assert statuses(data)["tech"] == "TIMEOUT"
        assert errors(data)["tech"] == "UPSTREAM_TIMEOUT"
        assert gw.services.breakers["tech"].snapshot().failures == 1


async def test_slow_drip_body_is_bounded_by_the_timeout(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    demo.control.set_fault("feeds.atom:world", fault="drip", drip_delay_ms=200, drip_chunks=20)
    settings = make_settings(sources_of(demo.url, *three(timeout_ms=500)))
    async with RunningGateway(create_app(settings)) as gw:
        data = await gw.data(QUERY)
    assert errors(data)["world"] == "UPSTREAM_TIMEOUT"
    assert latencies(data)["world"] < 4000  # the timeout, not the 20 x 200 ms drip


async def test_singleflight_one_upstream_call_for_a_cold_stampede(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    demo.control.set_fault("*", latency_ms=300)
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *three())))) as gw:
        results = await asyncio.gather(*(gw.data(QUERY) for _ in range(50)))
    assert demo.control.stats()["total"] == 3
    assert all(set(statuses(r).values()) == {"FRESH"} for r in results)


async def test_two_workers_on_one_database_make_one_call_per_source(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """Two app instances stand in for two worker processes: their only shared state is
    Postgres, exactly as between real processes (leases + NOTIFY)."""
    demo.control.set_fault("*", latency_ms=300)
    settings = make_settings(sources_of(demo.url, *three()))
    async with RunningGateway(create_app(settings)) as a, RunningGateway(create_app(settings)) as b:
        await asyncio.wait_for(a.services.listener.connected.wait(), 5)  # type: ignore[union-attr]
        await asyncio.wait_for(b.services.listener.connected.wait(), 5)  # type: ignore[union-attr]
        results = await asyncio.gather(*(gw.data(QUERY) for gw in (a, b) for _ in range(20)))
    assert demo.control.stats()["total"] == 3
    assert all(r["articles"]["nodes"] for r in results)


async def test_a_cold_refresh_costs_one_statement_plus_three_per_source(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """Cold keys: one statement reads the cache and bids for the leases of all three
    sources; after each upstream call, one statement writes the row and notifies the
    other processes (they wait on it, so it must not be five), one ends the lease,
    and one writes the articles (nobody waits for them)."""
    settings = make_settings(sources_of(demo.url, *three()))
    async with RunningGateway(create_app(settings)) as gw:
        listener = gw.services.listener
        assert listener is not None
        await asyncio.wait_for(listener.connected.wait(), 5)
        db = gw.services.db
        with contextlib.ExitStack() as stack:
            written = [stack.enter_context(listener.watch(s, "latest")) for s in ("bbc", "tech", "world")]
            db.query_log = []
            data = await gw.data(QUERY)
            await gw.services.source_service.writes_done(timeout_s=5)
            await asyncio.wait_for(asyncio.gather(*(w.event.wait() for w in written)), 2)
        assert set(statuses(data).values()) == {"FRESH"}
        log = db.query_log
        assert len(log) == 10, "\n---\n".join(log)
        writes = [i for i, q in enumerate(log) if "INSERT INTO fetch_cache" in q]
        releases = [i for i, q in enumerate(log) if q.startswith("DELETE FROM fetch_leases")]
        articles = [i for i, q in enumerate(log) if "INSERT INTO articles" in q]
        assert len(writes) == 3 and len(releases) == 3 and len(articles) == 3
        assert writes[0] < releases[0] and writes[0] < articles[0]
        async with db.pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM fetch_leases") == 0
            for source_id in ("bbc", "tech", "world"):
                cached = await conn.fetchval(
                    "SELECT jsonb_array_length(payload -> 'articles') FROM fetch_cache WHERE source_id = $1", source_id
                )
                stored = await conn.fetchval(  # by id: an article two sources share is stored once
                    "SELECT count(*) FROM articles WHERE id IN (SELECT jsonb_array_elements(payload -> 'articles')"
                    " ->> 'id' FROM fetch_cache WHERE source_id = $1)",
                    source_id,
                )
                assert cached and stored == cached


@contextlib.asynccontextmanager
async def migrated_connection(database_url: str) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to a migrated database, jsonb as the gateway encodes it."""
    conn = await asyncpg.connect(database_url)
    try:
        await migrate(conn)
        await conn.set_type_codec(
            "jsonb", encoder=lambda v: orjson.dumps(v).decode(), decoder=orjson.loads, schema="pg_catalog"
        )
        yield conn
    finally:
        await conn.close()


def empty_row(source_id: str) -> cache_queries.CacheRow:
    now = datetime.now(timezone.utc)
    return cache_queries.CacheRow(source_id, "latest", {"articles": [], "dropped": 0}, now, None, None)


async def test_the_refresh_write_leaves_the_lease_to_a_later_statement(database_url: str) -> None:
    """Released inside the write, a bid blocked on the lease row would take the lease
    at commit with a snapshot from before it (no row yet) and call upstream again."""
    async with migrated_connection(database_url) as conn:
        bid = await lease_queries.read_and_try_acquire_many(conn, [("s", "latest")], "holder-a", 5.0)
        assert bid[("s", "latest")] == (None, True)
        await cache_queries.put_refreshed(conn, empty_row("s"))
        assert await conn.fetchval("SELECT holder FROM fetch_leases WHERE source_id = 's'") == "holder-a"
        other = await lease_queries.read_and_try_acquire_many(conn, [("s", "latest")], "holder-b", 5.0)
        record, acquired = other[("s", "latest")]
        assert record is not None and not acquired  # the row is there, the lease still held
        await lease_queries.release(conn, "s", "latest", "holder-a")
        assert await conn.fetchval("SELECT count(*) FROM fetch_leases") == 0


async def test_articles_follow_their_row_and_only_while_it_is_current(database_url: str) -> None:
    """The articles go in after the row, only if that row is still the key's: a newer
    row from another process written in between keeps its own articles."""
    from gateway.sources.base import NormalizedArticle

    def row(article_id: str, fetched_at: datetime) -> cache_queries.CacheRow:
        article = NormalizedArticle(id=article_id, source_id="s", title=article_id, url=f"https://x/{article_id}")
        return cache_queries.CacheRow("s", "latest", {"articles": [article.to_json()], "dropped": 0},
                                      fetched_at, None, None)

    now = datetime.now(timezone.utc)
    older, newer = row("old", now), row("new", now + timedelta(seconds=1))
    async with migrated_connection(database_url) as conn:
        await cache_queries.put_refreshed(conn, older)
        await cache_queries.put_refreshed(conn, newer)  # another process, in between
        await cache_queries.put_articles(conn, older)
        assert await conn.fetchval("SELECT count(*) FROM articles") == 0
        await cache_queries.put_articles(conn, newer)
        assert [r["id"] for r in await conn.fetch("SELECT id FROM articles")] == ["new"]


async def test_one_refused_key_does_not_fail_the_others_in_its_batch(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """Cold keys of different requests share a bid statement; an error that is not
    the database being away (a value it refuses, say) must stay with its own key."""
    from gateway.service.coordinator import LeaseBids

    async with RunningGateway(create_app(make_settings(sources_of(demo.url, three()[0])))) as gw:
        service = gw.services.source_service
        real = service.coordinator._read_and_bid_many
        batches: list[list[tuple[str, str]]] = []

        async def refusing(keys):  # type: ignore[no-untyped-def]
            batches.append(list(keys))
            if ("bbc", "q=poison") in keys:
                raise ValueError("refused by the database")
            return await real(keys)

        bids = LeaseBids(refusing)
        good, bad = await asyncio.gather(
            bids.load(("bbc", "latest")), bids.load(("bbc", "q=poison")), return_exceptions=True
        )
        assert batches[0] == [("bbc", "latest"), ("bbc", "q=poison")]  # they did share one
        assert isinstance(bad, ValueError)
        assert good == (None, True)


async def test_pooled_connections_open_with_the_hot_statements_prepared(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """A statement's first use on a connection would otherwise cost a Parse round-trip
    first; under a burst that wait delayed the lease bid and the peer-awaited write."""
    from gateway.store import HOT_STATEMENTS

    async with RunningGateway(create_app(make_settings(sources_of(demo.url, three()[0])))) as gw:
        pool = gw.services.db.pool
        conns = [await pool.acquire() for _ in range(gw.services.settings.db_pool_min)]
        try:
            for conn in conns:
                prepared = {r["statement"] for r in await conn.fetch("SELECT statement FROM pg_prepared_statements")}
                assert set(HOT_STATEMENTS) <= prepared
        finally:
            for conn in conns:
                await pool.release(conn)


async def test_cache_listener_wakes_waiters_on_the_refresh_write(database_url: str) -> None:
    from gateway.store.listener import CacheListener

    listener = CacheListener(database_url)
    listener.start()
    try:
        await asyncio.wait_for(listener.connected.wait(), 5)
        async with migrated_connection(database_url) as conn:
            with listener.watch("src", "latest") as watch, listener.watch("src", "other") as other:
                await cache_queries.put_refreshed(conn, empty_row("src"))
                await asyncio.wait_for(watch.event.wait(), 1)
                assert watch.failure is None
                assert not other.event.is_set()
                # A failed refresh: the lease holder releases and says why, in one statement.
                await lease_queries.try_acquire(conn, "src", "other", "holder-a", 10)
                await lease_queries.release_failed(conn, "src", "other", "holder-a", "UPSTREAM_HTTP_ERROR", 503)
                await asyncio.wait_for(other.event.wait(), 1)
                assert other.failure == ("UPSTREAM_HTTP_ERROR", 503)
                # Released by somebody else's failure: no lease of ours, no NOTIFY.
                watch.event.clear()
                await lease_queries.release_failed(conn, "src", "latest", "holder-b", "UPSTREAM_TIMEOUT", None)
                assert await conn.fetchval("SELECT count(*) FROM fetch_leases") == 0
    finally:
        await listener.aclose()


async def test_breaker_opens_serves_stale_then_probes_and_recovers(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    clock = FakeClock()
    tables = three(ttl_s=10, breaker={"failure_threshold": 2, "recovery_s": 30, "half_open_max_calls": 1})
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *tables)), clock=clock)) as gw:
        await gw.data(QUERY)  # warm every cache
        demo.control.set_fault("feeds.rss:tech", fault="500")
        for _ in range(2):  # past the TTL and the revalidate window: each query tries the upstream
            clock.advance(25)
            data = await gw.data(QUERY)
            assert statuses(data)["tech"] == "STALE"
            assert errors(data)["tech"] == "UPSTREAM_HTTP_ERROR"
        assert gw.services.breakers["tech"].state.value == "OPEN"
        calls = demo.control.count("feeds.rss")
        clock.advance(25)
        data = await gw.data(QUERY)
        assert statuses(data)["tech"] == "STALE" and errors(data)["tech"] == "CIRCUIT_OPEN"
        assert demo.control.count("feeds.rss") == calls  # an open breaker makes no call
        health = await gw.data("{ health { status sources { source { id } breaker { state openedAt } } } }")
        assert health["health"]["status"] == "DEGRADED"
        tech = next(s for s in health["health"]["sources"] if s["source"]["id"] == "tech")
        assert tech["breaker"]["state"] == "OPEN" and tech["breaker"]["openedAt"]

        demo.control.clear_faults()
        clock.advance(10)  # recovery_s elapsed: one probe goes through
        data = await gw.data(QUERY)
        assert statuses(data)["tech"] == "FRESH"
        assert demo.control.count("feeds.rss") == calls + 1
        assert gw.services.breakers["tech"].state.value == "CLOSED"


async def test_open_breaker_without_a_copy_is_skipped(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    demo.control.set_fault("feeds.rss:tech", fault="500")
    tables = three(breaker={"failure_threshold": 1, "recovery_s": 60})
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *tables)))) as gw:
        first = await gw.data(QUERY)
        second = await gw.data(QUERY)
    assert statuses(first)["tech"] == "FAILED"
    assert statuses(second)["tech"] == "SKIPPED" and errors(second)["tech"] == "CIRCUIT_OPEN"


async def test_half_open_lets_through_only_its_probes(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    clock = FakeClock()
    demo.control.set_fault("feeds.rss:tech", fault="500")
    tables = three(breaker={"failure_threshold": 1, "recovery_s": 30, "half_open_max_calls": 1})
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *tables)), clock=clock)) as gw:
        await gw.data(QUERY)
        assert gw.services.breakers["tech"].state.value == "OPEN"
        before = demo.control.count("feeds.rss")
        for _ in range(3):  # recovery windows: each lets exactly one probe through
            clock.advance(30)
            await asyncio.gather(*(gw.data(QUERY) for _ in range(10)))
        assert demo.control.count("feeds.rss") == before + 3


async def test_stale_while_revalidate_answers_at_once_and_refreshes_once(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    clock = FakeClock()
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *three(ttl_s=10))), clock=clock)) as gw:
        await gw.data(QUERY)
        demo.control.set_fault("*", latency_ms=400)
        clock.advance(12)  # past the TTL, within the revalidate window
        results = await asyncio.gather(*(gw.data(QUERY) for _ in range(10)))
        # nobody waited for the 400 ms upstream: every answer is the cached copy
        assert all(set(statuses(r).values()) == {"STALE"} for r in results)
        assert {s["ageSeconds"] for r in results for s in r["articles"]["sources"]} == {12}
        await gw.services.source_service.settle(timeout_s=5)  # the background refreshes land
        assert demo.control.stats()["total"] == 6  # 3 cold + exactly 1 refresh per source
        data = await gw.data(QUERY)
        assert set(statuses(data).values()) == {"CACHED"}


async def test_conditional_get_304_counts_as_fresh(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    clock = FakeClock()
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *three(ttl_s=10))), clock=clock)) as gw:
        first = await gw.data(QUERY)
        clock.advance(30)  # beyond the revalidate window: the next query waits for the upstream
        second = await gw.data(QUERY)
        stats = gw.services.source_service.stats
        assert stats["tech"].not_modified == 1 and stats["world"].not_modified == 1
        assert stats["bbc"].not_modified == 0  # NewsAPI sends no validators
    assert set(statuses(second).values()) == {"FRESH"}
    assert first["articles"]["nodes"] == second["articles"]["nodes"]


async def test_stale_if_error_up_to_max_stale(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    clock = FakeClock()
    tables = three(ttl_s=10, max_stale_s=100)
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *tables)), clock=clock)) as gw:
        await gw.data(QUERY)
        demo.control.set_fault("newsapi.top-headlines", fault="503")
        clock.advance(50)
        data = await gw.data(QUERY)
        bbc = next(s for s in data["articles"]["sources"] if s["source"]["id"] == "bbc")
        assert bbc["status"] == "STALE" and bbc["ageSeconds"] == 50
        assert bbc["error"]["code"] == "UPSTREAM_HTTP_ERROR"
        clock.advance(60)  # older than max_stale_s: no longer served
        data = await gw.data(QUERY)
        assert statuses(data)["bbc"] == "FAILED"


async def test_retries_transient_errors_within_budget(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(sources_of(demo.url, three()[0]))
    async with RunningGateway(create_app(settings)) as gw:
        for i in range(5):  # earn retry budget: 20% of calls
            await gw.data(f'{{ articles(search: "warm{i}") {{ nodes {{ id }} }} }}')
        before = demo.control.count("newsapi.top-headlines")
        demo.control.set_fault("newsapi.top-headlines", fault="503", fail_times=1)
        data = await gw.data('{ articles(search: "x") { sources { status } } }')
        assert data["articles"]["sources"] == [{"status": "FRESH"}]
        assert demo.control.count("newsapi.top-headlines") == before + 2
        assert gw.services.source_service.stats["bbc"].retries == 1
        # the budget is spent: the next transient failure is not retried
        demo.control.set_fault("newsapi.top-headlines", fault="503", fail_times=1)
        data = await gw.data('{ articles(search: "y") { sources { status } } }')
        assert data["articles"]["sources"] == [{"status": "FAILED"}]
        assert demo.control.count("newsapi.top-headlines") == before + 3


async def test_no_retry_for_non_transient_errors(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, three()[0])))) as gw:
        for i in range(10):
            await gw.data(f'{{ articles(search: "warm{i}") {{ nodes {{ id }} }} }}')
        before = demo.control.count("newsapi.top-headlines")
        demo.control.set_fault("newsapi.top-headlines", fault="500", fail_times=1)
        await gw.data('{ articles(search: "x") { sources { status } } }')
        assert demo.control.count("newsapi.top-headlines") == before + 1


async def test_retry_honours_retry_after(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, three()[0])))) as gw:
        for i in range(5):
            await gw.data(f'{{ articles(search: "warm{i}") {{ nodes {{ id }} }} }}')
        demo.control.set_fault("newsapi.top-headlines", fault="429", retry_after_s=1, fail_times=1)
        started = time.perf_counter()
        data = await gw.data('{ articles(search: "x") { sources { status } } }')
        assert data["articles"]["sources"] == [{"status": "FRESH"}]
        assert time.perf_counter() - started >= 1.0


async def test_bulkhead_rejections_do_not_count_against_the_breaker(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    hn = {"id": "hn", "name": "HN", "kind": "hackernews", "url": "{demo}/hn/v0", "max_concurrency": 1,
          "breaker": {"failure_threshold": 1}}
    demo.control.set_fault("hn.item", latency_ms=200)
    settings = make_settings(sources_of(demo.url, hn), request_deadline_ms=700)
    async with RunningGateway(create_app(settings)) as gw:
        data = await gw.data("{ articles(first: 30) { sources { status error { code } } } }")
        # 30 item calls, one at a time, 200 ms each, 700 ms deadline: most wait in the bulkhead
        assert data["articles"]["sources"][0]["status"] == "TIMEOUT"
        # the refresh runs on until its own budget rejects the rest
        await gw.services.source_service.settle(timeout_s=5)
        assert gw.services.breakers["hn"].state.value == "CLOSED"
        assert gw.services.breakers["hn"].snapshot().failures == 0


async def test_postgres_outage_degrades_and_recovers(
    demo: DemoServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Postgres goes away mid-flight: answers still come from upstreams, health says
    DEGRADED, and the pool recovers by itself once Postgres is back."""
    from gateway.store.embedded import EmbeddedPostgres

    pg = EmbeddedPostgres(tmp_path / "own-pg")
    url = await pg.start()
    clock = FakeClock()
    try:
        settings = make_settings(sources_of(demo.url, *three(ttl_s=1)), database_url=url)
        async with RunningGateway(create_app(settings, clock=clock)) as gw:
            assert set(statuses(await gw.data(QUERY)).values()) == {"FRESH"}
            await gw.services.source_service.settle(timeout_s=5)
            await pg.stop()
            clock.advance(2.1)  # the cached copy expires, and its revalidate window too
            results = await asyncio.gather(*(gw.data(QUERY) for _ in range(5)))
            for r in results:
                assert r["articles"]["nodes"], r
            health = await gw.data("{ health { status database { ok error } } }")
            assert health["health"]["status"] == "DEGRADED" and health["health"]["database"]["ok"] is False
            assert await pg.start() == url
            # pooled connections from before the restart are dead: the first query
            # retries on a fresh one instead of failing
            await gw.services.db.ping(timeout_s=2)  # raises unless it answers
            for _ in range(20):  # health checks ignore the back-off: the first may already pass
                health = await gw.data("{ health { status database { ok } } }")
                if health["health"]["database"]["ok"]:
                    break
                await asyncio.sleep(0.1)
            assert health["health"]["status"] == "OK", "the pool did not recover"
            clock.advance(2.1)  # past TTL and revalidate window (and the back-off): a blocking refresh
            recovered_at = clock.now()
            data = await gw.data(QUERY)
            assert set(statuses(data).values()) == {"FRESH"}
            await gw.services.source_service.tasks.drain(timeout_s=5)  # the write-behind
            rows = await gw.services.db.run(
                lambda c: c.fetchval("SELECT count(*) FROM fetch_cache WHERE fetched_at >= $1", recovered_at)
            )
            assert rows == 3  # and the cache is written again
    finally:
        await pg.stop()


@pytest.mark.parametrize("fault", ["500", "garbage"])
async def test_upstream_failures_are_never_a_5xx(
    demo: DemoServer, make_settings: Callable[..., Settings], fault: str
) -> None:
    demo.control.set_fault("*", fault=fault)
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, *three())))) as gw:
        resp = await gw.post(QUERY)
    assert resp.status_code == 200
    assert set(statuses(resp.json()["data"]).values()) == {"FAILED"}
