"""The fast executor answers byte for byte what graphql-core's own execution answers:
data, errors (messages, paths, locations, order) and null propagation.

Two ways: a small schema built to hit every corner (nulls in non-null fields, attributes
that raise, refuse coercion, are exceptions or awaitables, lists with bad items,
interfaces and unions, resolvers that fail next to plain fields), and the real schema
over the demo upstream with the documents frontends send.
"""

from __future__ import annotations

import asyncio
import enum
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Annotated, Any

import orjson
import pytest
import strawberry
from graphql import parse
from strawberry.extensions import SchemaExtension
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext

from gateway.app import create_app
from gateway.context import build_context
from gateway.schema import build_schema
from gateway.schema.fastexec import FastExecutor, context_only, plan_field
from gateway.settings import Settings
from tests.clock import FakeClock
from tests.helpers import RunningGateway

# -- a schema with every corner ---------------------------------------------------


@strawberry.enum
class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Toy:
    label: str
    price: int


@strawberry.type
class Refusal:
    reason: str


@strawberry.interface
class Named:
    name: str


@strawberry.type
class Pet:
    name: str
    age: int | None
    color: Color
    born: datetime
    weight: float | None = None


@strawberry.type
class Cat(Named):
    name: str
    lives: int
    toy: Toy | None


@strawberry.type
class Owner:
    name: str
    pet: Pet
    maybe_pet: Pet | None
    pets: list[Pet]
    loose_pets: list[Pet | None]
    nick: str | None = None

    @strawberry.field
    def shout(self) -> str:
        return self.name.upper()

    @strawberry.field
    def fails(self) -> str | None:
        raise ValueError(f"no luck for {self.name}")

    @strawberry.field
    def fails_hard(self) -> str:
        raise ValueError("really no luck")

    @strawberry.field
    @context_only
    def gift(self, info: strawberry.Info) -> Toy:
        return _gift(self, info)  # type: ignore[return-value]

    @strawberry.field
    @context_only
    def maybe_gift(self, info: strawberry.Info) -> Toy | None:
        return _gift(self, info)

    @strawberry.field
    @context_only
    def gift_or_refusal(self, info: strawberry.Info) -> Annotated[Toy | Refusal, strawberry.union("GiftOr")]:
        return _gift(self, info) or Refusal(reason="none")

    @strawberry.field
    @context_only
    def gift_count(self, info: strawberry.Info) -> int:
        gift = _gift(self, info)
        return gift.price * 2**31 if info.context["gift"] == "big" else (gift and gift.price)  # type: ignore[return-value]

    @strawberry.field
    @context_only
    def where(self, info: strawberry.Info) -> str:
        return "/".join(map(str, info.path.as_list()))

    @strawberry.field
    @context_only
    def toys(self) -> list[Toy]:
        return [Toy(label=p.name, price=1) for p in self.pets]

    @strawberry.field
    async def later(self) -> Pet:
        await asyncio.sleep(0)
        return self.pet


def _gift(owner: Any, info: Any) -> Toy | None:
    what = info.context["gift"]
    if what == "raise":
        raise ValueError(f"no gift for {owner.name}")
    if what == "none":
        return None
    return Toy(label=f"for {owner.name}", price=len(str(owner.name)))


GIFTS = {"float_weight": "none", "int_name": "raise", "bad_enum": "none", "not_a_list": "raise", "null_item": "big"}

Thing = Annotated[Pet | Toy, strawberry.union("Thing")]


class Raising:
    """An attribute that raises, like a property over missing data."""

    name = "raiser"
    age = None
    color = Color.RED
    born = datetime(2020, 1, 1, tzinfo=timezone.utc)

    @property
    def weight(self) -> float:
        raise RuntimeError("scale broken")


class Obj:
    def __init__(self, **kw: Any) -> None:
        self.__dict__.update(kw)


def pet(name: Any = "rex", **kw: Any) -> Obj:
    base = {"name": name, "age": 3, "color": Color.BLUE, "born": datetime(2021, 5, 6, 7, 8, 9, tzinfo=timezone.utc)}
    return Obj(**{**base, **kw})


def owner(name: Any = "ann", **kw: Any) -> Obj:
    base = {"name": name, "pet": pet(), "maybe_pet": None, "pets": [pet("a"), pet("b", age=None)],
            "loose_pets": [pet("c"), None], "nick": None}
    return Obj(**{**base, **kw})


