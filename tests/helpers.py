"""Test helpers: a real gateway on a real socket, in the test's own event loop."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from gateway.services import Services


class RunningGateway:
    """``async with RunningGateway(app) as gw: await gw.query("{ ... }")``"""

    def __init__(self, app: Starlette) -> None:
        self.app = app
        # IPPROTO_TCP explicitly: with proto 0 asyncio leaves Nagle on for accepted
        # sockets, and every keep-alive request stalls ~40 ms on delayed ACKs.
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            app, lifespan="on", log_level="warning", timeout_graceful_shutdown=2, proxy_headers=False  # as `gateway serve`
        )
        self.server = uvicorn.Server(config)
        self.client = httpx.AsyncClient(base_url=self.url, timeout=30)
        self._task: asyncio.Task[None] | None = None

    @property
    def services(self) -> Services:
        return self.app.state.services

    async def __aenter__(self) -> RunningGateway:
        self._task = asyncio.create_task(self.server.serve(sockets=[self._sock]))
        while not self.server.started:
            if self._task.done():
                self._task.result()
                raise RuntimeError("gateway failed to start")
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.client.aclose()
        self.server.should_exit = True
        if self._task is not None:
            await self._task
        self._sock.close()

    async def post(self, query: str, variables: dict[str, Any] | None = None) -> httpx.Response:
        body: dict[str, Any] = {"query": query}
        if variables is not None:
            body["variables"] = variables
        return await self.client.post("/graphql", json=body)

    async def query(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        resp = await self.post(query, variables)
        assert resp.status_code == 200, resp.text
        return resp.json()

    async def data(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        """The ``data`` of a query that must not error."""
        result = await self.query(query, variables)
        assert "errors" not in result, result["errors"]
        return result["data"]
