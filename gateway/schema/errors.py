"""The one boundary where errors become GraphQL errors with ``extensions.code``.

- Our own :class:`~gateway.errors.GatewayError` keep their message and code.
- Syntax and validation errors get GRAPHQL_PARSE_FAILED / GRAPHQL_VALIDATION_FAILED.
- Anything else is a bug: the client sees "Internal server error." with code
  INTERNAL_SERVER_ERROR and the request id; the traceback goes to our log only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from graphql import GraphQLError
from strawberry.extensions import SchemaExtension

from gateway.errors import GatewayError

log = logging.getLogger("gateway.graphql")


def code_of(error: GraphQLError) -> str:
    """The code :func:`classify` gives ``error``, without rebuilding or logging it
    (for the operation log line, which sees the errors before they are classified)."""
    original = error.original_error
    if isinstance(original, GatewayError):
        return original.code
    code = (error.extensions or {}).get("code")
    if original is None:
        return code or ("GRAPHQL_PARSE_FAILED" if error.message.startswith("Syntax Error") else "GRAPHQL_VALIDATION_FAILED")
    if isinstance(original, GraphQLError):
        return code or "BAD_USER_INPUT"
    return "INTERNAL_SERVER_ERROR"


def classify(error: GraphQLError, request_id: str | None) -> GraphQLError:
    original = error.original_error
    extensions = dict(error.extensions or {})
    if isinstance(original, GatewayError):
        extensions["code"] = original.code
        extensions.update(getattr(original, "extensions", None) or {})  # e.g. QUERY_TOO_EXPENSIVE's cost
        return _with(error, original.message, extensions)
    if original is None:
        if "code" not in extensions:
            parse = error.message.startswith("Syntax Error")
            extensions["code"] = "GRAPHQL_PARSE_FAILED" if parse else "GRAPHQL_VALIDATION_FAILED"
        return _with(error, error.message, extensions)
    if isinstance(original, GraphQLError):  # e.g. a scalar that refused a value
        extensions.setdefault("code", "BAD_USER_INPUT")
        return _with(error, error.message, extensions)
    log.error("unexpected error in %s (request %s)", error.path, request_id, exc_info=original)
    extensions = {"code": "INTERNAL_SERVER_ERROR"}
    if request_id:
        extensions["requestId"] = request_id
    return _with(error, "Internal server error.", extensions, keep_original=False)


def _with(error: GraphQLError, message: str, extensions: dict, *, keep_original: bool = True) -> GraphQLError:
    return GraphQLError(
        message,
        nodes=error.nodes,
        source=error.source,
        positions=error.positions,
        path=error.path,
        original_error=error.original_error if keep_original else None,
        extensions=extensions,
    )


class ErrorCodes(SchemaExtension):
    """Rewrites every error of a result once the operation is done."""

    def on_operation(self) -> Iterator[None]:
        yield
        result = self.execution_context.result
        if result is not None and result.errors:
            ctx = self.execution_context.context
            request_id = getattr(ctx, "request_id", None)
            result.errors = [classify(e, request_id) for e in result.errors]
