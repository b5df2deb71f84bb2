"""What fetching one source produced for one request: data plus an honest status.

:class:`SourceStatus` is both the domain's enum and the schema's (its descriptions are
the schema's documentation), and :func:`status_of` is the one place an error is
classified into a status.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import strawberry

from gateway.errors import CircuitOpen, DeadlineExceeded, SourceError, UpstreamTimeout
from gateway.settings import SourceConfig
from gateway.sources.base import NormalizedArticle, SortKey, Validators, newest_first_key


@strawberry.enum(description="Where the data a source contributed to this answer came from.")
class SourceStatus(enum.Enum):
    FRESH = strawberry.enum_value("FRESH", description="Fetched from the upstream for this request.")
    CACHED = strawberry.enum_value("CACHED", description="Served from the cache, within the source's freshness window.")
    STALE = strawberry.enum_value(
        "STALE",
        description="Served from the cache past its freshness window: being refreshed, or the upstream failed "
        "(see `error`). `ageSeconds` says how old.",
    )
    FAILED = strawberry.enum_value("FAILED", description="No data: the upstream failed and no usable copy exists.")
    TIMEOUT = strawberry.enum_value(
        "TIMEOUT", description="No data: the upstream or the request deadline ran out first."
    )
    SKIPPED = strawberry.enum_value(
        "SKIPPED", description="No data: the upstream was not called (circuit open) and no usable copy exists."
    )

    @property
    def has_data(self) -> bool:
        return self in (SourceStatus.FRESH, SourceStatus.CACHED, SourceStatus.STALE)


#: How a fetch that produced no data shows in ``SourceResult.status``; first match wins.
_STATUS_OF_ERROR: tuple[tuple[type[SourceError], SourceStatus], ...] = (
    (UpstreamTimeout, SourceStatus.TIMEOUT),
    (DeadlineExceeded, SourceStatus.TIMEOUT),
    (CircuitOpen, SourceStatus.SKIPPED),
    (SourceError, SourceStatus.FAILED),
)


def status_of(error: SourceError) -> SourceStatus:
    for kind, status in _STATUS_OF_ERROR:
        if isinstance(error, kind):
            return status
    raise AssertionError("unreachable: SourceError is the last row")


@dataclass(frozen=True, slots=True, weakref_slot=True)  # weakly referenced by merged views
class CachedFeed:
    """One cached upstream answer, normalised, newest first. Sorted once here, with
    the sort keys kept, so a request merges pre-sorted lists lazily instead of
    sorting everything every time."""

    articles: tuple[NormalizedArticle, ...]
    sort_keys: tuple[SortKey, ...]
    key_by_id: Mapping[str, SortKey]
    dropped: int
    fetched_at: datetime
    validators: Validators

    @classmethod
    def build(
        cls, articles: Iterable[NormalizedArticle], dropped: int, fetched_at: datetime, validators: Validators
    ) -> CachedFeed:
        keyed = sorted((newest_first_key(a), a) for a in dict((a.id, a) for a in articles).values())
        keys = tuple(k for k, _ in keyed)
        return cls(tuple(a for _, a in keyed), keys, {k[2]: k for k in keys}, dropped, fetched_at, validators)

    def to_payload(self) -> dict[str, Any]:
        """The JSON kept in Postgres (``fetch_cache.payload``)."""
        return {"articles": [a.to_json() for a in self.articles], "dropped": self.dropped}

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], fetched_at: datetime, validators: Validators) -> CachedFeed:
        return cls.build(
            (NormalizedArticle.from_json(a) for a in payload.get("articles", ())),
            int(payload.get("dropped", 0)),
            fetched_at,
            validators,
        )


_NO_ARTICLES: tuple[NormalizedArticle, ...] = ()


@dataclass(slots=True)
class SourceOutcome:
    """One source's part of one answer: the cached feed it served (if any) and how."""

    source: SourceConfig
    status: SourceStatus
    feed: CachedFeed | None = None
    error: SourceError | None = None
    latency_ms: int | None = None
    age_s: int | None = None

    @property
    def articles(self) -> tuple[NormalizedArticle, ...]:
        return self.feed.articles if self.feed is not None else _NO_ARTICLES

    @property
    def sort_keys(self) -> tuple[SortKey, ...]:
        return self.feed.sort_keys if self.feed is not None else ()

    @property
    def key_by_id(self) -> Mapping[str, SortKey]:
        return self.feed.key_by_id if self.feed is not None else {}

    @property
    def dropped(self) -> int:
        return self.feed.dropped if self.feed is not None else 0
