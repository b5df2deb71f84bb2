"""Maintenance: one leader across processes (two app instances on one database stand
in for two workers or replicas), garbage collection by each source's max_stale_s, and
refresh-ahead. Time is a FakeClock the test steps (started at the real time, since
Postgres stamps articles with its own now()); the background loop runs its first
round and then sleeps for an hour, and the test drives the same ``run_once`` itself."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from datetime import datetime, timedelta, timezone

import asyncpg
import pytest

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.ops.maintenance import Maintenance
from gateway.settings import Settings
from tests.clock import FakeClock
from tests.conftest import sources_of
from tests.helpers import RunningGateway

QUERY = "{ articles(first: 5) { sources { status } } }"


def tech(**extra: object) -> dict[str, object]:
    return {"id": "tech", "name": "Tech", "kind": "feed", "url": "{demo}/feeds/tech.rss", **extra}


def maintenance_of(gw: RunningGateway) -> Maintenance:
    assert gw.services.maintenance is not None
    return gw.services.maintenance


async def until(condition: Callable[[], bool], timeout_s: float = 20) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def gateways(
    settings: Settings, clock: FakeClock, n: int, *, only_first_leads: bool = False
) -> AsyncIterator[list[RunningGateway]]:
    async with contextlib.AsyncExitStack() as stack:
        gws = [
            await stack.enter_async_context(
                RunningGateway(create_app(replace(settings, maintenance=i == 0 or not only_first_leads), clock=clock))
            )
            for i in range(n)
        ]
        for gw in gws:  # the loop's first round is done; it now sleeps (interval: an hour)
            await until(lambda gw=gw: maintenance_of(gw).rounds >= 1)
        yield gws


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=datetime.now(timezone.utc))


def settings_for(make_settings: Callable[..., Settings], demo: DemoServer, **source: object) -> Settings:
    return make_settings(sources_of(demo.url, tech(**source)), maintenance=True, maintenance_interval_s=3600.0)


async def test_one_leader_and_the_other_takes_over_when_it_goes(
    demo: DemoServer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = make_settings(sources_of(demo.url, tech()), maintenance=True, maintenance_interval_s=0.05)
    async with contextlib.AsyncExitStack() as stack_a, contextlib.AsyncExitStack() as stack_b:
        a = await stack_a.enter_async_context(RunningGateway(create_app(settings, clock=clock)))
        b = await stack_b.enter_async_context(RunningGateway(create_app(settings, clock=clock)))
        await until(lambda: maintenance_of(a).rounds >= 3 and maintenance_of(b).rounds >= 3)
        leaders = [gw for gw in (a, b) if maintenance_of(gw).is_leader]
        assert len(leaders) == 1  # both tried, round after round
        leader_stack, follower = (stack_a, b) if leaders[0] is a else (stack_b, a)
        await leader_stack.aclose()  # the leader's process goes, and its lock with its connection
        await until(lambda: maintenance_of(follower).is_leader)


async def test_leadership_survives_postgres_dropping_the_leader_s_connection(
    demo: DemoServer, make_settings: Callable[..., Settings], clock: FakeClock, database_url: str
) -> None:
    settings = make_settings(sources_of(demo.url, tech()), maintenance=True, maintenance_interval_s=0.05)
    holder = "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND database = " \
             "(SELECT oid FROM pg_database WHERE datname = current_database())"
    async with RunningGateway(create_app(settings, clock=clock)) as a, RunningGateway(
        create_app(settings, clock=clock)
    ) as b:
        await until(lambda: maintenance_of(a).is_leader or maintenance_of(b).is_leader)
        admin = await asyncpg.connect(database_url)
        try:
            (old_pid,) = [r["pid"] for r in await admin.fetch(holder)]
            await admin.execute("SELECT pg_terminate_backend($1)", old_pid)
            async with asyncio.timeout(20):
                while True:  # a new session holds the lock, and exactly one process says it leads
                    pids = [r["pid"] for r in await admin.fetch(holder)]
                    leaders = sum(maintenance_of(gw).is_leader for gw in (a, b))
                    if pids and pids != [old_pid] and leaders == 1:
                        break
                    await asyncio.sleep(0.05)
        finally:
            await admin.close()


async def test_garbage_collection_by_max_stale(
    demo: DemoServer, make_settings: Callable[..., Settings], clock: FakeClock, database_url: str
) -> None:
    settings = settings_for(make_settings, demo, max_stale_s=1000)
    now = clock.now()
    old, young = now - timedelta(seconds=1500), now - timedelta(seconds=50)
    async with gateways(settings, clock, 1) as (gw,):
        conn = await asyncpg.connect(database_url)
        try:
            payload = '{"articles": [{"id": "kept"}], "dropped": 0}'
            await conn.executemany(
                "INSERT INTO fetch_cache (source_id, request_key, payload, fetched_at) VALUES ($1, $2, $3::jsonb, $4)",
                [
                    ("tech", "latest", '{"articles": [], "dropped": 0}', old),
                    ("tech", "q=rust", '{"articles": [], "dropped": 0}', old),
                    ("tech", "item:1", '{"item": null}', old),
                    ("tech", "q=young", payload, young),
                ],
            )
            await conn.executemany(
                "INSERT INTO articles (id, source_id, title, url, updated_at) VALUES ($1, 'tech', 't', 'u', $2)",
                [("kept", old), ("orphan-old", old), ("orphan-young", young)],
            )
            await conn.executemany(
                "INSERT INTO fetch_stats (source_id, request_key, started_at, duration_ms, outcome)"
                " VALUES ('tech', 'latest', $1, 1, 'OK')",
                [(now - timedelta(hours=settings.stats_retention_h + 1),), (now,)],
            )
            report = await maintenance_of(gw).run_once()
            assert report.leader and not report.gc_ran  # the first round collected; not due again yet
            clock.advance(settings.gc_interval_s)
            report = await maintenance_of(gw).run_once()
            assert report.gc_ran
            assert (report.cache_deleted, report.articles_deleted, report.stats_deleted) == (3, 1, 1)
            assert {r["request_key"] for r in await conn.fetch("SELECT request_key FROM fetch_cache")} == {"q=young"}
            assert {r["id"] for r in await conn.fetch("SELECT id FROM articles")} == {"kept", "orphan-young"}
            assert await conn.fetchval("SELECT count(*) FROM fetch_stats") == 1
        finally:
            await conn.close()


@pytest.mark.parametrize("readers", ["both", "non-leader"])
async def test_refresh_ahead_keeps_a_hot_key_cached_with_one_call_per_ttl(
    demo: DemoServer, make_settings: Callable[..., Settings], clock: FakeClock, readers: str
) -> None:
    """ttl_s 3, polled every 250 ms (fake) for 12 s through two processes: every answer
    CACHED, and the upstream sees about one call per TTL, made by whichever process
    leads, whoever read the key. "non-leader": the second process runs with
    GATEWAY_MAINTENANCE=false (a `gateway worker` does the maintenance) and takes every
    read: its reads still reach the leader."""
    settings = settings_for(make_settings, demo, ttl_s=3)
    async with gateways(settings, clock, 2, only_first_leads=readers == "non-leader") as gws:
        if readers == "non-leader":
            assert not maintenance_of(gws[1]).may_lead
            readers_of = [gws[1]]
        else:
            readers_of = gws
        first = await gws[1].data(QUERY)
        assert first["articles"]["sources"][0]["status"] == "FRESH"
        assert demo.control.count("feeds.rss") == 1
        await gws[1].services.source_service.settle(timeout_s=5)  # its row is written
        statuses = []
        for step in range(48):
            clock.advance(0.25)
            # the followers share their reads first, then the leader acts on everyone's
            for gw in sorted(gws, key=lambda gw: maintenance_of(gw).is_leader):
                await maintenance_of(gw).run_once()
            data = await readers_of[step % len(readers_of)].data(QUERY)
            statuses.append(data["articles"]["sources"][0]["status"])
        assert set(statuses) == {"CACHED"}, statuses
        refreshes = demo.control.count("feeds.rss") - 1
        # 12 s / 3 s TTL = 4; refreshed 0.75 s before expiry: 12 / 2.25 = 5
        assert 4 <= refreshes <= 6, refreshes
        print(f"refresh-ahead: {refreshes} upstream call(s) in 12 s at ttl_s 3")
        assert sum(maintenance_of(gw).is_leader for gw in gws) == 1
        if readers == "non-leader":
            assert maintenance_of(gws[0]).is_leader

        # nobody reads it any more: after the read window, no more calls
        clock.advance(settings.refresh_ahead_window_s + 1)
        before = demo.control.count("feeds.rss")
        for gw in gws:
            await maintenance_of(gw).run_once()
        assert demo.control.count("feeds.rss") == before


async def test_a_failing_refresh_ahead_is_left_to_requests_for_a_ttl(
    demo: DemoServer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    settings = settings_for(make_settings, demo, ttl_s=10, breaker={"failure_threshold": 100})
    async with gateways(settings, clock, 1) as (gw,):
        await gw.data(QUERY)
        await gw.services.source_service.settle(timeout_s=5)
        demo.control.set_fault("feeds.rss:tech", fault="500")  # not retried: one call per attempt
        clock.advance(8)  # due: 10 s TTL, refreshed 1 s ahead at the latest
        await maintenance_of(gw).run_once()
        assert demo.control.count("feeds.rss") == 2
        for _ in range(8):  # rounds go on; the failed key waits out a TTL
            clock.advance(1)
            await maintenance_of(gw).run_once()
        assert demo.control.count("feeds.rss") == 2
        clock.advance(2.5)
        await maintenance_of(gw).run_once()
        assert demo.control.count("feeds.rss") == 3
