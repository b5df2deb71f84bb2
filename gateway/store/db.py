"""The asyncpg pool, wrapped so a database that went away degrades instead of failing.

Every query goes through :meth:`Database.run`, which bounds the wait for a
connection and the query itself, maps driver and socket errors to
:class:`~gateway.errors.DatabaseUnavailable`, and, after a connection failure,
fails fast for a short back-off so requests do not each wait for a dead server
(they answer from upstreams instead). The pool reconnects by itself: asyncpg
replaces broken connections on the next acquire.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
import orjson
from opentelemetry.trace import SpanKind

from gateway.errors import DatabaseUnavailable
from gateway.resilience.clock import Clock

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

log = logging.getLogger("gateway.store")
T = TypeVar("T")

_DB_SPAN = {"db.system.name": "postgresql"}

#: After a connection-level failure, skip the database for this long.
DOWN_BACKOFF_S = 0.5


class GatewayConnection(asyncpg.Connection):
    """A pooled connection whose release costs no round-trip, with its hot statements
    prepared when it opens.

    asyncpg resets every connection on release with ``UNLISTEN *; RESET ALL; ...``,
    an extra statement per checkout. We keep no session state on pooled
    connections (no LISTEN, session advisory locks, SET or cursors outside a
    transaction; LISTEN uses its own connection), and asyncpg still rolls back an
    open transaction on release, so the reset statement is skipped
    (``get_reset_query`` is public API from asyncpg 0.30).
    """

    def get_reset_query(self) -> str:
        return ""

    async def warm_statements(self, statements: Mapping[str, tuple[Any, ...]]) -> None:
        """Run each hot statement once, with harmless arguments, in a transaction that is
        rolled back, so that asyncpg's statement cache (which ``fetch`` and ``execute``
        use) holds it prepared before the first request needs it.

        Otherwise a statement's first use on each connection costs two round-trips
        (Parse/Describe, then Bind/Execute), and the first needs the event loop free
        to read its answer: under a burst, that wait put the cache-read-and-lease bid
        and the write other workers wait for several milliseconds behind the burst.
        (asyncpg's public ``prepare()`` does not help: its statements are invalidated
        when the connection goes back to the pool.)
        """
        transaction = self.transaction()
        await transaction.start()
        try:
            for query, args in statements.items():
                await self.fetch(query, *args)
        finally:
            await transaction.rollback()


def _is_stale_connection(exc: BaseException) -> bool:
    """An established connection that died under us (the server restarted or closed
    it), as opposed to a server we cannot reach at all."""
    if isinstance(exc, asyncpg.exceptions.InterfaceError):
        # InterfaceError also covers client-side misuse (bad arguments); only a
        # closed connection is a reason to retry.
        return "closed" in str(exc)
    return isinstance(
        exc,
        asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.AdminShutdownError
        | ConnectionResetError
        | BrokenPipeError,
    )


def _is_connection_error(exc: BaseException) -> bool:
    return isinstance(
        exc,
        OSError
        | asyncpg.exceptions.ConnectionDoesNotExistError
        | asyncpg.exceptions.InterfaceError
        | asyncpg.exceptions.CannotConnectNowError
        | asyncpg.exceptions.AdminShutdownError
        | asyncpg.exceptions.CrashShutdownError
        | asyncpg.exceptions.ConnectionFailureError
        | asyncpg.exceptions.TooManyConnectionsError,
    )


class Database:
    """A pool plus the bookkeeping operators and tests look at."""

    def __init__(
        self, pool: asyncpg.Pool, *, command_timeout_s: float, clock: Clock, tracer: Tracer | None = None
    ) -> None:
        self.pool = pool
        self.clock = clock
        self.tracer = tracer
        self.command_timeout_s = command_timeout_s
        self.queries = 0  # statements sent, counted by asyncpg's query logger
        self.query_log: list[str] | None = None  # set to [] to record statement texts (tests)
        self.last_error: str | None = None
        self._down_until = 0.0

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        min_size: int,
        max_size: int,
        connect_timeout_s: float,
        command_timeout_s: float,
        clock: Clock,
        tracer: Tracer | None = None,
        setup: Callable[[asyncpg.Connection], Awaitable[object]] | None = None,
        warm: Mapping[str, tuple[Any, ...]] | None = None,
    ) -> Database:
        """Open the pool. ``setup`` (migrations) runs first, once, on a connection of
        its own, so that every pooled connection can prepare the ``warm`` statements
        (query -> harmless arguments) when it opens (they name tables the migrations
        create)."""
        db: Database | None = None

        def on_query(record: Any) -> None:
            if db is not None:
                db.queries += 1
                if db.query_log is not None:
                    db.query_log.append(record.query)

        async def init(conn: GatewayConnection) -> None:
            await conn.set_type_codec("jsonb", encoder=_dumps, decoder=orjson.loads, schema="pg_catalog")
            # asyncpg introspects array types on first use (three extra statements);
            # do it here, at connect time, not in the middle of somebody's request.
            await conn.fetchrow(
                "SELECT $1::text[], $2::bigint[], $3::jsonb[], $4::timestamptz[]", [], [], [], []
            )
            if warm:
                await conn.warm_statements(warm)
            conn.add_query_logger(on_query)

        if setup is not None:
            try:
                first = await asyncpg.connect(url, timeout=connect_timeout_s, command_timeout=command_timeout_s)
            except (OSError, asyncpg.PostgresError, asyncpg.exceptions.InterfaceError, TimeoutError) as exc:
                raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
            try:
                await setup(first)
            except BaseException:
                first.terminate()  # a graceful close could fail too and hide this error
                raise
            await first.close()
        try:
            pool = await asyncpg.create_pool(
                url,
                min_size=min_size,
                max_size=max_size,
                timeout=connect_timeout_s,
                command_timeout=command_timeout_s,
                init=init,
                connection_class=GatewayConnection,
                # asyncpg drops cached statements 5 minutes after preparing them by
                # default, used or not: keep the ones init prepared for good.
                max_cached_statement_lifetime=0,
                # Connections idle for a while are closed, so a restarted server's
                # stale sockets are not handed out for long.
                max_inactive_connection_lifetime=60.0,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.exceptions.InterfaceError, TimeoutError) as exc:
            raise DatabaseUnavailable(f"cannot connect to PostgreSQL: {exc}") from exc
        db = cls(pool, command_timeout_s=command_timeout_s, clock=clock, tracer=tracer)
        return db

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.pool.close(), timeout=5)
        except TimeoutError:
            self.pool.terminate()

    @property
    def available(self) -> bool:
        """False while backing off after a connection failure."""
        return self.clock.monotonic() >= self._down_until

    async def run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], *, timeout_s: float | None = None) -> T:
        """Run ``fn(conn)`` on a pooled connection within ``timeout_s`` (acquire included).

        ``fn`` must be safe to run twice: a connection that died while idle (Postgres
        restarted) fails on first use, and the call is retried once on a fresh one."""
        if not self.available:
            raise DatabaseUnavailable("database unavailable")
        if self.tracer is not None:
            with self.tracer.start_as_current_span("postgresql", kind=SpanKind.CLIENT, attributes=_DB_SPAN):
                return await self._run(fn, timeout_s)
        return await self._run(fn, timeout_s)

    async def _run(self, fn: Callable[[asyncpg.Connection], Awaitable[T]], timeout_s: float | None) -> T:
        timeout = self.command_timeout_s if timeout_s is None else min(timeout_s, self.command_timeout_s)
        try:
            async with asyncio.timeout(timeout):
                try:
                    async with self.pool.acquire() as conn:
                        return await fn(conn)
                except Exception as exc:
                    if not _is_stale_connection(exc):
                        raise
                    # Every pooled connection predates the restart: replace them all.
                    log.info("database connection lost (%s); retrying on a fresh one", type(exc).__name__)
                    await self.pool.expire_connections()
                    async with self.pool.acquire() as conn:
                        return await fn(conn)
        except TimeoutError:
            self.last_error = f"no answer within {timeout * 1000:.0f} ms"
            raise DatabaseUnavailable("database timed out") from None
        except Exception as exc:
            if _is_connection_error(exc):
                self.last_error = f"{type(exc).__name__}: {exc}"
                self._down_until = self.clock.monotonic() + DOWN_BACKOFF_S
                log.warning("database unavailable: %s", self.last_error)
                # Clients get no host names or driver messages; operators get the log line.
                raise DatabaseUnavailable("database unavailable") from exc
            raise

    def reset_backoff(self) -> None:
        """Forget a recent failure: health checks must notice recovery at once."""
        self._down_until = 0.0

    async def ping(self, *, timeout_s: float = 1.0) -> float:
        """Round-trip ``SELECT 1``; returns the latency in ms. Ignores the back-off,
        so health checks notice recovery."""
        self.reset_backoff()
        started = self.clock.monotonic()
        await self.run(lambda conn: conn.fetchval("SELECT 1"), timeout_s=timeout_s)
        return (self.clock.monotonic() - started) * 1000


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()
