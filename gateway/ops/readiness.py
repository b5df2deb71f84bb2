"""``/readyz`` and the drain on SIGTERM.

Ready means this worker can answer from everything it depends on: the database
answers, every migration this code knows is applied, and the parser process is up
(when feeds are configured). Otherwise 503 with the reasons, as JSON. The database
check ignores the pool's back-off, so readiness returns as soon as Postgres does.

Drain: with ``GATEWAY_SHUTDOWN_DELAY_S`` > 0, SIGTERM first turns ``/readyz`` to 503
while requests are still served, so a load balancer takes the worker out of
rotation; only after the delay is the signal handed to uvicorn, which stops
accepting connections and lets in-flight requests finish (its graceful shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from types import FrameType
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from gateway.errors import DatabaseUnavailable
from gateway.store.migrate import load_migrations

if TYPE_CHECKING:
    from gateway.services import Services

log = logging.getLogger("gateway")

READY_CHECK_TIMEOUT_S = 1.0


class Readiness:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.draining = False
        self._versions = [m.version for m in load_migrations()]

    async def reasons(self) -> list[str]:
        """Why this worker is not ready; empty when it is."""
        reasons: list[str] = []
        if self.draining:
            reasons.append("shutting down")
        services = self.services
        if any(s.kind == "feed" for s in services.settings.sources) and not services.parser.started:
            reasons.append("the parser process is not running")
        services.db.reset_backoff()  # a health check must see recovery at once
        try:
            applied = await services.db.run(
                lambda conn: conn.fetchval(
                    "SELECT count(*) FROM schema_migrations WHERE version = ANY($1::int[])", self._versions
                ),
                timeout_s=READY_CHECK_TIMEOUT_S,
            )
        except DatabaseUnavailable as exc:
            reasons.append(f"database: {exc.message}")
        else:
            if applied != len(self._versions):
                reasons.append(f"database: {len(self._versions) - applied} migration(s) not applied")
        return reasons

    async def endpoint(self, request: Request) -> JSONResponse:
        reasons = await self.reasons()
        if reasons:
            return JSONResponse({"status": "unavailable", "reasons": reasons}, status_code=503)
        return JSONResponse({"status": "ready"})


class Drain:
    """Holds SIGTERM back for ``delay_s`` while /readyz says 503 (see the module doc),
    and runs ``on_stop`` (ending live streams) just before handing a SIGTERM or SIGINT
    to uvicorn: its graceful shutdown waits for open connections, and a stream ended
    by us closes cleanly instead of being cut at the timeout."""

    def __init__(self, readiness: Readiness, delay_s: float, *, on_stop: Sequence[Callable[[], None]] = ()) -> None:
        self.readiness = readiness
        self.delay_s = delay_s
        self.on_stop = tuple(on_stop)
        self._previous: dict[int, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def install(self) -> None:
        # Only the main thread may set handlers (tests run apps elsewhere too), and only
        # a delay or something to stop needs one: otherwise uvicorn's handler does everything.
        if threading.current_thread() is not threading.main_thread():
            return
        if self.delay_s <= 0 and not self.on_stop:
            return
        self._loop = asyncio.get_running_loop()
        self._previous[signal.SIGTERM] = signal.signal(signal.SIGTERM, self._on_term)
        if self.on_stop:
            self._previous[signal.SIGINT] = signal.signal(signal.SIGINT, self._on_int)

    def uninstall(self) -> None:
        for signum, previous in self._previous.items():
            if previous is not None and signal.getsignal(signum) in (self._on_term, self._on_int):
                signal.signal(signum, previous)
        self._previous = {}

    def _on_term(self, signum: int, frame: FrameType | None) -> None:
        if self.readiness.draining:
            return
        self.readiness.draining = True
        assert self._loop is not None
        if self.delay_s > 0:
            log.info("SIGTERM: draining for %.1f s before shutting down", self.delay_s)
            self._loop.call_soon_threadsafe(self._loop.call_later, self.delay_s, self._hand_over, signum)
        else:
            self._loop.call_soon_threadsafe(self._hand_over, signum)

    def _on_int(self, signum: int, frame: FrameType | None) -> None:
        self.readiness.draining = True
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self._hand_over, signum)

    def _hand_over(self, signum: int) -> None:
        for stop in self.on_stop:
            stop()
        previous = self._previous.get(signum)
        self.uninstall()
        if callable(previous):
            previous(signum, None)  # uvicorn's handle_exit: graceful shutdown from here
        else:
            signal.raise_signal(signum)
