"""The edge seen from outside: GraphQL over HTTP status codes, malformed requests,
cost limits, bad input, production mode, CORS and the GraphiQL page's headers."""

from __future__ import annotations

import logging
from collections.abc import Callable

import pytest

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.settings import DEFAULT_RATE_LIMIT_BURST, EdgeSettings, Settings
from tests.helpers import RunningGateway

GR = "application/graphql-response+json"
NESTED = "{ articles(first: 100) { nodes { source { articles(first: 100) { source { articles(first: 100) { title } } } } } } }"
ALIASES = "{ " + " ".join(f'a{i}: articles(search: "topic {i}") {{ nodes {{ id }} }}' for i in range(30)) + " }"


def upstream_calls(gw: RunningGateway) -> int:
    return sum(s.upstream_calls for s in gw.services.source_service.stats.values())


@pytest.mark.parametrize(
    ("headers", "body", "status", "code"),
    [
        ({"content-type": "application/json"}, b'{"query": ', 400, "BAD_REQUEST"),
        ({"content-type": "application/json"}, b'{"query": "{ sources { id } }\xff"}', 400, "BAD_REQUEST"),
        ({"content-type": "application/json"}, b"", 400, "BAD_REQUEST"),
        ({"content-type": "application/json"}, b'[{"query": "{ sources { id } }"}]', 400, "BATCH_NOT_SUPPORTED"),
        ({"content-type": "application/json"}, b'"just a string"', 400, "BAD_REQUEST"),
        ({"content-type": "application/json"}, b'{"query": 1}', 400, "BAD_REQUEST"),
        ({"content-type": "application/json"}, b'{"query": "{ sources { id } }", "variables": []}', 400, "BAD_REQUEST"),
        ({"content-type": "application/json"}, b'{"extensions": {"persistedQuery": {"version": 1}}}', 400,
         "BAD_REQUEST"),
        ({"content-type": "text/plain"}, b"{ sources { id } }", 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"content-type": "application/json; charset=latin-1"}, b'{"query": "{ __typename }"}', 415,
         "UNSUPPORTED_MEDIA_TYPE"),
        ({}, b'{"query": "{ __typename }"}', 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"content-type": "application/json", "accept": "text/csv"}, b'{"query": "{ __typename }"}', 406,
         "NOT_ACCEPTABLE"),
    ],
    ids=["broken-json", "invalid-utf8", "empty", "batch", "not-object", "query-not-string", "variables-list",
         "unknown-persisted", "text-plain", "latin1", "no-content-type", "not-acceptable"],
)
async def test_malformed_requests_get_4xx_json_errors(
    gateway: RunningGateway, headers: dict[str, str], body: bytes, status: int, code: str
) -> None:
    resp = await gateway.client.post("/graphql", content=body, headers=headers)
    assert resp.status_code == status, resp.text
    assert resp.headers["content-type"].startswith("application/json")
    assert resp.json()["errors"][0]["extensions"]["code"] == code
    assert upstream_calls(gateway) == 0


async def test_graphql_response_json_is_negotiated_with_the_spec_status_codes(gateway: RunningGateway) -> None:
    ok = await gateway.client.post("/graphql", json={"query": "{ sources { id } }"}, headers={"accept": GR})
    assert ok.status_code == 200 and ok.headers["content-type"].startswith(GR)
    for query, variables in (("{ sources { id ", None), ("{ nope }", None),
                             ("query Q($id: ID!) { source(id: $id) { id } }", {"id": None})):
        bad = await gateway.client.post("/graphql", json={"query": query, "variables": variables},
                                        headers={"accept": GR})
        assert bad.status_code == 400, bad.text
        assert bad.headers["content-type"].startswith(GR)
        assert "data" not in bad.json()
        legacy = await gateway.client.post("/graphql", json={"query": query, "variables": variables},
                                           headers={"accept": "application/json"})
        assert legacy.status_code == 200 and legacy.json()["data"] is None
    # q-values decide; a tie favours the new type
    both = await gateway.client.post("/graphql", json={"query": "{ __typename }"},
                                     headers={"accept": f"application/json;q=0.5, {GR}"})
    assert both.headers["content-type"].startswith(GR)


