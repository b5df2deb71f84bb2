"""What one execution read (:class:`ReadLog`): filled by the loaders and resolvers
through the per-request context's ``reads``, read by the response cache
(:mod:`gateway.respcache`) to tag, time and store the answer."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

from gateway.outcomes import SourceOutcome, SourceStatus
from gateway.sources.base import NormalizedArticle

#: The scope key of the request's ReadLog (set by the response cache's miss path).
READS_KEY = "gateway.reads"


class ReadLog:
    """What one execution read. Filled by the loaders and resolvers, read by the cache."""

    __slots__ = ("tags", "fresh_until", "swr_s", "sie_s", "fresh", "partial", "stale", "volatile",
                 "unknown_freshness", "ages", "result", "results", "cost", "operation", "statuses")

    def __init__(self) -> None:
        self.tags: set[str] = set()
        self.fresh_until = math.inf  # epoch seconds: when the first source read stops being fresh
        self.swr_s = math.inf
        self.sie_s = math.inf
        self.fresh = False  # a source was fetched for this request (FRESH)
        self.partial = False  # a source has no data (FAILED, TIMEOUT, SKIPPED)
        self.stale = False
        self.volatile = False  # live process state shown: never cache
        self.unknown_freshness = False  # read by id (articles, items): no freshness to advertise
        self.ages: list[tuple[list[str | int], float]] = []  # (path in the answer, fetched at, epoch)
        self.result: dict[str, Any] | None = None  # the answer, as encoded
        self.results = 0  # answers produced (a batch has several: not cached)
        self.cost: int | None = None  # the query's cost, when the edge estimates one
        self.operation: tuple[str | None, str] | None = None  # (name, type) of the operation run
        self.statuses: list[tuple[str, str]] = []  # (source id, status) of each outcome, for metrics

    def outcome(self, outcome: SourceOutcome, request_key: str) -> None:
        source = outcome.source
        self.tags.add(f"{source.id}|{request_key}")
        status = outcome.status
        self.statuses.append((source.id, status.value))
        if status is SourceStatus.FRESH:
            self.fresh = True
        elif status is SourceStatus.STALE:
            self.stale = True
        elif not status.has_data:
            self.partial = True
        if outcome.feed is not None:
            self.fresh_until = min(self.fresh_until, outcome.feed.fetched_at.timestamp() + source.ttl_s)
        # The service serves a stale copy while revalidating up to one TTL past expiry
        # (and never past max_stale_s), and on errors up to max_stale_s.
        self.swr_s = min(self.swr_s, max(0, min(2 * source.ttl_s, source.max_stale_s) - source.ttl_s))
        self.sie_s = min(self.sie_s, max(0, source.max_stale_s - source.ttl_s))

    def articles(self, found: Iterable[NormalizedArticle], *, missing: bool) -> None:
        """Articles read by id: any write by their source may change them; an id not
        found may appear with any source's next write (tag ``*``)."""
        self.unknown_freshness = True
        for article in found:
            self.tags.add(f"{article.source_id}|*")
        if missing:
            self.tags.add("*")

    def items(self, keys: Sequence[tuple[str, int]]) -> None:
        self.unknown_freshness = True
        for source_id, item_id in keys:
            self.tags.add(f"{source_id}|item:{item_id}")

    def age(self, path: list[str | int], fetched_ts: float) -> None:
        self.ages.append((path, fetched_ts))

    def produced(self, result: dict[str, Any]) -> None:
        self.results += 1
        self.result = result
