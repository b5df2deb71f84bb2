"""Per-client cost-based rate limits (Shopify's leaky bucket), client identity and
trusted proxies, against a real gateway with the app's clock stepped by hand."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from pathlib import Path

import pytest

from gateway.app import create_app
from gateway.coalesce import CoalesceIdentical
from gateway.demo.server import DemoServer
from gateway.edge.clients import hash_key, parse_clients
from gateway.edge.ratelimit import RateLimiter
from gateway.errors import ConfigError
from gateway.settings import EdgeSettings, Settings
from tests.clock import FakeClock
from tests.conftest import sources_of
from tests.helpers import RunningGateway

BBC = {"id": "bbc", "name": "BBC News", "kind": "newsapi", "url": "{demo}/newsapi/v2/top-headlines?sources=bbc-news"}
Q6 = "{ articles(first: 5) { nodes { id } } }"  # costs 1 + 5 = 6


def limited(**kw: object) -> EdgeSettings:
    base: dict[str, object] = {"rate_limit_burst": 20, "rate_limit_per_s": 10.0, "rate_limit_sync_ms": 0}
    base.update(kw)
    return EdgeSettings(**base)  # type: ignore[arg-type]


def test_bucket_charges_up_front_and_refunds_to_actual() -> None:
    clock = FakeClock()
    limiter = RateLimiter(burst=100, per_s=10, clock=clock)
    d = limiter.charge("c", 60)
    assert d.allowed and d.status.currently_available == 40
    assert limiter.settle("c", 60, 15).currently_available == 85  # refunded 45
    refused = limiter.charge("c", 90)
    assert not refused.allowed and refused.retry_after_s == pytest.approx(0.5)
    clock.advance(0.5)
    assert limiter.charge("c", 90).allowed
    assert limiter.charge("other", 100).allowed  # buckets are per client
    clock.advance(100)
    assert limiter.status("c").currently_available == 100  # never above the burst


async def test_over_budget_gets_429_with_retry_after_and_ratelimit_headers(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    clock = FakeClock()
    app = create_app(make_settings(sources_of(demo.url, BBC), edge=limited()), clock=clock)
    async with RunningGateway(app) as gw:
        seen = []
        for _ in range(3):
            resp = await gw.post(Q6)
            assert resp.status_code == 200
            seen.append(resp.json()["extensions"]["cost"])
        assert [c["throttleStatus"]["currentlyAvailable"] for c in seen] == [14, 8, 2]
        assert seen[0]["requestedQueryCost"] == seen[0]["actualQueryCost"] == 6
        assert seen[0]["throttleStatus"]["maximumAvailable"] == 20 and seen[0]["throttleStatus"]["restoreRate"] == 10
        assert resp.headers["ratelimit-policy"] == '"cost";q=20;w=2'
        assert resp.headers["ratelimit"] == '"cost";r=2;t=2'
        calls = demo.control.count("newsapi.top-headlines")

        refused = await gw.post(Q6)
        assert refused.status_code == 429
        assert refused.headers["retry-after"] == "1"
        assert refused.headers["ratelimit"].startswith('"cost";r=2;')
        body = refused.json()
        assert "data" not in body
        assert body["errors"][0]["extensions"] == {"code": "RATE_LIMITED", "retryAfterMs": 400}
        assert body["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 2
        assert demo.control.count("newsapi.top-headlines") == calls

        clock.advance(0.4)  # 4 more points: exactly enough
        assert (await gw.post(Q6)).status_code == 200


async def test_refund_to_actual_cost(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    clock = FakeClock()
    app = create_app(make_settings(sources_of(demo.url, BBC), edge=limited(rate_limit_burst=1000)), clock=clock)
    async with RunningGateway(app) as gw:
        result = await gw.query('{ articles(sources: ["bbc"], first: 100, search: "zzz-no-match") { nodes { id } } }')
        cost = result["extensions"]["cost"]
        assert cost["requestedQueryCost"] == 101
        assert cost["actualQueryCost"] == 1  # the connection; nothing matched
        assert cost["throttleStatus"]["currentlyAvailable"] == 999


async def test_coalesced_requests_are_each_charged(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    demo.control.set_fault("*", latency_ms=200)
    clock = FakeClock()
    app = create_app(make_settings(sources_of(demo.url, BBC), edge=limited()), clock=clock)
    async with RunningGateway(app) as gw:
        answers = await asyncio.gather(*(gw.post(Q6) for _ in range(6)))
        statuses = sorted(r.status_code for r in answers)
        assert statuses == [200, 200, 200, 429, 429, 429]  # 20 points buy three queries of 6
        coalescer = next(r.app for r in app.routes if getattr(r, "path", None) == "/graphql")
        while not isinstance(coalescer, CoalesceIdentical):  # under persisted documents, the gate, the cache
            coalescer = coalescer.app
        assert coalescer.executions == 1  # the three admitted ones still shared one execution


def write_clients(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clients.toml"
    path.write_text(text)
    return path


async def test_api_keys_identify_clients_and_unknown_keys_get_401(
    demo: DemoServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    clients = write_clients(tmp_path, f"""
