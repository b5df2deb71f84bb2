"""The response cache and HTTP caching: hits, truthful ages, entry life, invalidation
across processes (two apps on one database), partial answers, 304s."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Callable

import orjson
import pytest

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.respcache import PARTIAL_TTL_S, Answer, ResponseCache, ResponseCacheMiddleware
from gateway.settings import EdgeSettings, Settings
from tests.clock import FakeClock
from tests.conftest import sources_of
from tests.helpers import RunningGateway

ONE_SOURCE = ({"id": "bbc", "name": "BBC News", "kind": "newsapi", "ttl_s": 60, "max_stale_s": 600,
               "url": "{demo}/newsapi/v2/top-headlines?sources=bbc-news"},)
QUERY = "query Front($first: Int!) { articles(first: $first) { nodes { id title } " \
        "sources { source { id } status ageSeconds } } }"


def _cache(gw: RunningGateway) -> ResponseCache:
    return gw.app.state.response_cache


async def _warm(gw: RunningGateway) -> None:
    """First answer is FRESH (not stored: the next would say CACHED). Returns once the
    NOTIFY of that fetch's cache write came back, so it cannot drop a later entry."""
    listener = gw.services.listener
    await asyncio.wait_for(listener.connected.wait(), 10)
    cache = _cache(gw)
    seen = cache.notified
    data = await gw.data(QUERY, {"first": 3})
    assert data["articles"]["sources"][0]["status"] == "FRESH"
    async with asyncio.timeout(10):
        while cache.notified == seen:
            await asyncio.sleep(0.01)


@pytest.fixture
def settings(demo: DemoServer, make_settings: Callable[..., Settings]) -> Callable[..., Settings]:
    return lambda **kw: make_settings(sources_of(demo.url, *ONE_SOURCE), **kw)


async def test_a_repeated_query_is_answered_from_the_cache(settings: Callable[..., Settings], demo: DemoServer):
    clock = FakeClock()
    async with RunningGateway(create_app(settings(), clock=clock)) as gw:
        await _warm(gw)
        cache = _cache(gw)
        first = await gw.post(QUERY, {"first": 3})
        assert first.json()["data"]["articles"]["sources"][0]["status"] == "CACHED"
        assert cache.hits == 0 and len(cache) == 1
        again = await asyncio.gather(*(gw.post(QUERY, {"first": 3}) for _ in range(5)))
        assert cache.hits == 5
        # the same answer; only extensions.cost (this client's budget, after each charge) differs
        assert {orjson.dumps(r.json()["data"]) for r in again} == {orjson.dumps(first.json()["data"])}
        assert gw.services.source_service.stats["bbc"].upstream_calls == 1  # upstream untouched
        other = await gw.data(QUERY, {"first": 4})  # other variables: another entry
        assert len(other["articles"]["nodes"]) == 4 and len(cache) == 2


async def test_ages_from_the_cache_are_recomputed(settings: Callable[..., Settings]) -> None:
    clock = FakeClock()
    async with RunningGateway(create_app(settings(response_cache_ttl_ms=60_000), clock=clock)) as gw:
        await _warm(gw)
        clock.advance(2.5)
        cache = _cache(gw)
        stored = (await gw.data(QUERY, {"first": 3}))["articles"]["sources"][0]
        assert (stored["status"], stored["ageSeconds"]) == ("CACHED", 2)
        for step, expected in ((0.4, 2), (0.2, 3), (7.0, 10)):
            clock.advance(step)
            hits = cache.hits
            got = (await gw.data(QUERY, {"first": 3}))["articles"]["sources"][0]
            assert cache.hits == hits + 1  # served from the cache ...
            assert got["ageSeconds"] == expected  # ... with the age as of now


