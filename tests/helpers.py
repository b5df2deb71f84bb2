"""Test helpers: a real gateway on a real socket, in the test's own event loop."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from gateway.services import Services

REPO = Path(__file__).resolve().parent.parent


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


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def gateway_serve(env: dict[str, str], *, workers: int = 1,
                  stdout: int = subprocess.PIPE) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``gateway serve`` as an operator runs it, in its own process(es), with ``env``
    over ours; stopped with SIGINT (killed if it lingers), its pipes closed."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", str(workers)],
        cwd=REPO, env={**os.environ, **env}, stdout=stdout, stderr=subprocess.PIPE,
    )
    try:
        yield proc, f"http://127.0.0.1:{port}"
    finally:
        if proc.poll() is None:
            interrupt(proc, timeout_s=20)
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


def chromium() -> str:
    import pytest

    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no headless Chromium on PATH (apt-get install -y chromium) to render pages under their CSP")


async def headless_dom(url: str, *, budget_ms: int) -> tuple[str, list[str]]:
    """The page's DOM after headless Chromium rendered it, and the Content Security
    Policy violations the browser logged."""
    proc = await asyncio.create_subprocess_exec(
        chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        f"--virtual-time-budget={budget_ms}", "--enable-logging=stderr", "--v=0", "--dump-dom", url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=90)
    log = err.decode(errors="replace")
    return out.decode(errors="replace"), [line for line in log.splitlines() if "Content Security Policy" in line]


def interrupt(proc: subprocess.Popen[Any], *, timeout_s: float) -> None:
    """Stop a process as Ctrl-C would (its graceful shutdown), killing it if it has not
    exited within ``timeout_s``."""
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
