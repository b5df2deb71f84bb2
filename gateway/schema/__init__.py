"""The GraphQL schema: ``build_schema()`` and the SDL it exports."""

from __future__ import annotations

import logging
from typing import Any

import strawberry
from graphql import GraphQLError
from strawberry.types import ExecutionContext

from gateway.schema.errors import ErrorCodes
from gateway.schema.query import Query

log = logging.getLogger("gateway.graphql")


class GatewaySchema(strawberry.Schema):
    def process_errors(self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None) -> None:
        # Strawberry logs every error with a traceback by default. Client mistakes and
        # upstream trouble are not ours to page about; ErrorCodes logs the real bugs.
        return None


def build_schema(**kwargs: Any) -> strawberry.Schema:
    return GatewaySchema(query=Query, extensions=[ErrorCodes], **kwargs)


def export_sdl() -> str:
    return build_schema().as_str() + "\n"
