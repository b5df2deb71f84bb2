"""Runs parsers inline for small payloads and in a worker process for large ones, so a
5 MB feed never holds the event loop (threads would: the GIL)."""

from __future__ import annotations

import asyncio
import multiprocessing
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, TypeVar

from gateway.errors import BadPayload

V = TypeVar("V")

#: Longest wait for the worker process to start and import the parsers.
START_TIMEOUT_S = 60


class Parser:
    def __init__(self, offloop_bytes: int) -> None:
        self.offloop_bytes = offloop_bytes
        self._pool: ProcessPoolExecutor | None = None

    @property
    def started(self) -> bool:
        return self._pool is not None

    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            # forkserver: forking a process that runs threads and an event loop is unsafe.
            self._pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("forkserver"))
        return self._pool

    async def start(self) -> None:
        """Start the worker process now (in a thread: starting it blocks), so the first
        big payload does not pay for it on the event loop."""
        pool = self._ensure_pool()
        await asyncio.to_thread(lambda: pool.submit(_warm_up).result(timeout=START_TIMEOUT_S))

    async def run(self, fn: Callable[..., V], body: bytes, *args: Any) -> V:
        """``fn(body, *args)``: here when ``body`` is small, else in the worker process
        (``fn`` and ``args`` must then pickle: module-level functions and plain data)."""
        if len(body) < self.offloop_bytes:
            return fn(body, *args)
        try:
            return await asyncio.get_running_loop().run_in_executor(self._ensure_pool(), fn, body, *args)
        except BrokenProcessPool:
            self._pool = None  # a worker died (OOM?): start a fresh pool next time
            raise BadPayload("the parser process died on this payload") from None

    async def aclose(self) -> None:
        """Stop the worker process and wait for it (in a thread), so its semaphores and
        pipes are released rather than reported as leaked at exit."""
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await asyncio.to_thread(pool.shutdown, wait=True, cancel_futures=True)


def _warm_up() -> None:
    """Import the parsers in the worker process ahead of the first payload."""
    import gateway.sources  # noqa: F401
