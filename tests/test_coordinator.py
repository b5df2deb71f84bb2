"""The refresh coordinator across processes: two app instances on one database stand
in for two workers (their only shared state is Postgres: leases and NOTIFY). What is
asserted is who waited for whom and how many upstream calls were made."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator

import pytest

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.errors import UpstreamTimeout
from gateway.service import coordinator as coordinator_module
from gateway.service.coordinator import PEER_WAIT_MARGIN_S, RefreshCoordinator
from gateway.service.feedcache import FeedCache
from gateway.service.tasks import BackgroundTasks
from gateway.settings import Settings
from gateway.store import leases as lease_queries
from gateway.store.db import Database
from gateway.store.listener import Watch
from tests.clock import FakeClock
from tests.conftest import sources_of
from tests.helpers import RunningGateway

QUERY = "{ articles(first: 5) { sources { source { id } status error { code httpStatus message } } } }"
TECH = {"id": "tech", "name": "Tech", "kind": "feed", "url": "{demo}/feeds/tech.rss"}


def tech_result(result: dict) -> dict:
    (only,) = result["data"]["articles"]["sources"]
    return only


async def until(condition: Callable[[], bool]) -> None:
    """Wait for ``condition`` (bounded), checking every loop turn or so."""
    async with asyncio.timeout(10):
        while not condition():
            await asyncio.sleep(0.01)


async def both_listening(*gateways: RunningGateway) -> None:
    for gw in gateways:
        await asyncio.wait_for(gw.services.listener.connected.wait(), 5)


async def test_a_peer_s_failed_refresh_wakes_the_waiter_with_its_error(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """The lease holder's upstream times out; the other process, waiting on it, gets
    the same error at once (not the request deadline) and makes no call itself."""
    demo.control.set_fault("feeds.rss:tech", fault="hang")
    settings = make_settings(sources_of(demo.url, {**TECH, "timeout_ms": 400}), request_deadline_ms=20_000)
    async with RunningGateway(create_app(settings)) as a, RunningGateway(create_app(settings)) as b:
        await both_listening(a, b)
        first = asyncio.ensure_future(a.query(QUERY))
        await until(lambda: demo.control.count("feeds.rss") == 1)  # a holds the lease and is calling
        second = await b.query(QUERY)
        waited = tech_result(second)
        assert waited["status"] == "TIMEOUT"
        assert waited["error"]["code"] == "UPSTREAM_TIMEOUT"  # the holder's error, not a deadline
        assert "another worker" in waited["error"]["message"]
        assert tech_result(await first)["error"]["code"] == "UPSTREAM_TIMEOUT"
    assert demo.control.count("feeds.rss") == 1  # b never called the upstream


async def test_a_peer_s_http_error_arrives_with_its_status(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    demo.control.set_fault("feeds.rss:tech", fault="503", latency_ms=300)
    settings = make_settings(sources_of(demo.url, TECH))
    async with RunningGateway(create_app(settings)) as a, RunningGateway(create_app(settings)) as b:
        await both_listening(a, b)
        first = asyncio.ensure_future(a.query(QUERY))
        await until(lambda: demo.control.count("feeds.rss") == 1)
        waited = tech_result(await b.query(QUERY))
        await first
    assert waited["status"] == "FAILED"
    assert waited["error"]["code"] == "UPSTREAM_HTTP_ERROR" and waited["error"]["httpStatus"] == 503
    # a retried the 503 within its budget; b made none of those calls
    assert demo.control.count("feeds.rss") == a.services.source_service.stats["tech"].upstream_calls


async def test_a_waiter_gives_up_after_the_source_s_timeout(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """A lease held by a process that never finishes (it hangs, or died holding it):
    the waiter stops after the source's timeout plus a margin, not the request
    deadline, and serves what it can."""
    settings = make_settings(sources_of(demo.url, {**TECH, "timeout_ms": 300}), request_deadline_ms=20_000)
    async with RunningGateway(create_app(settings)) as gw:
        await both_listening(gw)
        await gw.services.db.run(
            lambda conn: lease_queries.try_acquire(conn, "tech", "latest", "a-stuck-peer", 60)
        )
        outcome = tech_result(await gw.query(QUERY))
    assert outcome["status"] == "TIMEOUT"
    assert outcome["error"]["code"] == "DEADLINE_EXCEEDED"
    assert "within the source's timeout" in outcome["error"]["message"]
    assert demo.control.count("feeds.rss") == 0  # the lease was somebody else's
    assert PEER_WAIT_MARGIN_S <= 0.1


async def test_a_peer_s_success_is_adopted_without_a_call(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    demo.control.set_fault("feeds.rss:tech", latency_ms=300)
    settings = make_settings(sources_of(demo.url, TECH))
    async with RunningGateway(create_app(settings)) as a, RunningGateway(create_app(settings)) as b:
        await both_listening(a, b)
        first = asyncio.ensure_future(a.query(QUERY))
        await until(lambda: demo.control.count("feeds.rss") == 1)
        waited = tech_result(await b.query(QUERY))
        assert tech_result(await first)["status"] == "FRESH"
    assert waited["status"] == "FRESH" and waited["error"] is None
    assert demo.control.count("feeds.rss") == 1


async def test_a_lone_process_writes_its_cache_rows_behind_its_answers(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """With nobody else waiting, a refresh's row is written after the delay, not with
    the answer; whatever waits for the writes (read-your-writes, settle) sends them."""
    settings = make_settings(sources_of(demo.url, TECH), write_behind_delay_ms=60_000)
    async with RunningGateway(create_app(settings)) as gw:
        await both_listening(gw)
        result = await gw.query("{ articles(first: 1) { nodes { id } sources { status } } }")
        assert result["data"]["articles"]["sources"] == [{"status": "FRESH"}]
        cache = gw.services.source_service.cache

        async def row_count() -> int:
            async with gw.services.db.pool.acquire() as conn:
                return await conn.fetchval("SELECT count(*) FROM fetch_cache WHERE source_id = 'tech'")

        assert await row_count() == 0 and cache.hastened == 0  # held back, 60 s to go
        (node,) = result["data"]["articles"]["nodes"]
        found = await gw.data("query($id: ID!) { article(id: $id) { id } }", {"id": node["id"]})
        assert found["article"] == {"id": node["id"]}  # read-your-writes sent the write
        assert await row_count() == 1 and cache.hastened == 1


async def test_a_write_another_process_waits_for_goes_at_once(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    """The waiting process says so in its lease bid (a NOTIFY): the holder writes at
    once instead of after its delay, which here is far past the waiter's patience."""
    demo.control.set_fault("feeds.rss:tech", latency_ms=300)
    settings = make_settings(sources_of(demo.url, TECH), write_behind_delay_ms=60_000)
    async with RunningGateway(create_app(settings)) as a, RunningGateway(create_app(settings)) as b:
        await both_listening(a, b)
        first = asyncio.ensure_future(a.query(QUERY))
        await until(lambda: demo.control.count("feeds.rss") == 1)  # a holds the lease and is calling
        waited = tech_result(await b.query(QUERY))
        assert waited["status"] == "FRESH" and waited["error"] is None  # not a peer-wait TIMEOUT
        assert tech_result(await first)["status"] == "FRESH"
        assert a.services.source_service.cache.hastened == 1
    assert demo.control.count("feeds.rss") == 1


