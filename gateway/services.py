"""Everything with a process lifetime, built once in the app's lifespan and torn down
there: database (embedded or not), HTTP client, bulkheads, breakers, the source service."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import httpx

from gateway.resilience.breaker import CircuitBreaker
from gateway.resilience.bulkhead import Bulkhead
from gateway.resilience.clock import Clock, SystemClock
from gateway.service import STATEMENTS, Parser, SourceService
from gateway.settings import Settings
from gateway.store.db import Database
from gateway.store.embedded import EmbeddedPostgres
from gateway.store.listener import CacheListener
from gateway.store.migrate import migrate
from gateway.upstream import UpstreamClient, build_http_client

log = logging.getLogger("gateway")


@dataclass(slots=True)
class Services:
    settings: Settings
    db: Database
    embedded: EmbeddedPostgres | None
    upstream: UpstreamClient
    breakers: dict[str, CircuitBreaker]
    source_service: SourceService
    clock: Clock
    started_mono: float

    @classmethod
    async def start(
        cls, settings: Settings, *, transport: httpx.AsyncBaseTransport | None = None, clock: Clock | None = None
    ) -> Services:
        clock = clock or SystemClock()
        embedded: EmbeddedPostgres | None = None
        url = settings.database_url
        if url is None:
            embedded = EmbeddedPostgres(settings.data_dir)
            url = await embedded.start()
        try:
            db = await Database.connect(
                url,
                min_size=settings.db_pool_min,
                max_size=settings.db_pool_max,
                connect_timeout_s=settings.db_connect_timeout_s,
                command_timeout_s=settings.db_command_timeout_s,
                setup=migrate,
                prepare=STATEMENTS,
            )
        except BaseException:
            if embedded is not None:
                await embedded.stop()
            raise

        upstream = UpstreamClient(
            build_http_client(settings.max_outbound, transport=transport), max_body_bytes=settings.max_body_bytes
        )
        listener = CacheListener(url)
        listener.start()
        breakers = {s.id: CircuitBreaker(s.id, s.breaker, clock=clock) for s in settings.sources}
        service = SourceService(
            settings=settings,
            db=db,
            upstream=upstream,
            breakers=breakers,
            global_bulkhead=Bulkhead("global", settings.max_outbound),
            bulkheads={s.id: Bulkhead(s.id, s.max_concurrency) for s in settings.sources},
            parser=Parser(settings.offloop_parse_bytes),
            clock=clock,
            listener=listener,
        )
        services = cls(settings, db, embedded, upstream, breakers, service, clock, time.monotonic())
        if any(s.kind == "feed" for s in settings.sources):
            # Feeds can be megabytes: the parser process must be up before the first
            # one, and before this worker says it is ready. Started in the background,
            # it competed for the CPU with the first requests: with 3 workers on 2
            # cores, still starting 130 ms into a benchmark's first burst.
            try:
                await service.parser.start()
            except Exception as exc:  # noqa: BLE001 - parsing still works; big feeds retry the pool
                log.warning("the parser process did not start (%s); big feeds will start it on demand", exc)
            except BaseException:
                await services.aclose()
                raise
        return services

    async def aclose(self) -> None:
        await self.source_service.aclose()
        if self.source_service.listener is not None:
            await self.source_service.listener.aclose()
        await self.upstream.aclose()
        await self.db.close()
        if self.embedded is not None:
            await self.embedded.stop()

    def uptime_s(self) -> float:
        return time.monotonic() - self.started_mono