class AwaitablePet:
    """An attribute holding an awaitable (made lazily: no warning when not selected)."""

    def __await__(self) -> Any:
        yield from asyncio.sleep(0).__await__()
        return pet("awaited")


OWNERS: dict[str, Callable[[], Obj]] = {
    "plain": owner,
    "null_name": lambda: owner(None),  # non-null String is None: owner becomes null
    "null_pet_name": lambda: owner(pet=pet(None)),  # propagates through non-null pet
    "int_too_big": lambda: owner(pet=pet(age=2**40)),
    "bad_enum": lambda: owner(pet=pet(color="green")),
    "raising_attr": lambda: owner(pet=Raising()),
    "exception_value": lambda: owner(nick=ValueError("an exception as a value")),
    "awaitable_value": lambda: owner(maybe_pet=AwaitablePet()),
    "null_item": lambda: owner(pets=[pet("a"), None, pet("z")]),
    "bad_item": lambda: owner(pets=[pet("a"), pet(None)], loose_pets=[pet(None), pet("ok")]),
    "not_a_list": lambda: owner(pets=pet("single")),
    "int_name": lambda: owner(7),  # String coerces an int
    "float_weight": lambda: owner(pet=pet(weight=2.5)),
}


@strawberry.type
class MiniQuery:
    @strawberry.field
    def owner(self, kind: str) -> Owner | None:
        return OWNERS[kind]()  # type: ignore[return-value]

    @strawberry.field
    def owners(self) -> list[Owner | None]:
        return [OWNERS[k]() for k in ("plain", "null_name", "bad_item")]  # type: ignore[misc]

    @strawberry.field
    def strict_owner(self, kind: str) -> Owner:
        return OWNERS[kind]()  # type: ignore[return-value]

    @strawberry.field
    def named(self) -> list[Named]:
        return [Cat(name="tom", lives=9, toy=Toy(label="mouse", price=2)), Cat(name="kit", lives=1, toy=None)]

    @strawberry.field
    def things(self) -> list[Thing]:  # type: ignore[valid-type]
        return [Toy(label="ball", price=3), Pet(name="q", age=None, color=Color.BLUE, born=datetime(2020, 2, 2))]


OWNER_FIELDS = """
  __typename name n2: name shout nick fails
  pet { __typename name age color born weight }
  maybePet { name age }
  pets { name age ...P }
  loosePets { name }
  ... on Owner { pet { name color } }
  later { name @include(if: $yes) age @skip(if: $yes) }
  maybeGift { label price }
"""
MINI_DOCS = [
    "query Q($kind: String!, $yes: Boolean!) { owner(kind: $kind) {" + OWNER_FIELDS + "} }"
    " fragment P on Pet { born color }",
    "query Q($kind: String!, $yes: Boolean!) { strictOwner(kind: $kind) {" + OWNER_FIELDS + "} other: owner(kind:"
    ' "plain") { name } } fragment P on Pet { born color }',
    "query Q($kind: String!) { owner(kind: $kind) { name failsHard } }",
    "query Q($kind: String!) { owner(kind: $kind) { name gift { label price __typename } giftCount where"
    " toys { label } giftOrRefusal { __typename ... on Refusal { reason } ... on Toy { label } } } }",
    "query Q { owners { name pets { name } loosePets { name age } } }",
    (
        "query Q($yes: Boolean!) { named { __typename name ... on Cat { lives toy { label @skip(if: $yes) price } } } "
        "things { __typename ... on Toy { label price } ... on Pet { name born } } }"
    ),
]


class ResolveMiddleware(SchemaExtension):
    def resolve(self, _next: Any, root: Any, info: Any, *args: Any, **kwargs: Any) -> Any:
        return _next(root, info, *args, **kwargs)


class GiftRefused(strawberry.ExceptionHandler[ValueError, Refusal]):
    def handle(self, exception: ValueError, *, field: Any, info: Any) -> Refusal:
        return Refusal(reason=f"handled: {exception}")


def _mini(executor: type, extensions: tuple = (), handlers: tuple = ()) -> strawberry.Schema:
    return strawberry.Schema(
        query=MiniQuery, types=[Cat], execution_context_class=executor, extensions=list(extensions),
        exception_handlers=handlers,
    )


