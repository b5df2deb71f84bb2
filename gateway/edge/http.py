"""GraphQL over HTTP (the spec of graphql.github.io/graphql-over-http): media-type
negotiation and reading a request's parameters, refusing what is malformed with
the status the spec asks for and an error in the GraphQL shape.

Pure functions of the request's parts: no I/O.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

import orjson

GRAPHQL_RESPONSE_JSON = "application/graphql-response+json"
JSON = "application/json"


class RequestError(Exception):
    """A request we refuse before GraphQL sees it."""

    def __init__(self, status: int, code: str, message: str, *, headers: list[tuple[bytes, bytes]] | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or []


@dataclass(frozen=True, slots=True)
class GraphQLParams:
    query: str | None  # None only for a persisted-document request (no text to estimate)
    operation_name: str | None
    variables: dict[str, Any] | None
    extensions: dict[str, Any] | None


def negotiate(accept: str | None) -> str | None:
    """The response media type for an ``Accept`` header, or None (406).

    No header, ``*/*`` and ``application/*`` get ``application/json``, as the spec
    says for legacy clients during its watershed period; a client that names
    ``application/graphql-response+json`` gets it, by q-value (ties favour it)."""
    if not accept or not accept.strip():
        return JSON
    best: tuple[float, int, str] | None = None
    for part in accept.split(","):
        media, *params = (p.strip() for p in part.split(";"))
        media = media.lower()
        q = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        if q <= 0:
            continue
        if media == GRAPHQL_RESPONSE_JSON:
            candidate = (q, 2, GRAPHQL_RESPONSE_JSON)
        elif media == JSON:
            candidate = (q, 1, JSON)
        elif media in ("*/*", "application/*"):
            candidate = (q, 0, JSON)
        else:
            continue
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def check_content_type(content_type: str | None) -> None:
    """POST bodies must be ``application/json`` in UTF-8 (415 otherwise)."""
    if not content_type:
        raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE", "POST needs Content-Type: application/json")
    media, *params = (p.strip() for p in content_type.split(";"))
    if media.lower() != JSON:
        raise RequestError(
            415, "UNSUPPORTED_MEDIA_TYPE", f"unsupported Content-Type {media!r}; send application/json"
        )
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            raise RequestError(415, "UNSUPPORTED_MEDIA_TYPE", "only the utf-8 charset is accepted")


def params_from_body(body: bytes) -> GraphQLParams:
    if not body.strip():
        raise RequestError(400, "BAD_REQUEST", "the request body is empty; send a JSON object with `query`")
    try:
        body.decode("utf-8")  # orjson is strict too, but say which problem it is
    except UnicodeDecodeError:
        raise RequestError(400, "BAD_REQUEST", "the request body is not valid UTF-8") from None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        # orjson refuses escaped lone surrogates ("\ud800"), which JSON's grammar allows;
        # the stdlib parser takes them, and the resolver then refuses the argument
        # as BAD_USER_INPUT while the request's other fields are answered.
        try:
            data = json.loads(body)
        except ValueError:
            raise RequestError(400, "BAD_REQUEST", f"the request body is not valid JSON ({exc.msg})") from None
    if isinstance(data, list):
        raise RequestError(400, "BATCH_NOT_SUPPORTED", "batched requests are not supported; send one operation")
    if not isinstance(data, dict):
        raise RequestError(400, "BAD_REQUEST", "the request body must be a JSON object")
    return _params(data)


def params_from_query_string(query_string: bytes) -> GraphQLParams:
    try:
        pairs = parse_qsl(query_string.decode("latin-1"), keep_blank_values=True, encoding="utf-8", errors="strict")
    except UnicodeDecodeError:
        raise RequestError(400, "BAD_REQUEST", "the query string is not valid UTF-8") from None
    data: dict[str, Any] = {}
    for name, value in pairs:
        if name in data:
            raise RequestError(400, "BAD_REQUEST", f"parameter {name!r} is given twice")
        data[name] = value
    for name in ("variables", "extensions"):
        raw = data.get(name)
        if raw is not None:
            if raw == "":
                data[name] = None
                continue
            try:
                data[name] = json.loads(raw)
            except ValueError:
                raise RequestError(400, "BAD_REQUEST", f"parameter {name!r} is not valid JSON") from None
    return _params(data)


def _params(data: dict[str, Any]) -> GraphQLParams:
    query = data.get("query")
    extensions = data.get("extensions")
    persisted = "documentId" in data or (isinstance(extensions, dict) and "persistedQuery" in extensions)
    if query is None and not persisted:
        raise RequestError(400, "BAD_REQUEST", "no GraphQL query found in the request (`query`)")
    if query is not None and not isinstance(query, str):
        raise RequestError(400, "BAD_REQUEST", "`query` must be a string")
    variables = data.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise RequestError(400, "BAD_REQUEST", "`variables` must be an object or null")
    operation_name = data.get("operationName")
    if operation_name is not None and not isinstance(operation_name, str):
        raise RequestError(400, "BAD_REQUEST", "`operationName` must be a string or null")
    if extensions is not None and not isinstance(extensions, dict):
        raise RequestError(400, "BAD_REQUEST", "`extensions` must be an object or null")
    return GraphQLParams(query, operation_name or None, variables, extensions)
