"""The GraphQL schema: ``build_schema()`` and the SDL it exports."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    MaxAliasesLimiter,
    MaxTokensLimiter,
    ParserCache,
    QueryDepthLimiter,
    ValidationCache,
)
from strawberry.types import ExecutionContext

from gateway.ops.operations import OperationObserver
from gateway.schema.errors import ErrorCodes
from gateway.schema.query import Query

log = logging.getLogger("gateway.graphql")


class GatewaySchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # Strawberry logs every error with a traceback by default. Client mistakes and
        # upstream trouble are not ours to page about; ErrorCodes logs the real bugs.
        return None


#: Distinct documents whose parse and validation results are kept. Frontends send
#: the same few queries over and over; validation is most of graphql-core's cost.
DOCUMENT_CACHE_SIZE = 1024
# Cost limits: each alias of `articles` with a new search is an upstream call, and
# each level of `replies` a batch of them. Generous for real UIs, fatal for abuse.
MAX_QUERY_DEPTH = 12
MAX_ALIASES = 30
MAX_TOKENS = 2000


def build_schema(**kwargs: Any) -> strawberry.Schema:
    return GatewaySchema(
        query=Query,
        extensions=[
            ErrorCodes,
            OperationObserver,
            lambda: MaxTokensLimiter(max_token_count=MAX_TOKENS),
            lambda: QueryDepthLimiter(max_depth=MAX_QUERY_DEPTH),
            lambda: MaxAliasesLimiter(max_alias_count=MAX_ALIASES),
            # Factories: strawberry builds extensions per request; these two keep
            # their LRU at module level (keyed by size), shared across requests.
            lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
            lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
        ],
        **kwargs,
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
