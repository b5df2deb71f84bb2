"""Query cost: a static estimate before execution, and a meter during it.

The estimate walks the parsed operation with the schema's types and the request's
variables (no execution, no I/O) and counts two things:

- **objects returned**: every object-typed field costs 1, list fields multiply by
  their ``first`` (a connection's ``nodes``/``edges`` by the connection's ``first``;
  per-source lists by the number of sources in play), and nested lists multiply down;
- **distinct upstream fetches**: each ``(source, search)`` pair that ``articles`` or
  ``Source.articles`` can ask (what the per-request FeedLoader deduplicates on), and
  each level of Hacker News comments.

The walk is bounded (:data:`MAX_VISITS` field visits), so fragment fan-out cannot
make estimating itself expensive: past the bound the query is simply too expensive.

:class:`CostMeter` is the safety net: resolvers report what they actually fetch and
return, and it stops execution at the same limits if an estimate undercounted.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLField,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    OperationDefinitionNode,
    SelectionSetNode,
    Undefined,
    is_leaf_type,
    value_from_ast_untyped,
)

from gateway.errors import GatewayError
from gateway.settings import MAX_FIRST, Settings
from gateway.sources import ADAPTERS

#: Field visits after which the estimate gives up and calls the query too expensive.
MAX_VISITS = 20_000


class QueryTooExpensive(GatewayError):
    code = "QUERY_TOO_EXPENSIVE"

    def __init__(self, message: str, *, cost: int, max_cost: int) -> None:
        super().__init__(message)
        self.extensions = {"cost": cost, "maxCost": max_cost}


@dataclass(frozen=True, slots=True)
class CostEstimate:
    cost: int  # objects the operation can return
    fetches: int  # distinct upstream fetches it can cause
    complete: bool = True  # False: the walk hit MAX_VISITS (treat as too expensive)

    def check(self, max_cost: int, max_fetches: int) -> QueryTooExpensive | None:
        if not self.complete or self.cost > max_cost:
            return QueryTooExpensive(
                f"query cost {self.cost if self.complete else 'over ' + str(self.cost)} exceeds the maximum of "
                f"{max_cost}; ask for fewer items (`first`) or nest lists less deeply",
                cost=self.cost,
                max_cost=max_cost,
            )
        if self.fetches > max_fetches:
            return QueryTooExpensive(
                f"query needs {self.fetches} distinct upstream fetches, more than the maximum of {max_fetches}; "
                "use fewer distinct `search`/`sources` combinations per request",
                cost=self.fetches,
                max_cost=max_fetches,
            )
        return None


class _Budget(Exception):
    pass


@dataclass(slots=True)
class _Walk:
    variables: Mapping[str, Any]
    fragments: dict[str, FragmentDefinitionNode]
    keys: set[Hashable]
    visits: int = 0


def _unwrap(type_: Any) -> tuple[Any, bool]:
    is_list = False
    while isinstance(type_, (GraphQLNonNull, GraphQLList)):
        if isinstance(type_, GraphQLList):
            is_list = True
        type_ = type_.of_type
    return type_, is_list


class CostEstimator:
    """Estimates per (document, operation, variables); results are memoised, so a
    frontend's repeated query costs a dict lookup."""

    def __init__(self, schema: GraphQLSchema, settings: Settings, *, cache_size: int = 1024) -> None:
        self.schema = schema
        self.all_sources = tuple(s.id for s in settings.sources)
        self.searchable = frozenset(s.id for s in settings.sources if ADAPTERS[s.kind].supports_search)
        self._cache: OrderedDict[tuple[str, str | None, bytes], CostEstimate] = OrderedDict()
        self._cache_size = cache_size

    def estimate(
        self,
        query: str,
        document: DocumentNode,
        operation: OperationDefinitionNode,
        variables: Mapping[str, Any] | None,
    ) -> CostEstimate:
        """``query`` is the document's text: with the operation name and the
        variables, the memo's key."""
        try:
            var_key = orjson.dumps(variables, option=orjson.OPT_SORT_KEYS) if variables else b""
        except TypeError:  # not JSON-serialisable: cannot come from a request; do not cache
            return self._run(document, operation, variables or {})
        key = (query, operation.name.value if operation.name else None, var_key)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found
        result = self._run(document, operation, variables or {})
        self._cache[key] = result
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return result

    def _run(self, document: DocumentNode, op: OperationDefinitionNode, variables: Mapping[str, Any]) -> CostEstimate:
        root = self.schema.query_type if op.operation.value == "query" else None
        if root is None:  # mutations/subscriptions do not exist here; validation will say so
            return CostEstimate(0, 0)
        frags = {d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
        walk = _Walk(variables, frags, set())
        try:
            cost = self._selections(op.selection_set, root, self.all_sources, 0, 1, walk, ())
        except _Budget:
            return CostEstimate(walk.visits, len(walk.keys), complete=False)
        return CostEstimate(int(min(cost, 2**62)), len(walk.keys))

    def _selections(
        self,
        selection_set: SelectionSetNode | None,
        parent: GraphQLObjectType,
        scope: tuple[str, ...],
        comment_depth: int,
        page: int,
        walk: _Walk,
        fragment_path: tuple[str, ...],
    ) -> float:
        if selection_set is None:
            return 0
        total = 0.0
        for sel in selection_set.selections:
            walk.visits += 1
            if walk.visits > MAX_VISITS:
                raise _Budget
            if isinstance(sel, FieldNode):
                total += self._field(sel, parent, scope, comment_depth, page, walk, fragment_path)
            elif isinstance(sel, InlineFragmentNode):
                total += self._selections(sel.selection_set, self._cond(sel, parent), scope, comment_depth, page,
                                          walk, fragment_path)
            elif isinstance(sel, FragmentSpreadNode):
                name = sel.name.value
                frag = walk.fragments.get(name)
                if frag is None or name in fragment_path:  # unknown or cyclic: validation refuses it
                    continue
                total += self._selections(frag.selection_set, self._cond(frag, parent), scope, comment_depth, page,
                                          walk, (*fragment_path, name))
        return total

    def _cond(self, node: InlineFragmentNode | FragmentDefinitionNode, parent: GraphQLObjectType) -> GraphQLObjectType:
        if node.type_condition is None:
            return parent
        t = self.schema.get_type(node.type_condition.name.value)
        return t if isinstance(t, GraphQLObjectType) else parent

    def _args(self, node: FieldNode, field: GraphQLField, walk: _Walk) -> dict[str, Any]:
        args = {name: _default(arg) for name, arg in field.args.items()}
        for arg in node.arguments or ():
            args[arg.name.value] = value_from_ast_untyped(arg.value, walk.variables)
        return args

    def _field(
        self,
        node: FieldNode,
        parent: GraphQLObjectType,
        scope: tuple[str, ...],
        comment_depth: int,
        page: int,
        walk: _Walk,
        fragment_path: tuple[str, ...],
    ) -> float:
        name = node.name.value
        if name.startswith("__"):
            return 1 if name in ("__schema", "__type") else 0  # bounded by the schema's size
        field = parent.fields.get(name)
        if field is None:  # validation will refuse it
            return 0
        named, is_list = _unwrap(field.type)
        if is_leaf_type(named) or not isinstance(named, GraphQLObjectType):
            return 0
        args = self._args(node, field, walk) if field.args else {}
        where = (parent.name, name)
        child_scope = scope
        child_page = page
        if where == ("Query", "articles"):
            child_scope = self._chosen(args.get("sources"))
            search = args.get("search")
            # as the resolver keys its FeedLoader: stripped, case kept
            search = search.strip() or None if isinstance(search, str) else None
            walk.keys.update((s, search if s in self.searchable else None) for s in child_scope)
        elif where == ("Source", "articles"):
            walk.keys.update((s, None) for s in scope)
        elif where == ("Query", "source"):
            sid = args.get("id")
            child_scope = (sid,) if isinstance(sid, str) and sid in self.all_sources else ()
        elif where in (("Query", "sources"), ("Query", "health")):
            child_scope = self.all_sources
        elif where in (("Article", "comments"), ("Comment", "replies")):
            comment_depth += 1
            walk.keys.add(("hn-comments", comment_depth))
        size = 1
        if "first" in field.args:
            size = _first(args.get("first"))
            if not is_list:  # a connection: its nodes/edges are this long
                child_page = size
                size = 1
        elif is_list:
            size = page if name in ("nodes", "edges") else len(child_scope)
        if size == 0:
            return 0
        child = self._selections(node.selection_set, named, child_scope, comment_depth, child_page, walk, fragment_path)
        return size * (1 + child)

    def _chosen(self, ids: Any) -> tuple[str, ...]:
        if ids is None:
            return self.all_sources
        if isinstance(ids, str):
            ids = [ids]
        if not isinstance(ids, list):
            return self.all_sources
        return tuple(dict.fromkeys(i for i in ids if isinstance(i, str)))


def _default(arg: Any) -> Any:
    # A schema built from SDL keeps defaults as AST (graphql-core 3.3).
    if arg.default_value is not Undefined:
        return arg.default_value
    node = getattr(arg.ast_node, "default_value", None)
    return value_from_ast_untyped(node) if node is not None else None


def _first(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_FIRST:
        return value
    return MAX_FIRST  # out of range: the resolver refuses it; estimate the worst case


class CostMeter:
    """What execution actually returns and fetches, stopped at the same limits as
    the estimate. One per request (in the GraphQL context); resolvers report to it."""

    __slots__ = ("fetch_keys", "max_cost", "max_fetches", "objects")

    def __init__(self, max_cost: int, max_fetches: int) -> None:
        self.max_cost = max_cost
        self.max_fetches = max_fetches
        self.objects = 0
        self.fetch_keys: set[Hashable] = set()

    @property
    def actual(self) -> int:
        return self.objects

    def returned(self, count: int) -> None:
        self.objects += count
        if self.objects > self.max_cost:
            raise QueryTooExpensive(
                f"query returned more than {self.max_cost} objects; stopped", cost=self.objects, max_cost=self.max_cost
            )

    def fetches(self, keys: Iterable[Hashable]) -> None:
        self.fetch_keys.update(keys)
        if len(self.fetch_keys) > self.max_fetches:
            raise QueryTooExpensive(
                f"query needs more than {self.max_fetches} distinct upstream fetches; stopped",
                cost=len(self.fetch_keys),
                max_cost=self.max_fetches,
            )