def _answer(result: Any) -> bytes:
    errors = [e.formatted for e in result.errors] if result.errors else None
    return orjson.dumps({"data": result.data, "errors": errors})


@pytest.mark.parametrize("doc", MINI_DOCS)
@pytest.mark.parametrize("kind", sorted(OWNERS))
async def test_same_answer_as_graphql_core_in_every_corner(doc: str, kind: str) -> None:
    variables: dict[str, Any] = {}
    if "$yes" in doc:
        variables["yes"] = kind != "plain"
    if "$kind" in doc:
        variables["kind"] = kind
    context = {"gift": GIFTS.get(kind, "ok")}
    slow = await _mini(StrawberryGraphQLCoreExecutionContext).execute(doc, variables, context)
    fast = await _mini(FastExecutor).execute(doc, variables, context)
    with_middleware = await _mini(FastExecutor, (ResolveMiddleware,)).execute(doc, variables, context)
    assert all(e.path for e in slow.errors or ())  # execution errors, not a refused document
    assert _answer(fast) == _answer(slow)
    assert _answer(with_middleware) == _answer(slow)
    handled_slow = await _mini(StrawberryGraphQLCoreExecutionContext, handlers=(GiftRefused(),)).execute(
        doc, variables, context
    )
    handled_fast = await _mini(FastExecutor, handlers=(GiftRefused(),)).execute(doc, variables, context)
    assert _answer(handled_fast) == _answer(handled_slow)


#: The corners again without directives: their collected fields are shared by executions.
STATIC_DOCS = [
    "query Q($kind: String!) { owner(kind: $kind) {" + OWNER_FIELDS.replace(
        "later { name @include(if: $yes) age @skip(if: $yes) }", "later { name age }") + "} }"
    " fragment P on Pet { born color }",
    *MINI_DOCS[2:5],
]


class OneDocumentPerText(SchemaExtension):
    """Hands Strawberry the same parsed document for the same text (as the gateway's
    document cache does), so that executions can share what the executor keeps."""

    documents: dict[str, Any] = {}

    def on_parse(self) -> Any:
        ec = self.execution_context
        if ec.query not in self.documents:
            self.documents[ec.query] = parse(ec.query)
        ec.graphql_document = self.documents[ec.query]
        yield


async def test_selections_shared_across_executions_give_the_same_answers() -> None:
    from gateway.schema import execmemo

    # Every kind of owner in turn, twice, on one document per text: from the second
    # execution on, collected fields and plans come from the operation's memo.
    fast = _mini(FastExecutor, (OneDocumentPerText,))
    slow = _mini(StrawberryGraphQLCoreExecutionContext)
    for doc in STATIC_DOCS:
        for _round in range(2):
            for kind in sorted(OWNERS):
                variables = {"kind": kind} if "$kind" in doc else {}
                context = {"gift": GIFTS.get(kind, "ok")}
                expected = await slow.execute(doc, variables, context)
                assert _answer(await fast.execute(doc, variables, context)) == _answer(expected), (doc, kind)
        memo = execmemo.operation_memo(OneDocumentPerText.documents[doc].definitions[0])
        assert memo.selections, doc  # shared, and used
    await fast.execute(MINI_DOCS[0], {"kind": "plain", "yes": True}, {"gift": "ok"})
    conditional = execmemo.operation_memo(OneDocumentPerText.documents[MINI_DOCS[0]].definitions[0])
    assert conditional.checked and conditional.selections is None  # @include/@skip: per execution


