"""Live updates across processes: two `gateway serve` replicas on one database. A
(GATEWAY_MAINTENANCE=false: it never leads, and nobody queries it) serves the
subscribers; B leads maintenance and so does every refresh, because A shares which
sources its subscribers follow. Real SSE and WebSocket clients."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import asyncpg
import httpx

from tests.helpers import gateway_serve
from tests.live import FeedUpstream, sse_subscribe, ws_subscribe

#: Generous for a busy 2-core machine; the benchmark measures the real figure.
ARRIVAL_TIMEOUT_S = 5.0


@contextmanager
def replica(sources: Path, database_url: str, data_dir: Path, **env: str) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    with gateway_serve({"GATEWAY_DATABASE_URL": database_url, "GATEWAY_SOURCES": str(sources),
                        "GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_MAINTENANCE_INTERVAL_S": "0.2",
                        "GATEWAY_SUBSCRIPTION_HEARTBEAT_S": "1", **env}, stdout=subprocess.DEVNULL) as served:
        yield served


async def ready(base: str, proc: subprocess.Popen[bytes]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=10) as c:
        for _ in range(300):
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else "exited"
            try:
                if (await c.get("/readyz")).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.1)
    raise AssertionError(f"{base} never became ready")


async def test_events_from_the_other_process_arrive_and_resume_across_replicas(
    database_url: str, tmp_path: Path
) -> None:
    async with FeedUpstream() as upstream:
        sources = tmp_path / "sources.toml"
        sources.write_text(f'[[sources]]\nid = "live"\nname = "Live"\nkind = "feed"\nurl = "{upstream.url}"\n'
                           'ttl_s = 1\ntimeout_ms = 2000\n')
        # Commits as Postgres announces them, to time arrivals from.
        committed: dict[int, float] = {}
        listen = await asyncpg.connect(database_url)
        try:
            with replica(sources, database_url, tmp_path / "a", GATEWAY_MAINTENANCE="false") as (proc_a, base_a), \
                    replica(sources, database_url, tmp_path / "b", GATEWAY_MAINTENANCE="true") as (proc_b, base_b):
                await ready(base_a, proc_a)
                await ready(base_b, proc_b)
                await listen.add_listener(
                    "gateway_articles", lambda _c, _p, _ch, payload: committed.setdefault(
                        int(payload.split("|")[0]), time.monotonic()))
                published = upstream.add(3)
                async with sse_subscribe(base_a, {"after": "0"}) as sse, ws_subscribe(base_a, {"after": "0"}) as ws:
                    first = await sse.articles(3)
                    assert sorted(e.payload["data"]["articleAdded"]["article"]["url"] for e in first) == sorted(published)
                    assert len(await ws.articles(3)) == 3
                    published += upstream.add(2)
                    arrivals: list[tuple[int, float]] = []
                    for _ in range(2):
                        (event,) = await sse.articles(1)
                        arrivals.append((int(event.id or 0), time.monotonic()))
                    by_ws = await ws.articles(2)
                    assert [e["cursor"] for e in by_ws] == [str(seq) for seq, _ in arrivals]
                for seq, arrived in arrivals:
                    commit = min(at for s, at in committed.items() if s >= seq)  # the NOTIFY that covers it
                    lag = arrived - commit
                    print(f"event {seq}: arrived {lag * 1000:.0f} ms after its commit")
                    assert lag <= ARRIVAL_TIMEOUT_S
                assert upstream.fetches >= 2  # refreshed by B's leader: nobody sent a query

                # Resume on the other replica with Last-Event-ID: nothing lost, nothing twice.
                async with sse_subscribe(base_a, {"after": "0"}) as sse:
                    seen = await sse.articles(2)
                published += upstream.add(2)
                async with asyncio.timeout(20):
                    while len(committed) < 3:  # the third refresh with new articles committed
                        await asyncio.sleep(0.05)
                async with sse_subscribe(base_b, {}, headers={"last-event-id": seen[-1].id or ""}) as sse:
                    rest = await sse.articles(5)
                events = [e.payload["data"]["articleAdded"] for e in seen + rest]
                assert sorted(e["article"]["url"] for e in events) == sorted(published)
                cursors = [int(e["cursor"]) for e in events]
                assert cursors == sorted(set(cursors))
        finally:
            await listen.close()


async def test_shutdown_ends_streams_cleanly_with_a_reason(database_url: str, tmp_path: Path) -> None:
    async with FeedUpstream() as upstream:
        sources = tmp_path / "sources.toml"
        sources.write_text(f'[[sources]]\nid = "live"\nname = "Live"\nkind = "feed"\nurl = "{upstream.url}"\n'
                           'ttl_s = 1\ntimeout_ms = 2000\n')
        upstream.add(1)
        with replica(sources, database_url, tmp_path / "a") as (proc, base):
            await ready(base, proc)
            async with sse_subscribe(base, {"after": "0"}) as sse, ws_subscribe(base, {"after": "0"}) as ws:
                await sse.articles(1)
                await ws.articles(1)
                proc.send_signal(signal.SIGTERM)
                event = await asyncio.wait_for(sse.next_event(), 20)
                assert event is not None and event.event == "next"
                assert event.payload["errors"][0]["extensions"]["code"] == "SHUTTING_DOWN"
                assert (await sse.next_event()).event == "complete"  # type: ignore[union-attr]
                assert await sse.next_event() is None  # and the response ends
                msg = await ws.next_message()
                assert msg["type"] == "next" and msg["payload"]["errors"][0]["extensions"]["code"] == "SHUTTING_DOWN"
                assert (await ws.next_message())["type"] == "complete"
            # no open stream held the server up to its graceful timeout
            assert await asyncio.to_thread(proc.wait, 15) == 128 + signal.SIGTERM
