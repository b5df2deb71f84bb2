"""Helpers of the live-updates tests and benchmark: an RSS upstream on a real socket
whose items the test adds, and real SSE (httpx streaming) and graphql-transport-ws
(websockets) clients."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape

import httpx
from aiohttp import web
from websockets.asyncio.client import ClientConnection, connect

SUBSCRIBE = "subscription Live($sources: [ID!], $after: ID) { articleAdded(sources: $sources, after: $after) { cursor gap article { id title url } } }"
#: Big events (25 copies of the summary): a consumer that stops reading fills the
#: socket buffers (megabytes on loopback) within a few dozen of them.
SUBSCRIBE_FULL = ("subscription Full($after: ID) { articleAdded(after: $after) { cursor "
                  + " ".join(f"a{i}: article {{ summary }}" for i in range(25)) + " } }")


class FeedUpstream:
    """``/feed.xml``: an RSS 2.0 feed of the items added so far, newest first, and
    how many times it was fetched."""

    def __init__(self, *, summary_bytes: int = 0) -> None:
        self.items: list[int] = []
        self.fetches = 0
        self.summary = "x" * summary_bytes
        self._runner: web.AppRunner | None = None
        self.url = ""
        self._start = datetime(2026, 1, 1, tzinfo=timezone.utc)

    def add(self, count: int) -> list[str]:
        """Publish ``count`` new items; returns their URLs (the articles' links)."""
        first = len(self.items) + 1
        self.items.extend(range(first, first + count))
        return [self.link(n) for n in range(first, first + count)]

    @staticmethod
    def link(n: int) -> str:
        return f"https://live.example/story/{n}"

    async def _feed(self, request: web.Request) -> web.Response:
        self.fetches += 1
        parts = ['<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>',
                 "<title>Live</title><link>https://live.example/</link><description>live</description>"]
        for n in reversed(self.items):
            published = format_datetime(self._start + timedelta(minutes=n))
            parts.append(f"<item><title>Story {n}</title><link>{self.link(n)}</link><guid>{self.link(n)}</guid>"
                         f"<pubDate>{published}</pubDate><description>{escape(self.summary)}</description></item>")
        parts.append("</channel></rss>")
        return web.Response(body="".join(parts).encode(), content_type="application/rss+xml")

    async def __aenter__(self) -> FeedUpstream:
        app = web.Application()
        app.router.add_get("/feed.xml", self._feed)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/feed.xml"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


def live_source(url: str, *, source_id: str = "live", ttl_s: int = 1) -> dict[str, Any]:
    return {"id": source_id, "name": "Live", "kind": "feed", "url": url, "ttl_s": ttl_s, "timeout_ms": 2000}


@dataclass(slots=True)
class SSEEvent:
    event: str
    data: str
    id: str | None

    @property
    def payload(self) -> dict[str, Any]:
        return json.loads(self.data) if self.data else {}


class SSEStream:
    """A GraphQL over SSE subscription (distinct connections mode) on its own connection."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self.comments = 0
        self._lines = response.aiter_lines()

    async def next_event(self, *, comments: bool = False) -> SSEEvent | None:
        """The next event (heartbeat comments are counted, and skipped unless
        ``comments``: then returned as event "comment"); None at the end."""
        event, data, event_id = "message", [], None
        async for line in self._lines:
            if line == "":
                if data or event != "message":
                    return SSEEvent(event, "\n".join(data), event_id)
                continue
            if line.startswith(":"):
                self.comments += 1
                if comments:
                    return SSEEvent("comment", line[1:].strip(), None)
                continue
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
            elif name == "id":
                event_id = value
        return None

    async def articles(self, count: int, *, timeout_s: float = 20) -> list[SSEEvent]:
        """The next ``count`` `next` events (failing on anything else)."""
        out: list[SSEEvent] = []
        async with asyncio.timeout(timeout_s):
            while len(out) < count:
                ev = await self.next_event()
                assert ev is not None, f"stream ended after {len(out)} of {count} events"
                assert ev.event == "next", ev
                assert "errors" not in ev.payload, ev.payload
                out.append(ev)
        return out


@asynccontextmanager
async def sse_subscribe(
    base: str, variables: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None
) -> AsyncIterator[SSEStream]:
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(30, read=None)) as client:
        async with client.stream(
            "POST", "/graphql", json={"query": SUBSCRIBE, "variables": variables or {}},
            headers={"accept": "text/event-stream", **(headers or {})},
        ) as response:
            assert response.status_code == 200, (await response.aread()).decode()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield SSEStream(response)


class WSSubscription:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws

    async def next_message(self, *, timeout_s: float = 20) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                msg = json.loads(await self.ws.recv())
                if msg["type"] == "ping":
                    await self.ws.send(json.dumps({"type": "pong"}))
                    continue
                return msg

    async def articles(self, count: int, *, timeout_s: float = 20) -> list[dict[str, Any]]:
        out = []
        while len(out) < count:
            msg = await self.next_message(timeout_s=timeout_s)
            assert msg["type"] == "next" and "errors" not in msg["payload"], msg
            out.append(msg["payload"]["data"]["articleAdded"])
        return out


@asynccontextmanager
async def ws_subscribe(
    base: str, variables: dict[str, Any] | None = None, *, headers: dict[str, str] | None = None,
    query: str = SUBSCRIBE, init: dict[str, Any] | None = None,
) -> AsyncIterator[WSSubscription]:
    url = base.replace("http://", "ws://") + "/graphql"
    async with connect(url, subprotocols=["graphql-transport-ws"], additional_headers=headers or {}) as ws:
        await ws.send(json.dumps({"type": "connection_init", **({"payload": init} if init else {})}))
        ack = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert ack["type"] == "connection_ack", ack
        await ws.send(json.dumps({"id": "1", "type": "subscribe",
                                  "payload": {"query": query, "variables": variables or {}}}))
        yield WSSubscription(ws)


class RawSSE:
    """A subscriber on a bare socket with a tiny receive buffer, which stops reading
    when told: the slow consumer."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def open(cls, port: int, query: str, variables: dict[str, Any]) -> RawSSE:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        body = json.dumps({"query": query, "variables": variables}).encode()
        writer.write(b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                     b"Accept: text/event-stream\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        await writer.drain()
        return cls(reader, writer)

    async def read_until(self, marker: bytes, *, timeout_s: float = 30) -> bytes:
        """Everything up to and including ``marker`` (reading as fast as it comes)."""
        data = bytearray()
        async with asyncio.timeout(timeout_s):
            while marker not in data:
                chunk = await self.reader.read(65536)
                if not chunk:
                    break
                data += chunk
        return bytes(data)

    async def aclose(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):
            await self.writer.wait_closed()
