"""Identical concurrent GraphQL requests share one execution (ASGI middleware).

When a hundred clients ask the same query at the same moment (a cold cache, a
front page after a deploy), the sources are already fetched once (singleflight
in :mod:`gateway.service`), but each request would still be parsed, executed and
serialised on its own: on one core that queues the last answer behind ninety-nine
identical ones. Here the first request executes and the others, arriving while it
runs, get a byte-for-byte copy of its response.

Requests are identical when method, query string, body, ``Accept`` and
``Content-Type`` are (those decide the answer and its format). Only queries exist
in this schema, so sharing an answer never repeats a side effect. The execution
is owned by the group, not by the first caller, so that caller going away does
not fail the others.

It also stamps the request's arrival time into the scope (``gateway.arrived``),
so the request deadline counts time spent queued before the GraphQL layer, and
refuses bodies over a size limit with 413 before reading further.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.asgi import Captured, run_captured
from gateway.edge.streams import STREAM
from gateway.resilience.clock import Clock
from gateway.resilience.singleflight import SingleFlight

ARRIVED_KEY = "gateway.arrived"
DEFAULT_MAX_BODY_BYTES = 1024 * 1024


class _BodyTooLarge(Exception):
    pass


def _header(scope: Scope, name: bytes) -> bytes:
    for key, value in scope["headers"]:
        if key == name:
            return value
    return b""


class CoalesceIdentical:
    def __init__(self, app: ASGIApp, *, clock: Clock, max_body_bytes: int = DEFAULT_MAX_BODY_BYTES) -> None:
        self.app = app
        self.clock = clock
        self.max_body_bytes = max_body_bytes
        self._flights: SingleFlight[Captured] = SingleFlight()
        self.executions = 0  # requests that actually ran (the others shared)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[ARRIVED_KEY] = self.clock.monotonic()
        if scope.get(STREAM):
            await self.app(scope, receive, send)  # an event stream is nobody else's answer
            return
        accept = _header(scope, b"accept")
        if scope["method"] not in ("GET", "POST") or (scope["method"] == "GET" and b"text/html" in accept):
            await self.app(scope, receive, send)  # GraphiQL page, OPTIONS, 405s: nothing to share
            return
        try:
            body = await self._read_body(receive)
        except _BodyTooLarge:
            await _send_error(send, 413, "PAYLOAD_TOO_LARGE", f"request body over {self.max_body_bytes} bytes")
            return
        key = (scope["method"], scope["query_string"], body, accept, _header(scope, b"content-type"))
        captured = await self._flights.do(key, lambda: self._execute(scope, body))
        assert captured.start is not None
        await send(captured.start)
        await send({"type": "http.response.body", "body": b"".join(captured.body), "more_body": False})

    async def _read_body(self, receive: Receive) -> bytes:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise _BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)

    async def _execute(self, scope: Scope, body: bytes) -> Captured:
        self.executions += 1
        return await run_captured(self.app, dict(scope), body)


async def _send_error(send: Send, status: int, code: str, message: str) -> None:
    payload = orjson.dumps({"errors": [{"message": message, "extensions": {"code": code}}]})
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": payload, "more_body": False})
