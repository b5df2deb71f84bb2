"""The GraphQL-level checks in front of execution, in order:

1. read the request as GraphQL over HTTP (:mod:`gateway.edge.http`): method, media
   types, body; malformed requests get a 4xx in the GraphQL error shape;
2. parse the document (cached by text) and pick the operation; a mutation over GET
   is 405 with ``Allow: POST``;
3. estimate its cost (:mod:`gateway.edge.cost`); over a limit: ``QUERY_TOO_EXPENSIVE``,
   no execution, no upstream call;
4. charge the client's bucket (:mod:`gateway.edge.ratelimit`); over budget: 429;
5. run the rest (coalescing, Strawberry), then refund to the actual cost and add
   ``extensions.cost`` and the ``RateLimit`` headers to the answer.

It sits in front of the coalescer on purpose: every request is charged to its own
client before identical ones share an execution, so a flood that is over budget is
refused here and never shares anyone's answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import orjson
from graphql import DocumentNode, GraphQLError, OperationDefinitionNode, OperationType, parse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.documents import CachedDocument, DocumentCache
from gateway.edge.cost import QueryTooExpensive
from gateway.edge.http import (
    GRAPHQL_RESPONSE_JSON,
    GraphQLParams,
    RequestError,
    check_content_type,
    negotiate,
    params_from_body,
    params_from_query_string,
)
from gateway.edge.http import (
    JSON as JSON_MEDIA,
)
from gateway.edge.identity import CLIENT, ClientIdentity
from gateway.edge.ratelimit import Decision, ThrottleStatus
from gateway.edge.request_id import ARRIVED_AT
from gateway.edge.responses import GRAPHQL_RESPONSE_JSON as GR_CT
from gateway.edge.responses import JSON as JSON_CT
from gateway.edge.streams import STREAM, replay_then, wants_event_stream
from gateway.resilience.clock import Clock
from gateway.respcache import NEGOTIATED_MEDIA, REQUESTED_COST

if TYPE_CHECKING:
    from gateway.edge.runtime import EdgeRuntime
    from gateway.ops.metrics import Metrics
    from gateway.respcache import Answer, Flight

#: Set by the gate for the GraphQL view: the parsed parameters and the media type
#: (also kept with a cached answer, with the cost charged up front).
PARAMS = "gateway.edge.params"
MEDIA = NEGOTIATED_MEDIA
#: Set by the persisted-documents middleware: the text of the document a GET named by
#: id or hash (the query string itself is left as sent).
RESOLVED_QUERY = "gateway.edge.resolved_query"
#: Response header the GraphQL view reports the actual cost in; the gate removes it.
ACTUAL_COST_HEADER = b"x-gateway-actual-cost"
HAS_EXTENSIONS_HEADER = b"x-gateway-has-extensions"
_INTERNAL = (ACTUAL_COST_HEADER, HAS_EXTENSIONS_HEADER)
#: Called with the answer a hit or a joined request is about to be sent, once it is
#: admitted (the app counts and logs it as an operation served).
Served = Callable[["Answer"], Awaitable[object]]


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class GraphQLGate:
    def __init__(
        self, app: ASGIApp, *, max_tokens: int, clock: Clock, documents: DocumentCache,
        metrics: Metrics | None = None,
    ) -> None:
        self.app = app
        self.clock = clock
        self.metrics = metrics
        self._max_tokens = max_tokens
        # The schema's document cache: a document is parsed once, here (for the
        # estimate), and the schema's own parse step then finds it (gateway/documents.py).
        self._documents = documents

    def _parse(self, text: str) -> DocumentNode:
        documents = self._documents
        entry = documents.get(text)
        if entry is None:
            entry = CachedDocument(parse(text, max_tokens=self._max_tokens))
            documents.parses += 1
            documents.put(text, entry)
        return entry.document

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        edge: EdgeRuntime = scope["state"]["edge"]
        method = scope["method"]
        accept = _header(scope, b"accept")
        if method == "GET" and b"query=" not in scope["query_string"] and "text/html" in (accept or ""):
            if edge.graphiql:
                await self.app(scope, receive, send)  # the GraphiQL page
                return
            await _refuse(send, RequestError(404, "NOT_FOUND", "GraphiQL is turned off (GATEWAY_GRAPHIQL)"))
            return
        if wants_event_stream(accept):
            await self._stream(scope, receive, send, edge)
            return
        try:
            _check_method(method)
            media = negotiate(accept)
            if media is None:
                raise RequestError(406, "NOT_ACCEPTABLE",
                                   f"cannot answer in any of {accept!r}; accept {GRAPHQL_RESPONSE_JSON} or application/json")
            body, params = await _read_params(scope, receive)
            operation = self._operation(params)
            if operation is not None and method == "GET" and operation.node.operation is not OperationType.QUERY:
                raise RequestError(405, "METHOD_NOT_ALLOWED", f"{operation.node.operation.value}s need POST",
                                   headers=[(b"allow", b"POST")])
            if operation is not None and operation.node.operation is OperationType.SUBSCRIPTION:
                raise RequestError(406, "NOT_ACCEPTABLE", "subscriptions stream: send Accept: text/event-stream "
                                   "(GraphQL over SSE) or open a WebSocket (graphql-transport-ws)")
        except RequestError as exc:
            await _refuse(send, exc)
            return

        client = _client(scope)
        limiter = edge.limiter
        requested = 1  # unparseable documents: validation answers them; charge the minimum
        if operation is not None:
            estimate = edge.estimator.estimate(params.query, operation.document, operation.node, params.variables)
            too_expensive = estimate.check(edge.settings.max_query_cost, edge.settings.max_upstream_fetches)
            if too_expensive is None and limiter is not None:
                own_burst = limiter.bucket(client.id, client.burst, client.per_s).burst
                if estimate.cost > own_burst:  # could never fit this client's bucket: not a matter of waiting
                    too_expensive = QueryTooExpensive(
                        f"query cost {estimate.cost} exceeds this client's bucket of {own_burst:g} points",
                        cost=estimate.cost, max_cost=int(own_burst))
            if too_expensive is not None:
                status = limiter.status(client.id) if limiter is not None else None
                payload = {
                    "errors": [{"message": too_expensive.message,
                                "extensions": {"code": too_expensive.code, **too_expensive.extensions}}],
                    "extensions": {"cost": _cost_json(estimate.cost, 0, status)},
                }
                await _send(send, 400 if media == GRAPHQL_RESPONSE_JSON else 200, orjson.dumps(payload), media, [])
                return
            requested = max(1, estimate.cost)

        admitted, decision = await self._charge(scope, send, edge, client, requested, media)
        if not admitted:
            return

        scope[PARAMS] = params
        scope[MEDIA] = media
        scope[REQUESTED_COST] = requested
        await self._forward(scope, body, send, edge, client, requested, decision, media)

    async def _stream(self, scope: Scope, receive: Receive, send: Send, edge: EdgeRuntime) -> None:
        """GraphQL over SSE: the same checks and charge, then the answer streams
        through (see gateway/edge/streams.py). A subscription costs
        GATEWAY_SUBSCRIPTION_COST points when it starts; a query its estimate."""
        method = scope["method"]
        try:
            _check_method(method)
            body, params = await _read_params(scope, receive)
            operation = self._operation(params)
            if operation is not None and method == "GET" and operation.node.operation is OperationType.MUTATION:
                raise RequestError(405, "METHOD_NOT_ALLOWED", "mutations need POST", headers=[(b"allow", b"POST")])
        except RequestError as exc:
            await _refuse(send, exc)
            return
        client = _client(scope)
        requested = 1
        if operation is not None and operation.node.operation is OperationType.SUBSCRIPTION:
            requested = max(1, scope["state"]["services"].settings.subscription_cost)
        elif operation is not None:
            estimate = edge.estimator.estimate(params.query, operation.document, operation.node, params.variables)
            too_expensive = estimate.check(edge.settings.max_query_cost, edge.settings.max_upstream_fetches)
            if too_expensive is not None:
                await _refuse(send, RequestError(400, too_expensive.code, too_expensive.message))
                return
            requested = max(1, estimate.cost)
        admitted, _ = await self._charge(scope, send, edge, client, requested, JSON_MEDIA)
        if not admitted:
            return
        scope[PARAMS] = params
        scope[MEDIA] = JSON_MEDIA
        scope[STREAM] = True
        await self.app(scope, replay_then(body, receive), send)

    async def _charge(self, scope: Scope, send: Send, edge: EdgeRuntime, client: ClientIdentity, requested: int,
                      media: str) -> tuple[bool, Decision | None]:
        """Charge the client's bucket up front; False: refused, and answered here."""
        limiter = edge.limiter
        if limiter is None:
            return True, None
        if limiter.refuse_all:
            await _refuse(send, RequestError(503, "RATE_LIMIT_UNAVAILABLE",
                                             "rate limits cannot be checked right now; retry shortly",
                                             headers=[(b"retry-after", b"1")]))
            return False, None
        decision = limiter.charge(client.id, requested, burst=client.burst, per_s=client.per_s,
                                  now=scope.get(ARRIVED_AT))
        if not decision.allowed:
            await self._throttled(send, media, requested, decision)
            return False, decision
        return True, decision

    def _operation(self, params: GraphQLParams) -> _Operation | None:
        if params.query is None:
            # A persisted document by id/hash: no text here to estimate. It is charged
            # the minimum up front and settled to its actual cost, and the execution
            # meter still stops it at the limits.
            return None
        try:
            document = self._parse(params.query)
        except GraphQLError:
            return None  # a syntax error: Strawberry reports it in the usual shape
        ops = [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
        if params.operation_name is not None:
            ops = [o for o in ops if o.name is not None and o.name.value == params.operation_name]
        if len(ops) != 1:
            return None  # none or ambiguous: validation reports it
        return _Operation(document, ops[0])

    async def _throttled(self, send: Send, media: str, requested: int, decision: Decision) -> None:
        if self.metrics is not None:
            self.metrics.rate_limited.inc()
        retry_ms = max(1, math.ceil(decision.retry_after_s * 1000))
        payload = {
            "errors": [{
                "message": f"rate limited: this query costs {requested} points and "
                           f"{max(0.0, decision.status.currently_available):.0f} are available; retry in {retry_ms} ms",
                "extensions": {"code": "RATE_LIMITED", "retryAfterMs": retry_ms},
            }],
            "extensions": {"cost": _cost_json(requested, 0, decision.status)},
        }
        headers = [(b"retry-after", str(max(1, math.ceil(decision.retry_after_s))).encode()),
                   *_ratelimit_headers(decision.status, decision.reset_s)]
        await _send(send, 429, orjson.dumps(payload), media, headers)

    async def _forward(self, scope: Scope, body: bytes, send: Send, edge: EdgeRuntime, client: ClientIdentity,
                       requested: int, decision: Decision | None, media: str) -> None:
        start: Message | None = None
        chunks: list[bytes] = []
        sent_body = False

        async def replay() -> Message:
            nonlocal sent_body
            if not sent_body:
                sent_body = True
                return {"type": "http.request", "body": body, "more_body": False}
            return {"type": "http.disconnect"}

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        actual = requested
        try:
            await self.app(scope, replay, capture)
        finally:
            # Settle even if the execution failed or was cancelled: the charge stands
            # only for what the request really cost.
            headers_in = start["headers"] if start is not None else []
            for key, value in headers_in:
                if key == ACTUAL_COST_HEADER:
                    # every request costs at least a point: a flood of cheap or invalid
                    # documents must drain the bucket too
                    actual = max(1, int(value))
            status: ThrottleStatus | None = None
            if edge.limiter is not None and decision is not None:
                status = edge.limiter.settle(client.id, requested, actual)
        assert start is not None
        reset_s = edge.limiter.bucket(client.id).restore_s() if status is not None and edge.limiter else 0.0
        status_code, headers, payload = _finish(start["status"], start["headers"], b"".join(chunks), media,
                                                requested, actual, status, reset_s)
        await send({"type": "http.response.start", "status": status_code, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})

    async def serve_hit(self, scope: Scope, answer: Answer, send: Send, served: Served | None = None) -> bool:
        """A response-cache hit, answered before any parsing (the cache's front): the
        client is charged the cost the miss was charged, settled to its actual cost,
        and the answer gets this client's cost and RateLimit headers. False (the
        request goes the whole way) when the answer did not pass this gate or this
        client's limits need the gate's own answer."""
        requested, media = answer.requested, answer.media
        if requested is None or media is None:
            return False
        edge: EdgeRuntime = scope["state"]["edge"]
        client = _client(scope)
        actual = max(1, _actual_cost(answer.headers, requested))
        limiter = edge.limiter
        status: ThrottleStatus | None = None
        reset_s = 0.0
        if limiter is not None:
            if limiter.refuse_all:
                return False
            # `requested` decides admission, as it did for the request that ran; the
            # bucket is charged what that request really cost.
            decision = limiter.charge(client.id, requested, burst=client.burst, per_s=client.per_s,
                                      now=scope.get(ARRIVED_AT), actual=actual)
            if not decision.allowed:
                if requested > decision.status.maximum_available:
                    return False  # could never fit this client's bucket: the gate says so
                await self._throttled(send, media, requested, decision)
                return True
            status, reset_s = decision.status, decision.reset_s
        code, headers_in, body = answer.respond(scope, self.clock.now().timestamp())
        code, headers, payload = _finish(code, headers_in, body, media, requested, actual, status, reset_s)
        if served is not None:
            await served(answer)  # counted before the client can see it (and scrape /metrics)
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        return True


    async def serve_joined(self, scope: Scope, flight: Flight, send: Send, served: Served | None = None) -> bool:
        """A request identical to one being executed (the response cache's front found
        its flight): identical requests pass the checks above alike, so it is not read,
        parsed and estimated again. It is charged up front what the running one was,
        refused here if over budget, and otherwise waits for the shared answer and is
        settled to its actual cost: what going the whole way would do, where it would
        share the same execution. False (go the whole way) when this client's limits
        need the gate's own answer."""
        requested, media = flight.requested, flight.media
        if requested is None or media is None:
            return False
        edge: EdgeRuntime = scope["state"]["edge"]
        client = _client(scope)
        limiter = edge.limiter
        decision: Decision | None = None
        if limiter is not None:
            if limiter.refuse_all or requested > limiter.bucket(client.id, client.burst, client.per_s).burst:
                return False
            decision = limiter.charge(client.id, requested, burst=client.burst, per_s=client.per_s,
                                      now=scope.get(ARRIVED_AT))
            if not decision.allowed:
                await self._throttled(send, media, requested, decision)
                return True
        actual = requested
        status: ThrottleStatus | None = None
        try:
            answer = await asyncio.shield(flight.task)
            actual = max(1, _actual_cost(answer.headers, requested))
        finally:
            if limiter is not None and decision is not None:
                status = limiter.settle(client.id, requested, actual)
        reset_s = limiter.bucket(client.id).restore_s() if limiter is not None and status is not None else 0.0
        code, headers_in, body = answer.respond(scope, self.clock.now().timestamp())
        code, headers, payload = _finish(code, headers_in, body, media, requested, actual, status, reset_s)
        if served is not None:
            await served(answer)
        await send({"type": "http.response.start", "status": code, "headers": headers})
        await send({"type": "http.response.body", "body": payload, "more_body": False})
        return True


def _check_method(method: str) -> None:
    if method not in ("GET", "POST"):
        raise RequestError(405, "METHOD_NOT_ALLOWED", f"{method} is not allowed; use GET or POST",
                           headers=[(b"allow", b"GET, POST")])


async def _read_params(scope: Scope, receive: Receive) -> tuple[bytes, GraphQLParams]:
    """The request's body (POST) and its GraphQL parameters; a persisted GET's text
    comes from the persisted-documents layer (RESOLVED_QUERY)."""
    if scope["method"] == "POST":
        check_content_type(_header(scope, b"content-type"))
        body = await _read_body(receive)
        return body, params_from_body(body)
    params = params_from_query_string(scope["query_string"])
    resolved = scope.get(RESOLVED_QUERY)
    if resolved is not None:
        params = dataclasses.replace(params, query=resolved)
    return b"", params


def _client(scope: Scope) -> ClientIdentity:
    return scope.get(CLIENT) or ClientIdentity(f"ip:{(scope.get('client') or ('?',))[0]}", False)


def _actual_cost(headers: list[tuple[bytes, bytes]], default: int) -> int:
    for key, value in headers:
        if key == ACTUAL_COST_HEADER:
            return int(value)
    return default


def _finish(status_code: int, headers_in: list[tuple[bytes, bytes]], payload: bytes, media: str, requested: int,
            actual: int, status: ThrottleStatus | None, reset_s: float,
            ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The answer as the client gets it: internal headers out, ``extensions.cost`` in
    (unless a shared cache may keep it), the RateLimit headers, length and type."""
    has_extensions = is_graphql = shared = False
    content_type = JSON_CT
    headers: list[tuple[bytes, bytes]] = []
    for key, value in headers_in:
        if key == ACTUAL_COST_HEADER:
            is_graphql = True
        elif key == HAS_EXTENSIONS_HEADER:
            has_extensions = True
        elif key == b"content-type":
            content_type = value
        elif key != b"content-length":
            # An answer a shared cache may keep (Cache-Control: public, with a strong
            # ETag over its bytes) must stay the same for every client: its cost is
            # told in the RateLimit headers only.
            if key == b"cache-control" and value.startswith(b"public"):
                shared = True
            headers.append((key, value))
    # A 304 (HTTP caching) keeps its empty body.
    if is_graphql and status_code in (200, 400) and not shared:
        payload = _with_cost(payload, _cost_json(requested, actual, status), has_extensions)
        content_type = GR_CT if media == GRAPHQL_RESPONSE_JSON else JSON_CT
    if status is not None:
        headers.extend(_ratelimit_headers(status, reset_s))
    headers.append((b"content-type", content_type))
    headers.append((b"content-length", str(len(payload)).encode()))
    return status_code, headers, payload


class _Operation:
    __slots__ = ("document", "node")

    def __init__(self, document: DocumentNode, node: OperationDefinitionNode) -> None:
        self.document = document
        self.node = node


def _cost_json(requested: int, actual: int, status: ThrottleStatus | None) -> dict[str, object]:
    return {
        "requestedQueryCost": requested,
        "actualQueryCost": actual,
        "throttleStatus": status.as_json() if status is not None else None,
    }


def _with_cost(payload: bytes, cost: dict[str, object], has_extensions: bool) -> bytes:
    """Adds ``extensions.cost`` to a JSON object answer. Splices bytes when the answer
    has no top-level ``extensions`` (the usual case), so big answers are not re-encoded."""
    if has_extensions:
        data = orjson.loads(payload)
        data.setdefault("extensions", {})["cost"] = cost
        return orjson.dumps(data)
    if not payload.endswith(b"}"):
        return payload
    return payload[:-1] + b',"extensions":' + orjson.dumps({"cost": cost}) + b"}"


def _ratelimit_headers(status: ThrottleStatus, reset_s: float) -> list[tuple[bytes, bytes]]:
    # draft-ietf-httpapi-ratelimit-headers: a policy named "cost" of q points restored
    # over w seconds; r points remain and the bucket is full again in t seconds.
    window = max(1, math.ceil(status.maximum_available / status.restore_rate)) if status.restore_rate else 1
    remaining = max(0, math.floor(status.currently_available))
    return [
        (b"ratelimit-policy", f'"cost";q={int(status.maximum_available)};w={window}'.encode()),
        (b"ratelimit", f'"cost";r={remaining};t={max(0, math.ceil(reset_s))}'.encode()),
    ]


async def _read_body(receive: Receive) -> bytes:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    return b"".join(chunks)


async def _refuse(send: Send, exc: RequestError) -> None:
    body = orjson.dumps({"errors": [{"message": exc.message, "extensions": {"code": exc.code}}]})
    await _send(send, exc.status, body, "application/json", exc.headers)


async def _send(send: Send, status: int, body: bytes, media: str, headers: list[tuple[bytes, bytes]]) -> None:
    content_type = GR_CT if media == GRAPHQL_RESPONSE_JSON else JSON_CT
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", content_type), (b"content-length", str(len(body)).encode()), *headers],
    })
    await send({"type": "http.response.body", "body": body, "more_body": False})
