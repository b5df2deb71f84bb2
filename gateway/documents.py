"""Parse and validation results cached by document text, with the rules built once.

Frontends send the same few documents over and over with different variables;
validating a document is most of graphql-core's work for a warm request (a profile
of one query with 20 variable sets: 55% of the worker's CPU). Strawberry's own
``ParserCache``/``ValidationCache`` key on ``(schema, DocumentNode, rules)``: our
limiter extensions used to build their rule classes per request, so that key never
repeated, and hashing a ``DocumentNode`` walks the whole tree anyway. Here:

- the cache is keyed by the document's text (an exact string; a persisted document
  resolves to its text before it gets here), one LRU per schema (per app), bounded
  in entries and in total text size;
- the depth and alias limits are validation rule classes created once per schema,
  so every document is validated under one stable rule set;
- a new document is validated without the rules that cannot apply to it: those about
  variables when its text has no ``$``, about directives when it has no ``@``, about
  fragments when it has neither ``...`` nor ``fragment`` (half of graphql-core's
  rules, and half the time of validating a typical query);
- a cached entry carries its validation errors too (an invalid document is refused
  again without re-validating) and a ``facts`` dict where per-document derived
  values (a cost estimate, "does it read ``ageSeconds``") are computed once.

Only Strawberry's public extension hooks are used: the document or the errors are
set on the execution context before Strawberry's own step runs, which then skips.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from graphql import (
    ASTValidationRule,
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    InlineFragmentNode,
    OperationDefinitionNode,
    ValidationContext,
)
from graphql import validation as rules_
from strawberry.extensions import SchemaExtension
from strawberry.extensions.max_aliases import create_validator as max_aliases_rule
from strawberry.extensions.query_depth_limiter import create_validator as depth_limit_rule

#: Distinct documents kept (parsed, validated). Frontends send a few dozen.
DOCUMENT_CACHE_SIZE = 1024
#: Total characters of document text kept: 1,024 documents of 8 KB at most.
DOCUMENT_CACHE_CHARS = 8 * 1024 * 1024


#: Rules that report only on a construct which a document's text must spell out, by
#: the marks that construct cannot be written without (graphql-core's rules; any
#: other rule, ours and Strawberry's included, always runs). A mark inside a string
#: or a comment only keeps rules that would have passed anyway.
_RULES_BY_MARK: tuple[tuple[tuple[str, ...], frozenset[type[ASTValidationRule]]], ...] = (
    (("$",), frozenset({  # variable definitions and usages
        rules_.VariablesAreInputTypesRule, rules_.UniqueVariableNamesRule, rules_.NoUndefinedVariablesRule,
        rules_.NoUnusedVariablesRule, rules_.VariablesInAllowedPositionRule,
    })),
    (("@",), frozenset({  # directives
        rules_.KnownDirectivesRule, rules_.UniqueDirectivesPerLocationRule, rules_.DeferStreamDirectiveOnRootField,
        rules_.DeferStreamDirectiveOnValidOperationsRule, rules_.DeferStreamDirectiveLabel,
        rules_.StreamDirectiveOnListField,
    })),
    (("...", "fragment"), frozenset({  # spreads, inline fragments, fragment definitions
        rules_.FragmentsOnCompositeTypesRule, rules_.UniqueFragmentNamesRule, rules_.KnownFragmentNamesRule,
        rules_.NoUnusedFragmentsRule, rules_.PossibleFragmentSpreadsRule, rules_.NoFragmentCyclesRule,
    })),
)


def rules_for(text: str | None, rules: tuple[type[ASTValidationRule], ...]) -> tuple[type[ASTValidationRule], ...]:
    """``rules`` without those that cannot report anything on a document of this text
    (all of them when the text is unknown): the same errors, found in half the time."""
    if text is None:
        return rules
    skip: set[type[ASTValidationRule]] = set()
    for marks, group in _RULES_BY_MARK:
        if not any(mark in text for mark in marks):
            skip |= group
    return tuple(rule for rule in rules if rule not in skip) if skip else rules


@dataclass(slots=True)
class CachedDocument:
    document: DocumentNode
    errors: list[GraphQLError] | None = None  # None: not validated yet
    facts: dict[str, Any] = field(default_factory=dict)


class DocumentCache:
    """An LRU of :class:`CachedDocument` by document text, with counters."""

    def __init__(self, maxsize: int = DOCUMENT_CACHE_SIZE, max_chars: int = DOCUMENT_CACHE_CHARS) -> None:
        self.maxsize = maxsize
        self.max_chars = max_chars
        self._entries: OrderedDict[str, CachedDocument] = OrderedDict()
        self._chars = 0
        self.parses = 0  # documents parsed (cache misses)
        self.validations = 0  # documents validated
        self.hits = 0

    def get(self, text: str) -> CachedDocument | None:
        entry = self._entries.get(text)
        if entry is not None:
            self._entries.move_to_end(text)
            self.hits += 1
        return entry

    def put(self, text: str, entry: CachedDocument) -> None:
        if len(text) > self.max_chars // 16:
            return  # one huge document must not flush everything else
        old = self._entries.pop(text, None)
        if old is not None:
            self._chars -= len(text)
        self._entries[text] = entry
        self._chars += len(text)
        while len(self._entries) > self.maxsize or self._chars > self.max_chars:
            evicted, _ = self._entries.popitem(last=False)
            self._chars -= len(evicted)

    def __len__(self) -> int:
        return len(self._entries)


def limit_rules(*, max_depth: int, max_aliases: int) -> tuple[type[ASTValidationRule], ...]:
    """The limit rules, built once: the same classes for every request."""
    return (_depth_rule(max_depth), max_aliases_rule(max_aliases))


def _depth_rule(max_depth: int) -> type[ASTValidationRule]:
    limit = depth_limit_rule(max_depth, None, None)

    class DepthLimit(ASTValidationRule):
        """Strawberry's depth limit, which measures the document as it is built and
        raises KeyError on a spread of a fragment the document does not define (an
        internal error for a client's typo; graphene#1538 has the same bug). Such a
        document is refused by KnownFragmentNamesRule; its depth is not measured."""

        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            defined = {d.name.value for d in document.definitions if isinstance(d, FragmentDefinitionNode)}
            if _spread_names(document) <= defined:
                limit(context)  # reports its errors on the context

    return DepthLimit


def _spread_names(document: DocumentNode) -> set[str]:
    names: set[str] = set()
    stack: list[Any] = [d for d in document.definitions if isinstance(d, (OperationDefinitionNode, FragmentDefinitionNode))]
    while stack:
        node = stack.pop()
        if isinstance(node, FragmentSpreadNode):
            names.add(node.name.value)
        elif isinstance(node, (OperationDefinitionNode, FragmentDefinitionNode, FieldNode, InlineFragmentNode)):
            if node.selection_set is not None:
                stack.extend(node.selection_set.selections)
    return names


class CachedDocuments(SchemaExtension):
    """Per request (Strawberry builds extensions per request); the cache and the rules
    it is handed live as long as the schema."""

    def __init__(self, cache: DocumentCache, rules: tuple[type[ASTValidationRule], ...], max_tokens: int) -> None:
        super().__init__()
        self._cache = cache
        self._rules = rules
        self._max_tokens = max_tokens
        self._entry: CachedDocument | None = None

    def on_operation(self) -> Iterator[None]:
        ec = self.execution_context
        ec.parse_options["max_tokens"] = self._max_tokens  # applies to a miss only: a hit is not parsed
        ec.validation_rules = ec.validation_rules + self._rules
        yield
        reads = getattr(ec.context, "reads", None)
        if reads is not None:  # what a response-cache hit of this answer repeats in metrics
            try:
                op_type = ec.operation_type.value
            except Exception:  # noqa: BLE001 - no document (a parse error) or no such operation
                op_type = "unknown"
            reads.operation = (ec.operation_name, op_type)

    def on_parse(self) -> Iterator[None]:
        ec = self.execution_context
        text = ec.query
        entry = self._cache.get(text) if text is not None and ec.graphql_document is None else None
        if entry is not None:
            ec.graphql_document = entry.document  # Strawberry's parse step now skips
        yield
        if entry is None and text is not None and ec.graphql_document is not None:
            self._cache.parses += 1
            entry = CachedDocument(ec.graphql_document)
            self._cache.put(text, entry)
        self._entry = entry
        if hasattr(ec.context, "document"):  # the request context: later steps read the facts
            ec.context.document = entry

    def on_validate(self) -> Iterator[None]:
        ec = self.execution_context
        entry = self._entry
        if entry is not None and entry.errors is not None:
            ec.pre_execution_errors = entry.errors  # Strawberry's validation step now skips
            yield
            return
        ec.validation_rules = rules_for(ec.query, ec.validation_rules)
        yield
        if entry is not None and ec.graphql_document is entry.document:
            self._cache.validations += 1
            entry.errors = list(ec.pre_execution_errors or ())
