"""The GraphQL schema: ``build_schema()`` and the SDL it exports."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.extensions import ParserCache, ValidationCache
from strawberry.types import ExecutionContext

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


def build_schema(**kwargs: Any) -> strawberry.Schema:
    return GatewaySchema(
        query=Query,
        extensions=[
            ErrorCodes,
            # Factories: strawberry builds extensions per request; these two keep
            # their LRU at module level (keyed by size), shared across requests.
            lambda: ParserCache(maxsize=DOCUMENT_CACHE_SIZE),
            lambda: ValidationCache(maxsize=DOCUMENT_CACHE_SIZE),
        ],
        **kwargs,
    )


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