async def test_the_corners_do_reach_errors_and_nulls() -> None:
    # the comparison above means something only if these cases are not all clean
    fast = _mini(FastExecutor)
    doc = MINI_DOCS[0]
    null_name = await fast.execute(doc, {"kind": "null_name", "yes": True}, {"gift": "ok"})
    assert null_name.data == {"owner": None}
    assert "Cannot return null for non-nullable field Owner.name." in null_name.errors[0].message
    raising = await fast.execute(doc, {"kind": "raising_attr", "yes": True}, {"gift": "ok"})
    assert [e.path for e in raising.errors] == [["owner", "fails"], ["owner", "pet", "weight"]]
    plain = await fast.execute(doc, {"kind": "plain", "yes": False}, {"gift": "ok"})
    assert plain.data["owner"]["pet"] == {
        "__typename": "Pet", "name": "rex", "age": 3, "color": "BLUE", "born": "2021-05-06T07:08:09+00:00", "weight": None
    }
    assert list(plain.data["owner"])[:4] == ["__typename", "name", "n2", "shout"]  # selection order
    assert plain.data["owner"]["maybeGift"] == {"label": "for ann", "price": 3}
    gifts = {k: await fast.execute(MINI_DOCS[3], {"kind": k}, {"gift": GIFTS.get(k, "ok")})
             for k in ("plain", "int_name", "float_weight")}
    assert gifts["plain"].data["owner"]["gift"]["label"] == "for ann"
    assert gifts["int_name"].errors[0].message == "no gift for 7" and gifts["int_name"].data == {"owner": None}
    assert "Cannot return null for non-nullable field Owner.gift." in gifts["float_weight"].errors[0].message
    assert gifts["plain"].data["owner"]["where"] == "owner/where"
    assert gifts["plain"].data["owner"]["toys"] == [{"label": "a"}, {"label": "b"}]
    handled = await _mini(FastExecutor, handlers=(GiftRefused(),)).execute(
        '{ owner(kind: "plain") { giftOrRefusal { __typename ... on Refusal { reason } } } }', None, {"gift": "raise"}
    )
    assert handled.data["owner"]["giftOrRefusal"] == {"__typename": "Refusal", "reason": "handled: no gift for ann"}
    big = await fast.execute(MINI_DOCS[3], {"kind": "null_item"}, {"gift": "big"})
    assert "Int cannot represent non 32-bit signed integer value" in big.errors[0].message


def test_plain_fields_are_planned_and_resolvers_are_not() -> None:
    from graphql import FieldNode, NameNode
    from graphql.execution.collect_fields import FieldDetails

    schema = build_schema()

    def plan(type_name: str, field: str) -> Any:
        core_type = schema.schema_converter.type_map[type_name].implementation
        return plan_field(core_type, [FieldDetails(FieldNode(name=NameNode(value=field)), None)])

    assert plan("Article", "title")[1] == "title"
    assert plan("Article", "publishedAt")[1] == "published_at"
    assert plan("ArticleEdge", "node")[1] == "node"  # a plain object field
    assert plan("Article", "source")[0] == 4  # a resolver that reads only the context
    assert plan("SourceResult", "ageSeconds")[0] == 4  # ... and the path
    assert plan("ArticleConnection", "edges")[0] == 4  # ... or nothing
    assert plan("Query", "articles")[0] == 4  # scalar arguments, sync (an awaitable when cold)
    assert plan("Query", "articles")[1][3] == {a: a for a in ("sources", "search", "since", "first", "after")}
    assert plan("Article", "comments")[0] == 0  # arguments, async: graphql-core runs it
    assert plan("Query", "health")[0] == 0
    assert issubclass(schema.execution_context_class, FastExecutor)  # live events add a memo on top


# -- the real schema --------------------------------------------------------------

REAL_DOCS: list[tuple[str, dict[str, Any]]] = [
    (
        """query FrontPage($first: Int!) { articles(first: $first) {
          edges { cursor node { id title url author publishedAt score source { id name } } }
          pageInfo { hasNextPage endCursor startCursor hasPreviousPage }
          sources { source { id } status ageSeconds error { code httpStatus message } droppedItems }
        } }""",
        {"first": 12},
    ),
    (
        """query Q($first: Int!, $withSummary: Boolean!, $noImage: Boolean!) {
          top: articles(first: $first) { __typename nodes { ...Card ... on Article { commentCount } } }
          hn: articles(first: 3, sources: ["hn"]) { nodes { title comments(first: 2) { author text postedAt
            replies(first: 1) { id } } } }
          sources { __typename id kind critical breaker { state failures openedAt } articles(first: 2) { id } }
          source(id: "nope") { id }
        }
        fragment Card on Article { id t: title summary @include(if: $withSummary) imageUrl @skip(if: $noImage)
          publishedAt __typename source { __typename name } }""",
        {"first": 7, "withSummary": True, "noImage": True},
    ),
    ('query { articles(first: -1) { nodes { id } } sources { id } }', {}),
    ('query { a: article(id: "a_unknown") { id title } articles(first: 2) { nodes { id } } }', {}),
    ('query Q($s: [ID!]) { articles(first: 4, sources: $s) { nodes { id title } sources { status } } }',
     {"s": ["nope"]}),
]


