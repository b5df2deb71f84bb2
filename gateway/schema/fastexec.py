"""An executor that completes plain fields without graphql-core's per-field machinery.

A profile of one warm query with the response cache off (FrontPage, 20 variable sets):
about 195 field executions per request, and most of them just read an attribute
(``Article.title``, ``ArticleEdge.cursor``, ``ArticleEdge.node``). For each, graphql-core
builds a ``Path`` and a ``GraphQLResolveInfo``, Strawberry calls two wrappers around
``getattr``, and ``complete_value`` walks the type (non-null, list, leaf) with three
awaitable checks. Here a plan is made once per selection set and execution (field plans
are kept across requests, by field node: the document cache keeps nodes stable; for
operations without directives, sub-selections' collected fields and plans too, and
completed sub-answers of cached articles: :mod:`gateway.schema.execmemo`):

- plain leaves (scalars, enums) and ``__typename`` are read and coerced in one loop;
- plain object fields go straight to their sub-selection (``collect_and_execute_subfields``);
- object items of a list go straight to theirs too;
- every other field goes through graphql-core's ``execute_field``, in selection order.

A field is "plain" when graphql-core would do nothing but ``getattr`` for it: a
Strawberry field without a resolver, field extensions (permissions are one), a custom
``get_result`` or a non-default ``default_resolver``, without arguments, and no resolve
middleware in this execution (Strawberry builds one from extensions that implement
``resolve``) and no exception handlers in the schema. Object types with ``is_type_of`` (those implementing interfaces), lists of
leaves, interfaces and unions take graphql-core's path.

Reading the plain fields of an object has no side effects, so it is done first; anything
unusual there — ``None`` in a non-null field, a value that is an exception or awaitable,
a value the scalar refuses, an exception — discards that work and runs graphql-core's
``execute_fields`` on the whole selection set: errors, their order and null propagation
are graphql-core's own (a plain attribute is read twice then). Past that point, errors
are handled with graphql-core's ``handle_field_error``, as its ``execute_field`` does.

Only public names are used: ``execution_context_class`` is Strawberry's documented hook,
and the methods overridden are those graphql-core's ``Executor`` runs per object and list
item. graphql-core documents them as overridable but not stable: tests/test_fastexec.py
compares this executor's answers with the plain one's byte for byte, on a schema built
to hit every corner and on the real one.
"""

from __future__ import annotations

import inspect
from types import CoroutineType, GeneratorType
from typing import Any

from graphql import (
    GraphQLEnumType,
    GraphQLID,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLScalarType,
    GraphQLString,
    Undefined,
)
from graphql.execution import get_argument_values
from graphql.pyutils import Path, gather_with_cancel
from strawberry.schema.schema import StrawberryGraphQLCoreExecutionContext
from strawberry.schema.schema_converter import GraphQLCoreConverter
from strawberry.types.field import StrawberryField

from gateway.schema.execmemo import ResultMemo, is_frozen, operation_memo

_SKIP_INCLUDE = frozenset({"skip", "include"})
#: Types that are never awaitable and never an exception: no check needed beyond coercion.
_BASIC = frozenset({str, int, float, bool})
# Other types found to be the same, by the checks graphql-core makes on a value (an
# Exception, Strawberry's is_awaitable): only types whose instances have no __dict__,
# so no instance can differ from its type (datetime, slotted dataclasses).
_inert_types: dict[type, bool] = dict.fromkeys(_BASIC, True)
#: What a completed field can be without being awaitable.
_DONE = frozenset({dict, list, str, int, float, bool, type(None)})


def _inert(cls: type) -> bool:
    inert = _inert_types.get(cls)
    if inert is None:
        inert = _inert_types[cls] = (
            cls.__dictoffset__ == 0
            and not issubclass(cls, BaseException | CoroutineType | GeneratorType)
            and not hasattr(cls, "__await__")
        )
    return inert


_STRINGS = (GraphQLString, GraphQLID)

# A field's plan: (kind, attribute, the leaf type's coerce_output_value, non_null,
# whether a str passes a leaf unchanged, the object type, the field's type).
_SLOW = 0  # graphql-core runs it
_TYPENAME = 1
_LEAF = 2
_OBJECT = 3
_CONTEXT = 4  # a resolver marked @context_only; the attribute slot: (function, takes info, field, arguments)
SLOW_PLAN = (_SLOW, None, None, False, False, None, None)


