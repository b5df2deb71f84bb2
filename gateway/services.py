"""Everything with a process lifetime, built once in the app's lifespan and torn down
there, in reverse order: database (embedded or not), LISTEN connection, HTTP client,
the parser process, the fetch statistics writer, the source service with its breakers
and bulkheads, the live-updates hub, and the maintenance round (one leader across
processes)."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.live import LiveHub
from gateway.ops.maintenance import Maintenance
from gateway.ops.metrics import Metrics, cancel, sample_forever
from gateway.ops.stats import StatsWriter
from gateway.paging import PageViews
from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.clock import Clock
from gateway.schema.execmemo import ResultMemo
from gateway.service import SourceService
from gateway.service.client import FetchRecorder, SourceClient
from gateway.service.coordinator import RefreshCoordinator
from gateway.service.feedcache import FeedCache
from gateway.service.items import HNItems
from gateway.service.parser import Parser
from gateway.service.refresh import Refresher
from gateway.service.tasks import BackgroundTasks
from gateway.settings import Settings
from gateway.store import HOT_STATEMENTS
from gateway.store.db import Database
from gateway.store.embedded import EmbeddedPostgres
from gateway.store.listener import CacheListener
from gateway.store.migrate import migrate
from gateway.upstream import UpstreamClient

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("gateway")

#: HN items kept in memory per feed entry the memory cache holds.
ITEMS_PER_FEED_ENTRY = 50


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    listener: CacheListener
    parser: Parser
    source_service: SourceService
    clock: Clock
    metrics: Metrics | None  # None: GATEWAY_METRICS=false
    tracer: Tracer | None
    started_mono: float
    _stack: AsyncExitStack
    stats: StatsWriter | None = None
    maintenance: Maintenance | None = None
    live: LiveHub | None = None
    #: Merged article lists by the feeds they merge, shared by the requests that read them.
    pages: PageViews = field(default_factory=PageViews)
    #: Completed sub-answers of cached articles, shared by the requests that show them.
    results: ResultMemo = field(default_factory=ResultMemo)

    @property
    def breakers(self) -> dict[str, CircuitBreaker]:
        return self.source_service.client.breakers

    @classmethod
    async def start(
        cls, settings: Settings, *, clock: Clock, metrics: Metrics | None = None, tracer: Tracer | None = None
    ) -> Services:
        """Build everything, bottom-up. ``metrics``: where to record (None: nowhere,
        GATEWAY_METRICS=false or a process with no /metrics, such as ``gateway worker``)."""
        async with AsyncExitStack() as stack:
            url = settings.database_url
            if url is None:
                embedded = EmbeddedPostgres(settings.data_dir)
                url = await embedded.start()
                stack.push_async_callback(embedded.stop)
            db = await Database.connect(
                url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                connect_timeout_s=settings.db_connect_timeout_s,
                command_timeout_s=settings.db_command_timeout_s,
                clock=clock,
                tracer=tracer,
                setup=migrate,
                warm=HOT_STATEMENTS,
            )
            stack.push_async_callback(db.close)
            listener = CacheListener(url)
            listener.start()
            stack.push_async_callback(listener.aclose)
            http = UpstreamClient(
                max_connections=settings.max_outbound, max_body_bytes=settings.max_body_bytes, clock=clock
            )
            stack.push_async_callback(http.aclose)
            parser = Parser(settings.offloop_parse_bytes)
            stack.push_async_callback(parser.aclose)
            if any(s.kind == "feed" for s in settings.sources):
                # Feeds can be megabytes: the parser process must be up before the first
                # one, and before this worker says it is ready. Started in the background,
                # it competed for the CPU with the first requests: with 3 workers on 2
                # cores, still starting 130 ms into a benchmark's first burst.
                try:
                    await parser.start()
                except Exception as exc:  # noqa: BLE001 - parsing still works; big feeds retry the pool
                    log.warning("the parser process did not start (%s); big feeds will start it on demand", exc)
            stats = None
            if settings.stats_queue_max > 0:
                stats = StatsWriter(db, max_pending=settings.stats_queue_max)
                stats.start()
                stack.push_async_callback(stats.aclose)  # after the service: its last calls are flushed too
            service = build_source_service(settings, db, listener, http, parser, clock, metrics, tracer, recorder=stats)
            stack.push_async_callback(service.aclose)
            if metrics is not None:
                sampler = asyncio.create_task(
                    sample_forever(metrics, clock, lambda: (db.pool.get_size(), db.pool.get_idle_size())),
                    name="gateway-metrics-sampler",
                )
                stack.push_async_callback(cancel, sampler)
            live = LiveHub(
                db,
                listener,
                queue_max=settings.subscription_queue_max,
                replay_max=settings.subscription_replay_max,
                per_client_max=settings.subscriptions_per_client,
                metrics=metrics,
            )
            live.start()
            stack.push_async_callback(live.aclose)
            # Every process shares its reads (and its subscribed sources) with the
            # maintenance leader (refresh-ahead); only those with GATEWAY_MAINTENANCE on
            # may become that leader.
            maintenance = Maintenance(settings, url, db, service, clock=clock, lead=settings.maintenance, live=live)
            maintenance.start()
            stack.push_async_callback(maintenance.aclose)
            services = cls(
                settings,
                db,
                listener,
                parser,
                service,
                clock,
                metrics,
                tracer,
                clock.monotonic(),
                stack.pop_all(),
                stats,
                maintenance,
                live,
            )
        return services

    async def aclose(self) -> None:
        await self._stack.aclose()

    def uptime_s(self) -> float:
        return self.clock.monotonic() - self.started_mono


def build_source_service(
    settings: Settings,
    db: Database | None,
    listener: CacheListener | None,
    http: UpstreamClient,
    parser: Parser,
    clock: Clock,
    metrics: Metrics | None = None,
    tracer: Tracer | None = None,
    *,
    recorder: FetchRecorder | None = None,
) -> SourceService:
    """The source path, wired bottom-up: each piece gets only what is below it."""
    tasks = BackgroundTasks()
    budget_s = settings.request_deadline_ms / 1000
    client = SourceClient(
        http,
        settings.sources,
        max_outbound=settings.max_outbound,
        clock=clock,
        metrics=metrics,
        tracer=tracer,
        recorder=recorder,
    )
    cache = FeedCache(
        db, tasks, capacity=settings.memory_cache_entries, clock=clock, metrics=metrics,
        write_delay_s=settings.write_behind_delay_ms / 1000,
    )
    if listener is not None:
        listener.subscribe_waiting(cache.wanted)
    items = HNItems(
        client, cache, capacity=settings.memory_cache_entries * ITEMS_PER_FEED_ENTRY, fetch_budget_s=budget_s, clock=clock
    )
    coordinator = RefreshCoordinator(
        cache, listener, tasks, holder_id=_holder_id(), refresh_budget_s=budget_s, clock=clock
    )
    refresher = Refresher(client, items, parser, clock=clock)
    return SourceService(db, cache, coordinator, refresher, client, items, tasks, clock, metrics, tracer)


def _holder_id() -> str:
    """Who holds a lease: readable by an operator looking at fetch_leases."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
