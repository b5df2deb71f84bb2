"""Fetch statistics: every upstream call reaches Postgres behind the answer, in
batches, flushed on shutdown, and ``SourceHealth.fetchStats`` adds up every process."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import datetime, timezone

import asyncpg

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.ops.stats import FLUSH_INTERVAL_S, StatsWriter
from gateway.settings import Settings
from gateway.store.db import Database
from gateway.store.migrate import migrate
from tests.clock import FakeClock
from tests.conftest import sources_of
from tests.helpers import RunningGateway

TECH = {"id": "tech", "name": "Tech", "kind": "feed", "url": "{demo}/feeds/tech.rss"}
QUERY = "{ articles(first: 5) { sources { status } } }"
STATS = "{ health { sources { source { id } fetchStats(windowMinutes: 5) { calls failures p50Ms p95Ms p99Ms } } } }"


async def rows(database_url: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(database_url)
    try:
        return await conn.fetch("SELECT * FROM fetch_stats ORDER BY started_at")
    finally:
        await conn.close()


async def test_the_writer_sends_each_call_within_a_second_or_so(
    demo: DemoServer, make_settings: Callable[..., Settings], database_url: str
) -> None:
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, TECH)))) as gw:
        await gw.data(QUERY)
        # no flush by hand: the writer's own round (every FLUSH_INTERVAL_S) sends it
        async with asyncio.timeout(FLUSH_INTERVAL_S * 10):
            while not (found := await rows(database_url)):
                await asyncio.sleep(0.1)
        assert gw.services.stats is not None and gw.services.stats.pending == 0
    (row,) = found
    assert (row["source_id"], row["request_key"], row["outcome"], row["http_status"]) == ("tech", "latest", "OK", 200)
    assert row["bytes"] > 0 and row["items"] > 0 and row["duration_ms"] >= 0


async def test_shutdown_flushes_what_is_pending(
    demo: DemoServer, make_settings: Callable[..., Settings], database_url: str
) -> None:
    demo.control.set_fault("feeds.rss:tech", fault="503")
    settings = make_settings(sources_of(demo.url, {**TECH, "breaker": {"failure_threshold": 50}}))
    async with RunningGateway(create_app(settings)) as gw:
        await gw.data(QUERY)
        writer = gw.services.stats
        assert writer is not None
        pending = writer.pending
        assert pending == demo.control.count("feeds.rss")  # every attempt, retries included
    found = await rows(database_url)
    assert len(found) == pending >= 1  # written by the shutdown flush (or the writer just before)
    assert {(r["outcome"], r["http_status"]) for r in found} == {("UPSTREAM_HTTP_ERROR", 503)}


async def test_fetch_stats_add_up_every_process(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """Two app instances on one database stand in for two workers: each makes its own
    calls (different searches), and either one's fetchStats counts both."""
    news = {"id": "news", "name": "News", "kind": "newsapi", "url": "{demo}/newsapi/v2/everything"}
    settings = make_settings(sources_of(demo.url, news))
    async with RunningGateway(create_app(settings)) as a, RunningGateway(create_app(settings)) as b:
        await a.data('{ articles(search: "a", first: 1) { sources { status } } }')
        await b.data('{ articles(search: "b", first: 1) { sources { status } } }')
        demo.control.set_fault("newsapi.everything", fault="500")
        await b.data('{ articles(search: "c", first: 1) { sources { status } } }')
        calls = demo.control.count("newsapi.everything")
        for gw in (a, b):
            assert gw.services.stats is not None
            await gw.services.stats.flush()
        for gw in (a, b):
            (stats,) = [s["fetchStats"] for s in (await gw.data(STATS))["health"]["sources"]]
            assert stats["calls"] == calls >= 3
            assert stats["failures"] == calls - 2
            assert 0 <= stats["p50Ms"] <= stats["p95Ms"] <= stats["p99Ms"]
        empty = await a.data('{ health { sources { fetchStats(windowMinutes: 1) { calls p50Ms } } } }')
        assert empty["health"]["sources"][0]["fetchStats"]["calls"] == calls  # within the minute too
        bad = await a.query('{ health { sources { fetchStats(windowMinutes: 0) { calls } } } }')
        assert bad["errors"][0]["extensions"]["code"] == "BAD_USER_INPUT"


async def test_a_full_buffer_drops_and_counts_and_never_waits() -> None:
    writer = StatsWriter(None, max_pending=2)
    now = datetime.now(timezone.utc)
    for _ in range(5):
        writer.record("s", "latest", now, 1.0, "OK", 200, 10, 1)
    assert (writer.pending, writer.dropped) == (2, 3)


async def test_closing_the_writer_sends_what_its_round_has_not(database_url: str) -> None:
    """The writer's first round is a second away: what aclose() finds pending goes
    in its own flush, not lost with the process."""
    db = await Database.connect(
        database_url, min_size=1, max_size=2, connect_timeout_s=5, command_timeout_s=5, clock=FakeClock(), setup=migrate
    )
    try:
        writer = StatsWriter(db, max_pending=100)
        writer.start()
        now = datetime.now(timezone.utc)
        for i in range(3):
            writer.record("s", f"item:{i}", now, 1.5, "OK", 200, 10, 1)
        await writer.aclose()
        assert (writer.written, writer.pending, writer.lost) == (3, 0, 0)
        assert sorted(r["request_key"] for r in await rows(database_url)) == ["item:0", "item:1", "item:2"]
    finally:
        await db.close()