async def test_get_mutation_and_other_methods_get_405_with_allow(gateway: RunningGateway) -> None:
    resp = await gateway.client.get("/graphql", params={"query": "mutation { __typename }"})
    assert resp.status_code == 405 and resp.headers["allow"] == "POST"
    assert resp.json()["errors"][0]["extensions"]["code"] == "METHOD_NOT_ALLOWED"
    resp = await gateway.client.request("DELETE", "/graphql")
    assert resp.status_code == 405 and resp.headers["allow"] == "GET, POST"
    assert resp.headers["content-type"].startswith("application/json")


async def test_request_id_is_kept_or_made_and_echoed(gateway: RunningGateway) -> None:
    mine = await gateway.client.post("/graphql", json={"query": "{ __typename }"}, headers={"x-request-id": "abc-1"})
    assert mine.headers["x-request-id"] == "abc-1"
    made = await gateway.client.post("/graphql", json={"query": "{ __typename }"},
                                     headers={"x-request-id": "bad id with spaces"})
    assert len(made.headers["x-request-id"]) == 32


@pytest.mark.parametrize("query", [NESTED, ALIASES], ids=["nested", "aliases"])
async def test_expensive_queries_are_refused_before_any_upstream_call(gateway: RunningGateway, query: str) -> None:
    resp = await gateway.client.post("/graphql", json={"query": query}, headers={"accept": GR})
    assert resp.status_code == 400
    body = resp.json()
    assert "data" not in body
    error = body["errors"][0]
    assert error["extensions"]["code"] == "QUERY_TOO_EXPENSIVE"
    assert error["extensions"]["cost"] > error["extensions"]["maxCost"]
    cost = body["extensions"]["cost"]  # not charged: nothing ran
    assert cost["actualQueryCost"] == 0 and cost["throttleStatus"]["currentlyAvailable"] == DEFAULT_RATE_LIMIT_BURST
    assert upstream_calls(gateway) == 0


async def test_every_readme_query_is_admitted_and_reports_its_cost(gateway: RunningGateway) -> None:
    readme = [
        "{ articles(first: 5) { nodes { title url } } }",
        (
            '{ articles(sources: ["tech-wire"], first: 10) { nodes { title url publishedAt summary author } '
            "sources { source { name } status ageSeconds latencyMs error { code message } } "
            "pageInfo { hasNextPage endCursor } } }"
        ),
        "{ sources { id name kind breaker { state failures } articles(first: 3) { title source { name } } } }",
        (
            '{ articles(sources: ["hn"], first: 10) { nodes { title url score commentCount '
            "comments(first: 5) { author text postedAt replies(first: 3) { author text } } } } }"
        ),
        (
            "{ health { status version uptimeSeconds database { ok latencyMs } sources { source { id } "
            "breaker { state } lastError { code } } } }"
        ),
    ]
    for query in readme:
        result = await gateway.query(query)
        assert "errors" not in result, result
        cost = result["extensions"]["cost"]
        # actual counts the metered objects: articles and comments (per-source lists are not)
        assert 0 <= cost["actualQueryCost"] <= cost["requestedQueryCost"] <= 5_000, (query, cost)
        assert cost["actualQueryCost"] > 0 or "articles" not in query.split("{")[1]
        assert set(cost["throttleStatus"]) == {"maximumAvailable", "currentlyAvailable", "restoreRate"}