async def test_an_entry_ends_when_its_source_stops_being_fresh(settings: Callable[..., Settings]) -> None:
    clock = FakeClock()
    async with RunningGateway(create_app(settings(response_cache_ttl_ms=600_000), clock=clock)) as gw:
        await _warm(gw)
        await gw.data(QUERY, {"first": 3})  # stored, CACHED
        clock.advance(59.5)
        hits = _cache(gw).hits
        assert (await gw.data(QUERY, {"first": 3}))["articles"]["sources"][0]["status"] == "CACHED"
        assert _cache(gw).hits == hits + 1
        clock.advance(1.0)  # the source's ttl_s (60) is over: the truth is STALE now
        got = (await gw.data(QUERY, {"first": 3}))["articles"]["sources"][0]
        assert got["status"] == "STALE"
        assert _cache(gw).hits == hits + 1


async def test_partial_answers_are_cached_briefly(settings: Callable[..., Settings], demo: DemoServer) -> None:
    demo.control.set_fault("*", fault=500)
    clock = FakeClock()
    async with RunningGateway(create_app(settings(), clock=clock)) as gw:
        cache = _cache(gw)
        first = await gw.data(QUERY, {"first": 3})
        assert first["articles"]["sources"][0]["status"] == "FAILED"
        calls = gw.services.source_service.stats["bbc"].upstream_calls
        await gw.data(QUERY, {"first": 3})
        assert cache.hits == 1 and gw.services.source_service.stats["bbc"].upstream_calls == calls
        clock.advance(PARTIAL_TTL_S + 0.01)
        await gw.data(QUERY, {"first": 3})
        assert cache.hits == 1  # expired: asked again


async def test_live_state_is_never_cached(settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(settings())) as gw:
        for query in ("{ health { uptimeSeconds } }", "{ sources { id breaker { state } } }"):
            await gw.data(query)
            await gw.data(query)
        assert len(_cache(gw)) == 0 and _cache(gw).hits == 0


async def test_ttl_zero_turns_the_cache_off(settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(settings(response_cache_ttl_ms=0))) as gw:
        await _warm(gw)
        for _ in range(3):
            await gw.data(QUERY, {"first": 3})
        assert len(_cache(gw)) == 0 and _cache(gw).hits == 0


async def test_a_refresh_by_another_process_invalidates(settings: Callable[..., Settings]) -> None:
    """Two apps on one database are two processes' worth: B's refresh NOTIFYs, A drops."""
    clock_a, clock_b = FakeClock(), FakeClock()
    async with RunningGateway(create_app(settings(response_cache_ttl_ms=600_000), clock=clock_a)) as a, \
            RunningGateway(create_app(settings(response_cache_ttl_ms=600_000), clock=clock_b)) as b:
        for gw in (a, b):
            await asyncio.wait_for(gw.services.listener.connected.wait(), 10)
        await _warm(a)
        await a.data(QUERY, {"first": 3})
        cache_a = _cache(a)
        assert len(cache_a) == 1
        await a.data(QUERY, {"first": 3})
        assert cache_a.hits == 1
        clock_b.advance(3600)  # B's copy is past max_stale: B fetches, writes, NOTIFYs
        fresh = await b.data(QUERY, {"first": 3})
        assert fresh["articles"]["sources"][0]["status"] == "FRESH"
        async with asyncio.timeout(10):
            while len(cache_a):
                await asyncio.sleep(0.02)
        assert cache_a.invalidated == 1
        await a.data(QUERY, {"first": 3})
        assert cache_a.hits == 1  # executed again, not served from the dropped entry


def _get_params(first: int) -> dict[str, str]:
    import orjson

    return {"query": QUERY, "variables": orjson.dumps({"first": first}).decode()}


