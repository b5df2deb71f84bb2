"""Strawberry types: the public contract. Resolvers here stay thin: they ask the
per-request loaders and shape the answer; fetching, caching and resilience live
in :mod:`gateway.service`.

``Article`` fields resolve straight off :class:`~gateway.sources.base.NormalizedArticle`
values (same attribute names), so a page of articles costs no copying.
"""

from __future__ import annotations

import enum
from datetime import datetime, timedelta
from typing import Annotated

import strawberry

from gateway.context import GatewayContext
from gateway.errors import BadUserInput, SourceErrorCode
from gateway.errors import SourceError as DomainSourceError
from gateway.outcomes import SourceOutcome, SourceStatus
from gateway.paging import MergedFeeds, encode_cursor
from gateway.resilience.breaker import BreakerSnapshot, BreakerState
from gateway.schema.fastexec import context_only
from gateway.settings import MAX_FIRST, MAX_STATS_WINDOW_MINUTES, SourceConfig, SourceKind
from gateway.sources.base import HNItem, NormalizedArticle
from gateway.store import stats as stats_queries

Info = strawberry.Info[GatewayContext, None]


def check_first(first: int, *, name: str = "first") -> int:
    if first < 0 or first > MAX_FIRST:
        raise BadUserInput(f"`{name}` must be between 0 and {MAX_FIRST}, got {first}")
    return first


FirstArticles = Annotated[int, strawberry.argument(description=f"How many articles to return (0 to {MAX_FIRST}).")]
FirstComments = Annotated[int, strawberry.argument(description=f"How many comments to return (0 to {MAX_FIRST}).")]


@strawberry.enum(description="Overall health of the gateway.")
class HealthStatus(enum.Enum):
    OK = strawberry.enum_value(
        "OK", description="Database reachable, every circuit closed, every source's last refresh succeeded."
    )
    DEGRADED = strawberry.enum_value(
        "DEGRADED",
        description="Serving, but the database is unreachable, some circuits are open, or some source's last "
        "refresh failed.",
    )
    DOWN = strawberry.enum_value("DOWN", description="The database is unreachable and every circuit is open.")


@strawberry.type(description="Why a source produced no fresh data.")
class SourceError:
    code: SourceErrorCode = strawberry.field(description="Stable machine-readable code: switch over it.")
    http_status: int | None = strawberry.field(
        description="The upstream's HTTP status, for UPSTREAM_HTTP_ERROR; null otherwise."
    )
    message: str = strawberry.field(description="Human-readable detail. Do not parse it.")

    @classmethod
    def of(cls, error: DomainSourceError) -> SourceError:
        return cls(code=SourceErrorCode(error.code), http_status=error.http_status, message=error.message)


@strawberry.type(description="A source's circuit breaker, as of this request.")
class Breaker:
    state: BreakerState = strawberry.field(description="Current state.")
    failures: int = strawberry.field(description="Upstream failures counted in the breaker's current window.")
    opened_at: datetime | None = strawberry.field(description="When the circuit last opened; null while closed.")

    @classmethod
    def of(cls, snap: BreakerSnapshot) -> Breaker:
        return cls(state=snap.state, failures=snap.failures, opened_at=snap.opened_at)


#: ``Source`` objects by configuration (see ``Source.of``), at most this many.
MAX_SOURCE_TYPES = 1024
_SOURCES: dict[int, tuple[SourceConfig, Source]] = {}