@pytest.fixture
async def real(make_settings: Callable[..., Settings]) -> Any:
    async with RunningGateway(create_app(make_settings(), clock=FakeClock())) as gw:
        yield gw


async def test_same_answer_as_graphql_core_on_the_real_schema(real: RunningGateway) -> None:
    services = real.services
    slow_schema = build_schema(execution_context_class=StrawberryGraphQLCoreExecutionContext)
    fast_schema = build_schema()
    for doc, variables in REAL_DOCS:
        await slow_schema.execute(doc, variable_values=variables, context_value=build_context(services))  # warm
        await services.source_service.settle(timeout_s=10)
        slow = await slow_schema.execute(doc, variable_values=variables, context_value=build_context(services))
        assert all(e.path for e in slow.errors or ()), doc  # execution errors, not a refused document
        for _again in range(2):  # the second one shares the first one's collected fields (static documents)
            fast = await fast_schema.execute(doc, variable_values=variables, context_value=build_context(services))
            assert _answer(fast) == _answer(slow), doc
    # and the answers are not trivial ones
    front = await fast_schema.execute(REAL_DOCS[0][0], variable_values={"first": 12},
                                      context_value=build_context(services))
    assert len(front.data["articles"]["edges"]) == 12 and not front.errors
    assert services.results.hits >= 12  # the articles' sub-answers came from the memo
    failing = await fast_schema.execute(REAL_DOCS[2][0], context_value=build_context(services))
    assert failing.errors and failing.data == {"articles": None, "sources": failing.data["sources"]}


def test_field_plans_live_as_long_as_their_document() -> None:
    import gc

    from graphql import parse

    from gateway.schema import execmemo

    before = len(execmemo._memos_by_operation)
    document = parse("{ a }")
    plans = execmemo.operation_memo(document.definitions[0]).fields
    assert execmemo.operation_memo(document.definitions[0]).fields is plans
    assert len(execmemo._memos_by_operation) == before + 1
    del document, plans
    gc.collect()
    assert len(execmemo._memos_by_operation) == before


async def test_only_pure_sub_answers_of_frozen_values_are_reused(real: RunningGateway) -> None:
    services = real.services
    fast_schema = build_schema()
    slow_schema = build_schema(execution_context_class=StrawberryGraphQLCoreExecutionContext)

    async def both(doc: str, variables: dict[str, Any]) -> tuple[Any, Any]:
        slow = await slow_schema.execute(doc, variable_values=variables, context_value=build_context(services))
        fast = await fast_schema.execute(doc, variable_values=variables, context_value=build_context(services))
        return slow, fast

    await both("{ articles(first: 1) { nodes { id } } }", {})  # warm
    await services.source_service.settle(timeout_s=10)
    pure = "query P($n: Int!) { articles(first: $n) { nodes { id title publishedAt source { id name kind } } } }"
    slow, fast = await both(pure, {"n": 6})
    stored = services.results.stores
    assert stored >= 6 and _answer(fast) == _answer(slow)
    hits = services.results.hits
    slow, fast = await both(pure, {"n": 4})  # other variables, same articles: reused
    assert services.results.hits == hits + 4 and services.results.stores == stored
    assert _answer(fast) == _answer(slow)
    # A breaker is live state (an impure resolver): nothing of these articles is kept.
    live = "query L($n: Int!) { articles(first: $n) { nodes { id source { breaker { state failures } } } } }"
    for n in (3, 2):
        slow, fast = await both(live, {"n": n})
        assert _answer(fast) == _answer(slow)
    assert services.results.stores == stored and services.results.hits == hits + 4
    # With a directive the plans are per execution: not kept either.
    conditional = "query C($n: Int!, $t: Boolean!) { articles(first: $n) { nodes { id title @include(if: $t) } } }"
    for t in (True, False):
        slow, fast = await both(conditional, {"n": 2, "t": t})
        assert _answer(fast) == _answer(slow)
    assert services.results.stores == stored


def test_the_result_memo_is_bounded() -> None:
    from gateway.schema.execmemo import ResultMemo

    memo = ResultMemo(max_entries=3)
    plan, values = [], [object() for _ in range(4)]
    for i, value in enumerate(values):
        memo.put(plan, value, {"i": i})
    assert len(memo) == 1 and memo.get(plan, values[3]) == {"i": 3} and memo.get(plan, values[0]) is None
    assert memo.get([], values[3]) is None  # another plan: another answer
