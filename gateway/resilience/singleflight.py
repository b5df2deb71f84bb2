"""Singleflight: concurrent callers for the same key share one in-flight call.

The call runs as a task owned by the group, not by any caller: a caller that
gives up (its deadline passed, its client went away) stops waiting, but the call
goes on and its result still fills the cache for everyone after it. Caller
cancellation therefore never cancels, nor fails, the upstream call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class SingleFlight(Generic[T]):
    def __init__(self) -> None:
        self._calls: dict[Hashable, asyncio.Task[T]] = {}

    def __len__(self) -> int:
        return len(self._calls)

    def in_flight(self, key: Hashable) -> bool:
        return key in self._calls

    async def wait_idle(self, *, timeout_s: float) -> None:
        """Wait (bounded) for the calls in flight now to finish, however they end."""
        if self._calls and timeout_s > 0:
            await asyncio.wait(list(self._calls.values()), timeout=timeout_s)

    def start(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> asyncio.Task[T]:
        """Return the task for ``key``, starting ``fn()`` if none is in flight."""
        task = self._calls.get(key)
        if task is None:
            task = asyncio.ensure_future(fn())
            self._calls[key] = task
            task.add_done_callback(lambda t, k=key: self._forget(k, t))
        return task

    async def do(self, key: Hashable, fn: Callable[[], Awaitable[T]]) -> T:
        """Join or start the call for ``key`` and wait for it (shielded)."""
        return await asyncio.shield(self.start(key, fn))

    def _forget(self, key: Hashable, task: asyncio.Task[T]) -> None:
        if self._calls.get(key) is task:
            del self._calls[key]
        if not task.cancelled():
            task.exception()  # mark retrieved: a result nobody awaited is not an error

    async def aclose(self) -> None:
        """Cancel everything still in flight (app shutdown)."""
        tasks = list(self._calls.values())
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
