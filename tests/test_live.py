"""Live updates (Subscription.articleAdded) with real SSE (httpx streaming) and
graphql-transport-ws (websockets) clients, against a real RSS upstream whose items
the test publishes. Sources with subscribers are refreshed by the maintenance leader
at their TTL: no test here sends a query to make that happen."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest

from gateway.app import create_app
from gateway.settings import Settings, parse_sources
from tests.helpers import RunningGateway
from tests.live import SUBSCRIBE, SUBSCRIBE_FULL, FeedUpstream, RawSSE, live_source, sse_subscribe, ws_subscribe

FETCH = '{ articles(sources: ["live"], first: 50) { nodes { id } } }'


def live_settings(make_settings: Callable[..., Settings], url: str, **kwargs: Any) -> Settings:
    sources = parse_sources({"sources": [live_source(url)]}, origin="test", env={})
    kwargs.setdefault("maintenance", True)
    kwargs.setdefault("maintenance_interval_s", 0.1)
    kwargs.setdefault("subscription_heartbeat_s", 0.5)
    return make_settings(sources, **kwargs)


@asynccontextmanager
async def live_gateway(make_settings: Callable[..., Settings], **kwargs: Any) -> AsyncIterator[
    tuple[RunningGateway, FeedUpstream]
]:
    async with FeedUpstream(summary_bytes=kwargs.pop("summary_bytes", 0)) as upstream:
        async with RunningGateway(create_app(live_settings(make_settings, upstream.url, **kwargs))) as gw:
            yield gw, upstream


def urls(events: list[dict[str, Any]]) -> list[str]:
    return [e["article"]["url"] for e in events]


def sse_data(stream_events: list[Any]) -> list[dict[str, Any]]:
    return [e.payload["data"]["articleAdded"] for e in stream_events]


async def test_sse_and_websocket_get_each_new_article_once_with_no_query(
    make_settings: Callable[..., Settings]
) -> None:
    async with live_gateway(make_settings) as (gw, upstream):
        published = upstream.add(3)
        async with sse_subscribe(gw.url, {"after": "0"}) as sse, ws_subscribe(gw.url, {"after": "0"}) as ws:
            first = sse_data(await sse.articles(3))
            assert sorted(urls(first)) == sorted(published)
            published += upstream.add(2)  # the leader refreshes the followed source at its TTL
            later = sse_data(await sse.articles(2))
            by_ws = await ws.articles(5)
        events = first + later
        assert sorted(urls(events)) == sorted(published)  # each once
        cursors = [int(e["cursor"]) for e in events]
        assert cursors == sorted(set(cursors))  # increasing
        assert [e["cursor"] for e in by_ws] == [e["cursor"] for e in events]  # the same stream on both
        assert not any(e["gap"] for e in events)
        assert upstream.fetches >= 2  # nobody queried: maintenance refreshed it


async def test_sse_event_ids_are_cursors_and_heartbeats_flow(make_settings: Callable[..., Settings]) -> None:
    async with live_gateway(make_settings) as (gw, upstream):
        upstream.add(2)
        async with sse_subscribe(gw.url, {"after": "0"}) as sse:
            events = await sse.articles(2)
            assert [e.id for e in events] == [e.payload["data"]["articleAdded"]["cursor"] for e in events]
            assert "extensions" not in events[0].payload  # the cursor moved into `id:`
            async with asyncio.timeout(10):
                while sse.comments < 2:  # `: ping` every GATEWAY_SUBSCRIPTION_HEARTBEAT_S
                    assert await sse.next_event(comments=True) is not None


async def test_last_event_id_resumes_without_loss_or_duplicates(make_settings: Callable[..., Settings]) -> None:
    async with live_gateway(make_settings) as (gw, upstream):
        published = upstream.add(3)
        async with sse_subscribe(gw.url, {"after": "0"}) as sse:
            seen = await sse.articles(2)
        await wait_subscribers(gw, 0, exactly=True)  # the disconnect reached the stream: it let go
        # gone; meanwhile the third is waiting and more are published
        published += upstream.add(3)
        await wait_for_articles(gw, 6)
        async with sse_subscribe(gw.url, {"after": "0"}, headers={"last-event-id": seen[-1].id or ""}) as sse:
            rest = await sse.articles(4)
        events = sse_data(seen + rest)
        assert urls(events) == [u for u in urls(events)] and sorted(urls(events)) == sorted(published)
        assert len({e["cursor"] for e in events}) == 6


async def wait_for_articles(gw: RunningGateway, count: int) -> None:
    async with asyncio.timeout(20):
        while True:
            n = await gw.services.db.run(lambda conn: conn.fetchval("SELECT count(*) FROM articles"))
            if n >= count:
                return
            await asyncio.sleep(0.05)


async def test_a_resume_older_than_the_replay_window_says_so(make_settings: Callable[..., Settings]) -> None:
    async with live_gateway(make_settings, subscription_replay_max=2) as (gw, upstream):
        published = upstream.add(5)
        await gw.data(FETCH)  # ingested by a query this time: nobody follows the source yet
        await wait_for_articles(gw, 5)
        async with sse_subscribe(gw.url, {"after": "0"}) as sse:
            events = sse_data(await sse.articles(2))
    assert [e["gap"] for e in events] == [True, False]
    assert sorted(urls(events)) == sorted(published)[-2:] or set(urls(events)) <= set(published)


async def test_bad_requests_get_clear_errors(make_settings: Callable[..., Settings]) -> None:
    async with live_gateway(make_settings, subscriptions_per_client=1) as (gw, _):
        # a subscription over plain JSON: told how to stream
        resp = await gw.client.post("/graphql", json={"query": SUBSCRIBE})
        assert resp.status_code == 406 and resp.json()["errors"][0]["extensions"]["code"] == "NOT_ACCEPTABLE"
        # an unknown source, a malformed cursor: one error event, then the end
        for variables, code in (({"sources": ["nope"]}, "BAD_USER_INPUT"), ({"after": "x1"}, "BAD_USER_INPUT")):
            async with sse_subscribe(gw.url, variables) as sse:
                event = await sse.next_event()
                assert event is not None and event.payload["errors"][0]["extensions"]["code"] == code, event
                assert (await sse.next_event()).event == "complete"  # type: ignore[union-attr]
        # over the per-client cap
        async with sse_subscribe(gw.url, {"after": "0"}) as first:
            upstream_wait = first  # holds the one slot
            await wait_subscribers(gw, 1)
            async with sse_subscribe(gw.url, {}) as second:
                event = await second.next_event()
                assert event is not None
                assert event.payload["errors"][0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            async with ws_subscribe(gw.url, {}) as ws:
                msg = await ws.next_message()
                assert msg["type"] in ("next", "error"), msg
                errors = msg["payload"]["errors"] if msg["type"] == "next" else msg["payload"]
                assert errors[0]["extensions"]["code"] == "TOO_MANY_SUBSCRIPTIONS"
            del upstream_wait


async def wait_subscribers(gw: RunningGateway, count: int, *, exactly: bool = False) -> None:
    hub = gw.services.live
    assert hub is not None
    async with asyncio.timeout(10):
        while hub.subscriber_count < count or (exactly and hub.subscriber_count != count):
            await asyncio.sleep(0.02)


async def test_a_slow_consumer_is_cut_off_with_a_reason_while_the_others_go_on(
    make_settings: Callable[..., Settings]
) -> None:
    # heartbeats far apart: a client that stops reading for a while is not yet taken
    # for gone (see the next test), so it can read its reason
    async with live_gateway(make_settings, subscription_queue_max=20, summary_bytes=16_000,
                            subscription_heartbeat_s=30) as (gw, upstream):
        hub = gw.services.live
        assert hub is not None
        slow = await RawSSE.open(gw.port, SUBSCRIBE_FULL, {"after": "0"})
        try:
            async with sse_subscribe(gw.url, {"after": "0"}) as fast, ws_subscribe(gw.url, {"after": "0"}) as ws:
                await wait_subscribers(gw, 3)
                published: list[str] = []
                got: list[dict[str, Any]] = []
                for _ in range(30):  # until the slow one's queue fills: its socket filled first
                    published += upstream.add(10)
                    got += sse_data(await fast.articles(10))
                    if hub.evicted:
                        break
                assert hub.evicted == 1 and hub.subscriber_count == 2
                metrics = (await gw.client.get("/metrics")).text
                assert "gateway_live_subscribers 2.0" in metrics
                assert 'gateway_live_ended_total{reason="SLOW_CONSUMER"} 1.0' in metrics
                published += upstream.add(3)  # the others go on
                got += sse_data(await fast.articles(3))
                by_ws = await ws.articles(len(published))
                assert sorted(urls(got)) == sorted(published) == sorted(urls(by_ws))
            # reading at last: what was on its way, then the reason, then the end
            tail = await slow.read_until(b"event: complete")
            error_at = tail.index(b"SLOW_CONSUMER")
            assert tail.index(b"event: complete") > error_at
        finally:
            await slow.aclose()


async def test_websockets_are_identified_and_origin_checked(make_settings: Callable[..., Settings]) -> None:
    from dataclasses import replace

    from websockets.exceptions import InvalidStatus

    from gateway.edge.clients import hash_key
    from gateway.settings import ClientConfig, EdgeSettings

    edge = replace(EdgeSettings(), cors_origins=("https://app.example",),
                   clients=(ClientConfig("team-a", hash_key("secret-a")),))
    async with live_gateway(make_settings, edge=edge) as (gw, upstream):
        upstream.add(1)
        with pytest.raises(InvalidStatus) as refused:
            async with ws_subscribe(gw.url, {}, headers={"x-api-key": "wrong"}):
                pass
        assert refused.value.response.status_code == 403
        with pytest.raises(InvalidStatus) as cross_site:
            async with ws_subscribe(gw.url, {}, headers={"origin": "https://evil.example"}):
                pass
        assert cross_site.value.response.status_code == 403
        headers = {"origin": "https://app.example", "x-api-key": "secret-a"}
        async with ws_subscribe(gw.url, {"after": "0"}, headers=headers) as ws:
            assert len(await ws.articles(1)) == 1
            hub = gw.services.live
            assert hub is not None and hub.clients() == {"key:team-a": 1}
        # a browser's way: the key in connection_init's payload
        async with ws_subscribe(gw.url, {"after": "0"}, headers={"origin": "https://app.example"},
                                init={"apiKey": "secret-a"}) as ws:
            assert len(await ws.articles(1)) == 1
            hub = gw.services.live
            assert hub is not None and hub.clients() == {"key:team-a": 1}
        from websockets.exceptions import ConnectionClosed

        with pytest.raises(ConnectionClosed) as closed:
            async with ws_subscribe(gw.url, {}, init={"apiKey": "wrong"}):
                pass
        assert closed.value.rcvd is not None and closed.value.rcvd.code == 4403


async def test_websockets_carry_subscriptions_only_and_trusted_ones_in_persisted_only_mode(
    make_settings: Callable[..., Settings]
) -> None:
    async with live_gateway(make_settings) as (gw, _):
        async with ws_subscribe(gw.url, {}, query="query Q { sources { id } }") as ws:
            msg = await ws.next_message()
            assert msg["type"] == "error" and msg["payload"][0]["extensions"]["code"] == "BAD_REQUEST"
    async with live_gateway(make_settings, persisted_only=True) as (gw, _):
        async with ws_subscribe(gw.url, {}) as ws:
            msg = await ws.next_message()
            assert msg["type"] == "error" and msg["payload"][0]["extensions"]["code"] == "PERSISTED_QUERY_REQUIRED"


async def test_a_client_that_stopped_reading_for_good_is_disconnected(make_settings: Callable[..., Settings]) -> None:
    async with live_gateway(make_settings, summary_bytes=16_000, subscription_heartbeat_s=0.3) as (gw, upstream):
        hub = gw.services.live
        assert hub is not None
        slow = await RawSSE.open(gw.port, SUBSCRIBE_FULL, {"after": "0"})
        try:
            await wait_subscribers(gw, 1)
            for _ in range(30):  # until its socket is full and its heartbeats cannot go
                upstream.add(10)
                await wait_for_articles(gw, len(upstream.items))
                await asyncio.sleep(0.3)
                if hub.subscriber_count == 0:
                    break
            assert hub.subscriber_count == 0 and hub.evicted == 0  # let go before its queue (1000) filled
            data = await slow.read_until(b"\x00never", timeout_s=30)  # returns at EOF: the server closed it
            assert b"event: next" in data and not data.endswith(b"0\r\n\r\n")  # cut, not completed
        finally:
            await slow.aclose()


async def test_an_event_source_subscribes_by_get_and_resumes_with_last_event_id(
    make_settings: Callable[..., Settings]
) -> None:
    import httpx

    async with live_gateway(make_settings) as (gw, upstream):
        published = upstream.add(3)
        await gw.data(FETCH)
        await wait_for_articles(gw, 3)
        first_cursor = await gw.services.db.run(lambda conn: conn.fetchval("SELECT min(seq) FROM articles"))
        params = {"query": "subscription { articleAdded { cursor article { url } } }"}
        headers = {"accept": "text/event-stream", "last-event-id": str(first_cursor)}
        async with httpx.AsyncClient(base_url=gw.url, timeout=httpx.Timeout(30, read=None)) as client:
            async with client.stream("GET", "/graphql", params=params, headers=headers) as response:
                assert response.status_code == 200
                from tests.live import SSEStream

                events = await SSEStream(response).articles(2)  # the two after the first
        got = [e.payload["data"]["articleAdded"]["article"]["url"] for e in events]
        assert len(got) == 2 and set(got) < set(published)
        assert all(int(e.id or 0) > first_cursor for e in events)
        # a mutation never streams over GET
        resp = await gw.client.get("/graphql", params={"query": "mutation { x }"}, headers={"accept": "text/event-stream"})
        assert resp.status_code == 405


async def test_events_resolve_like_requests_of_their_own_long_after_the_subscription_began(
    make_settings: Callable[..., Settings]
) -> None:
    """`comments` of an event load from the HN items even when the subscription's own
    request deadline (GATEWAY_REQUEST_DEADLINE_MS) ran out long ago."""
    from tests.clock import FakeClock

    clock = FakeClock()
    settings = make_settings(subscription_heartbeat_s=0.5)  # the demo sources, Hacker News among them
    async with RunningGateway(create_app(settings, clock=clock)) as gw:
        query = "subscription { articleAdded(sources: [\"hn\"]) { cursor article { title comments(first: 1) { id } } } }"
        async with httpx_stream(gw.url, query) as sse:
            await wait_subscribers(gw, 1)
            clock.advance(60)  # the subscription's request deadline is long gone
            await gw.data('{ articles(sources: ["hn"], first: 3) { nodes { id } } }')  # ingest
            events = await sse.articles(3)
        with_comments = [e for e in events if e.payload["data"]["articleAdded"]["article"]["comments"]]
        assert with_comments, events  # no DEADLINE_EXCEEDED: each event had a deadline of its own


@asynccontextmanager
async def httpx_stream(base: str, query: str) -> AsyncIterator[Any]:
    import httpx

    from tests.live import SSEStream

    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30, read=None)) as client:
        async with client.stream("POST", "/graphql", json={"query": query},
                                 headers={"accept": "text/event-stream"}) as response:
            assert response.status_code == 200
            yield SSEStream(response)
