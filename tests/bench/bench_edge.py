"""The edge under abuse, side by side in one run (real gateway, real Postgres, the
demo upstream on a real socket):

1. **Rejection**: the nested ``articles -> source -> articles`` query and 30
   aliases of ``articles(search:)``, each refused as QUERY_TOO_EXPENSIVE. Targets:
   every refusal < 50 ms, 0 upstream calls, event-loop lag p99 < 10 ms meanwhile.
2. **Fairness**: upstream at 300 ms; a normal client's cold search, alone and then
   while a flooding client (its own key, a small bucket) hammers unique searches.
   Target: the normal client's latency within 1.5x of alone, and no TIMEOUT.
3. **Warm path**: throughput of a cached query with rate limits on and off,
   alternating rounds. Target: within 5%.

    .venv/bin/python -m tests.bench.bench_edge [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.edge.clients import hash_key
from gateway.settings import EdgeSettings, Settings
from tests.conftest import demo_sources
from tests.helpers import RunningGateway

NESTED = "{ articles(first: 100) { nodes { source { articles(first: 100) { source { articles(first: 100) { title } } } } } } }"
ALIASES = "{ " + " ".join(f'a{i}: articles(search: "topic {i}") {{ nodes {{ id }} }}' for i in range(30)) + " }"
WARM = "{ articles(first: 20) { nodes { id title url } } }"
TICK_S = 0.001


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def ticker(stop: asyncio.Event, lags: list[float]) -> None:
    while not stop.is_set():
        before = time.perf_counter()
        await asyncio.sleep(TICK_S)
        lags.append(max(0.0, (time.perf_counter() - before - TICK_S) * 1000))


def upstream_calls(gw: RunningGateway) -> int:
    return sum(s.upstream_calls for s in gw.services.source_service.stats.values())


async def bench_rejection(make: Callable[..., Settings], n: int) -> bool:
    print("\n## 1. Expensive queries refused before execution")
    ok = True
    async with RunningGateway(create_app(make())) as gw:
        for name, query in (("nested 3 levels x first:100", NESTED), ("30 aliases of articles(search:)", ALIASES)):
            before = upstream_calls(gw)
            stop = asyncio.Event()
            lags: list[float] = []
            tick = asyncio.create_task(ticker(stop, lags))
            took: list[float] = []
            codes: set[str] = set()

            async def one() -> None:
                t0 = time.perf_counter()
                resp = await gw.post(query)
                took.append((time.perf_counter() - t0) * 1000)
                codes.add(resp.json()["errors"][0]["extensions"]["code"])

            for _ in range(n // 10):  # 10 in flight at a time
                await asyncio.gather(*(one() for _ in range(10)))
            stop.set()
            await tick
            calls = upstream_calls(gw) - before
            good = max(took) < 50 and calls == 0 and pct(lags, 0.99) < 10 and codes == {"QUERY_TOO_EXPENSIVE"}
            ok &= good
            print(f"{name:34s} n={len(took)} refusal p50 {pct(took, 0.5):5.1f} ms  max {max(took):5.1f} ms  "
                  f"upstream calls {calls}  loop lag p99 {pct(lags, 0.99):4.1f} ms  max {max(lags):4.1f} ms  "
                  f"codes {sorted(codes)}  {'OK' if good else 'MISSED'}")
    return ok


async def bench_fairness(make: Callable[..., Settings], tmp: Path, demo: DemoServer, rounds: int) -> bool:
    print("\n## 2. Fairness: a flooding client vs a normal client's cold search (upstream at 300 ms)")
    clients = tmp / "clients.toml"
    clients.write_text(
        f'[[clients]]\nid = "flood"\nkey_sha256 = "{hash_key("flood")}"\nburst = 400\nper_s = 100\n\n'
        f'[[clients]]\nid = "normal"\nkey_sha256 = "{hash_key("normal")}"\n'
    )
    edge = EdgeSettings.from_env({"GATEWAY_CLIENTS_FILE": str(clients)})
    demo.control.set_fault("*", latency_ms=300)
    results: dict[str, Any] = {}
    try:
        for limits in (True, False):
            edge_now = edge if limits else EdgeSettings(rate_limit_enabled=False)
            async with RunningGateway(create_app(make(edge=edge_now))) as gw:
                client = httpx.AsyncClient(base_url=gw.url, timeout=30, limits=httpx.Limits(max_connections=200))
                seq = iter(range(10**9))

                async def normal_search() -> tuple[float, set[str]]:
                    q = f'{{ articles(search: "normal {next(seq)}", first: 10) {{ nodes {{ id }} sources {{ status }} }} }}'
                    t0 = time.perf_counter()
                    r = await client.post("/graphql", json={"query": q}, headers={"x-api-key": "normal"})
                    took = (time.perf_counter() - t0) * 1000
                    return took, {s["status"] for s in r.json()["data"]["articles"]["sources"]}

                alone = [await normal_search() for _ in range(rounds)]
                stop = asyncio.Event()
                flood_codes: dict[int, int] = {}

                async def flooder() -> None:
                    while not stop.is_set():
                        q = f'{{ articles(search: "flood {next(seq)}", first: 100) {{ nodes {{ id }} }} }}'
                        r = await client.post("/graphql", json={"query": q}, headers={"x-api-key": "flood"})
                        flood_codes[r.status_code] = flood_codes.get(r.status_code, 0) + 1
                        if r.status_code == 429:  # a well-behaved client would wait; a flood does not
                            await asyncio.sleep(0)

                floods = [asyncio.create_task(flooder()) for _ in range(50)]
                await asyncio.sleep(0.5)
                crowded = [await normal_search() for _ in range(rounds)]
                stop.set()
                await asyncio.gather(*floods)
                await client.aclose()
                a = statistics.median(t for t, _ in alone)
                c = statistics.median(t for t, _ in crowded)
                statuses = set().union(*(s for _, s in crowded))
                results[limits] = (a, c, statuses, flood_codes)
                label = "limits on " if limits else "limits off"
                print(f"{label}: normal cold search alone p50 {a:6.0f} ms, under flood p50 {c:6.0f} ms "
                      f"(x{c / a:4.2f}); normal statuses under flood {sorted(statuses)}; flood answers {flood_codes}")
    finally:
        demo.control.reset()
    a, c, statuses, _ = results[True]
    good = c <= 1.5 * a and "TIMEOUT" not in statuses
    print(f"target (limits on): within 1.5x of alone and no TIMEOUT: {'OK' if good else 'MISSED'}")
    return good


async def bench_warm(make: Callable[..., Settings], requests: int, rounds: int) -> bool:
    print("\n## 3. Warm path: the edge's cost, rate limits on vs off (alternating rounds)")
    rps: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(rounds):
        for on in (True, False):
            edge = EdgeSettings() if on else EdgeSettings(rate_limit_enabled=False)
            async with RunningGateway(create_app(make(edge=edge))) as gw:
                await gw.data(WARM)  # warm the caches
                client = httpx.AsyncClient(base_url=gw.url, timeout=30)
                sem = asyncio.Semaphore(16)

                async def one() -> None:
                    async with sem:
                        r = await client.post("/graphql", json={"query": WARM})
                        assert r.status_code == 200

                await asyncio.gather(*(one() for _ in range(100)))
                t0 = time.perf_counter()
                await asyncio.gather(*(one() for _ in range(requests)))
                rps[on].append(requests / (time.perf_counter() - t0))
                await client.aclose()
    on, off = max(rps[True]), max(rps[False])
    ratio = on / off
    good = ratio >= 0.95
    print(f"rate limits on : best {on:7.0f} req/s  (rounds {', '.join(f'{x:.0f}' for x in rps[True])})")
    print(f"rate limits off: best {off:7.0f} req/s  (rounds {', '.join(f'{x:.0f}' for x in rps[False])})")
    print(f"on/off = {ratio:.3f} (target >= 0.95): {'OK' if good else 'MISSED'}")
    return good


async def main(args: argparse.Namespace) -> int:
    tmp = Path(tempfile.mkdtemp(prefix="bench-edge-"))
    from gateway.store.embedded import EmbeddedPostgres

    embedded = EmbeddedPostgres(tmp / "pg")
    url = await embedded.start()
    try:
        with DemoServer() as demo:
            counter = iter(range(10**6))

            def make(**kw: Any) -> Settings:
                return Settings(sources=demo_sources(demo.url), database_url=url,
                                data_dir=tmp / f"d{next(counter)}", **kw)

            print("# bench_edge (shared machine: figures are noisy; ratios are side by side)")
            ok = await bench_rejection(make, 50 if args.quick else 200)
            ok &= await bench_fairness(make, tmp, demo, 3 if args.quick else 7)
            ok &= await bench_warm(make, 300 if args.quick else 2000, 1 if args.quick else 3)
    finally:
        await embedded.stop()
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a smoke run")
    sys.exit(asyncio.run(main(parser.parse_args())))
