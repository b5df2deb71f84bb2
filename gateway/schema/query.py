"""The root ``Query`` type."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Annotated

import strawberry

from gateway import __version__
from gateway.edge.inputs import check_all_storable, check_storable
from gateway.errors import BadUserInput, CriticalSourceFailed, DatabaseUnavailable
from gateway.loaders import FeedKey
from gateway.outcomes import SourceOutcome
from gateway.paging import Stream, decode_cursor
from gateway.resilience.breaker import BreakerState
from gateway.schema.fastexec import context_only
from gateway.schema.types import (
    Article,
    ArticleConnection,
    Breaker,
    DependencyHealth,
    FirstArticles,
    Health,
    HealthStatus,
    Info,
    Source,
    SourceError,
    SourceHealth,
    check_first,
)
from gateway.settings import SourceConfig
from gateway.sources.base import SortKey

MAX_SEARCH_LENGTH = 200
_UNUSABLE_IN_SEARCH = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")
MAX_SOURCES_ARG = 50


def _selected_sources(info: Info, ids: list[strawberry.ID] | None) -> list[SourceConfig]:
    settings = info.context.services.settings
    if ids is None:
        return list(settings.sources)
    if len(ids) > MAX_SOURCES_ARG:
        raise BadUserInput(f"`sources` takes at most {MAX_SOURCES_ARG} ids, got {len(ids)}")
    check_all_storable("sources", ids)
    chosen: list[SourceConfig] = []
    for source_id in dict.fromkeys(ids):
        config = settings.source(source_id)
        if config is None:
            known = ", ".join(s.id for s in settings.sources)
            raise BadUserInput(f"unknown source {source_id!r}; known sources: {known}")
        chosen.append(config)
    return chosen


async def _loaded_page(
    info: Info, keys: list[FeedKey], first: int, after_key: SortKey | None, since: datetime | None, search: str | None
) -> ArticleConnection | None:
    outcomes = await info.context.loaders.feeds.load_many(keys)
    return _page(info, outcomes, keys, first, after_key, since, search)


def _page(
    info: Info, outcomes: list[SourceOutcome], keys: list[FeedKey], first: int, after_key: SortKey | None,
    since: datetime | None, search: str | None,
) -> ArticleConnection | None:
    for outcome in outcomes:
        if outcome.source.critical and not outcome.status.has_data:
            code = outcome.error.code if outcome.error else outcome.status.value
            raise CriticalSourceFailed(f"critical source {outcome.source.id!r} has no data ({code})")

    needle = search.lower() if search else None
    streams = [
        Stream(o.articles, o.sort_keys, o.key_by_id, needle if key.search is None else None)
        for o, key in zip(outcomes, keys, strict=True)
    ]
    view = info.context.services.pages.view([o.feed for o in outcomes], streams)
    start, stop, has_next = view.page(first=first, after=after_key, since=since)
    if info.context.meter is not None:
        info.context.meter.returned(1 + stop - start)
    return ArticleConnection(
        page=view.articles[start:stop], has_next=has_next, outcomes=outcomes, has_previous=after_key is not None,
        view=view, start=start,
    )


@strawberry.type(description="Read news and the gateway's state.")
class Query:
    @strawberry.field(
        description="Articles from the chosen sources (all when `sources` is omitted), merged, deduplicated by "
        "URL, newest first. Each source's outcome is in `sources`. Null, with a CRITICAL_SOURCE_FAILED error, "
        "when a source marked critical has no data (this field is nullable so that other root fields still "
        "resolve)."
    )
    @context_only  # sync: a warm answer (every source fresh in memory) awaits nothing
    def articles(
        self,
        info: Info,
        sources: Annotated[
            list[strawberry.ID] | None, strawberry.argument(description="Source ids to read; omit for all.")
        ] = None,
        search: Annotated[
            str | None, strawberry.argument(description="Only articles matching this text (case-insensitive).")
        ] = None,
        since: Annotated[
            datetime | None, strawberry.argument(description="Only articles published at or after this time.")
        ] = None,
        first: FirstArticles = 20,
        after: Annotated[
            str | None, strawberry.argument(description="Continue after this cursor (`pageInfo.endCursor`).")
        ] = None,
    ) -> ArticleConnection | None:
        check_first(first)
        if search is not None:
            search = search.strip()
            if len(search) > MAX_SEARCH_LENGTH:
                raise BadUserInput(f"`search` is at most {MAX_SEARCH_LENGTH} characters, got {len(search)}")
            if _UNUSABLE_IN_SEARCH.search(search):
                # It becomes a cache key in Postgres (which refuses NUL and cannot store
                # a lone surrogate) and a query parameter upstream.
                raise BadUserInput("`search` must not contain control characters or unpaired surrogates")
            search = search or None
        after_key = decode_cursor(check_storable("after", after)) if after else None
        if since is not None and since.tzinfo is None:
            since = since.replace(tzinfo=timezone.utc)
        chosen = _selected_sources(info, sources)
        service = info.context.services.source_service

        keys = [FeedKey(s.id, search if service.adapter(s).supports_search else None) for s in chosen]
        if info.context.meter is not None:
            info.context.meter.fetches(keys)  # the safety net behind the cost estimate
        feeds = info.context.loaders.feeds
        outcomes: list[SourceOutcome] | None = feeds.prime_fresh(keys)  # warm: no batch, no loop turn
        if outcomes is None:
            return _loaded_page(info, keys, first, after_key, since, search)  # type: ignore[return-value]
        return _page(info, outcomes, keys, first, after_key, since, search)

    @strawberry.field(description="One article by id: any article the gateway has seen. Null if unknown.")
    async def article(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The article's id.")]
    ) -> Article | None:
        if len(id) > 200:
            raise BadUserInput("`id` is too long to be an article id")
        check_storable("id", id)
        return await info.context.loaders.articles.load(str(id))  # type: ignore[return-value]

    @strawberry.field(description="Every configured source, in sources-file order.")
    def sources(self, info: Info) -> list[Source]:
        return [Source.of(s) for s in info.context.services.settings.sources]

    @strawberry.field(description="One source by id. Null if unknown.")
    def source(
        self, info: Info, id: Annotated[strawberry.ID, strawberry.argument(description="The source's id.")]
    ) -> Source | None:
        config = info.context.services.settings.source(check_storable("id", str(id)))
        return Source.of(config) if config else None

    @strawberry.field(description="Health of the gateway, its database and its sources.")
    async def health(self, info: Info) -> Health:
        info.context.mark_volatile()
        services = info.context.services
        db_health: DependencyHealth
        try:
            latency = await services.db.ping(timeout_s=min(1.0, max(info.context.deadline.remaining(), 0.05)))
            db_health = DependencyHealth(ok=True, latency_ms=round(latency, 2), error=None)
        except DatabaseUnavailable as exc:
            db_health = DependencyHealth(ok=False, latency_ms=None, error=exc.message)
        source_health: list[SourceHealth] = []
        open_count = 0
        failing_count = 0  # sources whose last refresh failed
        for config in services.settings.sources:
            snap = services.breakers[config.id].snapshot()
            stats = services.source_service.stats[config.id]
            failing = stats.last_error_at is not None and (
                stats.last_success_at is None or stats.last_error_at > stats.last_success_at
            )
            if snap.state is not BreakerState.CLOSED:
                open_count += 1
            if failing:
                failing_count += 1
            last = stats.last_error
            source_health.append(
                SourceHealth(
                    source=Source.of(config),
                    breaker=Breaker.of(snap),
                    last_success_at=stats.last_success_at,
                    last_error=SourceError.of(last) if last else None,
                    last_error_at=stats.last_error_at,
                    upstream_calls=stats.upstream_calls,
                    not_modified=stats.not_modified,
                    dropped_items=stats.dropped_rows,
                )
            )
        if not db_health.ok and open_count == len(source_health):
            status = HealthStatus.DOWN
        elif not db_health.ok or open_count or failing_count:
            status = HealthStatus.DEGRADED
        else:
            status = HealthStatus.OK
        return Health(
            status=status,
            database=db_health,
            sources=source_health,
            version=__version__,
            uptime_seconds=round(services.uptime_s(), 3),
        )
