"""Parse and validation caches: one parse and one validation per distinct document,
however many variable sets, and limits still enforced from the cache."""

from __future__ import annotations

import asyncio

from gateway.documents import CachedDocument, DocumentCache
from gateway.schema import GatewaySchema
from tests.helpers import RunningGateway

QUERY = "query Front($first: Int!) { articles(first: $first) { nodes { id title } sources { status } } }"


def _documents(gw: RunningGateway) -> DocumentCache:
    route = next(r for r in gw.app.routes if getattr(r, "path", None) == "/graphql")
    app = route.app
    while not hasattr(app, "schema"):
        app = app.app
    schema = app.schema
    assert isinstance(schema, GatewaySchema)
    return schema.documents


async def test_one_validation_for_twenty_variable_sets(gateway: RunningGateway) -> None:
    docs = _documents(gateway)
    before_v, before_p = docs.validations, docs.parses
    for round_ in range(3):
        answers = await asyncio.gather(*(gateway.data(QUERY, {"first": 1 + i}) for i in range(20)))
        assert [len(a["articles"]["nodes"]) for a in answers] == [1 + i for i in range(20)]
    assert docs.parses - before_p == 1
    assert docs.validations - before_v == 1


async def test_a_new_document_is_parsed_once_for_the_estimate_and_the_execution(gateway: RunningGateway) -> None:
    docs = _documents(gateway)
    text = "query Once($first: Int!) { articles(first: $first) { nodes { id } } }"
    before_p, before_h = docs.parses, docs.hits
    assert len((await gateway.data(text, {"first": 2}))["articles"]["nodes"]) == 2
    # The gate parsed it (for the cost estimate) into the schema's cache, where the
    # schema's parse step found it: one parse, one hit, none of Strawberry's own.
    assert docs.parses - before_p == 1 and docs.hits - before_h == 1
    assert docs.get(text) is not None


async def test_invalid_documents_are_refused_from_the_cache(gateway: RunningGateway) -> None:
    docs = _documents(gateway)
    # Too deep (over 12 levels) yet cheap (first: 1 at every level), so the cost gate
    # lets it through to validation.
    deep = '{ source(id: "bbc") { ' + "articles(first: 1) { source { " * 6 + "id" + " } }" * 6 + " } }"
    before = docs.validations
    for _ in range(5):
        result = await gateway.query(deep)
        assert result.get("data") is None
        assert result["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED"
    assert docs.validations - before == 1
    syntax = await gateway.query("{ articles { ")
    assert syntax["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"


def test_the_cache_is_bounded_in_entries_and_text() -> None:
    from graphql import parse

    cache = DocumentCache(maxsize=3, max_chars=1600)
    doc = parse("{ sources { id } }")
    for i in range(5):
        cache.put(f"q{i}", CachedDocument(doc))
    assert len(cache) == 3 and cache.get("q0") is None and cache.get("q4") is not None
    cache.put("x" * 200, CachedDocument(doc))  # over max_chars/16: not kept
    assert cache.get("x" * 200) is None


async def test_the_token_limit_still_applies(gateway: RunningGateway) -> None:
    huge = "{ " + " ".join(["sources { id }"] * 600) + " }"  # 2,400 tokens
    result = await gateway.query(huge)
    assert result.get("data") is None
    assert result["errors"][0]["extensions"]["code"] == "GRAPHQL_PARSE_FAILED"
    assert "token" in result["errors"][0]["message"].lower()
