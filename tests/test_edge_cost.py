"""The static cost estimate: pure, from the parsed document, the schema and variables."""

from __future__ import annotations

import graphql
import pytest

from gateway.edge.cost import MAX_VISITS, CostEstimator
from gateway.schema import build_schema
from gateway.settings import Settings


@pytest.fixture(scope="module")
def estimator() -> CostEstimator:
    # the bundled demo sources: 3 NewsAPI (searchable), 2 feeds, 1 Hacker News
    return CostEstimator(graphql.build_schema(build_schema().as_str()), Settings.from_env({}))


def estimate(est: CostEstimator, query: str, variables: dict | None = None, op: str | None = None):
    doc = graphql.parse(query)
    ops = [d for d in doc.definitions if isinstance(d, graphql.OperationDefinitionNode)]
    node = next(o for o in ops if op is None or (o.name and o.name.value == op))
    return est.estimate(query, doc, node, variables)


@pytest.mark.parametrize(
    ("query", "cost", "fetches"),
    [
        ("{ __typename }", 0, 0),
        ("{ articles(first: 5) { nodes { title url } } }", 6, 6),
        ("{ articles { nodes { id } } }", 21, 6),  # the default first: 20
        ('{ articles(sources: ["bbc"], first: 3) { edges { node { id } } pageInfo { endCursor } } }', 1 + 3 * 2 + 1, 1),
        ("{ sources { id name articles(first: 3) { title source { name } } } }", 6 * (1 + 3 * 2), 6),
        ('{ articles(sources: ["hn"], first: 10) { nodes { comments(first: 5) { replies(first: 3) { id } } } } }',
         1 + 10 * (1 + 5 * (1 + 3)), 3),
        ('{ a: articles(search: "x") { nodes { id } } b: articles(search: "x") { nodes { id } } }', 42, 6),
        ('{ a: articles(search: "x") { nodes { id } } b: articles { nodes { id } } }', 42, 9),
        ('{ source(id: "bbc") { articles(first: 2) { id } } }', 1 + 2, 1),
        ('{ source(id: "nope") { articles(first: 2) { id } } }', 1 + 2, 0),
        ("{ articles(first: 0) { nodes { id } } }", 1, 6),
    ],
)
def test_cost_and_fetches(estimator: CostEstimator, query: str, cost: int, fetches: int) -> None:
    got = estimate(estimator, query)
    assert (got.cost, got.fetches) == (cost, fetches)


def test_variables_fragments_and_out_of_range_first(estimator: CostEstimator) -> None:
    q = ("query Q($n: Int!, $s: [ID!]) { articles(first: $n, sources: $s) { ...N } } "
         "fragment N on ArticleConnection { nodes { ... on Article { source { name } } } }")
    assert estimate(estimator, q, {"n": 7, "s": ["bbc", "reuters"]}).cost == 1 + 7 * 2
    assert estimate(estimator, q, {"n": 7, "s": ["bbc", "reuters"]}).fetches == 2
    assert estimate(estimator, q, {"n": 10_000}).cost == 1 + 100 * 2  # the resolver refuses it; worst case here
    # the memo keys on variables too
    assert estimate(estimator, q, {"n": 1}).cost == 3


def test_cyclic_fragments_and_fan_out_stay_bounded(estimator: CostEstimator) -> None:
    cyclic = "{ sources { ...A } } fragment A on Source { id articles(first: 1) { source { ...A } } }"
    assert estimate(estimator, cyclic).complete  # the cycle is not followed (validation refuses it)
    # each fragment spreads the next twice: 2^20 visits if walked naively
    frags = " ".join(f"fragment F{i} on Source {{ id ...F{i + 1} ...F{i + 1} }}" for i in range(20))
    fan = "{ sources { ...F0 } } " + frags + " fragment F20 on Source { id }"
    got = estimate(estimator, fan)
    assert not got.complete and got.cost > MAX_VISITS - 1
    assert got.check(5_000, 8) is not None


def test_check_names_the_limit(estimator: CostEstimator) -> None:
    nested = ("{ articles(first: 100) { nodes { source { articles(first: 100) { source { articles(first: 100) "
              "{ title } } } } } } }")
    err = estimate(estimator, nested).check(5_000, 8)
    assert err is not None and err.extensions == {"cost": 1_020_201, "maxCost": 5_000}
    aliases = "{ " + " ".join(f'a{i}: articles(search: "t{i}") {{ nodes {{ id }} }}' for i in range(30)) + " }"
    err = estimate(estimator, aliases).check(5_000, 8)
    assert err is not None and err.extensions == {"cost": 93, "maxCost": 8}


def test_edge_settings_from_env() -> None:
    from gateway.errors import ConfigError
    from gateway.settings import DEFAULT_MAX_QUERY_COST, EdgeSettings

    default = EdgeSettings.from_env({})
    assert default.max_query_cost == DEFAULT_MAX_QUERY_COST and default.rate_limit_enabled
    assert default.env == "development" and default.graphiql_on
    edge = EdgeSettings.from_env({
        "GATEWAY_ENV": "Production", "GATEWAY_RATE_LIMIT": "off", "GATEWAY_MAX_UPSTREAM_FETCHES": "12",
        "GATEWAY_TRUSTED_PROXIES": "10.0.0.0/8, ::1", "GATEWAY_RATE_LIMIT_SYNC_MS": "0",
    })
    assert edge.production and not edge.rate_limit_enabled and edge.max_upstream_fetches == 12
    assert edge.trusted_proxies == ("10.0.0.0/8", "::1") and edge.rate_limit_sync_ms == 0
    for env, message in (
        ({"GATEWAY_RATE_LIMIT_SYNC_MS": "250"}, "<= 100"),
        ({"GATEWAY_REQUIRE_API_KEY": "maybe"}, "true or false"),
        ({"GATEWAY_MAX_QUERY_COST": "lots"}, "integer"),
        ({"GATEWAY_CLIENTS_FILE": "/nonexistent/clients.toml"}, "not found"),
    ):
        with pytest.raises(ConfigError, match=message):
            EdgeSettings.from_env(env)