async def test_cache_control_and_etag_on_get(settings: Callable[..., Settings]) -> None:
    import hashlib

    from gateway.settings import ClientConfig, EdgeSettings

    clock = FakeClock()
    client = ClientConfig(id="app", key_sha256=hashlib.sha256(b"k").hexdigest())
    async with RunningGateway(create_app(settings(edge=EdgeSettings(clients=(client,))), clock=clock)) as gw:
        await _warm(gw)
        clock.advance(10.2)
        resp = await gw.client.get("/graphql", params=_get_params(3), headers={"accept": "application/json"})
        assert resp.status_code == 200
        # ttl 60 - age 10.2 -> 49 s left; one more TTL of stale-while-revalidate; max_stale 600
        assert resp.headers["cache-control"] == "public, max-age=49, stale-while-revalidate=60, stale-if-error=540"
        etag = resp.headers["etag"]
        assert etag.startswith('"') and etag.endswith('"')
        not_modified = await gw.client.get("/graphql", params=_get_params(3),
                                           headers={"accept": "application/json", "if-none-match": etag})
        assert not_modified.status_code == 304 and not_modified.content == b""
        assert not_modified.headers["etag"] == etag and resp.headers["vary"] == "Accept"
        weak = await gw.client.get("/graphql", params=_get_params(3),
                                   headers={"accept": "application/json", "if-none-match": f'"other", W/{etag}'})
        assert weak.status_code == 304
        clock.advance(1.0)  # the age changed: so did the bytes, so did the ETag
        changed = await gw.client.get("/graphql", params=_get_params(3),
                                      headers={"accept": "application/json", "if-none-match": etag})
        assert changed.status_code == 200 and changed.headers["etag"] != etag
        assert changed.json()["data"]["articles"]["sources"][0]["ageSeconds"] == 11
        posted = await gw.post(QUERY, {"first": 3})
        assert posted.headers["cache-control"] == "no-store" and "etag" not in posted.headers
        for auth in ({"authorization": "Bearer k"}, {"x-api-key": "k"}):
            authed = await gw.client.get("/graphql", params=_get_params(3),
                                         headers={"accept": "application/json", **auth})
            assert authed.status_code == 200 and authed.headers["cache-control"] == "no-store"


async def test_failures_are_no_store(settings: Callable[..., Settings], demo: DemoServer) -> None:
    demo.control.set_fault("*", fault=500)
    async with RunningGateway(create_app(settings())) as gw:
        resp = await gw.client.get("/graphql", params=_get_params(3), headers={"accept": "application/json"})
        assert resp.json()["data"]["articles"]["sources"][0]["status"] == "FAILED"
        assert resp.headers["cache-control"] == "no-store"
        bad = await gw.client.get("/graphql", params={"query": "{ nope }"}, headers={"accept": "application/json"})
        assert bad.headers["cache-control"] == "no-store"
        static = await gw.client.get("/graphql", params={"query": "{ sources { id } }"},
                                     headers={"accept": "application/json"})
        assert static.headers["cache-control"].startswith("public, max-age=60")


async def test_articles_by_id_are_revalidated(settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(settings())) as gw:
        await _warm(gw)
        article_id = (await gw.data(QUERY, {"first": 1}))["articles"]["nodes"][0]["id"]
        for query in ('{ article(id: "%s") { title } }' % article_id, '{ article(id: "a_unknown") { title } }'):
            resp = await gw.client.get("/graphql", params={"query": query}, headers={"accept": "application/json"})
            assert resp.headers["cache-control"].startswith("public, max-age=0"), query  # no freshness known
        cache = _cache(gw)
        assert len(cache) == 3  # the list, and the two articles
        cache.invalidate("bbc|other-key")  # any write of bbc may change its article; any write, the unknown one
        assert len(cache) == 1 and cache.invalidated == 2


def _answer(body: bytes) -> Answer:
    return Answer(status=200, headers=[], body=body, etag=b'"x"', result=None, ages=[], last_ages=(),
                  publishable=True, fresh_until=math.inf, swr_s=math.inf, sie_s=math.inf,
                  unknown_freshness=False, read_sources=True, cost=None)


