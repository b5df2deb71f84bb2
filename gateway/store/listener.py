"""A dedicated LISTEN connection (one per process) that wakes local waiters when
another process's refresh of a key ended: its cache row committed, or it failed
(and with what code); and, on a second channel, tells live subscribers that new
articles committed (:mod:`gateway.store.live`). Best effort: waiters also poll, so
a dropped connection costs latency, never correctness. Reconnects by itself with a
capped back-off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import asyncpg

from gateway.store.leases import CHANNEL, FAILURE_PREFIX, WAITING_PREFIX, parse_failure_tag
from gateway.store.live import ARTICLES_CHANNEL

log = logging.getLogger("gateway.store")

RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0


@dataclass(eq=False, slots=True)
class Watch:
    """What a waiter sees: ``event`` is set when the key's refresh ended somewhere (or
    the listener reconnected, and may have missed that); ``failure`` is the failed
    refresh's (code, HTTP status), None when it succeeded or nothing is known."""

    event: asyncio.Event = field(default_factory=asyncio.Event)
    failure: tuple[str, int | None] | None = None


class CacheListener:
    def __init__(self, url: str) -> None:
        self._url = url
        self._waiters: dict[str, set[Watch]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._subscribers: list[Callable[[str | None], None]] = []
        self._article_subscribers: list[Callable[[int | None], None]] = []
        self._waiting_subscribers: list[Callable[[str, str], None]] = []
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-cache-listener")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def watch(self, source_id: str, key: str) -> Iterator[Watch]:
        """``with listener.watch(s, k) as w: await w.event.wait()``"""
        name = f"{source_id}|{key}"
        watch = Watch()
        self._waiters[name].add(watch)
        try:
            yield watch
        finally:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.discard(watch)
                if not waiters:
                    del self._waiters[name]

    def subscribe(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """Call ``callback(payload)`` ("source_id|request_key") for every cache write
        announced, by any process, and ``callback(None)`` on each (re)connect: anything
        may have been missed meanwhile. Runs on the loop: keep it short. Returns the
        unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def subscribe_waiting(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(source_id, request_key)`` when a process starts waiting for
        another's refresh of that key (it found the lease held). Runs on the loop."""
        self._waiting_subscribers.append(callback)

    def subscribe_articles(self, callback: Callable[[int | None], None]) -> Callable[[], None]:
        """Call ``callback(seq)`` when articles up to sequence number ``seq`` committed
        (any process), and ``callback(None)`` on each (re)connect. Returns the
        unsubscribe function."""
        self._article_subscribers.append(callback)
        return lambda: (
            self._article_subscribers.remove(callback) if callback in self._article_subscribers else None
        )

    def _on_articles(self, conn: object, pid: int, channel: str, payload: str) -> None:
        seq, _, _source = payload.partition("|")
        if seq.isdigit():
            for callback in self._article_subscribers:
                callback(int(seq))

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        if payload.startswith(WAITING_PREFIX):
            source_id, _, key = payload[len(WAITING_PREFIX) :].partition("|")
            for waiting in self._waiting_subscribers:
                waiting(source_id, key)
            return
        failure: tuple[str, int | None] | None = None
        if payload.startswith(FAILURE_PREFIX):
            tag, _, payload = payload[len(FAILURE_PREFIX) :].partition("|")
            failure = parse_failure_tag(tag)
        for watch in self._waiters.get(payload, ()):
            watch.failure = failure
            watch.event.set()
        if failure is None:  # a failed refresh changed no cached data
            for callback in self._subscribers:
                callback(payload)

    async def _run(self) -> None:
        delay = RECONNECT_MIN_S
        while True:
            conn: asyncpg.Connection | None = None
            try:
                conn = await asyncpg.connect(self._url, timeout=5)
                lost = asyncio.Event()
                conn.add_termination_listener(lambda _c, ev=lost: ev.set())
                await conn.add_listener(CHANNEL, self._on_notify)
                await conn.add_listener(ARTICLES_CHANNEL, self._on_articles)
                self.connected.set()
                delay = RECONNECT_MIN_S
                # Wake everyone once: notifications may have been missed while away.
                for watches in list(self._waiters.values()):
                    for watch in watches:
                        watch.event.set()
                for callback in list(self._subscribers):
                    callback(None)
                for article_callback in list(self._article_subscribers):
                    article_callback(None)
                while not lost.is_set():
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(lost.wait(), timeout=10)
                    if not lost.is_set() and conn.is_closed():
                        break
            except asyncio.CancelledError:
                if conn is not None and not conn.is_closed():
                    conn.terminate()
                raise
            except (OSError, asyncpg.PostgresError, asyncpg.exceptions.InterfaceError, TimeoutError) as exc:
                log.debug("cache listener: %s", exc)
            self.connected.clear()
            if conn is not None and not conn.is_closed():
                conn.terminate()
            await asyncio.sleep(delay)
            delay = min(delay * 2, RECONNECT_MAX_S)