@strawberry.type(description="An upstream news source configured in this gateway.")
class Source:
    config: strawberry.Private[SourceConfig]
    id: strawberry.ID = strawberry.field(description="Stable id, as in the sources file.")
    name: str = strawberry.field(description="Display name.")
    kind: SourceKind = strawberry.field(description="What kind of upstream this is.")
    critical: bool = strawberry.field(
        description="Whether `articles` fails (CRITICAL_SOURCE_FAILED) when this source has no data."
    )

    @classmethod
    def of(cls, config: SourceConfig) -> Source:
        """The (immutable) ``Source`` of ``config``: one per configuration, shared by
        every answer that shows it."""
        entry = _SOURCES.get(id(config))
        if entry is not None and entry[0] is config:
            return entry[1]
        source = cls(config=config, id=strawberry.ID(config.id), name=config.name, kind=SourceKind(config.kind),
                     critical=config.critical)
        if len(_SOURCES) >= MAX_SOURCE_TYPES:
            _SOURCES.clear()  # configurations made on the fly (removed sources): start over
        _SOURCES[id(config)] = (config, source)  # config kept: its id cannot be reused meanwhile
        return source

    @strawberry.field(description="The source's circuit breaker.")
    @context_only
    def breaker(self, info: Info) -> Breaker:
        info.context.mark_volatile()
        breaker = info.context.services.breakers.get(self.config.id)
        if breaker is None:  # a source no longer configured (seen on an old cached article)
            return Breaker(state=BreakerState.CLOSED, failures=0, opened_at=None)
        return Breaker.of(breaker.snapshot())

    @strawberry.field(description="This source's newest articles. Fetched once per request however often asked.")
    async def articles(self, info: Info, first: FirstArticles = 10) -> list[Article]:
        from gateway.loaders import FeedKey

        check_first(first)
        key = FeedKey(self.config.id, None)
        meter = info.context.meter
        if meter is not None:
            meter.fetches((key,))
        outcome = await info.context.loaders.feeds.load(key)
        page = list(outcome.articles[:first])
        if meter is not None:
            meter.returned(len(page))
        return page  # type: ignore[return-value]  # cached newest first


def source_of(info: Info, source_id: str) -> Source:
    config = info.context.services.settings.source(source_id)
    if config is None:  # an article cached by a source since removed from the sources file
        config = SourceConfig(id=source_id, name=source_id, kind="feed", url="http://removed.invalid/")
    return Source.of(config)


@strawberry.type(description="A comment on a Hacker News story.")
class Comment:
    item: strawberry.Private[HNItem]
    source_id: strawberry.Private[str]
    id: strawberry.ID = strawberry.field(description="The upstream's comment id.")
    author: str | None = strawberry.field(description="Who wrote it.")
    text: str = strawberry.field(description="The comment as sanitised HTML.")
    posted_at: datetime | None = strawberry.field(description="When it was posted (UTC).")

    @classmethod
    def of(cls, item: HNItem, source_id: str) -> Comment:
        return cls(item=item, source_id=source_id, id=strawberry.ID(str(item.id)), author=item.by,
                   text=item.text or "", posted_at=item.time)

    @strawberry.field(description="Direct replies, oldest thread order as upstream ranks them.")
    async def replies(self, info: Info, first: FirstComments = 10) -> list[Comment]:
        return await load_comments(info, self.source_id, self.item.kids, first)


def _comment_depth(info: Info) -> int:
    """How many comment levels deep this field is (by parent type, so aliases count too)."""
    depth = 0
    path = info.path
    while path is not None:
        if isinstance(path.key, str) and path.typename in ("Article", "Comment"):
            depth += 1
        path = path.prev
    return depth


async def load_comments(info: Info, source_id: str, ids: tuple[int, ...], first: int) -> list[Comment]:
    check_first(first)
    if not ids or first == 0:
        return []
    meter = info.context.meter
    if meter is not None:  # one fetch per level of comments, as the estimate counts them
        meter.fetches((("hn-comments", _comment_depth(info)),))
    results = await info.context.loaders.hn_items.load_many([(source_id, i) for i in ids[:first]])
    if meter is not None:
        meter.returned(len(results))
    return [
        Comment.of(r, source_id)
        for r in results
        if isinstance(r, HNItem) and r.type == "comment" and not r.deleted and not r.dead
    ]


