"""What fetching one source produced for one request: data plus an honest status."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from gateway.errors import SourceError
from gateway.settings import SourceConfig
from gateway.sources.base import NormalizedArticle, SortKey


class SourceStatus(enum.Enum):
    FRESH = "FRESH"  # fetched from the upstream for this request
    CACHED = "CACHED"  # served from cache within the source's TTL
    STALE = "STALE"  # served from cache past its TTL (revalidating, or the upstream failed)
    FAILED = "FAILED"  # no data: the upstream failed and no usable copy exists
    TIMEOUT = "TIMEOUT"  # no data: the upstream or our deadline ran out first
    SKIPPED = "SKIPPED"  # no data: not called (circuit open) and no usable copy exists

    @property
    def has_data(self) -> bool:
        return self in (SourceStatus.FRESH, SourceStatus.CACHED, SourceStatus.STALE)


@dataclass(slots=True)
class SourceOutcome:
    source: SourceConfig
    status: SourceStatus
    articles: tuple[NormalizedArticle, ...] = ()  # newest first
    sort_keys: tuple[SortKey, ...] = ()  # newest_first_key of each article
    key_by_id: Mapping[str, SortKey] = field(default_factory=dict)
    error: SourceError | None = None
    latency_ms: int | None = None
    age_s: int | None = None
    fetched_at: datetime | None = None  # when the data served was fetched (None: no data)
    dropped: int = 0
    extra: dict[str, object] = field(default_factory=dict)