def test_memory_is_bounded_and_tags_invalidate() -> None:
    clock = FakeClock()
    cache = ResponseCache(ttl_ms=1000, max_mb=1, clock=clock)
    body = b"x" * 50_000
    for i in range(40):  # ~2 MB of answers into 1 MB: the oldest go
        cache.put((b"POST", str(i).encode()), _answer(body), {f"bbc|k{i}"}, 1.0)
    assert cache.size_bytes <= cache.max_bytes and 0 < len(cache) < 40
    assert cache.get((b"POST", b"0")) is None and cache.get((b"POST", b"39")) is not None
    cache.put((b"POST", b"a"), _answer(b"{}"), {"hn|*"}, 1.0)  # read an article of hn by id
    cache.invalidate("bbc|k39")
    assert cache.get((b"POST", b"39")) is None
    cache.invalidate("hn|top")  # any write of hn may have changed that article
    assert cache.get((b"POST", b"a")) is None
    cache.put((b"POST", b"b"), _answer(b"{}"), set(), 1.0)
    clock.advance(1.0)
    assert cache.get((b"POST", b"b")) is None  # expired
    cache.put((b"POST", b"c"), _answer(b"{}"), set(), 1.0)
    cache.invalidate(None)  # the listener reconnected: anything may have been missed
    assert len(cache) == 0 and cache.size_bytes == 0


async def test_accept_is_part_of_the_key(settings: Callable[..., Settings]) -> None:
    async with RunningGateway(create_app(settings())) as gw:
        await _warm(gw)
        for accept in ("application/json", "application/graphql-response+json", "application/json"):
            resp = await gw.client.post("/graphql", json={"query": QUERY, "variables": {"first": 3}},
                                        headers={"accept": accept})
            assert resp.status_code == 200
        assert len(_cache(gw)) == 2 and _cache(gw).hits == 1


async def test_hits_are_charged_to_each_request_and_refused_over_budget(
    settings: Callable[..., Settings], demo: DemoServer
) -> None:
    """Answered from the cache's front, before any parsing: each hit still costs its
    client what the miss cost (settled to the actual cost), with this client's budget
    in extensions.cost and RateLimit, and an empty budget gets 429, not the answer."""
    clock = FakeClock()  # no refill between requests
    edge = EdgeSettings(rate_limit_burst=1000, rate_limit_per_s=1.0, rate_limit_sync_ms=0)
    async with RunningGateway(create_app(settings(edge=edge), clock=clock)) as gw:
        await _warm(gw)
        cache = _cache(gw)
        first = (await gw.post(QUERY, {"first": 3})).json()  # stored
        cost = first["extensions"]["cost"]
        actual = cost["actualQueryCost"]
        assert 1 <= actual <= cost["requestedQueryCost"]
        left = cost["throttleStatus"]["currentlyAvailable"]
        hits_before = cache.hits
        for _ in range(3):
            resp = await gw.post(QUERY, {"first": 3})
            body = resp.json()
            assert body["data"] == first["data"]
            assert body["extensions"]["cost"]["actualQueryCost"] == actual
            assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == left - actual
            assert resp.headers["ratelimit"].startswith(f'"cost";r={int(left - actual)};')
            left -= actual
        assert cache.hits == hits_before + 3
        # the bucket nearly empty (one point left): the hit is refused
        gw.app.state.edge.limiter.charge("ip:127.0.0.1", left - 1)
        refused = await gw.post(QUERY, {"first": 3})
        assert refused.status_code == 429 and refused.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
        assert "data" not in refused.json()


async def test_identical_requests_join_the_execution_in_flight_at_the_front(
    settings: Callable[..., Settings], demo: DemoServer
) -> None:
    """A request identical to one being executed is handed that execution by the cache's
    front, before persisted documents and the gate read it again: each is charged what
    the first was (settled to the actual cost), and all get the one execution's answer."""
    demo.control.set_fault("*", latency_ms=1000)  # the first stays in flight while the others arrive
    clock = FakeClock()  # no refill: the bucket tells every charge
    edge = EdgeSettings(rate_limit_burst=1000, rate_limit_per_s=1.0, rate_limit_sync_ms=0)
    async with RunningGateway(create_app(settings(edge=edge), clock=clock)) as gw:
        flights = _cache(gw).flights
        first = asyncio.ensure_future(gw.post(QUERY, {"first": 3}))
        async with asyncio.timeout(10):
            while not len(flights):
                await asyncio.sleep(0.005)
        others = await asyncio.gather(*(gw.post(QUERY, {"first": 3}) for _ in range(5)))
        lead = (await first).json()
        assert flights.joined == 5 and len(flights) == 0
        assert gw.services.source_service.stats["bbc"].upstream_calls == 1
        assert all(r.status_code == 200 for r in others)
        assert {orjson.dumps(r.json()["data"]) for r in others} == {orjson.dumps(lead["data"])}
        assert lead["data"]["articles"]["sources"][0]["status"] == "FRESH"
        cost = lead["extensions"]["cost"]
        for r in others:
            assert r.json()["extensions"]["cost"]["requestedQueryCost"] == cost["requestedQueryCost"]
            assert r.json()["extensions"]["cost"]["actualQueryCost"] == cost["actualQueryCost"]
        status = gw.app.state.edge.limiter.status("ip:127.0.0.1")
        assert status.currently_available == 1000 - 6 * cost["actualQueryCost"]


