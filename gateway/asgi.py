"""Running an ASGI app on a request body already read, capturing its whole answer:
what request coalescing and the response cache both need."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from starlette.types import ASGIApp, Message, Scope


@dataclass(slots=True)
class Captured:
    start: Message | None = None
    body: list[bytes] = field(default_factory=list)


async def run_captured(app: ASGIApp, scope: Scope, body: bytes) -> Captured:
    """``app`` on ``scope`` with ``body`` as the request, its answer kept in memory."""
    captured = Captured()
    sent = False
    never = asyncio.Event()

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        await never.wait()  # nothing more will come; don't fake a disconnect
        raise AssertionError("unreachable")

    async def capture(message: Message) -> None:
        if message["type"] == "http.response.start":
            captured.start = message
        elif message["type"] == "http.response.body":
            captured.body.append(message.get("body", b""))

    await app(scope, replay, capture)
    return captured
