"""Maintenance, done by one leader across every worker and replica.

::

    every round (GATEWAY_MAINTENANCE_INTERVAL_S), in every process, maintenance on or off:
      share this process's reads (keys requests asked for, and the latest items of
      sources with live subscribers here, marked subscribed) ─► cache_reads
      GATEWAY_MAINTENANCE=false? stop here (a `gateway worker` or another process leads)
      leader? (pg_try_advisory_lock, held on a dedicated connection for its lifetime)
        └─ yes: refresh ahead: keys read in the last GATEWAY_REFRESH_AHEAD_WINDOW_S whose
                copy is due (age ≥ ttl_s − lead; subscribed keys with no copy yet too)
                ─► SourceService.refresh_ahead, one call
                per key across all processes (the refresh lease)
                every GATEWAY_GC_INTERVAL_S: delete cache rows (feeds, q= searches,
                item: HN items) and unreferenced articles older than their source's
                max_stale_s; trim statistics past GATEWAY_STATS_RETENTION_H and old reads

The lock is a session lock on a connection of its own (pooled connections keep no
session state, see gateway/store/db.py): the leader stays leader until that connection
goes (its process exits or Postgres drops it), then the next round of another process
takes over. Followers keep their connection too and ask again each round on it. Every decision by time reads the injected clock; only the pause between
rounds is a real sleep.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from datetime import timedelta

import asyncpg

from gateway.errors import DatabaseUnavailable, SourceError
from gateway.live import LiveHub
from gateway.resilience.clock import Clock
from gateway.service import SourceService
from gateway.settings import DEFAULT_SOURCE_MAX_STALE_S, Settings, SourceConfig
from gateway.store import maintenance as queries
from gateway.store import stats as stats_queries
from gateway.store.db import Database

log = logging.getLogger("gateway.ops")

#: A key is refreshed ahead when this much of its TTL is left (at most; see lead_s).
REFRESH_AHEAD_LEAD_S = 1.0
#: ... and never earlier than this fraction of its TTL before expiry.
REFRESH_AHEAD_MAX_FRACTION = 0.25
#: Keys refreshed ahead per round at most, and at once.
REFRESH_AHEAD_BATCH = 100
REFRESH_AHEAD_CONCURRENCY = 8
#: Longest wait for the leader's connection and its statements.
LEADER_CONNECT_TIMEOUT_S = 5.0
STATEMENT_TIMEOUT_S = 30.0


def lead_s(source: SourceConfig, interval_s: float) -> float:
    """How long before expiry a key of ``source`` is refreshed: enough for a round
    to come by (plus the refresh), capped at a fraction of the TTL so a short TTL is
    not refreshed twice as often as it expires."""
    return min(max(REFRESH_AHEAD_LEAD_S, 2 * interval_s), source.ttl_s * REFRESH_AHEAD_MAX_FRACTION)


@dataclass(slots=True)
class RoundReport:
    """What one round did (for tests and the debug log)."""

    leader: bool = False
    reads_shared: int = 0
    refreshed: int = 0
    gc_ran: bool = False
    cache_deleted: int = 0
    articles_deleted: int = 0
    stats_deleted: int = 0


class Maintenance:
    def __init__(
        self,
        settings: Settings,
        url: str,
        db: Database,
        service: SourceService,
        *,
        clock: Clock,
        lead: bool,
        live: LiveHub | None = None,
    ) -> None:
        self.settings = settings
        self.may_lead = lead  # False: only share this process's reads with the leader
        self.url = url
        self.db = db
        self.service = service
        self.clock = clock
        self.live = live
        self.sources = {s.id: s for s in settings.sources}
        self._conn: asyncpg.Connection | None = None  # the leader lock's own connection
        self._leading = False
        self._next_gc = clock.monotonic()  # the first leader round collects at once
        self._task: asyncio.Task[None] | None = None
        self.rounds = 0  # rounds the background loop finished
        #: Keys whose refresh-ahead failed, and until when (monotonic) they are left to
        #: requests: a failing upstream is not called again every round.
        self._backoff: dict[tuple[str, str], float] = {}
        self._troubled = False  # the last round met database trouble (log once, not every round)

    @property
    def is_leader(self) -> bool:
        return self._leading and self._conn is not None and not self._conn.is_closed()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-maintenance")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self._resign()

    async def _run(self) -> None:
        while True:
            try:
                await self.run_once()
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001 - one bad round must not end maintenance
                log.exception("maintenance round failed")
            self.rounds += 1
            await asyncio.sleep(self.settings.maintenance_interval_s)

    async def run_once(self) -> RoundReport:
        """One round: share reads; if leader (or we become it), refresh ahead and, when
        due, collect garbage. Database trouble ends the round quietly."""
        report = RoundReport()
        try:
            report.reads_shared = await self._share_reads()
            if not self.may_lead:
                return report
            report.leader = await self._lead()
            if not report.leader:
                return report
            report.refreshed = await self._refresh_ahead()
            if self.clock.monotonic() >= self._next_gc:
                self._next_gc = self.clock.monotonic() + self.settings.gc_interval_s
                await self._collect(report)
        except (DatabaseUnavailable, OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
            (log.debug if self._troubled else log.warning)(
                "maintenance round skipped: %s: %s", type(exc).__name__, exc
            )
            self._troubled = True
            return report
        if self._troubled:
            log.info("maintenance: the database answers again")
            self._troubled = False
        return report

    # -- leadership -------------------------------------------------------------
    async def _lead(self) -> bool:
        """Whether we hold the leader's lock, trying for it if not. The connection
        stays open either way (one per process, like the LISTEN one): followers ask
        again every round on it rather than connecting anew each time."""
        try:
            if self._conn is None or self._conn.is_closed():
                self._leading = False
                self._conn = await asyncpg.connect(self.url, timeout=LEADER_CONNECT_TIMEOUT_S)
            if self._leading:
                await self._conn.fetchval("SELECT 1", timeout=LEADER_CONNECT_TIMEOUT_S)  # still ours?
                return True
            self._leading = await queries.try_lead(self._conn)
        except BaseException:
            await self._resign()  # the connection, and any lock on it, is gone or unknown
            raise
        if self._leading:
            log.info("maintenance: this process is the leader")
        return self._leading

    async def _resign(self) -> None:
        conn, self._conn, self._leading = self._conn, None, False
        if conn is not None and not conn.is_closed():
            try:
                await asyncio.wait_for(conn.close(), timeout=LEADER_CONNECT_TIMEOUT_S)
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError):
                conn.terminate()

    # -- work -------------------------------------------------------------------
    async def _share_reads(self) -> int:
        reads = self.service.cache.take_reads()
        now, mono = self.clock.now(), self.clock.monotonic()
        rows = [(s, k, search, now - timedelta(seconds=mono - at), False) for (s, k), (search, at) in reads.items()]
        # Sources with live subscribers here: their latest items, read "now", and due
        # even before a first copy exists (the leader refreshes them at their TTL).
        followed = self.live.subscribed_sources() if self.live is not None else set()
        if followed is None:
            followed = set(self.sources)
        for source_id in sorted(followed):
            source = self.sources.get(source_id)
            if source is not None:
                rows.append((source_id, self.service.adapter(source).request_key(None), None, now, True))
        if not rows:
            return 0
        await self.db.run(lambda conn: queries.put_reads(conn, rows))
        return len(rows)

    async def _refresh_ahead(self) -> int:
        interval = self.settings.maintenance_interval_s
        due_age = {s.id: max(0.0, s.ttl_s - lead_s(s, interval)) for s in self.sources.values()}
        now = self.clock.now()
        since = now - timedelta(seconds=self.settings.refresh_ahead_window_s)
        due = await self.db.run(lambda conn: queries.due_reads(conn, due_age, now, since, REFRESH_AHEAD_BATCH))
        if not due:
            return 0
        gate = asyncio.Semaphore(REFRESH_AHEAD_CONCURRENCY)
        mono = self.clock.monotonic()
        self._backoff = {k: until for k, until in self._backoff.items() if until > mono}

        async def one(source_id: str, key: str, search: str | None) -> bool:
            source = self.sources[source_id]
            async with gate:
                try:
                    return await self.service.refresh_ahead(source, search, due_age_s=due_age[source_id])
                except SourceError as exc:
                    log.debug("refresh ahead of %s %s failed: %s", source_id, key, exc.code)
                    self._backoff[(source_id, key)] = self.clock.monotonic() + source.ttl_s
                    return False

        wanted = [(s, key, search) for s, key, search in due if (s, key) not in self._backoff]
        done = await asyncio.gather(*(one(*row) for row in wanted), return_exceptions=True)
        for result in done:
            if isinstance(result, BaseException) and not isinstance(result, Exception):
                raise result
            if isinstance(result, Exception):
                log.warning("refresh ahead failed: %s: %s", type(result).__name__, result)
        # the new rows must be visible to the next round (and to the other processes)
        await self.service.writes_done(timeout_s=STATEMENT_TIMEOUT_S)
        return sum(1 for r in done if r is True)

    async def _collect(self, report: RoundReport) -> None:
        now = self.clock.now()
        max_stale = {s.id: float(s.max_stale_s) for s in self.sources.values()}
        window = self.settings.refresh_ahead_window_s
        report.gc_ran = True
        report.cache_deleted, report.articles_deleted = await self.db.run(
            lambda conn: queries.delete_stale(conn, max_stale, now, float(DEFAULT_SOURCE_MAX_STALE_S)),
            timeout_s=STATEMENT_TIMEOUT_S,
        )
        retention = now - timedelta(hours=self.settings.stats_retention_h)
        report.stats_deleted = await self.db.run(
            lambda conn: stats_queries.trim(conn, retention), timeout_s=STATEMENT_TIMEOUT_S
        )
        await self.db.run(
            lambda conn: queries.trim_reads(conn, now - timedelta(seconds=window)), timeout_s=STATEMENT_TIMEOUT_S
        )
        if report.cache_deleted or report.articles_deleted or report.stats_deleted:
            log.info(
                "maintenance: deleted %d cache row(s), %d article(s), %d statistics row(s)",
                report.cache_deleted,
                report.articles_deleted,
                report.stats_deleted,
            )