class LateNotices:
    """A listener whose notifications are read after the poll's answer, every time:
    what the real one does now and then under load (its connection and the pool's are
    read by the same loop, in no set order). The test delivers each notice itself."""

    def __init__(self) -> None:
        self.seen = Watch()

    @contextlib.contextmanager
    def watch(self, source_id: str, key: str) -> Iterator[Watch]:
        yield self.seen


async def test_a_failure_noticed_after_the_lease_is_seen_gone_is_still_the_peer_s_failure(
    db: Database, demo: DemoServer, make_settings: Callable[..., Settings], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The holder's failure releases the lease and sends its NOTIFY in one commit; a
    waiter whose poll sees the lease gone before the NOTIFY is read must not take the
    peer for dead and call the upstream itself (under a hanging upstream that was a
    second wait of the source's timeout for every request in the process)."""
    monkeypatch.setattr(coordinator_module, "FAILURE_NOTICE_S", 30.0)  # the notice comes when the test says
    clock = FakeClock()
    tasks = BackgroundTasks()
    listener = LateNotices()
    coordinator = RefreshCoordinator(FeedCache(db, tasks, capacity=10, clock=clock), listener,  # type: ignore[arg-type]
                                     tasks, holder_id="b", refresh_budget_s=5.0, clock=clock)
    (source,) = make_settings(sources_of(demo.url, TECH)).sources
    key = ("tech", "latest")
    assert await db.run(lambda conn: lease_queries.try_acquire(conn, *key, "a", 30.0))  # a peer refreshes
    calls = 0

    async def fetch(budget: object) -> object:
        nonlocal calls
        calls += 1
        raise AssertionError("the waiter called the upstream itself")

    watch = listener.seen
    db.query_log = []
    polls = lambda: db.query_log.count(lease_queries.PEER_STATE)  # noqa: E731
    waiting = asyncio.ensure_future(coordinator.refresh(key, source, fetch, None))  # type: ignore[arg-type]
    await until(lambda: polls() == 1)  # it saw the lease held, and waits
    await db.run(lambda conn: lease_queries.release_failed(conn, *key, "a", "UPSTREAM_TIMEOUT", None))
    watch.event.set()  # woken (its poll interval) before the failure's NOTIFY is read
    await until(lambda: polls() == 2 and not watch.event.is_set())  # it saw the lease gone, and waits
    watch.failure = ("UPSTREAM_TIMEOUT", None)
    watch.event.set()
    with pytest.raises(UpstreamTimeout, match="another worker"):
        await waiting
    assert calls == 0
    await coordinator.aclose()
