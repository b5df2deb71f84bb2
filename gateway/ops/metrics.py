"""Prometheus metrics (prometheus-client), correct with ``--workers N``.

Each app builds its own :class:`Metrics` on a private registry, so two apps in one
process share nothing. With ``PROMETHEUS_MULTIPROC_DIR`` set (``gateway serve`` sets it
for several workers), prometheus-client keeps every value in a file per process and
:meth:`Metrics.render` sums all workers' files: one scrape, whichever worker answers
it, shows the whole process group. The private registry is then only where metrics
are created, never collected, as the multiprocess documentation requires.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import Callable
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.resilience.breaker import BreakerState
from gateway.resilience.clock import Clock

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
#: GraphQL operation names beyond this many distinct ones (per process) count as "other".
MAX_OPERATION_NAMES = 100
LOOP_LAG_INTERVAL_S = 0.25
POOL_SAMPLE_INTERVAL_S = 5.0
#: Routes with a label of their own; anything else is "other" (bounded cardinality).
ROUTES = ("/", "/livez", "/readyz", "/metrics", "/graphql", "/status")
STATIC_PREFIX = "/graphiql/static"

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self.multiprocess = bool(os.environ.get(MULTIPROC_ENV))
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.http_requests = Counter(
            "gateway_http_requests", "HTTP requests answered.", ["route", "method", "status"], registry=r
        )
        self.graphql_operations = Counter(
            "gateway_graphql_operations", "GraphQL operations executed.",
            ["operation_name", "operation_type", "outcome"], registry=r,
        )
        self.graphql_duration = Histogram(
            "gateway_graphql_duration_seconds", "Time to execute a GraphQL operation.", buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.upstream_requests = Counter(
            "gateway_upstream_requests", "Upstream HTTP calls, by outcome (ok or an error code).",
            ["source", "outcome"], registry=r,
        )
        self.upstream_duration = Histogram(
            "gateway_upstream_duration_seconds", "Upstream call time, parse included.", ["source"],
            buckets=LATENCY_BUCKETS, registry=r,
        )
        self.source_results = Counter(
            "gateway_source_results", "Per-source outcomes in answers.", ["source", "status"], registry=r
        )
        self.breaker_state = Gauge(
            "gateway_breaker_state", "1 for a source's current breaker state (the highest across workers).",
            ["source", "state"], multiprocess_mode="livemax", registry=r,
        )
        self.cache_operations = Counter(
            "gateway_cache_operations", "Feed cache lookups by layer (memory, postgres) and result (hit, miss).",
            ["layer", "result"], registry=r,
        )
        self.db_pool_connections = Gauge(
            "gateway_db_pool_connections", "Database pool connections by state (idle, busy).", ["state"],
            multiprocess_mode="livesum", registry=r,
        )
        self.rate_limited = Counter("gateway_rate_limited", "Requests refused by a client's rate limit.", registry=r)
        self.event_loop_lag = Gauge(
            "gateway_event_loop_lag_seconds", "How late the event loop ran a timer, lately (worst worker).",
            multiprocess_mode="livemax", registry=r,
        )
        self.live_subscribers = Gauge(
            "gateway_live_subscribers", "Open live subscriptions (Subscription.articleAdded), every worker summed.",
            multiprocess_mode="livesum", registry=r,
        )
        self.live_ended = Counter(
            "gateway_live_ended", "Live subscriptions the gateway ended, by reason (SLOW_CONSUMER, SHUTTING_DOWN).",
            ["reason"], registry=r,
        )
        self._operation_names: set[str] = set()
        # Label children by their values: prometheus-client's labels() validates and
        # locks on every call, a cost the warm path pays per request and per source.
        self._children: dict[tuple[object, ...], Any] = {}
        # Counter increments of the request path (bump(), count_deferred()), added to
        # their counters by flush(): a request then costs dict additions, not a locked
        # inc() per label set (prometheus-client has no batching of its own): about 15
        # per executed request. Flushed by the sampler every LOOP_LAG_INTERVAL_S,
        # before this process renders a scrape, and at exit.
        self._deferred: dict[Any, int] = {}

    def child(self, metric: Any, *values: str) -> Any:
        key = (id(metric), *values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def source_result(self, source_id: str, status: str) -> None:
        self.bump(self.child(self.source_results, source_id, status))

    # -- recording ------------------------------------------------------------------
    def operation(self, name: str | None, operation_type: str, outcome: str, seconds: float) -> None:
        self.bump(self.child(self.graphql_operations, self._operation_label(name), operation_type, outcome))
        self.graphql_duration.observe(seconds)

    def _operation_label(self, name: str | None) -> str:
        if not name:
            return "anonymous"
        if name not in self._operation_names:
            if len(self._operation_names) >= MAX_OPERATION_NAMES:
                return "other"
            self._operation_names.add(name)
        return name

    def replay(self, operation: tuple[str | None, str, str] | None,
               statuses: tuple[tuple[str, str], ...]) -> list[tuple[Any, int]]:
        """The counters one answer moves, with how much, for answering it again from a
        cache: resolved once per cached answer, not per hit. (A hit runs nothing: it is
        not in the duration histogram.)"""
        counts: dict[Any, int] = {}
        if operation is not None:
            name, op_type, outcome = operation
            child = self.child(self.graphql_operations, self._operation_label(name), op_type, outcome)
            counts[child] = 1
        for source_id, status in statuses:
            child = self.child(self.source_results, source_id, status)
            counts[child] = counts.get(child, 0) + 1
        return list(counts.items())

    def bump(self, counter: Any) -> None:
        """``counter.inc()``, deferred to the next :meth:`flush` (a dict addition now)."""
        deferred = self._deferred
        deferred[counter] = deferred.get(counter, 0) + 1

    def count_deferred(self, counters: list[tuple[Any, int]]) -> None:
        deferred = self._deferred
        for counter, n in counters:
            deferred[counter] = deferred.get(counter, 0) + n

    def flush(self) -> None:
        deferred, self._deferred = self._deferred, {}
        for counter, n in deferred.items():
            counter.inc(n)

    def upstream(self, source_id: str, outcome: str, seconds: float) -> None:
        self.child(self.upstream_requests, source_id, outcome).inc()
        self.child(self.upstream_duration, source_id).observe(seconds)

    def breaker_changed(self, source_id: str, old: BreakerState, new: BreakerState) -> None:
        for state in BreakerState:
            self.breaker_state.labels(source_id, state.value).set(1 if state is new else 0)

    # -- exposition -------------------------------------------------------------------
    def render(self) -> bytes:
        self.flush()
        if self.multiprocess:
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)

    async def endpoint(self, request: Request) -> Response:
        # Reading every worker's files is blocking file I/O: off the event loop.
        body = await asyncio.to_thread(self.render) if self.multiprocess else self.render()
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    def process_exited(self) -> None:
        """This worker's live gauges leave the sums (multiprocess mode)."""
        self.flush()
        if self.multiprocess:
            multiprocess.mark_process_dead(os.getpid())


