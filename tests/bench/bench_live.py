"""Live updates: 1,000 concurrent SSE subscribers on one worker.

One `gateway serve --workers 1` process (the maintenance leader too: it refreshes the
followed source at its TTL) and an RSS upstream whose items this benchmark publishes,
one per round. The subscribers are bare asyncio connections in this process (the
lightest client there is, so the figure is the gateway's, not the client's); this
process also LISTENs on the gateway's channel, and a round's latency runs from that
NOTIFY (the commit) to the event reaching the last subscriber.

Side by side in one run:

- fan-out: 1 subscriber (the bare baseline: NOTIFY, one read, one send) and 1,000;
- memory: the worker's RSS with 1,000 idle keep-alive connections (the baseline)
  and with 1,000 idle subscribers, each against the worker before either.

Targets: p99 of the rounds' commit-to-last-subscriber latency ≤ 100 ms with 1,000
subscribers; ≤ 50 KB of worker memory per idle subscriber (connection included).

    .venv/bin/python -m tests.bench.bench_live [--subscribers 1000] [--rounds 15] [--quick]

BENCH_LOG=FILE keeps the worker's log; BENCH_PROFILE=FILE runs it under cProfile.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
import httpx
import psutil

from tests.helpers import REPO, free_port, interrupt
from tests.live import SUBSCRIBE, FeedUpstream

TARGET_P99_MS = 100.0
TARGET_KB_PER_SUBSCRIBER = 50.0


class Subscriber(asyncio.Protocol):
    """One SSE subscriber: notes when each event id arrives (no parsing beyond that)."""

    def __init__(self, arrivals: dict[int, float], started: asyncio.Event, heartbeats: list[int]) -> None:
        self.arrivals = arrivals
        self.started = started
        self.heartbeats = heartbeats
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        now = time.monotonic()
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            block, _, self.buffer = self.buffer.partition(b"\r\n\r\n")
            if block.startswith(b"HTTP/1.1"):
                assert block.startswith(b"HTTP/1.1 200"), block
                continue  # the response head (its x-request-id is no event id)
            if b": ping" in block and not self.started.is_set():
                self.started.set()
                self.heartbeats[0] += 1
            at = block.find(b"\nid: ")  # after the chunk's size line
            if at >= 0:
                end = block.find(b"\r\n", at + 1)
                self.arrivals.setdefault(int(block[at + 5 : end if end > 0 else None]), now)


def request(body: bytes) -> bytes:
    return (b"POST /graphql HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Accept: text/event-stream\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


async def subscribe(port: int, n: int, after: int) -> tuple[list[Subscriber], list[int]]:
    loop = asyncio.get_running_loop()
    body = json.dumps({"query": SUBSCRIBE, "variables": {"after": str(after)}}).encode()
    heartbeats = [0]
    subs: list[Subscriber] = []
    for i in range(0, n, 100):  # in waves: the accept backlog is not the subject here
        wave = []
        for _ in range(min(100, n - i)):
            sub = Subscriber({}, asyncio.Event(), heartbeats)
            await loop.create_connection(lambda s=sub: s, "127.0.0.1", port)
            assert sub.transport is not None
            sub.transport.write(request(body))
            wave.append(sub)
        subs += wave
    async with asyncio.timeout(60):  # every stream runs: its first heartbeat came (the default interval, 15 s)
        await asyncio.gather(*(s.started.wait() for s in subs))
    return subs, heartbeats


async def idle_connections(port: int, n: int) -> list[asyncio.StreamWriter]:
    """The baseline: ``n`` keep-alive connections that each made one request."""
    writers = []
    for _ in range(n):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /livez HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        await reader.readuntil(b'{"status":"ok"}')
        writers.append(writer)
    return writers


def serving_pid(root: int, port: int) -> int:
    """The process listening on ``port``: `gateway serve` itself with one worker (its
    children are the feed parser)."""
    for p in [psutil.Process(root), *psutil.Process(root).children(recursive=True)]:
        if any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN for c in p.net_connections("tcp")):
            return p.pid
    raise RuntimeError(f"no process of {root} listens on {port}")


def rss_kb(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / 1024


async def settle_rss(pid: int) -> float:
    """RSS once it stops moving (allocations of the last step done)."""
    last = rss_kb(pid)
    for _ in range(20):
        await asyncio.sleep(0.25)
        now = rss_kb(pid)
        if abs(now - last) < 64:
            return now
        last = now
    return last


async def rounds(upstream: FeedUpstream, subs: list[Subscriber], committed: dict[int, float], count: int) -> list[float]:
    """Per round: ms from the commit to the last subscriber's arrival."""
    out = []
    for _ in range(count):
        before = len(committed)
        upstream.add(1)
        async with asyncio.timeout(30):
            while len(committed) == before:
                await asyncio.sleep(0.005)
            seq = max(committed)
            while not all(seq in s.arrivals for s in subs):
                await asyncio.sleep(0.005)
        out.append((max(s.arrivals[seq] for s in subs) - committed[seq]) * 1000)
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def main_async(n: int, count: int) -> int:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * n + 256)), hard))  # inherited by the worker
    from gateway.store.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="gateway-bench-live-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg")
        url = await pg.start()
        try:
            async with FeedUpstream() as upstream:
                return await run(upstream, url, Path(tmp), n, count)
        finally:
            await pg.stop()