def context_only(resolver: Any = None, *, pure: bool = False) -> Any:
    """Marks a sync resolver that reads nothing of ``info`` but ``info.context`` and
    ``info.path`` (or takes no ``info`` at all), and whose arguments, if any, are
    scalars or lists of scalars: the fast executor then calls it as
    ``resolver(root, info, **arguments)`` (or without ``info``) with an ``info``
    that has only those two, and the arguments as graphql-core coerced them (all
    Strawberry's conversion would do with scalars), skipping Strawberry's wrappers,
    which cost more than most such resolvers. Anything else on ``info`` raises
    AttributeError there. It may return an awaitable (graphql-core awaits it): a
    warm answer then needs no coroutine at all.

    ``pure=True`` says more: its answer depends on nothing but ``root`` and the app's
    configuration (not on arguments, the request, the path, the time or live
    state), so a completed sub-answer that contains it may be reused
    (:class:`ResultMemo`)."""

    def mark(func: Any) -> Any:
        func.gateway_context_only = True
        func.gateway_takes_info = "info" in inspect.signature(func).parameters
        func.gateway_pure = pure
        return func

    return mark if resolver is None else mark(resolver)


class ContextInfo:
    """The ``info`` a :func:`context_only` resolver gets from the fast executor."""

    __slots__ = ("context", "path")

    def __init__(self, context: Any, path: Path) -> None:
        self.context = context
        self.path = path


def plan_field(parent_type: GraphQLObjectType, field_details_list: Any, plans: dict | None = None) -> tuple:
    """The plan of one field; ``plans`` (an operation's) memoises it."""
    if plans is None:
        return _make_field_plan(parent_type, field_details_list)
    node = field_details_list[0].node
    key = (id(parent_type), id(node))
    cached = plans.get(key)
    if cached is not None and cached[0] is parent_type and cached[1] is node:
        return cached[2]
    plan = _make_field_plan(parent_type, field_details_list)
    plans[key] = (parent_type, node, plan)  # both kept: their ids cannot be reused meanwhile
    return plan