async def test_a_joining_request_over_budget_is_refused_at_once(
    settings: Callable[..., Settings], demo: DemoServer
) -> None:
    """Charged when it arrives, as if it had gone through the gate: a client with an
    empty bucket gets 429 while the execution it would have joined is still running."""
    demo.control.set_fault("*", latency_ms=1000)
    clock = FakeClock()
    edge = EdgeSettings(rate_limit_burst=1000, rate_limit_per_s=1.0, rate_limit_sync_ms=0)
    async with RunningGateway(create_app(settings(edge=edge), clock=clock)) as gw:
        flights = _cache(gw).flights
        first = asyncio.ensure_future(gw.post(QUERY, {"first": 3}))
        async with asyncio.timeout(10):
            while not len(flights):
                await asyncio.sleep(0.005)
        limiter = gw.app.state.edge.limiter
        limiter.charge("ip:127.0.0.1", limiter.status("ip:127.0.0.1").currently_available)
        refused = await asyncio.gather(*(gw.post(QUERY, {"first": 3}) for _ in range(3)))
        assert len(flights) == 1 and not first.done()  # refused before the answer existed
        for r in refused:
            assert r.status_code == 429 and r.json()["errors"][0]["extensions"]["code"] == "RATE_LIMITED"
            assert "data" not in r.json()
        assert (await first).status_code == 200
        assert flights.joined == 3  # all three answered by the front, none went the whole way


async def test_a_request_sharing_an_execution_on_the_miss_path_is_reported() -> None:
    """A request that reaches the miss path while an identical one executes (it passed
    the front before that one's flight existed) shares that execution, and the app
    hears of it (to count and log it); the request that ran is not reported again."""
    release = asyncio.Event()
    ran = 0

    async def app(scope, receive, send) -> None:
        nonlocal ran
        ran += 1
        await receive()
        await release.wait()
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b'{"data":{}}'})

    shared: list[Answer] = []
    cache = ResponseCache(ttl_ms=1000, max_mb=1, clock=FakeClock())
    middleware = ResponseCacheMiddleware(app, cache, max_body_bytes=1000,
                                         on_shared=lambda scope, answer: shared.append(answer))

    async def request() -> list[dict]:
        sent: list[dict] = []
        scope = {"type": "http", "method": "POST", "query_string": b"", "path": "/graphql",
                 "headers": [(b"content-type", b"application/json")]}

        async def receive() -> dict:
            return {"type": "http.request", "body": b'{"query":"{ a }"}', "more_body": False}

        async def send(message: dict) -> None:
            sent.append(message)

        await middleware(scope, receive, send)
        return sent

    first = asyncio.ensure_future(request())
    async with asyncio.timeout(5):
        while not len(cache.flights):
            await asyncio.sleep(0)
    second = asyncio.ensure_future(request())
    await asyncio.sleep(0)  # nothing on its way to the flight suspends: it waits on it now
    release.set()
    answers = await asyncio.gather(first, second)
    assert ran == 1 and len(shared) == 1
    assert [a[-1]["body"] for a in answers] == [b'{"data":{}}', b'{"data":{}}'] and shared[0].body == b'{"data":{}}'
