"""The policy every upstream call goes through: breaker ─► bulkheads ─► retry budget
─► the one HTTP path (:class:`~gateway.upstream.UpstreamClient`), then the adapter's
parse, all within the caller's budget.

An unusable body (``BadPayload`` from ``parse``) counts against the breaker like a
failed call. Our own rejections (an open breaker, a full bulkhead, our deadline cutting
a call or a parse short, a caller going away) never do.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, TypeVar

from opentelemetry.trace import SpanKind

from gateway.errors import BadPayload, DeadlineExceeded, SourceError, UpstreamError, UpstreamTimeout
from gateway.resilience.breaker import BreakerState, CircuitBreaker
from gateway.resilience.bulkhead import Bulkhead
from gateway.resilience.clock import Clock
from gateway.resilience.deadline import Deadline
from gateway.resilience.retry import RetryBudget, retry_delay
from gateway.settings import SourceConfig
from gateway.sources.base import RequestSpec
from gateway.upstream import UpstreamClient, UpstreamResponse

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer

    from gateway.ops.metrics import Metrics

log = logging.getLogger("gateway.service")
T = TypeVar("T")

#: The shortest timeout handed to an I/O wait (asyncio.timeout(0) would not wait at all).
MIN_WAIT_S = 0.001


@dataclass(slots=True)
class SourceStats:
    """Per-source counters for health and operators."""

    upstream_calls: int = 0
    retries: int = 0
    not_modified: int = 0
    dropped_rows: int = 0
    last_success_at: datetime | None = None
    last_error: SourceError | None = None
    last_error_at: datetime | None = None


class SourceClient:
    """One per process: the breakers, bulkheads, retry budgets and counters of every
    source, in front of the one HTTP client."""

    def __init__(
        self,
        http: UpstreamClient,
        sources: Iterable[SourceConfig],
        *,
        max_outbound: int,
        clock: Clock,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self.http = http
        self.clock = clock
        self.metrics = metrics
        self.tracer = tracer
        sources = tuple(sources)
        on_change = metrics.breaker_changed if metrics is not None else None
        self.breakers = {
            s.id: CircuitBreaker(s.id, s.breaker, clock=clock, on_state_change=on_change) for s in sources
        }
        if metrics is not None:
            for s in sources:
                metrics.breaker_changed(s.id, BreakerState.CLOSED, BreakerState.CLOSED)
        self.global_bulkhead = Bulkhead("global", max_outbound)
        self.bulkheads = {s.id: Bulkhead(s.id, s.max_concurrency) for s in sources}
        self.retry_budgets = {s.id: RetryBudget(clock) for s in sources}
        self.stats = {s.id: SourceStats() for s in sources}

    async def call(
        self,
        source: SourceConfig,
        spec: RequestSpec,
        budget: Deadline,
        parse: Callable[[UpstreamResponse], Awaitable[T]],
    ) -> T:
        """GET ``spec`` and return ``await parse(response)`` (a 304 included)."""
        started = self.clock.monotonic()
        outcome = "ok"
        try:
            return await self._call(source, spec, budget, parse)
        except SourceError as exc:
            outcome = exc.code
            raise
        except BaseException:
            outcome = "cancelled"
            raise
        finally:
            if self.metrics is not None and outcome != "CIRCUIT_OPEN":  # no call was made
                self.metrics.upstream(source.id, outcome, self.clock.monotonic() - started)

    async def _send(self, source: SourceConfig, spec: RequestSpec, timeout_s: float) -> UpstreamResponse:
        if self.tracer is None:
            return await self.http.get(spec, timeout_s=timeout_s)
        attributes = {"http.request.method": "GET", "url.full": spec.url, "gateway.source.id": source.id}
        with self.tracer.start_as_current_span("GET", kind=SpanKind.CLIENT, attributes=attributes) as span:
            try:
                resp = await self.http.get(spec, timeout_s=timeout_s)
            except SourceError as exc:
                if exc.http_status is not None:
                    span.set_attribute("http.response.status_code", exc.http_status)
                span.set_attribute("error.type", exc.code)
                raise
            span.set_attribute("http.response.status_code", resp.status)
            return resp

    async def _call(
        self,
        source: SourceConfig,
        spec: RequestSpec,
        budget: Deadline,
        parse: Callable[[UpstreamResponse], Awaitable[T]],
    ) -> T:
        breaker = self.breakers[source.id]
        retries = self.retry_budgets[source.id]
        stats = self.stats[source.id]
        attempt = 1
        while True:
            remaining = budget.remaining()
            if remaining <= 0:
                raise DeadlineExceeded(f"{source.id}: request deadline reached before calling the upstream")
            permit = breaker.acquire()  # CircuitOpen propagates: never retry into an open breaker
            capped = False
            try:
                async with self.global_bulkhead.slot(timeout_s=remaining), self.bulkheads[source.id].slot(
                    timeout_s=remaining
                ):
                    stats.upstream_calls += 1
                    retries.record_call()
                    # After the bulkhead wait: what is left of our budget may be less
                    # than the source's timeout, and then a timeout is ours, not theirs.
                    timeout = min(source.timeout_s, budget.remaining())
                    capped = timeout < source.timeout_s
                    resp = await self._send(source, spec, max(timeout, MIN_WAIT_S))
                async with asyncio.timeout(max(budget.remaining(), MIN_WAIT_S)):
                    result = await parse(resp)
            except TimeoutError:  # parsing outlived the budget: our limit, not the upstream's fault
                breaker.ignore(permit)
                raise DeadlineExceeded(f"{source.id}: parsing the answer outlived the request deadline") from None
            except UpstreamTimeout:
                if capped:  # we cut the call short for our own deadline: not the upstream's fault
                    breaker.ignore(permit)
                    raise DeadlineExceeded(
                        f"{source.id}: request deadline reached while waiting for the upstream"
                    ) from None
                breaker.failure(permit)
                raise
            except BadPayload:
                breaker.failure(permit)
                raise
            except UpstreamError as exc:
                breaker.failure(permit)
                delay = retry_delay(exc, attempt, budget.remaining())
                if delay is None or not retries.try_spend():
                    raise
                stats.retries += 1
                log.info("retrying %s in %.2f s after %s (attempt %d)", source.id, delay, exc.code, attempt + 1)
                await asyncio.sleep(delay)
                attempt += 1
                continue
            except BaseException:  # BulkheadFull, cancellation, bugs: say nothing about the upstream
                breaker.ignore(permit)
                raise
            breaker.success(permit)
            return result