def _make_field_plan(parent_type: GraphQLObjectType, field_details_list: Any) -> Any:
    for details in field_details_list:
        if any(d.name.value not in _SKIP_INCLUDE for d in details.node.directives or ()):
            return SLOW_PLAN
    with_arguments = any(details.node.arguments for details in field_details_list)
    name = field_details_list[0].node.name.value
    if name == "__typename":
        return (_TYPENAME, None, None, False, False, None, None)
    field_def = parent_type.fields.get(name)
    if field_def is None:
        return SLOW_PLAN
    definition = (field_def.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
    if not (
        isinstance(definition, StrawberryField)
        and not definition.extensions
        and not definition.is_subscription
        and type(definition).get_result is StrawberryField.get_result
    ):
        return SLOW_PLAN
    field_type = field_def.type
    non_null = isinstance(field_type, GraphQLNonNull)
    named = field_type.of_type if non_null else field_type
    resolver = definition.base_resolver
    if resolver is not None:
        func = resolver.wrapped_func
        if getattr(func, "gateway_context_only", False) and not resolver.is_async:
            names = _argument_names(field_def, resolver)
            if names is None:
                return SLOW_PLAN
            plain_object = named if isinstance(named, GraphQLObjectType) and named.is_type_of is None else None
            leaf = isinstance(named, GraphQLScalarType | GraphQLEnumType)
            coerce = named.coerce_output_value if leaf else None
            step = (func, func.gateway_takes_info, field_def, names or None)
            return (_CONTEXT, step, coerce, non_null, False, plain_object, field_type)
        return SLOW_PLAN
    if with_arguments or field_def.args or definition.default_resolver is not getattr:
        return SLOW_PLAN
    if isinstance(named, GraphQLScalarType | GraphQLEnumType):
        return (_LEAF, definition.python_name, named.coerce_output_value, non_null, named in _STRINGS, None, field_type)
    if isinstance(named, GraphQLObjectType) and named.is_type_of is None:
        return (_OBJECT, definition.python_name, None, non_null, False, named, field_type)
    return SLOW_PLAN  # lists, interfaces, unions


def _argument_names(field_def: Any, resolver: Any) -> dict[str, str] | None:
    """GraphQL argument name -> the resolver's parameter, when every argument is a
    scalar or a list of scalars (values graphql-core's coercion leaves as Strawberry
    would pass them); None otherwise."""
    arguments = resolver.arguments
    if len(arguments) != len(field_def.args):
        return None
    names: dict[str, str] = {}
    # Strawberry builds the GraphQL arguments from the resolver's, in order.
    for (graphql_name, argument), strawberry_argument in zip(field_def.args.items(), arguments, strict=True):
        named = argument.type
        while isinstance(named, GraphQLNonNull | GraphQLList):
            named = named.of_type
        if not isinstance(named, GraphQLScalarType) or argument.ast_node is not None and argument.ast_node.directives:
            return None
        names[graphql_name] = strawberry_argument.python_name
    return names


_NOT_PLANNED = object()  # a sub-selection whose plan is made per execution

class _Fallback(Exception):
    """This object needs graphql-core's own path."""


class FastExecutor(StrawberryGraphQLCoreExecutionContext):
    """Strawberry's executor, with plain fields completed in one loop (see module)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        manager = self.middleware_manager
        strawberry_schema = (self.schema.extensions or {}).get(GraphQLCoreConverter.DEFINITION_BACKREF)
        # Resolve middleware wraps every resolver; exception handlers turn a resolver's
        # exceptions into results: both need Strawberry's own path for every field.
        self.fast_enabled = (manager is None or not manager.middlewares) and not getattr(
            strawberry_schema, "exception_handlers", ()
        )
        # Selection-set plans of this execution, by the grouped field set's identity
        # (graphql-core memoises those per execution, so a list of objects shares one).
        self.set_plans: dict[int, tuple[Any, GraphQLObjectType, Any]] = {}
        # Sub-selections of plain object fields and list items: by the field's
        # FieldDetailsList (one object per execution, like graphql-core's memo).
        self.sub_plans: dict[int, tuple[Any, GraphQLObjectType, Any, Any, Any]] = {}
        memo = operation_memo(self.operation)
        memo.check_static(self.operation, self.fragments)
        self.field_plans = memo.fields
        self.shared_selections = memo.selections
        self.pure_plans = memo.pure
        # Sub-answers reused across executions: only with shared (static) plans, and
        # only where the context offers a memo (the app's: see GatewayContext).
        self.results: ResultMemo | None = (
            getattr(self.context_value, "result_memo", None) if memo.selections is not None else None
        )

    def collect_subfields(self, return_type: GraphQLObjectType, field_details_list: Any) -> Any:
        """graphql-core's, shared by the operation's executions when its selections
        do not depend on variables (see :class:`OperationMemo`)."""
        return self.subselection(return_type, field_details_list)[0]

    def plan_is_pure(self, plan: list) -> bool:
        """Whether ``plan``'s answer depends on nothing but its value and the app's
        configuration: leaves, ``__typename``, and plain objects and ``pure``
        resolvers whose own sub-selections are pure too (shared plans only)."""
        found = self.pure_plans.get(id(plan))
        if found is not None and found[0] is plan:
            return found[1]
        self.pure_plans[id(plan)] = (plan, False)  # a cycle is not pure (and cannot occur)
        pure = True
        for _name, fdl, kind, attr, coerce, _non_null, _str, object_type, _field_type in plan:
            if kind is _SLOW or (
                kind is _CONTEXT and not (attr[0].gateway_pure and attr[3] is None and (object_type or coerce))
            ):
                pure = False
            elif object_type is not None:
                collected, sub = self.subselection(object_type, fdl)
                pure = sub is not None and sub is not _NOT_PLANNED and not collected[1] and self.plan_is_pure(sub)
            if not pure:
                break
        self.pure_plans[id(plan)] = (plan, pure)
        return pure

    def subselection(self, object_type: GraphQLObjectType, fdl: Any) -> tuple[Any, Any]:
        """(collected fields, plan or None) of ``fdl``'s sub-selection on ``object_type``."""
        shared = self.shared_selections
        if shared is None:
            collected = super().collect_subfields(object_type, fdl)
            return collected, _NOT_PLANNED
        key = (id(object_type), *[id(details.node) for details in fdl])
        entry = shared.get(key)
        if entry is not None and entry[0] is object_type:
            return entry[2], entry[3]
        collected = super().collect_subfields(object_type, fdl)
        grouped_field_set, new_defer_usages, _forbidden = collected
        plan = None if new_defer_usages else self.selection_plan(object_type, grouped_field_set)
        shared[key] = (object_type, [details.node for details in fdl], collected, plan)
        return collected, plan

    def selection_plan(self, parent_type: GraphQLObjectType, grouped_field_set: Any) -> Any:
        entry = self.set_plans.get(id(grouped_field_set))
        if entry is not None and entry[0] is grouped_field_set and entry[1] is parent_type:
            return entry[2]
        plans = self.field_plans
        steps = [(name, fdl, *plan_field(parent_type, fdl, plans)) for name, fdl in grouped_field_set.items()]
        plan = steps if any(step[2] != _SLOW for step in steps) else None
        self.set_plans[id(grouped_field_set)] = (grouped_field_set, parent_type, plan)
        return plan

    def execute_fields(
        self,
        parent_type: GraphQLObjectType,
        source_value: Any,
        path: Any,
        grouped_field_set: Any,
        position_context: Any,
    ) -> Any:
        plan = self.selection_plan(parent_type, grouped_field_set) if self.fast_enabled else None
        if plan is None or position_context is not None:
            return super().execute_fields(parent_type, source_value, path, grouped_field_set, position_context)
        return self.run_plan(parent_type, source_value, path, grouped_field_set, plan)

    def run_plan(self, parent_type: GraphQLObjectType, source: Any, path: Any, grouped_field_set: Any, plan: list) -> Any:
        try:  # without side effects: graphql-core can start over
            results, pending = self.complete_plain(parent_type, source, plan)
        except Exception:  # noqa: BLE001 - graphql-core's path reports it exactly
            return super().execute_fields(parent_type, source, path, grouped_field_set, None)
        if not pending:
            return results
        return self.execute_pending(parent_type, source, path, results, pending)

    def complete_plain(self, parent_type: GraphQLObjectType, source: Any, steps: list) -> tuple[dict, list]:
        """The plain fields' values, and what is left to run (with placeholders in place)."""
        results: dict[str, Any] = {}
        pending: list[tuple[str, Any, Any, Any]] = []
        is_awaitable = self.is_awaitable
        for name, fdl, kind, attr, coerce, non_null, str_passes, object_type, _field_type in steps:
            if kind is _SLOW:
                results[name] = None
                pending.append((name, fdl, None, None))
                continue
            if kind is _TYPENAME:
                results[name] = parent_type.name
                continue
            if kind is _CONTEXT:
                results[name] = None
                pending.append((name, fdl, (object_type, _field_type, attr, coerce, non_null), None))
                continue
            value = getattr(source, attr)
            if value is None:
                if non_null:
                    raise _Fallback
                results[name] = None
                continue
            cls = type(value)
            if (
                cls not in _BASIC
                and not (_inert_types.get(cls) or _inert(cls))
                and (isinstance(value, Exception) or is_awaitable(value))
            ):
                raise _Fallback
            if object_type is not None:
                results[name] = None
                pending.append((name, fdl, (object_type, _field_type), value))
                continue
            if str_passes and type(value) is str:
                results[name] = value  # what String's and ID's coercion returns for a str
                continue
            coerced = coerce(value)
            if coerced is None or coerced is Undefined:
                raise _Fallback
            results[name] = coerced
        return results, pending

    def execute_pending(
        self, parent_type: GraphQLObjectType, source: Any, path: Any, results: dict[str, Any], pending: list
    ) -> Any:
        """graphql-core's ``execute_fields`` loop over the rest, in selection order."""
        is_awaitable = self.is_awaitable
        awaitable_fields: list[str] = []
        try:
            for name, fdl, step, value in pending:
                field_path = Path(path, name, parent_type.name)
                if step is None:
                    result = self.execute_field(parent_type, source, fdl, field_path, None)
                    if result is Undefined:
                        del results[name]
                        continue
                elif len(step) == 2:
                    result = self.complete_plain_object(step[0], step[1], fdl, field_path, value)
                else:
                    result = self.execute_context_field(parent_type, source, fdl, field_path, step)
                results[name] = result
                if type(result) not in _DONE and is_awaitable(result):
                    awaitable_fields.append(name)
        except Exception:
            if awaitable_fields:
                self.settle_in_background([results[field] for field in awaitable_fields])
            raise
        if not awaitable_fields:
            return results
        return self.gather_fields(results, awaitable_fields)

    @staticmethod
    async def gather_fields(results: dict[str, Any], awaitable_fields: list[str]) -> dict[str, Any]:
        if len(awaitable_fields) == 1:
            field = awaitable_fields[0]
            results[field] = await results[field]
        else:
            awaited = await gather_with_cancel(*(results[field] for field in awaitable_fields))
            results.update(zip(awaitable_fields, awaited, strict=True))
        return results

    def complete_plain_object(
        self, object_type: GraphQLObjectType, field_type: Any, fdl: Any, path: Path, value: Any
    ) -> Any:
        """``execute_field`` + ``complete_object_value`` for a plain object field."""
        try:
            completed = self.execute_subselection(object_type, fdl, path, value)
            if type(completed) is not dict and self.is_awaitable(completed):
                return self.await_object(completed, field_type, fdl, path)
        except Exception as raw_error:  # noqa: BLE001 - as graphql-core: a field error, located
            self.handle_field_error(raw_error, field_type, fdl, path)
            return None
        return completed

    def execute_context_field(self, parent_type: GraphQLObjectType, source: Any, fdl: Any, path: Path, step: tuple) -> Any:
        """``execute_field`` for a :func:`context_only` resolver."""
        object_type, field_type, (resolver, takes_info, field_def, names), coerce, non_null = step
        try:
            if names is None:
                result = resolver(source, ContextInfo(self.context_value, path)) if takes_info else resolver(source)
            else:
                details = fdl[0]
                values = get_argument_values(
                    field_def, details.node, self.variable_values, details.fragment_variable_values,
                    self.hide_suggestions,
                )
                arguments = {names[name]: value for name, value in values.items()}
                if takes_info:
                    result = resolver(source, ContextInfo(self.context_value, path), **arguments)
                else:
                    result = resolver(source, **arguments)
            if result is None:
                if not non_null:
                    return None
            elif object_type is not None:
                if not isinstance(result, Exception) and not self.is_awaitable(result):
                    return self.complete_plain_object(object_type, field_type, fdl, path, result)
            elif coerce is not None and type(result) in _BASIC:
                coerced = coerce(result)
                if coerced is not None and coerced is not Undefined:
                    return coerced
            # anything else: graphql-core's completion, as its execute_field does it
            info = self.build_resolve_info(field_def, [details.node for details in fdl], parent_type, path)
            if self.is_awaitable(result):
                return self.complete_awaitable_value(field_type, fdl, info, path, result, None)
            completed = self.complete_value(field_type, fdl, info, path, result, None)
            if self.is_awaitable(completed):
                return self.await_object(completed, field_type, fdl, path)
            return completed
        except Exception as raw_error:  # noqa: BLE001 - as graphql-core: a field error, located
            self.handle_field_error(raw_error, field_type, fdl, path)
            return None

    def execute_subselection(self, object_type: GraphQLObjectType, fdl: Any, path: Path, value: Any) -> Any:
        """``collect_and_execute_subfields``, with the collected fields and their plan
        looked up once per execution (or per operation: :meth:`subselection`)."""
        key = id(fdl)  # one object type per field here (abstract types take graphql-core's path)
        entry = self.sub_plans.get(key)
        if entry is None or entry[0] is not fdl or entry[1] is not object_type:
            collected, plan = self.subselection(object_type, fdl)
            grouped_field_set, new_defer_usages, _forbidden = collected
            if plan is _NOT_PLANNED:
                plan = None if new_defer_usages else self.selection_plan(object_type, grouped_field_set)
            entry = (fdl, object_type, grouped_field_set, new_defer_usages, plan)
            self.sub_plans[key] = entry  # fdl kept: its id cannot be reused meanwhile
        _, _, grouped_field_set, new_defer_usages, plan = entry
        if plan is None or not self.fast_enabled:
            return self.execute_collected_subfields(object_type, value, path, grouped_field_set, new_defer_usages, None)
        results = self.results
        if results is None or not is_frozen(type(value)) or not self.plan_is_pure(plan):
            return self.run_plan(object_type, value, path, grouped_field_set, plan)
        completed = results.get(plan, value)
        if completed is not None:
            return completed
        errors = self.collected_errors.errors
        before = len(errors)
        completed = self.run_plan(object_type, value, path, grouped_field_set, plan)
        if type(completed) is dict and len(errors) == before:
            results.put(plan, value, completed)
        return completed

    def complete_list_item_value(
        self,
        item: Any,
        complete_results: list[Any],
        item_type: Any,
        field_details_list: Any,
        info: Any,
        item_path: Path,
        position_context: Any,
    ) -> bool:
        """A list's object item straight to its fields (graphql-core's otherwise).

        For an object type without ``is_type_of`` (nullable or not) and an item that is
        neither None nor an exception, graphql-core's ``complete_value`` does nothing but
        ``complete_object_value``; errors are handled the way graphql-core does here."""
        object_type = item_type.of_type if isinstance(item_type, GraphQLNonNull) else item_type
        if (
            position_context is not None
            or item is None
            or not isinstance(object_type, GraphQLObjectType)
            or object_type.is_type_of is not None
            or isinstance(item, Exception)
        ):
            return super().complete_list_item_value(
                item, complete_results, item_type, field_details_list, info, item_path, position_context
            )
        completed = self.complete_plain_object(object_type, item_type, field_details_list, item_path, item)
        complete_results.append(completed)
        return type(completed) is not dict and self.is_awaitable(completed)

    async def await_object(self, completed: Any, field_type: Any, fdl: Any, path: Path) -> Any:
        try:
            return await completed
        except Exception as raw_error:  # noqa: BLE001 - as graphql-core: a field error, located
            self.handle_field_error(raw_error, field_type, fdl, path)
            return None