async def test_the_meter_stops_execution_when_the_actual_count_is_over(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    # The estimate counts the worst case (first: 100 of `Source.articles` for each of
    # the 6 sources = 606). With a limit between the actual and the estimate for
    # the *objects*, the estimate refuses; with the fetch limit at 6 and an alias
    # that reaches a 7th key only at run time through a variable-free path, the
    # meter must. Here: `source(id:)` scopes to one source, `articles` adds all.
    settings = make_settings(edge=EdgeSettings(max_upstream_fetches=6))
    async with RunningGateway(create_app(settings)) as gw:
        from gateway.edge.cost import CostMeter, QueryTooExpensive

        meter = CostMeter(max_cost=10, max_fetches=2)
        meter.fetches([("a", None), ("a", None), ("b", None)])
        with pytest.raises(QueryTooExpensive):
            meter.fetches([("c", None)])
        meter.returned(10)
        with pytest.raises(QueryTooExpensive):
            meter.returned(1)
        # end to end: the resolver hooks report what was really returned
        result = await gw.query("{ articles(first: 4) { nodes { id source { name } } } }")
        assert result["extensions"]["cost"]["actualQueryCost"] == 5  # the connection + 4 articles


async def test_nul_and_lone_surrogates_are_bad_input_and_other_fields_still_answer(
    gateway: RunningGateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    query = '{ bad: article(id: "a\\u0000b") { id } good: sources { id } src: source(id: "\\u0000") { id } }'
    result = await gateway.query(query)
    assert result["data"]["good"], result
    assert result["data"]["bad"] is None and result["data"]["src"] is None
    assert {e["extensions"]["code"] for e in result["errors"]} == {"BAD_USER_INPUT"}, result["errors"]
    # GraphQL string literals cannot hold a lone surrogate; JSON variables can
    for escaped in ("\\ud800", "x\\udfffy"):
        body = ('{"query": "query($id: ID!) { bad: article(id: $id) { id } good: sources { id } '
                'src: source(id: $id) { id } articles(sources: [$id]) { nodes { id } } }", '
                '"variables": {"id": "' + escaped + '"}}')
        resp = await gateway.client.post("/graphql", content=body.encode(), headers={"content-type": "application/json"})
        result = resp.json()
        assert resp.status_code == 200 and result["data"]["good"], result
        assert result["data"]["bad"] is None and result["data"]["src"] is None and result["data"]["articles"] is None
        assert {e["extensions"]["code"] for e in result["errors"]} == {"BAD_USER_INPUT"}, result["errors"]
    # NUL through a variable (JSON allows \u0000) and in `sources`/`search`
    result = await gateway.query(
        "query($id: ID!, $s: String) { article(id: $id) { id } articles(search: $s) { nodes { id } } "
        "sources { id } }",
        {"id": "x\u0000", "s": "y\u0000"},
    )
    assert {e["extensions"]["code"] for e in result["errors"]} == {"BAD_USER_INPUT"}
    assert result["data"]["sources"]
    assert "Traceback" not in caplog.text
    assert not [r for r in caplog.records if r.exc_info]


async def test_production_mode_turns_off_graphiql_introspection_and_suggestions(
    make_settings: Callable[..., Settings]
) -> None:
    prod = EdgeSettings.from_env({"GATEWAY_ENV": "production"})
    assert not prod.graphiql_on and not prod.introspection_on and not prod.suggestions_on
    async with RunningGateway(create_app(make_settings(edge=prod))) as gw:
        page = await gw.client.get("/graphql", headers={"accept": "text/html"})
        assert page.status_code == 404 and page.json()["errors"][0]["extensions"]["code"] == "NOT_FOUND"
        result = await gw.query("{ __schema { types { name } } }")
        assert result["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
        assert "introspection" in result["errors"][0]["message"].lower()
        typo = await gw.query("{ sourcez { id } }")
        assert "Did you mean" not in typo["errors"][0]["message"]
        assert (await gw.data("{ __typename sources { id } }"))["sources"]
    dev = await_dev = EdgeSettings.from_env({})
    assert dev.graphiql_on and dev.introspection_on and await_dev.suggestions_on
    # each one can be overridden
    both = EdgeSettings.from_env({"GATEWAY_ENV": "production", "GATEWAY_INTROSPECTION": "true", "GATEWAY_GRAPHIQL": "1"})
    assert both.introspection_on and both.graphiql_on
    async with RunningGateway(create_app(make_settings(edge=both))) as gw:
        assert (await gw.data("{ __schema { queryType { name } } }"))["__schema"]["queryType"]["name"] == "Query"
        typo = await gw.query("{ sourcez { id } }")
        assert "Did you mean" not in typo["errors"][0]["message"]  # suggestions stay off in production


async def test_development_keeps_suggestions(gateway: RunningGateway) -> None:
    typo = await gateway.query("{ sourcez { id } }")
    assert "Did you mean" in typo["errors"][0]["message"]


async def test_cors_preflight_and_simple_requests(make_settings: Callable[..., Settings]) -> None:
    edge = EdgeSettings.from_env({"GATEWAY_CORS_ORIGINS": "https://app.example, https://admin.example"})
    async with RunningGateway(create_app(make_settings(edge=edge))) as gw:
        pre = await gw.client.options("/graphql", headers={
            "origin": "https://app.example", "access-control-request-method": "POST",
            "access-control-request-headers": "content-type, x-api-key"})
        assert pre.status_code == 200
        assert pre.headers["access-control-allow-origin"] == "https://app.example"
        assert pre.headers["access-control-max-age"] == "600"
        assert "POST" in pre.headers["access-control-allow-methods"]
        evil = await gw.client.options("/graphql", headers={
            "origin": "https://evil.example", "access-control-request-method": "POST"})
        assert evil.status_code == 400 and "access-control-allow-origin" not in evil.headers
        simple = await gw.client.post("/graphql", json={"query": "{ __typename }"},
                                      headers={"origin": "https://admin.example"})
        assert simple.headers["access-control-allow-origin"] == "https://admin.example"
        assert "ratelimit" in simple.headers["access-control-expose-headers"].lower()


def test_cors_star_is_refused_with_credentials() -> None:
    from gateway.errors import ConfigError

    with pytest.raises(ConfigError, match="may not contain"):
        EdgeSettings.from_env({"GATEWAY_CORS_ORIGINS": "*", "GATEWAY_CORS_ALLOW_CREDENTIALS": "true"})
    assert EdgeSettings.from_env({"GATEWAY_CORS_ORIGINS": "*"}).cors_origins == ("*",)


async def test_graphiql_page_sends_security_headers(gateway: RunningGateway) -> None:
    page = await gateway.client.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    csp = page.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in csp and "default-src 'self'" in csp
    assert "script-src 'self' 'sha256-" in csp and "unsafe-eval" not in csp
    assert "https:" not in csp and "unpkg" not in csp
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_streamed_bodies_are_cut_off_at_the_limit(make_settings: Callable[..., Settings]) -> None:
    async def chunks():  # no Content-Length: the limit must hold while reading
        yield b'{"query": "{ sources { id } }", "pad": "'
        for _ in range(64):
            yield b"x" * 1024
        yield b'"}'

    async with RunningGateway(create_app(make_settings(edge=EdgeSettings(max_request_bytes=16 * 1024)))) as gw:
        resp = await gw.client.post("/graphql", content=chunks(), headers={"content-type": "application/json"})
        assert resp.status_code == 413
        assert resp.json()["errors"][0]["extensions"]["code"] == "PAYLOAD_TOO_LARGE"
        assert (await gw.post("{ __typename }")).status_code == 200


def test_every_edge_setting_is_documented() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent
    source = (root / "gateway" / "settings.py").read_text()
    start = source.index("class EdgeSettings")
    names = set(re.findall(r'"(GATEWAY_[A-Z_]+)"', source[start:]))
    assert len(names) >= 17
    example = (root / "deploy" / "gateway.env.example").read_text()
    readme = (root / "README.md").read_text()
    assert [n for n in sorted(names) if n not in example] == []
    assert [n for n in sorted(names) if n not in readme] == []


class _LowballEstimator:
    """Stands in for an estimate that undercounts (the real one is conservative)."""

    def estimate(self, *args: object) -> object:
        from gateway.edge.cost import CostEstimate

        return CostEstimate(1, 1)


async def test_execution_stops_at_the_actual_count_when_an_estimate_undercounts(
    demo: DemoServer, make_settings: Callable[..., Settings]
) -> None:
    settings = make_settings(edge=EdgeSettings(max_upstream_fetches=2, max_query_cost=10))
    async with RunningGateway(create_app(settings)) as gw:
        gw.app.state.edge.estimator = _LowballEstimator()
        # 6 sources = 6 fetches > 2: stopped before any upstream call, other fields answered
        result = await gw.query("{ articles { nodes { id } } sources { id } }")
        assert result["data"]["articles"] is None and len(result["data"]["sources"]) == 6
        (error,) = result["errors"]
        assert error["extensions"] == {"code": "QUERY_TOO_EXPENSIVE", "cost": 6, "maxCost": 2}
        assert upstream_calls(gw) == 0
        # 1 + 20 objects > 10: the field is cut off once counted
        result = await gw.query('{ articles(sources: ["bbc"], first: 20) { nodes { id } } }')
        assert result["data"]["articles"] is None
        assert result["errors"][0]["extensions"]["code"] == "QUERY_TOO_EXPENSIVE"
        assert result["extensions"]["cost"]["actualQueryCost"] == 21
