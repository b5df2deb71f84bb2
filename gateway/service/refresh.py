"""One upstream refresh of one key: the adapter's request through the client policy,
the body parsed (off the loop when large), Hacker News items fetched, a new
:class:`~gateway.outcomes.CachedFeed` built. It stores nothing: the coordinator does."""

from __future__ import annotations

import logging
from dataclasses import replace

from gateway.errors import BadPayload, SourceError
from gateway.outcomes import CachedFeed
from gateway.resilience.clock import Clock
from gateway.resilience.deadline import Deadline
from gateway.service.client import SourceClient
from gateway.service.items import HNItems
from gateway.service.parser import Parser
from gateway.settings import SourceConfig
from gateway.sources import ADAPTERS, HackerNewsAdapter, parse_body
from gateway.sources.base import Parsed, StoryIds, Validators
from gateway.upstream import UpstreamResponse

log = logging.getLogger("gateway.service")

#: What parsing a first-phase answer gives: its result and validators, or None for a 304.
_Answer = tuple[Parsed | StoryIds, Validators] | None


class Refresher:
    def __init__(self, client: SourceClient, items: HNItems, parser: Parser, *, clock: Clock) -> None:
        self.client = client
        self.items = items
        self.parser = parser
        self.clock = clock

    async def fetch(
        self, source: SourceConfig, search: str | None, entry: CachedFeed | None, budget: Deadline
    ) -> CachedFeed:
        """A new copy of (``source``, ``search``) from the upstream, or ``entry``
        confirmed by a 304. Raises the SourceError that ended it."""
        try:
            return await self._fetch(source, search, entry, budget)
        except SourceError as exc:
            stats = self.client.stats[source.id]
            stats.last_error = exc
            stats.last_error_at = self.clock.now()
            log.info("source %s failed: %s %s", source.id, exc.code, exc.message)
            raise

    async def _fetch(
        self, source: SourceConfig, search: str | None, entry: CachedFeed | None, budget: Deadline
    ) -> CachedFeed:
        adapter = ADAPTERS[source.kind]
        stats = self.client.stats[source.id]
        spec = adapter.request(source, search, entry.validators if entry else None)

        async def parse(resp: UpstreamResponse) -> _Answer:
            if resp.not_modified:
                return None
            parsed = await self.parser.run(parse_body, resp.content, source.kind, source.id, source.page_size)
            return parsed, Validators.of(resp.headers)

        answer = await self.client.call(source, spec, budget, parse)
        now = self.clock.now()
        if answer is None:
            if entry is None:
                raise BadPayload(f"{source.id}: HTTP 304 to a request that was not conditional")
            stats.not_modified += 1
            stats.last_success_at = now
            return replace(entry, fetched_at=now)
        parsed, validators = answer
        if isinstance(parsed, StoryIds):  # the second phase: the stories themselves
            assert isinstance(adapter, HackerNewsAdapter)
            parsed = adapter.assemble(source, parsed, await self.items.stories(source, parsed.ids, budget))
        stats.dropped_rows += parsed.dropped
        stats.last_success_at = now
        return CachedFeed.build(parsed.articles, parsed.dropped, now, validators)
