"""The edge's hooks inside the Strawberry view (mixed into ``GatewayGraphQL``):

- take the parameters the gate already read (no second JSON parse);
- report the actual cost to the gate in an internal response header;
- GraphQL over HTTP status codes: with ``application/graphql-response+json``, a
  request error (parse, validation, variable coercion: no data, no error path) is
  400 without a ``data`` key; ``application/json`` keeps 200 for legacy clients;
- Strawberry's own HTTP errors become JSON in the GraphQL error shape;
- security headers on the GraphiQL page.
"""

from __future__ import annotations

from typing import Any

from cross_web import HTTPException, StarletteRequestAdapter
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.types import Receive, Scope, Send
from strawberry.http import GraphQLHTTPResponse, GraphQLRequestData
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL
from strawberry.types import ExecutionResult
from strawberry.types.graphql import OperationType
from strawberry.types.unset import UNSET

from gateway.edge.gate import ACTUAL_COST_HEADER, HAS_EXTENSIONS_HEADER, MEDIA, PARAMS
from gateway.edge.http import GRAPHQL_RESPONSE_JSON
from gateway.edge.page_headers import graphiql_headers
from gateway.edge.responses import error_body
from gateway.edge.streams import STREAM, EventStream

_CONTEXT = "gateway.edge.context"
_SUB_RESPONSE = "gateway.edge.sub_response"


class _ScopedAdapter(StarletteRequestAdapter):
    """Strawberry's request adapter, keeping the ASGI scope where the view can read it."""

    def __init__(self, request: Request) -> None:
        super().__init__(request)
        self.scope = request.scope


class EdgeViewMixin:
    request_adapter_class = _ScopedAdapter
    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await super().__call__(scope, receive, send)  # type: ignore[misc]
            return
        try:
            response = await self.run(Request(scope=scope, receive=receive))  # type: ignore[attr-defined]
        except HTTPException as exc:
            response = Response(error_body("BAD_REQUEST", exc.reason), status_code=exc.status_code,
                                media_type="application/json")
        await response(scope, receive, send)

    async def run(self, request: Any, context: Any = UNSET, root_value: Any = UNSET) -> Any:
        """An event stream (the gate marked it) runs here: the schema's stream of
        results (parse, validation, execution, extensions: all Strawberry's), each
        processed and encoded by the view's hooks, sent by :class:`EventStream`."""
        scope = getattr(request, "scope", None)
        if scope is None or scope.get("type") != "http" or not scope.get(STREAM) or scope.get(PARAMS) is None:
            return await super().run(request, context, root_value)  # type: ignore[misc]
        params = scope[PARAMS]
        sub = await self.get_sub_response(request)
        ctx = await self.get_context(request, response=sub)  # type: ignore[attr-defined]
        root = await self.get_root_value(request)  # type: ignore[attr-defined]
        allowed = {OperationType.QUERY, OperationType.SUBSCRIPTION}
        if scope["method"] == "POST":
            allowed.add(OperationType.MUTATION)
        results = await self.schema.stream(  # type: ignore[attr-defined]
            params.query, variable_values=params.variables, context_value=ctx, root_value=root,
            operation_name=params.operation_name, operation_extensions=params.extensions,
            allowed_operation_types=allowed,
        )
        transport = self.sse()

        async def encode(result: Any) -> str:
            processed = await self.process_result(request, result)  # type: ignore[attr-defined]
            return transport.encode_next(processed, self.encode_json_string)  # type: ignore[attr-defined]

        headers = {**dict(sub.headers), **transport.headers}
        return EventStream(results, encode, transport, self.encode_json_string, headers)  # type: ignore[attr-defined]

    def sse(self) -> Any:
        transport_class = self.stream_transport_classes_by_protocol[GRAPHQL_SSE_PROTOCOL]  # type: ignore[attr-defined]
        return transport_class()

    def remember_context(self, request: Request, ctx: Any) -> None:
        request.scope[_CONTEXT] = ctx

    def context_of(self, request: Request) -> Any:
        return request.scope.get(_CONTEXT)

    async def get_sub_response(self, request: Any) -> Response:
        sub = await super().get_sub_response(request)  # type: ignore[misc]
        request.scope[_SUB_RESPONSE] = sub
        return sub

    def should_render_graphql_ide(self, request: Any) -> bool:
        # The gate has read a GraphQL request (a persisted one may have no `query=`
        # in its URL): only what it passed on as the page is the page.
        scope = getattr(request, "scope", None)
        if scope is not None and scope.get(PARAMS) is not None:
            return False
        return super().should_render_graphql_ide(request)  # type: ignore[misc]

    async def parse_http_body(self, request: Any) -> GraphQLRequestData:
        scope = getattr(request, "scope", None)
        params = scope.get(PARAMS) if scope is not None else None
        if params is None:
            return await super().parse_http_body(request)  # type: ignore[misc]
        return GraphQLRequestData(
            query=params.query,
            variables=params.variables,
            operation_name=params.operation_name,
            extensions=params.extensions,
            protocol="sse" if scope.get(STREAM) else "http",
        )

    def edge_result(self, request: Request, result: ExecutionResult, response: GraphQLHTTPResponse) -> GraphQLHTTPResponse:
        scope = request.scope
        sub: Response | None = scope.get(_SUB_RESPONSE)
        ctx = scope.get(_CONTEXT)
        if sub is not None:
            meter = getattr(ctx, "meter", None)
            sub.headers[ACTUAL_COST_HEADER.decode()] = str(meter.actual if meter is not None else 0)
            if "extensions" in response:
                sub.headers[HAS_EXTENSIONS_HEADER.decode()] = "1"
            request_error = result.data is None and bool(result.errors) and all(e.path is None for e in result.errors)
            if request_error and scope.get(MEDIA) == GRAPHQL_RESPONSE_JSON:
                sub.status_code = 400
                response.pop("data", None)
        return response

    def graphiql_response(self, html: str) -> HTMLResponse:
        return HTMLResponse(html, headers=graphiql_headers(html))
