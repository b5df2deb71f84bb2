"""``create_app(settings)``: the Starlette app, its lifespan, routes and the GraphQL mount."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.http import GraphQLHTTPResponse
from strawberry.types import ExecutionResult

from gateway.coalesce import ARRIVED_KEY, DEFAULT_MAX_BODY_BYTES, CoalesceIdentical
from gateway.context import GatewayContext, build_context
from gateway.errors import GatewayError
from gateway.graphiql import graphiql_html, graphiql_routes
from gateway.persisted import PersistedDocuments, PersistedDocumentsMiddleware
from gateway.resilience.clock import Clock, SystemClock
from gateway.respcache import READS_KEY, ResponseCache, ResponseCacheMiddleware
from gateway.schema import build_schema
from gateway.schema.errors import classify
from gateway.services import Services
from gateway.settings import Settings

log = logging.getLogger("gateway")


class GatewayGraphQL(GraphQL[GatewayContext, None]):
    """Strawberry's ASGI app with our context and a faster JSON encoder."""

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> GatewayContext:
        services: Services = request.state.services
        return build_context(
            services, request_id=request.headers.get("x-request-id"), arrived=request.scope.get(ARRIVED_KEY),
            reads=request.scope.get(READS_KEY),
        )

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        # strawberry's page with its unpkg assets served from gateway/static/graphiql
        return HTMLResponse(graphiql_html())

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        # Errors raised before execution (e.g. syntax errors caught in the parser
        # cache) skip the schema's ErrorCodes extension; classify them here too.
        if result.errors:
            request_id = request.headers.get("x-request-id")
            result.errors = [e if (e.extensions or {}).get("code") else classify(e, request_id) for e in result.errors]
        processed = await super().process_result(request, result)
        reads = request.scope.get(READS_KEY)
        if reads is not None:
            reads.produced(processed)  # the response cache keeps what is encoded
        return processed


def create_app(
    settings: Settings,
    *,
    transport: httpx.AsyncBaseTransport | None = None,
    clock: Clock | None = None,
) -> Starlette:
    """Build the gateway. ``transport`` swaps the upstream network (tests); ``clock``
    swaps time for breakers and caches."""
    clock = clock or SystemClock()
    persisted = PersistedDocuments(max_documents=settings.persisted_max)
    response_cache = ResponseCache(
        ttl_ms=settings.response_cache_ttl_ms, max_mb=settings.response_cache_mb, clock=clock
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        try:
            services = await Services.start(settings, transport=transport, clock=clock)
        except GatewayError as exc:
            # uvicorn prints a traceback for lifespan failures; give the operator the
            # one line that matters first.
            log.error("gateway failed to start: %s", exc.message)
            raise
        app.state.services = services  # for tests and operators' tooling
        app.state.response_cache = response_cache
        app.state.persisted = persisted
        listener = services.source_service.listener
        unsubscribe = listener.subscribe(response_cache.invalidate) if listener is not None else None
        # What startup built (modules, the schema, pools) lives as long as the process:
        # keep it out of the cyclic GC, whose full collections otherwise walk it all
        # (~10 ms with the loop held, at a moment no request chooses).
        gc.collect()
        gc.freeze()
        log.info(
            "gateway ready: %d source(s) from %s", len(settings.sources), settings.sources_file or "<settings>"
        )
        try:
            yield {"services": services}
        finally:
            if unsubscribe is not None:
                unsubscribe()
            gc.unfreeze()  # several apps in one process (tests): let this one's go
            await services.aclose()

    graphql_app = GatewayGraphQL(build_schema(), graphql_ide="graphiql")

    async def root(request: Request) -> Response:
        return RedirectResponse("/graphql")

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    return Starlette(
        routes=[
            Route("/", root),
            Route("/livez", livez),
            Route(
                "/graphql",
                ResponseCacheMiddleware(
                    PersistedDocumentsMiddleware(
                        CoalesceIdentical(graphql_app), persisted, persisted_only=settings.persisted_only
                    ),
                    response_cache,
                    max_body_bytes=DEFAULT_MAX_BODY_BYTES,
                ),
                methods=["GET", "POST"],
            ),
            *graphiql_routes(),
        ],
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """uvicorn factory (``gateway.app:create_app_from_env``), used by ``gateway serve``."""
    return create_app(Settings.from_env())