class HTTPMetrics:
    """ASGI middleware with one job: count every HTTP answer by route, method and status."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500  # what the client sees if nothing is sent (uvicorn answers 500)

        async def counting(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, counting)
        finally:
            metrics = self.metrics
            metrics.bump(metrics.child(metrics.http_requests, route_label(scope["path"]), scope["method"], str(status)))


def route_label(path: str) -> str:
    if path in ROUTES:
        return path
    if path.startswith(STATIC_PREFIX):
        return STATIC_PREFIX
    return "other"


async def sample_forever(metrics: Metrics, clock: Clock, pool_sizes: Callable[[], tuple[int, int]]) -> None:
    """Event-loop lag (how late a timer fired) and the pool's connections, sampled."""
    next_pool = clock.monotonic()
    while True:
        if clock.monotonic() >= next_pool:
            size, idle = pool_sizes()
            metrics.db_pool_connections.labels("idle").set(idle)
            metrics.db_pool_connections.labels("busy").set(size - idle)
            next_pool = clock.monotonic() + POOL_SAMPLE_INTERVAL_S
        metrics.flush()
        before = clock.monotonic()
        await asyncio.sleep(LOOP_LAG_INTERVAL_S)
        metrics.event_loop_lag.set(max(0.0, clock.monotonic() - before - LOOP_LAG_INTERVAL_S))


async def cancel(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