@strawberry.type(description="A news article, normalised from whichever upstream brought it.")
class Article:
    id: strawberry.ID = strawberry.field(
        description="Stable id, derived from the canonical URL (or the upstream id where there is none): "
        "the same URL from two sources is one article."
    )
    title: str = strawberry.field(description="Headline, plain text.")
    url: str = strawberry.field(description="Link to the article.")
    summary: str | None = strawberry.field(description="Summary as sanitised HTML (no scripts, no event attributes).")
    author: str | None = strawberry.field(description="Author, as the upstream gives it.")
    image_url: str | None = strawberry.field(description="Lead image, if the upstream has one.")
    published_at: datetime | None = strawberry.field(description="Publication time (UTC).")
    score: int | None = strawberry.field(description="Points (Hacker News only).")
    comment_count: int | None = strawberry.field(description="Number of comments (Hacker News only).")

    @strawberry.field(description="The source that brought this article.")
    @context_only(pure=True)  # the configuration's Source for the article's source id
    def source(self, info: Info) -> Source:
        return source_of(info, self.source_id)  # type: ignore[attr-defined]

    @strawberry.field(description="Top-level comments (Hacker News only; empty elsewhere).")
    async def comments(self, info: Info, first: FirstComments = 10) -> list[Comment]:
        return await load_comments(info, self.source_id, self.comment_ids, first)  # type: ignore[attr-defined]


@strawberry.type(description="An article and its cursor.")
class ArticleEdge:
    cursor: str = strawberry.field(description="Opaque cursor; pass it as `after` to continue after this article.")
    node: Article = strawberry.field(description="The article.")


@strawberry.type(description="Where a page starts and ends (Relay cursor connections).")
class PageInfo:
    has_next_page: bool = strawberry.field(description="Whether more articles follow this page.")
    has_previous_page: bool = strawberry.field(
        description="Whether articles precede this page: true when it was asked for `after` a cursor."
    )
    start_cursor: str | None = strawberry.field(description="Cursor of the first article on this page.")
    end_cursor: str | None = strawberry.field(description="Cursor of the last article on this page.")


@strawberry.type(description="How one source contributed to this answer.")
class SourceResult:
    source: Source = strawberry.field(description="The source.")
    status: SourceStatus = strawberry.field(description="Where its data came from, or why there is none.")
    error: SourceError | None = strawberry.field(description="What went wrong, if anything did.")
    latency_ms: int | None = strawberry.field(description="Time spent getting this source's data for this request.")
    dropped_items: int = strawberry.field(
        description="Items of the upstream's answer dropped as unusable (no title, no URL, a bad date, wrong types)."
    )
    age: strawberry.Private[int | None]
    fetched_at: strawberry.Private[datetime | None]

    @strawberry.field(description="Age of the data served, whole seconds; null when there is none.")
    @context_only
    def age_seconds(self, info: Info) -> int | None:
        reads = info.context.reads
        if reads is not None and self.fetched_at is not None:
            # a cached copy of this answer recomputes the age from here
            reads.age(info.path.as_list(), self.fetched_at.timestamp())
        return self.age

    @classmethod
    def of(cls, outcome: SourceOutcome) -> SourceResult:
        err = outcome.error
        return cls(
            source=Source.of(outcome.source),
            status=outcome.status,
            error=SourceError.of(err) if err else None,
            latency_ms=outcome.latency_ms,
            dropped_items=outcome.dropped,
            age=outcome.age_s,
            fetched_at=outcome.feed.fetched_at if outcome.feed is not None else None,
        )


@strawberry.type(description="A page of articles, newest first, plus how each source fared.")
class ArticleConnection:
    # Built once per request; each field is computed only if the query asks for it.
    page: strawberry.Private[list[NormalizedArticle]]
    has_next: strawberry.Private[bool]
    outcomes: strawberry.Private[list[SourceOutcome]]
    has_previous: strawberry.Private[bool] = False
    #: The merged view the page is a slice of (from ``start``): it keeps the cursors.
    view: strawberry.Private[MergedFeeds | None] = None
    start: strawberry.Private[int] = 0

    def cursor(self, i: int) -> str:
        """The cursor of the page's ``i``-th article."""
        if self.view is not None:
            return self.view.cursor(self.start + i)
        return encode_cursor(self.page[i])

    @strawberry.field(description="Articles with their cursors.")
    @context_only
    def edges(self) -> list[ArticleEdge]:
        cursor = self.cursor
        return [ArticleEdge(cursor=cursor(i), node=a) for i, a in enumerate(self.page)]  # type: ignore[arg-type]

    @strawberry.field(description="The same articles, without cursors.")
    @context_only
    def nodes(self) -> list[Article]:
        return self.page  # type: ignore[return-value]

    @strawberry.field(description="Pagination.")
    @context_only
    def page_info(self) -> PageInfo:
        return PageInfo(
            has_next_page=self.has_next,
            has_previous_page=self.has_previous,
            start_cursor=self.cursor(0) if self.page else None,
            end_cursor=self.cursor(len(self.page) - 1) if self.page else None,
        )

    @strawberry.field(description="One entry per source asked, with its status.")
    @context_only
    def sources(self) -> list[SourceResult]:
        return [SourceResult.of(o) for o in self.outcomes]


