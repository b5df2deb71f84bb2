"""Event streams at ``/graphql``: GraphQL over SSE ("distinct connections" mode,
``Accept: text/event-stream``) through the edge's middlewares.

A stream is marked in the scope (:data:`STREAM`) by the gate, after its checks and
its charge; the layers that read whole answers (response cache, coalescing) pass a
marked request straight through, and every layer that has read the body hands the
stream the real ``receive`` afterwards, so a client's disconnect reaches it.

The SSE transport is Strawberry's, told three things more: the heartbeat interval
(GATEWAY_SUBSCRIPTION_HEARTBEAT_S), that a subscription may come by GET (browsers'
EventSource can only GET), and each event's ``id:`` (the article cursor, which
``GatewayGraphQL.process_result`` puts in the event's extensions for it).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from starlette.types import Message, Receive, Scope
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.streaming import JSONEncoder, SSETransport
from strawberry.types.graphql import OperationType

from gateway.edge.identity import CLIENT, ClientIdentity
from gateway.errors import LiveRefused

#: Scope key: this request is answered as an event stream (set by the gate).
STREAM = "gateway.edge.stream"
#: Key of the event cursor in a streamed result's extensions, moved into ``id:``.
CURSOR_EXTENSION = "cursor"
EVENT_STREAM = "text/event-stream"


def wants_event_stream(accept: str | bytes | None) -> bool:
    """Whether ``Accept`` names text/event-stream (Strawberry's SSE transport's test)."""
    if not accept:
        return False
    text = accept.decode("latin-1") if isinstance(accept, bytes) else accept
    return any(part.split(";", 1)[0].strip().lower() == EVENT_STREAM for part in text.split(","))


def accept_of(scope: Scope) -> bytes | None:
    for key, value in scope["headers"]:
        if key == b"accept":
            return value
    return None


def replay_then(body: bytes, receive: Receive) -> Receive:
    """``body`` as the request's one message, then the real ``receive``: a stream
    learns of the client's disconnect from it."""
    sent = False

    async def replaying() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replaying


def sse_transport(heartbeat_s: float) -> type[SSETransport]:
    """Strawberry's SSE transport with our heartbeat, GET subscriptions and event ids."""

    class GatewaySSETransport(SSETransport):
        def __init__(self, heartbeat_interval: float = heartbeat_s) -> None:
            super().__init__(heartbeat_interval)

        def allowed_operation_types(self, allowed_operation_types: set[OperationType]) -> Iterable[OperationType]:
            # GET allows queries only; an EventSource subscribes by GET (mutations stay POST only).
            return {*allowed_operation_types, OperationType.SUBSCRIPTION}

        def encode_next(self, response: GraphQLHTTPResponse, encode_json: JSONEncoder) -> str:
            extensions = response.get("extensions")
            cursor = extensions.pop(CURSOR_EXTENSION, None) if isinstance(extensions, dict) else None
            if extensions == {}:
                del response["extensions"]
            event = super().encode_next(response, encode_json)
            if cursor is None:
                return event
            return f"id: {cursor}\r\n{event}"

    return GatewaySSETransport


def websocket_charge(scope: Scope, cost: int) -> Callable[[], None] | None:
    """What a subscription over this WebSocket pays when it starts: ``cost`` points
    from its client's bucket (the gate never sees WebSocket messages). Raises
    LiveRefused (RATE_LIMITED) when the bucket cannot pay. None: no rate limits."""
    edge = (scope.get("state") or {}).get("edge")
    limiter = edge.limiter if edge is not None else None
    if limiter is None:
        return None
    client: ClientIdentity = scope.get(CLIENT) or ClientIdentity(f"ip:{(scope.get('client') or ('?',))[0]}", False)
    points = max(1, cost)

    def charge() -> None:
        if limiter.refuse_all:
            raise LiveRefused("rate limits cannot be checked right now; retry shortly", code="RATE_LIMIT_UNAVAILABLE")
        decision = limiter.charge(client.id, points, burst=client.burst, per_s=client.per_s)
        if not decision.allowed:
            retry_ms = max(1, math.ceil(decision.retry_after_s * 1000))
            raise LiveRefused(f"rate limited: a subscription costs {points} points; retry in {retry_ms} ms",
                              code="RATE_LIMITED")

    return charge
