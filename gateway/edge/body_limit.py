"""Request body size limit: 413 in the GraphQL error shape, before reading past it."""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.edge.responses import send_error


class _TooLarge(Exception):
    pass


class BodyLimitMiddleware:
    """Refuses a declared ``Content-Length`` over the limit at once, and a streamed
    body as soon as it crosses it."""

    def __init__(self, app: ASGIApp, *, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None:
            try:
                too_big = int(declared) > self.max_bytes
            except ValueError:
                await send_error(send, 400, "BAD_REQUEST", "Content-Length is not a number")
                return
            if too_big:
                await self._refuse(send)
                return
            # HTTP/1.1 framing: a declared length is the body's length (the server's
            # parser reads no more); nothing left to count.
            await self.app(scope, receive, send)
            return
        if not any(k == b"transfer-encoding" for k, _ in scope["headers"]):
            await self.app(scope, receive, send)  # neither length nor chunks: no body
            return
        seen = 0
        started = False

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise _TooLarge
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except _TooLarge:
            if not started:
                await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        await send_error(send, 413, "PAYLOAD_TOO_LARGE", f"request body over {self.max_bytes} bytes")
