"""Buckets shared through Postgres: two gateways (as two workers or replicas) on one
database draw from one set of limits, without a database call per request, and
keep answering when the shared store goes away."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.edge.ratelimit import RateLimiter, SharedBuckets
from gateway.settings import EdgeSettings, Settings
from tests.clock import FakeClock
from tests.conftest import sources_of
from tests.helpers import RunningGateway

BBC = {"id": "bbc", "name": "BBC News", "kind": "newsapi", "url": "{demo}/newsapi/v2/top-headlines?sources=bbc-news"}
Q6 = "{ articles(first: 5) { nodes { id } } }"
# A restore rate so slow that the time the test takes cannot refill a point.
SHARED = {"rate_limit_burst": 20, "rate_limit_per_s": 0.001, "rate_limit_sync_ms": 100}


async def test_two_workers_share_one_set_of_limits(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(sources_of(demo.url, BBC), edge=EdgeSettings(**SHARED))  # type: ignore[arg-type]
    async with RunningGateway(create_app(settings)) as a, RunningGateway(create_app(settings)) as b:
        shared_a, shared_b = a.app.state.edge.shared, b.app.state.edge.shared
        assert shared_a is not None and shared_b is not None
        for _ in range(2):
            assert (await a.post(Q6)).status_code == 200  # 12 points, charged in worker A
        await shared_a.sync_once()
        await shared_b.sync_once()
        assert round(b.app.state.edge.limiter.peer_debts["ip:127.0.0.1"][0]) == 12  # before B ever served it
        first = await b.post(Q6)  # B has learnt of A's 12: 8 left, this takes 6
        assert first.status_code == 200
        assert first.json()["extensions"]["cost"]["throttleStatus"]["currentlyAvailable"] == 2
        assert (await b.post(Q6)).status_code == 429
        await shared_b.sync_once()
        await shared_a.sync_once()
        assert (await a.post(Q6)).status_code == 429  # and A now knows what B spent
        rows = await a.services.db.pool.fetch("SELECT client_id, debt FROM rate_limit_buckets")
        assert [(r["client_id"], round(r["debt"])) for r in rows] == [("ip:127.0.0.1", 18)]


async def test_the_sync_runs_by_itself_within_100_ms(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    import asyncio

    settings = make_settings(sources_of(demo.url, BBC), edge=EdgeSettings(**SHARED))  # type: ignore[arg-type]
    async with RunningGateway(create_app(settings)) as a, RunningGateway(create_app(settings)) as b:
        assert (await a.post(Q6)).status_code == 200
        shared_b = b.app.state.edge.shared
        before = shared_b.syncs
        for _ in range(100):  # no clock to step here: the sync task is real; wait for it
            await asyncio.sleep(0.05)
            if shared_b.syncs > before + 2 and b.app.state.edge.limiter.buckets:
                break
        # B never served this client; it learns of it only if it asks. Ask once and sync.
        assert (await b.post(Q6)).status_code == 200
        for _ in range(100):
            await asyncio.sleep(0.05)
            status = b.app.state.edge.limiter.status("ip:127.0.0.1")
            if status.currently_available < 9:
                break
        assert round(status.currently_available) == 8  # 20 - 6 (A) - 6 (B)


async def test_store_down_falls_back_to_local_buckets(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(sources_of(demo.url, BBC), edge=EdgeSettings(**SHARED))  # type: ignore[arg-type]
    async with RunningGateway(create_app(settings)) as gw:
        shared = gw.app.state.edge.shared
        await gw.services.db.pool.execute("ALTER TABLE rate_limit_buckets RENAME TO rate_limit_buckets_gone")
        assert (await gw.post(Q6)).status_code == 200
        try:
            await shared.sync_once()
        except Exception as exc:  # noqa: BLE001 - what the background task would see
            shared._mark_down(exc)  # the task's own handling, run now instead of in 100 ms
        assert not shared.healthy
        for expected in (200, 200, 429):  # still limited, locally
            assert (await gw.post(Q6)).status_code == expected
        await gw.services.db.pool.execute("ALTER TABLE rate_limit_buckets_gone RENAME TO rate_limit_buckets")
        await shared.sync_once()
        assert shared.healthy


class _DownStore:
    async def reconcile(self, deltas: list[tuple[str, float, float]]) -> dict[str, float]:
        raise ConnectionRefusedError("shared store down")


async def test_fail_closed_refuses_with_503_not_500(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(sources_of(demo.url, BBC),
                             edge=EdgeSettings(rate_limit_fail_open=False, **SHARED))  # type: ignore[arg-type]
    async with RunningGateway(create_app(settings)) as gw:
        edge = gw.app.state.edge
        assert (await gw.post(Q6)).status_code == 200
        await edge.shared.aclose()  # stop the real sync; drive one against a dead store
        probe = SharedBuckets(edge.limiter, _DownStore(), interval_s=0.1, fail_open=False, clock=FakeClock())
        try:
            await probe.sync_once()
        except ConnectionRefusedError as exc:
            probe._mark_down(exc)
        resp = await gw.post(Q6)
        assert resp.status_code == 503 and resp.headers["retry-after"] == "1"
        assert resp.json()["errors"][0]["extensions"]["code"] == "RATE_LIMIT_UNAVAILABLE"
        edge.shared = None


def test_pending_deltas_survive_a_failed_sync() -> None:
    import asyncio

    limiter = RateLimiter(burst=100, per_s=1, clock=FakeClock())
    limiter.charge("c", 30)
    shared = SharedBuckets(limiter, _DownStore(), interval_s=0.1, fail_open=True, clock=limiter.clock)
    try:
        asyncio.run(shared.sync_once())
    except ConnectionRefusedError:
        pass
    assert limiter.buckets["c"].pending == 30  # handed over at the next successful sync


async def test_gateway_serve_with_two_workers_shares_one_budget(
    demo: DemoServer, database_url: str, tmp_path: Path
) -> None:
    """The real thing: ``gateway serve --workers 2`` (two processes behind one socket),
    every request on a new connection so both workers take some. 60 points buy ten
    queries of 6; unshared, the two workers would admit up to twenty."""
    import asyncio
    import os
    import signal
    import socket
    import sys
    import time

    import httpx

    sources = tmp_path / "sources.toml"
    sources.write_text(f'[[sources]]\nid = "bbc"\nname = "BBC"\nkind = "newsapi"\n'
                       f'url = "{demo.url}/newsapi/v2/top-headlines?sources=bbc-news"\n')
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "GATEWAY_DATABASE_URL": database_url, "GATEWAY_SOURCES": str(sources),
           "GATEWAY_DATA_DIR": str(tmp_path / "data"), "GATEWAY_RATE_LIMIT_BURST": "60",
           "GATEWAY_RATE_LIMIT_PER_S": "1"}
    log = (tmp_path / "serve.log").open("wb")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "serve", "--port", str(port), "--workers", "2", "--log-level", "warning",
        env=env, start_new_session=True, stdout=log, stderr=log,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        async with httpx.AsyncClient(base_url=url, timeout=10, limits=httpx.Limits(max_keepalive_connections=0)) as c:
            while True:
                try:
                    if (await c.get("/livez")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline and proc.returncode is None, "gateway serve did not start"
                await asyncio.sleep(0.2)
            await asyncio.sleep(2)  # the second worker too
            started = time.monotonic()
            codes = []
            for _ in range(20):
                resp = await c.post("/graphql", json={"query": Q6}, headers={"connection": "close"})
                codes.append(resp.status_code)
                await asyncio.sleep(0.4)  # > 2 sync intervals: each worker has seen the other's charges
            elapsed = time.monotonic() - started
        admitted = codes.count(200)
        restored = int(elapsed * 1) // 6  # per_s = 1: whole queries restored meanwhile
        assert set(codes) <= {200, 429}
        assert 10 <= admitted <= 10 + restored + 2, (codes, elapsed, (tmp_path / "serve.log").read_text())
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started, by its id
        try:
            await asyncio.wait_for(proc.wait(), timeout=15)
        except TimeoutError:
            os.killpg(proc.pid, signal.SIGKILL)
            await proc.wait()
        log.close()


async def test_the_sync_is_timed_by_the_app_clock(demo: DemoServer, make_settings: Callable[..., Settings]) -> None:
    import asyncio

    clock = FakeClock()
    settings = make_settings(sources_of(demo.url, BBC), edge=EdgeSettings(**SHARED))  # type: ignore[arg-type]
    async with RunningGateway(create_app(settings, clock=clock)) as gw:
        shared = gw.app.state.edge.shared
        await asyncio.sleep(0.3)  # real time passes; the app's clock does not
        assert shared.syncs == 0
        clock.advance(0.1)
        for _ in range(100):
            await asyncio.sleep(0.01)
            if shared.syncs:
                break
        assert shared.syncs == 1
