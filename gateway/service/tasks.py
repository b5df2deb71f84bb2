"""Work that runs behind the answer (cache writes, lease releases), owned by the
process rather than by the request that started it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

log = logging.getLogger("gateway.service")


class BackgroundTasks:
    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("background task failed: %s: %s", type(exc).__name__, exc)

    async def drain(self, *, timeout_s: float) -> None:
        """Wait (bounded) for what is pending: read-your-writes for callers about to
        query Postgres for what was just fetched, and shutdown."""
        if self._tasks and timeout_s > 0:
            await asyncio.wait(list(self._tasks), timeout=timeout_s)