async def run(upstream: FeedUpstream, url: str, tmp: Path, n: int, count: int) -> int:
    sources = tmp / "sources.toml"
    sources.write_text(f'[[sources]]\nid = "live"\nname = "Live"\nkind = "feed"\nurl = "{upstream.url}"\n'
                       'ttl_s = 1\ntimeout_ms = 2000\n')
    port = free_port()
    env = {**os.environ, "GATEWAY_DATABASE_URL": url, "GATEWAY_SOURCES": str(sources), "GATEWAY_DATA_DIR": str(tmp),
           "GATEWAY_MAINTENANCE_INTERVAL_S": "0.1",
           "GATEWAY_SUBSCRIPTIONS_PER_CLIENT": str(n + 10), "GATEWAY_RATE_LIMIT_ENABLED": "false",
           "GATEWAY_LOG_LEVEL": "warning"}
    profile = ["-m", "cProfile", "-o", os.environ["BENCH_PROFILE"]] if os.environ.get("BENCH_PROFILE") else []
    proc = subprocess.Popen([sys.executable, *profile, "-m", "gateway", "serve", "--port", str(port), "--workers", "1"],
                            cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(os.environ.get("BENCH_LOG", os.devnull), "w"))
    listen = await asyncpg.connect(url)
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as c:
            for _ in range(300):
                if proc.poll() is not None:
                    raise RuntimeError("the gateway exited (BENCH_LOG=file keeps its log)")
                try:
                    if (await c.get("/readyz")).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.1)
            else:
                raise RuntimeError("the gateway never became ready")
        pid = serving_pid(proc.pid, port)
        committed: dict[int, float] = {}
        await listen.add_listener("gateway_articles", lambda _c, _p, _ch, payload: committed.setdefault(
            int(payload.split("|")[0]), time.monotonic()))
        upstream.add(1)

        # the bare baseline: one subscriber
        (one,), _ = await subscribe(port, 1, 0)
        base_rounds = await rounds(upstream, [one], committed, max(3, count // 3))
        assert one.transport is not None
        one.transport.close()
        await asyncio.sleep(0.5)

        # memory: idle connections, then idle subscribers
        start_kb = await settle_rss(pid)
        conns = await idle_connections(port, n)
        conns_kb = await settle_rss(pid)
        for w in conns:
            w.close()
        await asyncio.sleep(1.0)
        before_subs_kb = await settle_rss(pid)
        last = max(committed) if committed else 0
        subs, _ = await subscribe(port, n, last)
        subs_kb = await settle_rss(pid)
        per_conn = (conns_kb - start_kb) / n
        per_sub = (subs_kb - before_subs_kb) / n

        fan = await rounds(upstream, subs, committed, count)
        deliveries = [(s.arrivals[seq] - committed[seq]) * 1000 for s in subs for seq in list(committed)[-count:]
                      if seq in s.arrivals]
        for s in subs:
            if s.transport is not None:
                s.transport.close()
    finally:
        await listen.close()
        interrupt(proc, timeout_s=30)

    print(f"fan-out, commit to the last subscriber, {count} rounds (1 new article each):")
    print(f"  {'subscribers':>11} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    print(f"  {1:>11} {statistics.median(base_rounds):>8.1f} {pct(base_rounds, 0.99):>8.1f} {max(base_rounds):>8.1f}")
    print(f"  {n:>11} {statistics.median(fan):>8.1f} {pct(fan, 0.99):>8.1f} {max(fan):>8.1f}")
    print(f"  every delivery to the {n}: p50 {statistics.median(deliveries):.1f} ms, p99 {pct(deliveries, 0.99):.1f} ms")
    print(f"memory of the worker: {start_kb / 1024:.0f} MB at rest; per idle keep-alive connection "
          f"{per_conn:.1f} KB (baseline); per idle subscriber {per_sub:.1f} KB "
          f"({per_sub - per_conn:.1f} KB over a bare connection)")
    ok_latency = pct(fan, 0.99) <= TARGET_P99_MS
    ok_memory = per_sub <= TARGET_KB_PER_SUBSCRIBER
    print(f"{'PASS' if ok_latency else 'FAIL'}: fan-out p99 {pct(fan, 0.99):.1f} ms to the last of {n} subscribers "
          f"(target <= {TARGET_P99_MS:.0f} ms; {pct(base_rounds, 0.99):.1f} ms for one)")
    print(f"{'PASS' if ok_memory else 'FAIL'}: {per_sub:.1f} KB per idle subscriber "
          f"(target <= {TARGET_KB_PER_SUBSCRIBER:.0f} KB; {per_conn:.1f} KB for a bare connection)")
    return 0 if ok_latency and ok_memory else 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--subscribers", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--quick", action="store_true", help="fewer rounds (10)")
    args = p.parse_args(argv)
    return asyncio.run(main_async(args.subscribers, 10 if args.quick else args.rounds))


if __name__ == "__main__":
    sys.exit(main())
