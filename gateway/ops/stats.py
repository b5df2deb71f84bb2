"""Fetch statistics written behind the answer.

Every upstream call ends in :meth:`StatsWriter.record` (called by
:class:`~gateway.service.client.SourceClient`): a list append, no I/O, never a wait.
A writer task sends what accumulated to Postgres with COPY at least every
:data:`FLUSH_INTERVAL_S`, and once more on shutdown. The buffer is bounded: past
``max_pending`` records, new ones are dropped and counted (``dropped``), so a database
that is slow or away costs statistics, never a request.

A plain list rather than an :class:`asyncio.Queue`: the writer takes everything at
once (one swap), and ``record`` runs on every upstream call, where a list append is the
cheapest bounded hand-off there is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import datetime

import asyncpg

from gateway.errors import DatabaseUnavailable
from gateway.store import stats as stats_queries
from gateway.store.db import Database

log = logging.getLogger("gateway.ops")

#: The writer sends what it has at least this often (seconds).
FLUSH_INTERVAL_S = 1.0
#: Longest wait for one batch's COPY.
FLUSH_TIMEOUT_S = 5.0


class StatsWriter:
    """One per process. ``record`` from anywhere on the loop; ``start``/``aclose`` once."""

    def __init__(self, db: Database | None, *, max_pending: int) -> None:
        self.db = db
        self.max_pending = max_pending
        self.dropped = 0  # records refused because the buffer was full
        self.lost = 0  # records whose batch the database refused or never got
        self.written = 0
        self._pending: list[stats_queries.Record] = []
        self._task: asyncio.Task[None] | None = None

    def record(
        self,
        source_id: str,
        key: str,
        started_at: datetime,
        duration_ms: float,
        outcome: str,
        http_status: int | None,
        size: int,
        items: int,
    ) -> None:
        """One upstream call's statistics. Never blocks; drops (and counts) when full."""
        if len(self._pending) >= self.max_pending:
            self.dropped += 1
            return
        self._pending.append((source_id, key, started_at, duration_ms, outcome, http_status, size, items))

    @property
    def pending(self) -> int:
        return len(self._pending)

    def start(self) -> None:
        if self.db is not None:
            self._task = asyncio.create_task(self._run(), name="gateway-stats-writer")

    async def aclose(self) -> None:
        """Stop the writer and send what is left (the shutdown flush)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.flush()

    async def flush(self) -> int:
        """Send what is pending now, in one COPY; returns how many rows went."""
        if self.db is None or not self._pending:
            return 0
        batch, self._pending = self._pending, []
        try:
            await self.db.run(lambda conn: stats_queries.insert_many(conn, batch), timeout_s=FLUSH_TIMEOUT_S)
        except (DatabaseUnavailable, asyncpg.PostgresError) as exc:
            self.lost += len(batch)
            log.warning("fetch statistics: %d record(s) lost: %s", len(batch), exc)
            return 0
        self.written += len(batch)
        return len(batch)

    async def _run(self) -> None:
        while True:
            # Scheduling only (how often to send), not a decision by time: real sleep.
            await asyncio.sleep(FLUSH_INTERVAL_S)
            try:
                await self.flush()
            except Exception:  # noqa: BLE001 - a bug here must not stop later flushes
                log.exception("fetch statistics writer failed")
