"""Parse and validation caches: one parse and one validation per distinct document,
however many variable sets, and limits still enforced from the cache."""

from __future__ import annotations

import asyncio

import pytest
from graphql import parse, validate
from graphql.validation import (
    NoUndefinedVariablesRule,
    NoUnusedFragmentsRule,
    UniqueDirectivesPerLocationRule,
    specified_rules,
)
from strawberry.schema.validation_rules.maybe_null import MaybeNullValidationRule
from strawberry.schema.validation_rules.one_of import OneOfInputValidationRule

from gateway.documents import CachedDocument, DocumentCache, limit_rules, rules_for
from gateway.schema import MAX_ALIASES, MAX_QUERY_DEPTH, GatewaySchema, build_schema
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


# Documents with and without variables, directives and fragments, valid and not: every
# rule group has documents it must catch (they carry the group's mark) and documents
# it may skip, some of them invalid for other reasons.
RULE_CORPUS = [
    "{ sources { id name } }",
    "{ articles(first: 3) { nodes { id title url } sources { source { id } status } } }",
    "{ sources { id nope } }",  # unknown field
    "{ sources }",  # missing selection
    "{ articles(first: \"x\") { nodes { id } } }",  # wrong argument type
    "{ source { id } }",  # missing required argument
    "{ a: sources { id } a: sources { name } }",  # conflicting aliases
    "query Q($n: Int!) { articles(first: $n) { nodes { id } } }",
    "query Q { articles(first: $n) { nodes { id } } }",  # undefined variable
    "query Q($n: Int!, $m: Int) { articles(first: $n) { nodes { id } } }",  # unused variable
    "query Q($n: Int!, $n: Int!) { articles(first: $n) { nodes { id } } }",  # duplicate variable
    "query Q($n: String) { articles(first: $n) { nodes { id } } }",  # variable in the wrong position
    "query Q($n: Article) { sources { id } }",  # variable of an output type
    "{ sources @include(if: true) { id } }",
    "{ sources @nope { id } }",  # unknown directive
    "{ sources @skip(if: true) @skip(if: false) { id } }",  # repeated directive
    "query @skip(if: true) { sources { id } }",  # directive in the wrong place
    "{ sources { ...S } } fragment S on Source { id }",
    "{ sources { ...Missing } }",  # unknown fragment
    "{ a: sources { ...Missing } b: sources { id } }",
    "query { ...Missing }",
    "{ sources { id } } fragment S on Source { id }",  # unused fragment
    "{ sources { ...S } } fragment S on Source { ...S }",  # cycle
    "{ sources { ... on Article { id } } }",  # impossible spread
    "{ sources { ...S } } fragment S on Source { id } fragment S on Source { name }",  # duplicate name
    "{ sources { ... on String { id } } }",  # fragment on a scalar
    "# $ @ ... in a comment keep the rules, which pass\n{ sources { id } }",
    "{ sources { id } } { sources { name } }",  # two anonymous operations
]


@pytest.mark.parametrize("text", RULE_CORPUS)
def test_skipped_rules_change_no_answer(text: str) -> None:
    """A document is refused with the same errors, in the same order, as by every rule."""
    schema = build_schema()._schema
    rules = (
        *specified_rules, *limit_rules(max_depth=MAX_QUERY_DEPTH, max_aliases=MAX_ALIASES),
        MaybeNullValidationRule, OneOfInputValidationRule,
    )
    document = parse(text)
    expected = [e.formatted for e in validate(schema, document, rules)]
    assert [e.formatted for e in validate(schema, document, rules_for(text, rules))] == expected


def test_rules_are_skipped_only_without_their_marks() -> None:
    rules = tuple(specified_rules)
    assert rules_for(None, rules) is rules  # no text, no guess
    assert len(rules_for("{ sources { id } }", rules)) < len(rules) * 2 // 3
    for text, kept in (
        ("query($a: Int) { sources { id } }", NoUndefinedVariablesRule),
        ("{ sources @skip(if: false) { id } }", UniqueDirectivesPerLocationRule),
        ("{ sources { ...S } }", NoUnusedFragmentsRule),
        ("fragment S on Source { id }", NoUnusedFragmentsRule),
    ):
        assert kept in rules_for(text, rules) and kept not in rules_for("{ sources { id } }", rules)


async def test_the_gateway_still_refuses_what_kept_rules_catch(gateway: RunningGateway) -> None:
    for text in ("query Q { articles(first: $n) { nodes { id } } }", "{ sources @nope { id } }",
                 "{ sources { id } } fragment S on Source { id }",
                 # Strawberry's depth limit raised KeyError on this: an internal error
                 "{ sources { ...Missing } }"):
        result = await gateway.query(text)
        assert result.get("data") is None, text
        assert result["errors"][0]["extensions"]["code"] == "GRAPHQL_VALIDATION_FAILED", text