@strawberry.type(description="Health of a dependency.")
class DependencyHealth:
    ok: bool = strawberry.field(description="Whether it answered.")
    latency_ms: float | None = strawberry.field(description="Round-trip time of the check.")
    error: str | None = strawberry.field(description="Why it is not ok.")


@strawberry.type(description="Health of one source.")
class SourceHealth:
    source: Source = strawberry.field(description="The source.")
    breaker: Breaker = strawberry.field(description="Its circuit breaker.")
    last_success_at: datetime | None = strawberry.field(description="Last successful upstream fetch by this process.")
    last_error: SourceError | None = strawberry.field(description="Last upstream error seen by this process.")
    last_error_at: datetime | None = strawberry.field(description="When that error happened.")
    upstream_calls: int = strawberry.field(description="Upstream HTTP calls made by this process (retries included).")
    not_modified: int = strawberry.field(description="Conditional calls the upstream answered 304 Not Modified.")
    dropped_items: int = strawberry.field(description="Unusable items dropped by this process so far.")

    @strawberry.field(
        description="Upstream calls to this source in the last `windowMinutes`, by every process and replica "
        "(from the fetch statistics, written a second or so behind the calls)."
    )
    async def fetch_stats(
        self,
        info: Info,
        window_minutes: Annotated[
            int | None,
            strawberry.argument(description=f"How far back to look, 1 to {MAX_STATS_WINDOW_MINUTES} minutes (null: 60)."),
        ] = 60,
    ) -> FetchStats:
        if window_minutes is None:
            window_minutes = 60
        if not 1 <= window_minutes <= MAX_STATS_WINDOW_MINUTES:
            raise BadUserInput(f"`windowMinutes` must be 1 to {MAX_STATS_WINDOW_MINUTES}, got {window_minutes}")
        services = info.context.services
        since = services.clock.now() - timedelta(minutes=window_minutes)
        source_id = self.source.id
        window = await services.db.run(
            lambda conn: stats_queries.window(conn, str(source_id), since),
            timeout_s=max(info.context.deadline.remaining(), 0.05),
        )
        return FetchStats(
            calls=window.calls,
            failures=window.failures,
            p50_ms=_rounded(window.p50_ms),
            p95_ms=_rounded(window.p95_ms),
            p99_ms=_rounded(window.p99_ms),
        )


@strawberry.type(description="Upstream calls to one source over a window of time, across every process.")
class FetchStats:
    calls: int = strawberry.field(description="Calls sent to the upstream (each retry counts).")
    failures: int = strawberry.field(
        description="Calls that did not end in a usable answer (2xx or 304): upstream errors, timeouts, bad "
        "payloads, and calls our own deadline cut short."
    )
    p50_ms: float | None = strawberry.field(description="Median call duration in ms (parse included); null: no calls.")
    p95_ms: float | None = strawberry.field(description="95th percentile of the call duration in ms; null: no calls.")
    p99_ms: float | None = strawberry.field(description="99th percentile of the call duration in ms; null: no calls.")


def _rounded(ms: float | None) -> float | None:
    return round(ms, 2) if ms is not None else None


@strawberry.type(description="Health of the gateway process.")
class Health:
    status: HealthStatus = strawberry.field(description="Overall status.")
    database: DependencyHealth = strawberry.field(description="The PostgreSQL cache.")
    sources: list[SourceHealth] = strawberry.field(description="Every configured source.")
    version: str = strawberry.field(description="Gateway version.")
    uptime_seconds: float = strawberry.field(description="Seconds since this process started serving.")