[[clients]]
id = "web"
key_sha256 = "{hash_key('web-secret')}"
burst = 12

[[clients]]
id = "batch"
key_sha256 = "{hash_key('batch-secret')}"
""")
    assert "web-secret" not in clients.read_text()
    edge = EdgeSettings.from_env({"GATEWAY_CLIENTS_FILE": str(clients), "GATEWAY_RATE_LIMIT_BURST": "20",
                                  "GATEWAY_RATE_LIMIT_PER_S": "10", "GATEWAY_RATE_LIMIT_SYNC_MS": "0"})
    app = create_app(make_settings(sources_of(demo.url, BBC), edge=edge), clock=FakeClock())
    async with RunningGateway(app) as gw:
        web = {"x-api-key": "web-secret"}
        r1 = await gw.client.post("/graphql", json={"query": Q6}, headers=web)
        assert r1.json()["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 12  # its own burst
        r2 = await gw.client.post("/graphql", json={"query": Q6}, headers={"authorization": "Bearer web-secret"})
        assert r2.json()["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 0  # same client
        assert (await gw.client.post("/graphql", json={"query": Q6}, headers=web)).status_code == 429
        other = await gw.client.post("/graphql", json={"query": Q6}, headers={"x-api-key": "batch-secret"})
        assert other.status_code == 200 and other.json()["extensions"]["cost"]["throttleStatus"]["maximumAvailable"] == 20
        anon = await gw.post(Q6)
        assert anon.status_code == 200  # no key: anonymous by IP, its own bucket
        bad = await gw.client.post("/graphql", json={"query": Q6}, headers={"x-api-key": "guess"})
        assert bad.status_code == 401 and bad.headers["www-authenticate"] == "Bearer"
        assert bad.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"


async def test_require_api_key_refuses_anonymous_clients(
    demo: DemoServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    clients = write_clients(tmp_path, f'[[clients]]\nid = "web"\nkey_sha256 = "{hash_key("k")}"\n')
    edge = EdgeSettings.from_env({"GATEWAY_CLIENTS_FILE": str(clients), "GATEWAY_REQUIRE_API_KEY": "true"})
    async with RunningGateway(create_app(make_settings(sources_of(demo.url, BBC), edge=edge))) as gw:
        anon = await gw.post("{ __typename }")
        assert anon.status_code == 401 and anon.json()["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"
        assert (await gw.client.get("/livez")).status_code == 200  # probes need no key
        ok = await gw.client.post("/graphql", json={"query": "{ __typename }"}, headers={"x-api-key": "k"})
        assert ok.status_code == 200


async def test_forwarded_headers_count_only_from_trusted_proxies(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    async def spend(gw: RunningGateway, headers: dict[str, str]) -> int:
        resp = await gw.client.post("/graphql", json={"query": Q6}, headers=headers)
        return resp.status_code

    # Untrusted peer: a new X-Forwarded-For on every request does not buy a new bucket.
    app = create_app(make_settings(sources_of(demo.url, BBC), edge=limited()), clock=FakeClock())
    async with RunningGateway(app) as gw:
        codes = [await spend(gw, {"x-forwarded-for": f"203.0.113.{i}"}) for i in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        assert set(gw.app.state.edge.limiter.buckets) == {"ip:127.0.0.1"}

    # Trusted proxy (the loopback peer): the address it reports is the client.
    app = create_app(make_settings(sources_of(demo.url, BBC), edge=limited(trusted_proxies=("127.0.0.0/8",))),
                     clock=FakeClock())
    async with RunningGateway(app) as gw:
        codes = [await spend(gw, {"x-forwarded-for": f"198.51.100.7, 203.0.113.{i}"}) for i in range(5)]
        assert codes == [200] * 5
        assert await spend(gw, {"forwarded": 'for="[2001:db8::1]:4711";proto=https'}) == 200
        assert await spend(gw, {"forwarded": 'for="[2001:db8::ffff:2]"'}) == 200  # same /64: same bucket
        buckets = gw.app.state.edge.limiter.buckets
        assert {"ip:203.0.113.0", "ip:203.0.113.4", "ip:2001:db8::/64"} <= set(buckets)
        assert buckets["ip:2001:db8::/64"].debt == 12


def test_clients_file_is_validated_with_one_clear_line() -> None:
    with pytest.raises(ConfigError, match="64 hex digits"):
        parse_clients({"clients": [{"id": "a", "key_sha256": "my-plain-key"}]})
    with pytest.raises(ConfigError, match="unknown key"):
        parse_clients({"clients": [{"id": "a", "key_sha256": hash_key("x"), "key": "x"}]})
    with pytest.raises(ConfigError, match="same key"):
        parse_clients({"clients": [{"id": "a", "key_sha256": hash_key("x")}, {"id": "b", "key_sha256": hash_key("x")}]})
    with pytest.raises(ConfigError, match="TRUSTED_PROXIES"):
        EdgeSettings.from_env({"GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, not-a-net"})
    with pytest.raises(ConfigError, match="GATEWAY_ENV"):
        EdgeSettings.from_env({"GATEWAY_ENV": "prod"})


async def test_a_flooding_client_is_refused_without_touching_the_upstream_of_others(
    demo: DemoServer, make_settings: Callable[..., Settings], tmp_path: Path
) -> None:
    """Fairness, by who waited for what (the latency ratio is bench_edge's job): a
    client over its budget gets 429s that make no upstream call, and a normal
    client's cold search, asked in the middle of the flood, is fetched FRESH."""
    clients = write_clients(tmp_path, f"""
[[clients]]
id = "flood"
key_sha256 = "{hash_key('flood')}"
burst = 204
per_s = 1

[[clients]]
id = "normal"
key_sha256 = "{hash_key('normal')}"
""")
    edge = EdgeSettings.from_env({"GATEWAY_CLIENTS_FILE": str(clients), "GATEWAY_RATE_LIMIT_SYNC_MS": "0"})
    demo.control.set_fault("*", latency_ms=300)
    app = create_app(make_settings(sources_of(demo.url, BBC), edge=edge), clock=FakeClock())
    async with RunningGateway(app) as gw:
        async def search(key: str, term: str):
            q = f'{{ articles(search: "{term}", first: 100) {{ nodes {{ id }} sources {{ status }} }} }}'
            return await gw.client.post("/graphql", json={"query": q}, headers={"x-api-key": key})

        flood = [search("flood", f"flood {i}") for i in range(30)]
        normal = search("normal", "normal cold search")
        *flooded, mine = await asyncio.gather(*flood, normal)
        codes = sorted(r.status_code for r in flooded)
        assert codes == [200] * 2 + [429] * 28  # 204 points buy two searches of 102 (connection, 100 articles, 1 source result)
        assert mine.status_code == 200
        assert mine.json()["data"]["articles"]["sources"] == [{"status": "FRESH"}]
        # the upstream saw the normal client's search and the two admitted ones: nothing else
        assert demo.control.count("newsapi.top-headlines") == 3


def test_anonymous_keys_group_ipv6_by_64() -> None:
    from gateway.edge.identity import anonymous_key

    assert anonymous_key("198.51.100.7") == "198.51.100.7"
    assert anonymous_key("2001:db8:1:2:aaaa::1") == anonymous_key("2001:db8:1:2:bbbb::9") == "2001:db8:1:2::/64"
    assert anonymous_key("::ffff:198.51.100.7") == "198.51.100.7"
    assert anonymous_key("unknown") == "unknown"


def test_memory_stays_bounded_under_many_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    import gateway.edge.ratelimit as rl

    monkeypatch.setattr(rl, "MAX_BUCKETS", 100)
    limiter = RateLimiter(burst=10, per_s=1, clock=FakeClock())
    for i in range(1000):
        limiter.charge(f"ip:10.0.{i // 256}.{i % 256}", 1)
        limiter.clock.advance(0.001)  # type: ignore[attr-defined]
    assert len(limiter.buckets) <= 101
    assert "ip:10.0.3.231" in limiter.buckets  # the newest stay


async def test_invalid_documents_still_cost_a_point(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    app = create_app(make_settings(sources_of(demo.url, BBC), edge=limited(rate_limit_burst=3)), clock=FakeClock())
    async with RunningGateway(app) as gw:
        codes = [(await gw.post("{ nope")).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]  # a flood of syntax errors drains the bucket like any other
