"""Bulkheads: bounded concurrency whose waits are bounded by the caller's deadline.

A full bulkhead is our own rejection (``BulkheadFull``), never an upstream failure.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from gateway.errors import BulkheadFull


class Bulkhead:
    def __init__(self, name: str, limit: int) -> None:
        self.name = name
        self.limit = limit
        self._sem = asyncio.Semaphore(limit)

    @asynccontextmanager
    async def slot(self, *, timeout_s: float) -> AsyncIterator[None]:
        """Hold one slot; raise :class:`BulkheadFull` if none frees up within ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._sem.acquire()
        except TimeoutError:
            raise BulkheadFull(f"{self.name}: all {self.limit} slots busy") from None
        try:
            yield
        finally:
            self._sem.release()
