"""The GraphQL schema: ``build_schema()`` and the SDL it exports."""

from __future__ import annotations

import dataclasses
import logging
from datetime import datetime
from typing import Any

import strawberry
from graphql import GraphQLError
from graphql.validation import NoSchemaIntrospectionCustomRule
from strawberry.schema.config import StrawberryConfig
from strawberry.schema.types.base_scalars import DateTimeDefinition
from strawberry.types import ExecutionContext

from gateway.documents import DOCUMENT_CACHE_SIZE, CachedDocuments, DocumentCache, limit_rules
from gateway.ops.operations import OperationObserver
from gateway.schema.errors import ErrorCodes
from gateway.schema.query import Query
from gateway.schema.subscription import SharedEventExecution, Subscription

log = logging.getLogger("gateway.graphql")


class GatewaySchema(strawberry.Schema):
    #: Parsed and validated documents by text (see :mod:`gateway.documents`).
    documents: DocumentCache

    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # Strawberry logs every error with a traceback by default. Client mistakes and
        # upstream trouble are not ours to page about; ErrorCodes logs the real bugs.
        return None


# Cost limits: each alias of `articles` with a new search is an upstream call, and
# each level of `replies` a batch of them. Generous for real UIs, fatal for abuse.
MAX_QUERY_DEPTH = 12
MAX_ALIASES = 30
MAX_TOKENS = 2000

#: Strawberry's DateTime, with the spec generated clients map it by (@specifiedBy).
DATETIME = dataclasses.replace(
    DateTimeDefinition,
    description="A date and time with a UTC offset, as RFC 3339 (ISO 8601) text, e.g. 2026-01-31T08:30:00+00:00.",
    specified_by_url="https://www.rfc-editor.org/rfc/rfc3339",
)


def build_schema(
    *, introspection: bool = True, suggestions: bool = True, observe: bool = True, **kwargs: Any
) -> GatewaySchema:
    """``introspection=False`` refuses ``__schema``/``__type``; ``suggestions=False``
    drops "Did you mean ...?" from errors (production mode, gateway/edge);
    ``observe=False`` leaves out the OperationObserver (no metrics, operation log or
    tracing to feed)."""
    documents = DocumentCache(DOCUMENT_CACHE_SIZE)
    # Built once: a stable rule set is what lets a validated document stay validated.
    rules = limit_rules(max_depth=MAX_QUERY_DEPTH, max_aliases=MAX_ALIASES)
    if not introspection:
        rules = (*rules, NoSchemaIntrospectionCustomRule)
    if not suggestions:
        kwargs.setdefault("config", StrawberryConfig(disable_field_suggestions=True))
    # Plain leaf fields without graphql-core's per-field machinery (gateway/schema/fastexec.py),
    # and a live event executed once per document for all its subscribers
    # (gateway/schema/subscription.py); tests pass Strawberry's own executor to compare the answers.
    kwargs.setdefault("execution_context_class", SharedEventExecution)
    schema = GatewaySchema(
        query=Query,
        subscription=Subscription,
        extensions=[
            ErrorCodes,
            *([OperationObserver] if observe else []),
            lambda: CachedDocuments(documents, rules, MAX_TOKENS),
        ],
        scalar_overrides={datetime: DATETIME},
        **kwargs,
    )
    schema.documents = documents
    return schema


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
