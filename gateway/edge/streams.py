"""Event streams at ``/graphql``: GraphQL over SSE ("distinct connections" mode,
``Accept: text/event-stream``) through the edge's middlewares.

A stream is marked in the scope (:data:`STREAM`) by the gate, after its checks and
its charge; the layers that read whole answers (response cache, coalescing) pass a
marked request straight through, and every layer that has read the body hands the
stream the real ``receive`` afterwards, so a client's disconnect reaches it.

The SSE transport is Strawberry's, told three things more: the heartbeat interval
(GATEWAY_SUBSCRIPTION_HEARTBEAT_S), that a subscription may come by GET (browsers'
EventSource can only GET), and each event's ``id:`` (the article cursor, which
``GatewayGraphQL.process_result`` puts in the event's extensions for it). The
response around it is :class:`EventStream` (why: see there).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from typing import Any

from starlette.types import Message, Receive, Scope, Send
from strawberry.http import GraphQLHTTPResponse
from strawberry.http.streaming import JSONEncoder, SSETransport
from strawberry.types.graphql import OperationType

from gateway.edge.identity import CLIENT, ClientIdentity
from gateway.errors import LiveRefused

#: A stream whose heartbeat cannot be sent for this many intervals is closed.
STUCK_HEARTBEATS = 2
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


def websocket_charge(scope: Scope, cost: int, client: ClientIdentity | None = None) -> Callable[[], None] | None:
    """What a subscription over this WebSocket pays when it starts: ``cost`` points
    from its client's bucket (the gate never sees WebSocket messages). Raises
    LiveRefused (RATE_LIMITED) when the bucket cannot pay. None: no rate limits."""
    edge = (scope.get("state") or {}).get("edge")
    limiter = edge.limiter if edge is not None else None
    if limiter is None:
        return None
    if client is None:
        client = scope.get(CLIENT) or ClientIdentity(f"ip:{(scope.get('client') or ('?',))[0]}", False)
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


class EventStream:
    """The ASGI answer of an SSE request: each result of ``results`` as an event,
    then ``complete``; heartbeats meanwhile; stops when the client goes.

    Written here rather than taken from Strawberry's view (whose stream merges a
    heartbeat task and the result stream through a queue) and Starlette's
    StreamingResponse (a task group per response): with two extra tasks and a queue
    hop per event and subscriber, fan-out to 1,000 subscribers took 2.5 times as long
    (tests/bench/bench_live.py). Here an event costs one step of the request's own
    task; one watcher task per stream waits for the disconnect and sends the
    heartbeats, and a lock keeps its sends and the events' from interleaving.

    A client that stops reading fills its socket; its events queue up in the hub
    until it is cut off there (SLOW_CONSUMER), which it reads if it reads again. If
    a heartbeat cannot be sent for :data:`STUCK_HEARTBEATS` intervals the client is
    gone in all but name: the stream stops and the server closes the connection.
    """

    def __init__(
        self,
        results: AsyncIterator[Any],
        encode: Callable[[Any], Awaitable[str]],
        transport: SSETransport,
        encode_json: JSONEncoder,
        headers: Mapping[str, str],
    ) -> None:
        self.results = results
        self.encode = encode
        self.transport = transport
        self.encode_json = encode_json
        self.headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": self.headers})
        lock = asyncio.Lock()
        task = asyncio.current_task()
        gone = False

        async def chunk(text: str) -> None:
            async with lock:
                await send({"type": "http.response.body", "body": text.encode(), "more_body": True})

        async def watch() -> None:
            nonlocal gone
            ping = self.transport.heartbeat_message(self.encode_json)
            interval = self.transport.heartbeat_interval
            while True:
                try:
                    async with asyncio.timeout(interval):
                        message = await receive()
                except TimeoutError:
                    try:
                        async with asyncio.timeout(interval * STUCK_HEARTBEATS):
                            await chunk(ping)
                    except TimeoutError:
                        # Returning with the response incomplete makes the server close
                        # the connection (uvicorn logs that, one line).
                        gone = True
                        if task is not None:
                            task.cancel()
                        return
                    continue
                if message["type"] == "http.disconnect":
                    gone = True
                    if task is not None:
                        task.cancel()
                    return

        watcher = asyncio.create_task(watch(), name="gateway-sse-watch")
        try:
            async for result in self.results:
                await chunk(await self.encode(result))
            await chunk(self.transport.encode_complete())
            async with lock:
                await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not gone:
                raise
            if task is not None:
                task.uncancel()  # the client went: nothing more to send, nobody to tell
        finally:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
            aclose = getattr(self.results, "aclose", None)
            if aclose is not None:
                await aclose()
