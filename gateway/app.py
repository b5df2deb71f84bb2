"""``create_app(settings)``: the Starlette app, its lifespan, routes and the GraphQL mount."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.types import Scope, Send
from starlette.websockets import WebSocket
from strawberry.asgi import GraphQL
from strawberry.exceptions import ConnectionRejectionError
from strawberry.http import GraphQLHTTPResponse
from strawberry.subscriptions import GRAPHQL_SSE_PROTOCOL, GRAPHQL_TRANSPORT_WS_PROTOCOL
from strawberry.types import ExecutionResult

from gateway.coalesce import ARRIVED_KEY, CoalesceIdentical
from gateway.context import GatewayContext, build_context
from gateway.edge import edge_middleware
from gateway.edge.gate import GraphQLGate
from gateway.edge.graphql_view import EdgeViewMixin
from gateway.edge.identity import CLIENT, client_for_key
from gateway.edge.request_id import ARRIVED_AT, REQUEST_ID
from gateway.edge.runtime import EdgeRuntime
from gateway.edge.streams import CURSOR_EXTENSION, STREAM, sse_transport, websocket_charge
from gateway.edge.websocket import transport_ws_handler
from gateway.errors import GatewayError
from gateway.graphiql import graphiql_html, graphiql_routes
from gateway.ops import operations
from gateway.ops import status as status_page
from gateway.ops.metrics import HTTPMetrics, Metrics
from gateway.ops.readiness import Drain, Readiness
from gateway.ops.tracing import provider_from_env, tracer_of
from gateway.persisted import PersistedDocuments, PersistedDocumentsMiddleware
from gateway.reads import READS_KEY
from gateway.resilience.clock import Clock, SystemClock
from gateway.respcache import Answer, Flight, ResponseCache, ResponseCacheFront, ResponseCacheMiddleware
from gateway.schema import MAX_TOKENS, build_schema
from gateway.schema.errors import classify
from gateway.services import Services
from gateway.settings import Settings

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider

log = logging.getLogger("gateway")

#: The cyclic GC's thresholds while the app runs (Python's: 700, 10, 10). New documents
#: and parsed feeds are tens of thousands of objects that mostly live on in caches; at
#: 700 the collector spent 30% of the CPU of requests bringing new documents, its full
#: collections over the cached documents holding the loop ~140 ms each, every few
#: hundred such requests (``profile_warm --mode newdoc``: 5.5 ms a request, 4.3 at
#: 10,000; 50,000 was slower again: each young collection then walks more survivors).
GC_THRESHOLDS = (10_000, 10, 10)


class GatewayGraphQL(EdgeViewMixin, GraphQL[GatewayContext, None]):
    """Strawberry's ASGI app with our context and a faster JSON encoder; the edge's
    hooks (GraphQL over HTTP status codes, actual cost) come from EdgeViewMixin."""

    async def get_context(self, request: Request | WebSocket, response: Response | WebSocket) -> GatewayContext:
        services: Services = request.state.services
        ctx = build_context(
            services,
            request_id=request.scope.get(REQUEST_ID),
            arrived=request.scope.get(ARRIVED_KEY),
            reads=request.scope.get(READS_KEY),
        )
        identity = request.scope.get(CLIENT)
        if identity is not None:
            ctx.client_id = identity.id
        if request.scope["type"] == "websocket":
            ctx.socket_scope = request.scope
            ctx.charge_subscription = websocket_charge(request.scope, services.settings.subscription_cost)
        else:
            ctx.last_event_id = request.headers.get("last-event-id")
        self.remember_context(request, ctx)
        return ctx

    async def on_ws_connect(self, context: GatewayContext) -> Any:
        """graphql-transport-ws's connection_init: a browser cannot set headers on a
        WebSocket, so its API key may come as ``{"apiKey": ...}`` in the payload. An
        unknown key closes the socket (4403)."""
        params = context.connection_params
        key = params.get("apiKey") if isinstance(params, dict) else None
        if key is not None:
            client = client_for_key(context.services.settings.edge, key) if isinstance(key, str) else None
            if client is None:
                raise ConnectionRejectionError({"message": "unknown API key", "code": "UNAUTHENTICATED"})
            context.client_id = client.id
            if context.socket_scope is not None:
                context.charge_subscription = websocket_charge(
                    context.socket_scope, context.services.settings.subscription_cost, client
                )
        return await super().on_ws_connect(context)

    def encode_json(self, data: object) -> bytes:
        return orjson.dumps(data)

    async def render_graphql_ide(self, request: Request) -> HTMLResponse:
        # strawberry's page with its unpkg assets served from gateway/static/graphiql
        return self.graphiql_response(graphiql_html())

    async def process_result(self, request: Request, result: ExecutionResult) -> GraphQLHTTPResponse:
        if request.scope.get(STREAM):
            ctx = self.context_of(request)
            if ctx is not None and ctx.live_cursor is not None and not result.errors:
                # A subscription's event (the hot path of fan-out): its response head
                # went out with the first bytes, so no headers, cost or cache to tend.
                return {"data": result.data, "extensions": {CURSOR_EXTENSION: ctx.live_cursor}}
        # Errors raised before execution (e.g. syntax errors caught in the parser
        # cache) skip the schema's ErrorCodes extension; classify them here too.
        if result.errors:
            request_id = request.scope.get(REQUEST_ID)
            result.errors = [e if (e.extensions or {}).get("code") else classify(e, request_id) for e in result.errors]
        processed = await super().process_result(request, result)
        if request.scope.get(STREAM):
            ctx = self.context_of(request)
            if ctx is not None and ctx.live_cursor is not None:
                processed.setdefault("extensions", {})[CURSOR_EXTENSION] = ctx.live_cursor  # the SSE id
            return processed
        reads = request.scope.get(READS_KEY)
        if reads is not None:
            reads.produced(processed)  # the response cache keeps what is encoded
        return self.edge_result(request, result, processed)


def create_app(
    settings: Settings, *, clock: Clock | None = None, tracer_provider: TracerProvider | None = None
) -> Starlette:
    """Build the gateway. ``clock`` swaps time for everything that decides by it
    (deadlines, breakers, caches, the database back-off, arrival stamps, rate-limit
    buckets); tests step a fake one.
    ``tracer_provider``: where spans go (default: OTLP when OTEL_EXPORTER_OTLP_ENDPOINT
    is set, else no tracing)."""
    clock = clock or SystemClock()
    own_provider = tracer_provider is None
    provider = tracer_provider if tracer_provider is not None else provider_from_env()
    tracer = tracer_of(provider)

    metrics = Metrics() if settings.metrics else None
    persisted = PersistedDocuments(max_documents=settings.persisted_max)

    def served(scope: Scope, answer: Answer, *, hit: bool) -> None:
        """An answer repeated to another request (a hit, or a request that shared a
        running execution) is still an operation served: count it and log it as one
        (the gate, outside the cache, has charged the client for it). A hit ran
        nothing and stays out of the duration histogram; a request that shared an
        execution waited for it, and is in it."""
        arrived = scope.get(ARRIVED_AT)
        seconds = clock.monotonic() - arrived if arrived is not None else 0.0
        if metrics is not None:
            counters = answer.memo
            if counters is None:
                counters = answer.memo = metrics.replay(answer.operation, answer.statuses)
            metrics.count_deferred(counters)
            if not hit and answer.operation is not None:
                metrics.graphql_duration.observe(seconds)
        if answer.operation is None or not operations.logging_on(settings.operation_log):
            return
        name, op_type, outcome = answer.operation
        identity = scope.get(CLIENT)
        operations.log_operation(
            request_id=scope.get(REQUEST_ID),
            client=identity.id if identity is not None else None,
            name=name,
            op_type=op_type,
            outcome=outcome,
            duration_ms=round(seconds * 1000, 2),
            sources=dict(answer.statuses),
            errors=list(answer.error_codes) if answer.error_codes else None,
            cache_hit=hit,
        )

    async def on_cache_hit(scope: Scope, answer: Answer, send: Send) -> bool:
        """The miss path's hit (an answer stored meanwhile): counted and logged, never
        answered here (False)."""
        served(scope, answer, hit=True)
        return False

    def report(scope: Scope, *, hit: bool) -> Callable[[Answer], Awaitable[None]]:
        """The gate's ``served`` callback for a request answered at the front."""

        async def answered(answer: Answer) -> None:
            served(scope, answer, hit=hit)

        return answered

    observed = metrics is not None or settings.operation_log

    response_cache = ResponseCache(
        ttl_ms=settings.response_cache_ttl_ms, max_mb=settings.response_cache_mb, clock=clock
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[dict[str, Any]]:
        try:
            services = await Services.start(settings, clock=clock, metrics=metrics, tracer=tracer)
        except GatewayError as exc:
            # uvicorn prints a traceback for lifespan failures; give the operator the
            # one line that matters first.
            log.error("gateway failed to start: %s", exc.message)
            raise
        app.state.services = services  # for tests and operators' tooling
        readiness = Readiness(services)
        app.state.readiness = readiness
        # Live streams end cleanly before the server waits for open connections.
        on_stop = [services.live.close] if services.live is not None else []
        drain = Drain(readiness, settings.shutdown_delay_s, on_stop=on_stop)
        drain.install()
        edge = EdgeRuntime.start(settings, sdl=schema.as_str(), db=services.db, clock=clock)
        app.state.edge = edge
        app.state.response_cache = response_cache
        app.state.persisted = persisted
        unsubscribe = services.listener.subscribe(response_cache.invalidate)
        # What startup built (modules, the schema, pools) lives as long as the process:
        # keep it out of the cyclic GC, whose full collections otherwise walk it all
        # (~10 ms with the loop held, at a moment no request chooses).
        gc.collect()
        gc.freeze()
        thresholds = gc.get_threshold()
        gc.set_threshold(*GC_THRESHOLDS)
        log.info(
            "gateway ready: %d source(s) from %s", len(settings.sources), settings.sources_file or "<settings>"
        )
        try:
            yield {"services": services, "edge": edge}
        finally:
            unsubscribe()
            gc.unfreeze()  # several apps in one process (tests): let this one's go
            gc.set_threshold(*thresholds)
            drain.uninstall()
            await edge.aclose()
            await services.aclose()
            if metrics is not None:
                metrics.process_exited()
            if own_provider and provider is not None:
                provider.shutdown()  # flushes the spans still queued

    schema = build_schema(
        introspection=settings.edge.introspection_on,
        suggestions=settings.edge.suggestions_on,
        # Nothing to observe an operation for: leave the observer out of every request.
        observe=metrics is not None or settings.operation_log or provider is not None,
    )
    graphql_app = GatewayGraphQL(
        schema,
        graphql_ide="graphiql" if settings.edge.graphiql_on else None,
        subscription_protocols=(GRAPHQL_TRANSPORT_WS_PROTOCOL, GRAPHQL_SSE_PROTOCOL),
        # Browsers do not apply CORS to WebSocket handshakes: the view checks Origin
        # against the same list (same-origin and non-browser clients always pass).
        allowed_origins=[o for o in settings.edge.cors_origins],
        max_subscriptions_per_connection=settings.subscriptions_per_client,
    )
    graphql_app.stream_transport_classes_by_protocol = {GRAPHQL_SSE_PROTOCOL: sse_transport(settings.subscription_heartbeat_s)}
    graphql_app.graphql_transport_ws_handler_class = transport_ws_handler(
        persisted, persisted_only=settings.persisted_only, max_tokens=MAX_TOKENS
    )

    max_body = settings.edge.max_request_bytes
    gate = GraphQLGate(
        ResponseCacheMiddleware(
            CoalesceIdentical(graphql_app, clock=clock, max_body_bytes=max_body),
            response_cache, max_body_bytes=max_body,
            on_hit=on_cache_hit if observed else None,
            on_shared=(lambda scope, answer: served(scope, answer, hit=False)) if observed else None,
        ),
        max_tokens=MAX_TOKENS, clock=clock, documents=schema.documents, metrics=metrics,
    )

    async def serve_hit(scope: Scope, answer: Answer, send: Send) -> bool:
        # metrics and the log line, once the hit is admitted
        return await gate.serve_hit(scope, answer, send, served=report(scope, hit=True))

    async def serve_joined(scope: Scope, flight: Flight, send: Send) -> bool:
        return await gate.serve_joined(scope, flight, send, served=report(scope, hit=False))

    graphql_endpoint = ResponseCacheFront(
        PersistedDocumentsMiddleware(gate, persisted, persisted_only=settings.persisted_only),
        response_cache, max_body_bytes=max_body, serve_hit=serve_hit, join=serve_joined,
    )

    async def root(request: Request) -> Response:
        return RedirectResponse("/graphql")

    async def livez(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def readyz(request: Request) -> Response:
        return await request.app.state.readiness.endpoint(request)

    return Starlette(
        routes=[
            # /graphql first: the router tries routes in order, and nearly every
            # request is for it. Its layers: the response cache's front (a hit is
            # charged and answered there, by the gate's serve_hit, and a request
            # identical to one being executed joins it, by serve_joined), persisted
            # documents (the gate estimates the document's cost), the gate (GraphQL
            # over HTTP, cost, the client's charge), the response cache's miss path
            # (one execution per key, stored under the request as sent), coalescing
            # of identical requests. No `methods=`: the gate answers every method
            # itself (405 with Allow, in JSON).
            Route("/graphql", graphql_endpoint),
            Route("/", root),
            Route("/livez", livez),
            Route("/readyz", readyz),
            # Subscriptions over graphql-transport-ws: the HTTP-only layers above have
            # nothing to do with a WebSocket (the edge's identity and the view's Origin
            # check apply; each subscription is charged when it starts).
            WebSocketRoute("/graphql", graphql_app),
            *([Route("/metrics", metrics.endpoint)] if metrics is not None else []),
            # Off: no route at all, so /status is a 404 like any unknown path.
            *([Route(status_page.PATH, status_page.endpoint)] if settings.edge.status_page_on else []),
            *graphiql_routes(),
        ],
        # Outermost first: every answer is counted, the edge's refusals too.
        middleware=[
            *([Middleware(HTTPMetrics, metrics=metrics)] if metrics is not None else []),
            *edge_middleware(settings, clock=clock),
        ],
        lifespan=lifespan,
    )


def create_app_from_env() -> Starlette:
    """uvicorn factory (``gateway.app:create_app_from_env``), used by ``gateway serve``
    in every worker process: it also sets up that process's logging."""
    from gateway.ops import logging as gateway_logging

    settings = Settings.from_env()
    gateway_logging.configure(settings.log_format, settings.log_level)
    return create_app(settings)
