"""Live updates: one hub per process fans new articles out to its subscribers.

::

    any process's refresh commits new articles ─► NOTIFY gateway_articles "SEQ|source"
        └► this process's LISTEN connection (gateway/store/listener.py) ─► LiveHub.wake
             └► one reader: SELECT articles WHERE seq > position (batches, oldest first)
                  └► each subscriber whose sources match: its bounded queue
                       full? ─► cut off with SLOW_CONSUMER (the others go on)

A subscriber that resumes (``after``: SSE ``Last-Event-ID``) registers first, then
reads what it missed from the table (at most ``replay_max``, newest first); every
subscriber drops events numbered at or below the last it delivered, so the join of
replay and live stream delivers each article once. Sequence numbers commit in order
(see gateway/store/migrations/0304_article_sequence.sql), which is what makes "read
above the last number seen" lose nothing.

The hub also keeps which sources have subscribers, for the maintenance round to
share with the leader (gateway/ops/maintenance.py), which refreshes them at their
TTL with no client query. Counting per client is per process.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter, deque
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from gateway.errors import DatabaseUnavailable, LiveRefused
from gateway.sources.base import NormalizedArticle
from gateway.store import live as queries
from gateway.store.db import Database
from gateway.store.listener import CacheListener

if TYPE_CHECKING:
    from gateway.ops.metrics import Metrics

log = logging.getLogger("gateway.live")

#: Rows read per statement by the hub's reader.
READ_BATCH = 500
#: The reader also looks by itself this often (seconds): a NOTIFY missed while the
#: LISTEN connection was away costs this much latency, not an event.
POLL_S = 5.0
#: Longest wait for one of the reader's statements.
READ_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class LiveEvent:
    """One article, numbered: ``seq`` is the SSE id and the resume cursor. ``gap``:
    articles between the resume cursor and this one were not replayed (older than
    the replay window). One object goes to every subscriber it concerns; ``memo`` is
    where the schema keeps what it made of it once for all of them (the payload, and
    its execution per document: gateway/schema/subscription.py)."""

    seq: int
    article: NormalizedArticle
    gap: bool = False
    memo: dict[object, object] = field(default_factory=dict, compare=False, repr=False)


class Subscriber:
    """A subscriber's bounded queue. The hub offers; the subscription's generator
    takes. ``ended`` says why the hub stopped it (a LiveRefused to raise)."""

    __slots__ = ("client_id", "ended", "queue", "sources", "wake")

    def __init__(self, sources: frozenset[str] | None, client_id: str) -> None:
        self.sources = sources
        self.client_id = client_id
        self.queue: deque[LiveEvent] = deque()
        self.wake = asyncio.Event()
        self.ended: LiveRefused | None = None

    def wants(self, article: NormalizedArticle) -> bool:
        return self.sources is None or article.source_id in self.sources

    def end(self, reason: LiveRefused) -> None:
        if self.ended is None:
            self.ended = reason
            self.queue.clear()
            self.wake.set()


class LiveHub:
    def __init__(
        self,
        db: Database,
        listener: CacheListener | None,
        *,
        queue_max: int,
        replay_max: int,
        per_client_max: int,
        metrics: Metrics | None = None,
    ) -> None:
        self.metrics = metrics
        self.db = db
        self.listener = listener
        self.queue_max = queue_max
        self.replay_max = replay_max
        self.per_client_max = per_client_max
        self._subscribers: set[Subscriber] = set()
        self._per_client: Counter[str] = Counter()
        self._position: int | None = None  # the highest number handed out (None: not read yet)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: object = None
        self.closing = False
        self.evicted = 0  # subscribers cut off as slow consumers (for tests and operators)

    # -- lifecycle --------------------------------------------------------------
    def start(self) -> None:
        if self.listener is not None:
            self._unsubscribe = self.listener.subscribe_articles(self._on_notify)
        self._task = asyncio.create_task(self._run(), name="gateway-live-hub")

    def close(self) -> None:
        """End every stream cleanly (SHUTTING_DOWN) and take no new ones: the drain on
        SIGTERM calls it, before the server waits for open connections to finish."""
        self.closing = True
        for sub in list(self._subscribers):
            sub.end(LiveRefused("the gateway is shutting down; reconnect to resume", code="SHUTTING_DOWN"))
            self._count_end("SHUTTING_DOWN")

    async def aclose(self) -> None:
        self.close()
        if callable(self._unsubscribe):
            self._unsubscribe()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def clients(self) -> dict[str, int]:
        """Open subscriptions here by client id."""
        return dict(self._per_client)

    def subscribed_sources(self) -> set[str] | None:
        """Sources some subscriber here follows; None: one follows every source."""
        found: set[str] = set()
        for sub in self._subscribers:
            if sub.sources is None:
                return None
            found |= sub.sources
        return found

    # -- the reader -------------------------------------------------------------
    def _on_notify(self, seq: int | None) -> None:
        if self._subscribers and (seq is None or self._position is None or seq > self._position):
            self._wake.set()

    async def _run(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=POLL_S)
            self._wake.clear()
            if not self._subscribers:
                # Nobody to tell: no statements. The next subscriber starts from the
                # position read when it comes (those resuming read the table themselves).
                self._position = None
                continue
            try:
                await self._read()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - the database may be away; the next wake retries
                log.warning("live updates: reading new articles failed: %s: %s", type(exc).__name__, exc)

    async def _read(self) -> None:
        if self._position is None:
            self._position = await self.db.run(queries.last_seq, timeout_s=READ_TIMEOUT_S)
            return
        while True:
            position = self._position
            rows = await self.db.run(lambda conn: queries.after(conn, position, READ_BATCH), timeout_s=READ_TIMEOUT_S)
            if rows:
                self._position = rows[-1][0]
                self._fan_out([LiveEvent(seq, article) for seq, article in rows])
            if len(rows) < READ_BATCH:
                return

    def _fan_out(self, events: list[LiveEvent]) -> None:
        for sub in list(self._subscribers):
            if sub.ended is not None:
                continue
            wanted = [e for e in events if sub.wants(e.article)] if sub.sources is not None else events
            if not wanted:
                continue
            if len(sub.queue) + len(wanted) > self.queue_max:
                self.evicted += 1
                self._count_end("SLOW_CONSUMER")
                sub.end(LiveRefused(
                    f"this subscriber fell {self.queue_max} events behind and was cut off; "
                    "reconnect with the last cursor (SSE Last-Event-ID) to resume", code="SLOW_CONSUMER"))
                self.release(sub)
                continue
            sub.queue.extend(wanted)
            sub.wake.set()

    # -- subscribers ------------------------------------------------------------
    def _count_end(self, reason: str) -> None:
        if self.metrics is not None:
            self.metrics.child(self.metrics.live_ended, reason).inc()

    def release(self, sub: Subscriber) -> None:
        if sub in self._subscribers:
            self._subscribers.discard(sub)
            if self.metrics is not None:
                self.metrics.live_subscribers.dec()
            self._per_client[sub.client_id] -= 1
            if self._per_client[sub.client_id] <= 0:
                del self._per_client[sub.client_id]

    def admit(self, client_id: str, sources: Iterable[str] | None) -> Subscriber:
        """Register a subscriber (before its replay: see the module doc), or refuse."""
        if self.closing:
            raise LiveRefused("the gateway is shutting down; reconnect to another replica", code="SHUTTING_DOWN")
        if self._per_client[client_id] >= self.per_client_max:
            raise LiveRefused(
                f"this client has {self.per_client_max} subscriptions open here, the most allowed "
                "(GATEWAY_SUBSCRIPTIONS_PER_CLIENT)", code="TOO_MANY_SUBSCRIPTIONS")
        sub = Subscriber(frozenset(sources) if sources is not None else None, client_id)
        self._subscribers.add(sub)
        self._per_client[client_id] += 1
        if self.metrics is not None:
            self.metrics.live_subscribers.inc()
        if self._position is None:
            self._wake.set()
        return sub

    async def events(self, sub: Subscriber, after: int | None) -> AsyncIterator[LiveEvent]:
        """The subscriber's events: what it missed after ``after`` (from the table),
        then live ones, each once, in sequence order. Raises LiveRefused when the hub
        ends it. Unregisters when the consumer stops."""
        try:
            last = after if after is not None else None
            if after is not None:
                for event in await self._replay(sub, after):
                    last = event.seq
                    yield event
            while True:
                while sub.queue:
                    event = sub.queue.popleft()
                    if last is not None and event.seq <= last:
                        continue  # replayed already
                    last = event.seq
                    yield event
                if sub.ended is not None:
                    raise sub.ended
                sub.wake.clear()
                if not sub.queue and sub.ended is None:
                    await sub.wake.wait()
        finally:
            self.release(sub)

    async def _replay(self, sub: Subscriber, after: int) -> list[LiveEvent]:
        limit = self.replay_max + 1
        sources = sorted(sub.sources) if sub.sources is not None else None
        try:
            rows = await self.db.run(lambda conn: queries.replay(conn, after, sources, limit), timeout_s=READ_TIMEOUT_S)
        except DatabaseUnavailable:
            raise LiveRefused("cannot resume right now: the database is unavailable; retry", code="DATABASE_UNAVAILABLE") from None
        gap = len(rows) > self.replay_max
        if gap:
            rows = rows[1:]
        return [LiveEvent(seq, article, gap=gap and i == 0) for i, (seq, article) in enumerate(rows)]
