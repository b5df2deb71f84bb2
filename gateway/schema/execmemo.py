"""What the fast executor (:mod:`gateway.schema.fastexec`) keeps beyond one execution:
per operation, its field plans and (for operations whose selections cannot depend on
variables) collected sub-selections with their plans; per app, completed sub-answers
of immutable values (:class:`ResultMemo`)."""

from __future__ import annotations

import weakref
from typing import Any

from graphql import FragmentSpreadNode


class OperationMemo:
    """What the fast executor keeps per operation, across its executions.

    ``fields``: field plans by (parent type, field node) ids. ``selections``: when
    nothing in the operation's selections depends on variables (no directive on any
    field, fragment spread or inline fragment, no fragment variables), each
    sub-selection's collected fields and plan, by the ids of its parent type and
    field nodes; None otherwise (then they are collected once per execution, as
    graphql-core does). ``pure``: whether a (shared) plan's answers may be kept in a
    :class:`ResultMemo`. Nodes, types and plans are kept with their entries, so
    their ids cannot be reused while an entry lives."""

    __slots__ = ("fields", "selections", "checked", "pure")

    def __init__(self) -> None:
        self.fields: dict[tuple[int, int], tuple[Any, Any, Any]] = {}
        self.selections: dict[tuple[int, ...], tuple[Any, ...]] | None = None
        self.checked = False
        self.pure: dict[int, tuple[Any, bool]] = {}  # by plan id: whether its answers may be reused

    def check_static(self, operation: Any, fragments: Any) -> None:
        if not self.checked:
            self.checked = True
            if _static_selections(operation.selection_set, fragments, set()):
                self.selections = {}


def _static_selections(selection_set: Any, fragments: Any, visited: set[str]) -> bool:
    """Whether collecting these selections (and the fragments they spread) can never
    depend on variables: no directives anywhere in them, no fragment variables."""
    if selection_set is None:
        return True
    for selection in selection_set.selections:
        if selection.directives:
            return False
        if isinstance(selection, FragmentSpreadNode):
            if getattr(selection, "arguments", None):
                return False  # fragment arguments (experimental): values differ per execution
            name = selection.name.value
            if name in visited:
                continue
            visited.add(name)
            details = fragments.get(name)
            if details is None:
                return False  # graphql-core's own path reports it
            definition = getattr(details, "definition", details)
            if getattr(definition, "variable_definitions", None) or definition.directives:
                return False
            if not _static_selections(definition.selection_set, fragments, visited):
                return False
        elif not _static_selections(selection.selection_set, fragments, visited):
            return False
    return True


# By operation, by identity and weakly: a memo lives as long as the parsed document,
# which the document cache keeps (nodes hash by structure, slowly).
_memos_by_operation: dict[int, tuple[weakref.ref, OperationMemo]] = {}


def operation_memo(operation: Any) -> OperationMemo:
    key = id(operation)
    entry = _memos_by_operation.get(key)
    if entry is not None and entry[0]() is operation:
        return entry[1]

    def forget(ref: weakref.ref) -> None:
        current = _memos_by_operation.get(key)
        if current is not None and current[0] is ref:
            del _memos_by_operation[key]

    memo = OperationMemo()
    _memos_by_operation[key] = (weakref.ref(operation, forget), memo)
    return memo


#: How many completed sub-answers a :class:`ResultMemo` keeps (then it starts over).
RESULT_MEMO_MAX = 10_000


class ResultMemo:
    """Completed sub-answers of immutable values, shared by an app's executions.

    Completing the same plain selection (leaves, plain objects, ``pure`` resolvers:
    see :func:`context_only`) over the same frozen-dataclass value (an article
    in the feed cache) gives the same answer every time, so it is done once per
    value while the value lives in the cache and the answer is kept here: a front page
    asked with twenty page sizes completes each article once, not twenty times.
    Kept with its plan and value (so their ids name them while the entry lives);
    answers are shared, never modified (graphql-core builds parents around them, and
    nothing here edits an answer in place except ``ageSeconds``, which is not pure).
    At most :data:`RESULT_MEMO_MAX` entries; then it is cleared."""

    __slots__ = ("max_entries", "_entries", "hits", "stores")

    def __init__(self, max_entries: int = RESULT_MEMO_MAX) -> None:
        self.max_entries = max_entries
        self._entries: dict[tuple[int, int], tuple[Any, Any, dict[str, Any]]] = {}
        self.hits = 0
        self.stores = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, plan: Any, value: Any) -> dict[str, Any] | None:
        entry = self._entries.get((id(plan), id(value)))
        if entry is not None and entry[0] is plan and entry[1] is value:
            self.hits += 1
            return entry[2]
        return None

    def put(self, plan: Any, value: Any, result: dict[str, Any]) -> None:
        if len(self._entries) >= self.max_entries:
            self._entries.clear()
        self._entries[(id(plan), id(value))] = (plan, value, result)
        self.stores += 1


_frozen_types: dict[type, bool] = {}


def is_frozen(cls: type) -> bool:
    """Instances are frozen dataclasses (their fields cannot change)."""
    frozen = _frozen_types.get(cls)
    if frozen is None:
        params = getattr(cls, "__dataclass_params__", None)
        frozen = _frozen_types[cls] = params is not None and params.frozen
    return frozen
