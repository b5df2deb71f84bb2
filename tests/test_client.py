"""The client policy (breaker ─► bulkheads ─► retry budget ─► HTTP ─► parse) against a
real server on 127.0.0.1, with the clock stepped by hand."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

from gateway.errors import (
    BadPayload,
    BulkheadFull,
    CircuitOpen,
    DeadlineExceeded,
    UpstreamHTTPError,
    UpstreamTimeout,
)
from gateway.resilience.breaker import BreakerState
from gateway.resilience.deadline import Deadline
from gateway.service.client import SourceClient
from gateway.settings import BreakerSettings, SourceConfig
from gateway.sources.base import RequestSpec
from gateway.upstream import UpstreamClient, UpstreamResponse
from tests.clock import FakeClock

SOURCE = SourceConfig(
    id="src", name="Src", kind="feed", url="http://unused.invalid/", timeout_ms=300, max_concurrency=1,
    breaker=BreakerSettings(failure_threshold=2, recovery_s=30),
)
PATIENT = SourceConfig(id="patient", name="Patient", kind="feed", url="http://unused.invalid/", timeout_ms=30_000,
                       max_concurrency=1)


class Upstream:
    def __init__(self) -> None:
        self.calls: dict[str, int] = {}
        self.release = asyncio.Event()

    async def handle(self, request: web.Request) -> web.Response:
        path = request.path
        self.calls[path] = self.calls.get(path, 0) + 1
        if path == "/ok":
            return web.Response(text="fine")
        if path == "/flaky" and self.calls[path] == 1:
            return web.Response(status=503)
        if path == "/flaky":
            return web.Response(text="second time lucky")
        if path == "/500":
            return web.Response(status=500)
        if path == "/hang":
            await self.release.wait()
            return web.Response(text="late")
        return web.Response(status=404)


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[Upstream, str]]:
    up = Upstream()
    app = web.Application()
    app.router.add_route("GET", "/{tail:.*}", up.handle)
    runner = web.AppRunner(app, handle_signals=False)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield up, f"http://127.0.0.1:{runner.addresses[0][1]}"
    up.release.set()
    await runner.cleanup()


@pytest.fixture
async def client() -> AsyncIterator[tuple[SourceClient, FakeClock]]:
    clock = FakeClock()
    http = UpstreamClient(max_connections=10, max_body_bytes=1 << 20, clock=clock)
    yield SourceClient(http, [SOURCE, PATIENT], max_outbound=10, clock=clock), clock
    await http.aclose()


async def text(resp: UpstreamResponse) -> str:
    return resp.content.decode()


async def test_success_and_retry_within_the_budget(upstream, client) -> None:  # type: ignore[no-untyped-def]
    up, url = upstream
    c, clock = client
    budget = Deadline.after(5, clock)
    for _ in range(10):  # calls the retry budget is a share of
        assert await c.call(SOURCE, RequestSpec(f"{url}/ok"), budget, text) == "fine"
    assert await c.call(SOURCE, RequestSpec(f"{url}/flaky"), budget, text) == "second time lucky"
    assert up.calls["/flaky"] == 2
    assert c.stats["src"].retries == 1 and c.stats["src"].upstream_calls == 12


async def test_upstream_failures_open_the_breaker_and_it_then_refuses(upstream, client) -> None:  # type: ignore[no-untyped-def]
    up, url = upstream
    c, clock = client
    for _ in range(2):
        with pytest.raises(UpstreamHTTPError):
            await c.call(SOURCE, RequestSpec(f"{url}/500"), Deadline.after(5, clock), text)
    assert c.breakers["src"].state is BreakerState.OPEN
    with pytest.raises(CircuitOpen):
        await c.call(SOURCE, RequestSpec(f"{url}/ok"), Deadline.after(5, clock), text)
    assert "/ok" not in up.calls
    clock.advance(30)  # recovery: one probe, which succeeds and closes it
    assert await c.call(SOURCE, RequestSpec(f"{url}/ok"), Deadline.after(5, clock), text) == "fine"
    assert c.breakers["src"].state is BreakerState.CLOSED


async def test_an_unusable_body_counts_against_the_breaker(upstream, client) -> None:  # type: ignore[no-untyped-def]
    _, url = upstream
    c, clock = client

    async def refuse(resp: UpstreamResponse) -> str:
        raise BadPayload("not a feed")

    with pytest.raises(BadPayload):
        await c.call(SOURCE, RequestSpec(f"{url}/ok"), Deadline.after(5, clock), refuse)
    assert c.breakers["src"].snapshot().failures == 1


async def test_our_own_rejections_never_count(upstream, client) -> None:  # type: ignore[no-untyped-def]
    up, url = upstream
    c, clock = client
    # A budget shorter than the source's timeout cuts the call short: our deadline.
    with pytest.raises(DeadlineExceeded):
        await c.call(SOURCE, RequestSpec(f"{url}/hang"), _Ticking(0.1).deadline(), text)
    assert up.calls["/hang"] == 1  # it was sent, and cut short by us
    # A full bulkhead (max_concurrency 1, one call hanging): refused, not failed.
    hanging = asyncio.ensure_future(c.call(PATIENT, RequestSpec(f"{url}/hang"), Deadline.after(60, clock), text))
    while up.calls["/hang"] < 2:
        await asyncio.sleep(0.01)
    with pytest.raises(BulkheadFull):
        await c.call(PATIENT, RequestSpec(f"{url}/ok"), _Ticking(0.05).deadline(), text)
    up.release.set()
    assert await hanging == "late"
    assert c.breakers["src"].snapshot().failures == 0
    assert c.breakers["patient"].snapshot().failures == 0
    # ...while the upstream's own timeout does count.
    up.release.clear()
    with pytest.raises(UpstreamTimeout):
        await c.call(SOURCE, RequestSpec(f"{url}/hang"), Deadline.after(5, clock), text)
    assert c.breakers["src"].snapshot().failures == 1


class _Ticking:
    """A clock whose deadline lapses in real time: for the checks that are about our
    own deadline cutting a real wait short."""

    def __init__(self, seconds: float) -> None:
        from gateway.resilience.clock import SystemClock

        self._clock = SystemClock()
        self.seconds = seconds

    def monotonic(self) -> float:
        return self._clock.monotonic()

    def now(self):  # type: ignore[no-untyped-def]
        return self._clock.now()

    def deadline(self) -> Deadline:
        return Deadline.after(self.seconds, self)
