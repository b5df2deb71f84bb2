"""Request id and arrival time: the first middleware, so everything after it can
log the id and count time from when the request reached us."""

from __future__ import annotations

import itertools
import os
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.resilience.clock import Clock

#: Arrival time on the app's clock (``clock.monotonic()``), for the rate limiter.
ARRIVED_AT = "gateway.edge.arrived"
REQUEST_ID = "gateway.edge.request_id"
# A caller's id is kept only if it is short and plain: it ends up in logs.
_SANE_ID = re.compile(rb"^[A-Za-z0-9._\-]{1,128}$")


class RequestIdMiddleware:
    """Stamps ``scope[ARRIVED_AT]``, keeps a sane ``X-Request-Id`` or makes one (in
    ``scope[REQUEST_ID]``), and echoes it on the response."""

    def __init__(self, app: ASGIApp, *, clock: Clock) -> None:
        self.app = app
        self.clock = clock
        # Made ids: 16 random hex digits for this process, then a counter (unique
        # across replicas without a uuid4, i.e. an urandom call, per request).
        self._prefix = os.urandom(8).hex()
        self._made = itertools.count(1)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope[ARRIVED_AT] = self.clock.monotonic()
        request_id = None
        for key, value in scope["headers"]:
            if key == b"x-request-id":
                if _SANE_ID.match(value):
                    request_id = value
                break
        if request_id is None:
            request_id = f"{self._prefix}{next(self._made):016x}".encode()
        scope[REQUEST_ID] = request_id.decode()

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                headers.append((b"x-request-id", request_id))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)
