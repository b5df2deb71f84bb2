"""A dedicated LISTEN connection that wakes local waiters when another process
wrote a cache row. Best effort: waiters also poll, so a dropped connection costs
latency, never correctness. Reconnects by itself with a capped back-off."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable

import asyncpg

from gateway.store.leases import CHANNEL

log = logging.getLogger("gateway.store")

RECONNECT_MIN_S = 0.2
RECONNECT_MAX_S = 5.0


class CacheListener:
    def __init__(self, url: str) -> None:
        self._url = url
        self._waiters: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._task: asyncio.Task[None] | None = None
        self._subscribers: list[Callable[[str | None], None]] = []
        self.connected = asyncio.Event()

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="gateway-cache-listener")

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    @contextlib.contextmanager
    def watch(self, source_id: str, key: str):  # type: ignore[no-untyped-def]
        """``with listener.watch(s, k) as event: await event.wait()``"""
        name = f"{source_id}|{key}"
        event = asyncio.Event()
        self._waiters[name].add(event)
        try:
            yield event
        finally:
            waiters = self._waiters.get(name)
            if waiters is not None:
                waiters.discard(event)
                if not waiters:
                    del self._waiters[name]

    def subscribe(self, callback: Callable[[str | None], None]) -> Callable[[], None]:
        """Call ``callback(payload)`` ("source_id|request_key") for every cache write
        announced, by any process, and ``callback(None)`` on each (re)connect: anything
        may have been missed meanwhile. Runs on the loop: keep it short. Returns the
        unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def _on_notify(self, conn: object, pid: int, channel: str, payload: str) -> None:
        for event in self._waiters.get(payload, ()):
            event.set()
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
                self.connected.set()
                delay = RECONNECT_MIN_S
                # Wake everyone once: notifications may have been missed while away.
                for events in list(self._waiters.values()):
                    for event in events:
                        event.set()
                for callback in list(self._subscribers):
                    callback(None)
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
