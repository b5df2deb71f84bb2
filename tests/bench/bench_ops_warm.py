"""What fetch statistics and maintenance cost on the warm path (every answer CACHED).

Two gateways in one process, on one Postgres, against the demo upstream: "on" takes
part in maintenance (leader: a refresh-ahead scan and a reads upsert every 0.5 s, the
statistics writer running) and "off" runs with GATEWAY_MAINTENANCE=false and no
rounds after startup. Warm requests alternate between them in blocks, so both see the
same machine; the figure is the ratio of their median latencies (target: within 5%).
On the warm path the only per-request work added is noting the read (a dict store);
statistics are recorded per upstream call, which a warm request does not make.

    .venv/bin/python -m tests.bench.bench_ops_warm [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.settings import Settings
from gateway.store.embedded import EmbeddedPostgres
from tests.conftest import demo_sources
from tests.helpers import RunningGateway

QUERY = '{ articles(sources: ["tech-wire", "bbc", "hn"], first: 10) { nodes { title } sources { status } } }'
TARGET_RATIO = 1.05


async def block(gw: RunningGateway, n: int) -> list[float]:
    out = []
    for _ in range(n):
        started = time.perf_counter()
        resp = await gw.post(QUERY)
        out.append((time.perf_counter() - started) * 1000)
        assert resp.status_code == 200
    return out


async def main(quick: bool) -> int:
    data = Path(tempfile.mkdtemp(prefix="gateway-bench-pg-"))
    embedded = EmbeddedPostgres(data)
    url = await embedded.start()
    try:
        with DemoServer() as demo:
            base = Settings(sources=demo_sources(demo.url), database_url=url, data_dir=data / "x")
            on = replace(base, maintenance=True, maintenance_interval_s=0.5)
            off = replace(base, maintenance=False, maintenance_interval_s=3600.0)
            async with RunningGateway(create_app(on)) as a, RunningGateway(create_app(off)) as b:
                for gw in (a, b):  # warm: every source cached in memory
                    result = (await gw.post(QUERY)).json()
                    await block(gw, 20)
                    assert result["data"]["articles"]["sources"]
                times: dict[str, list[float]] = {"on": [], "off": []}
                blocks, per_block = (4, 100) if quick else (10, 300)
                for i in range(blocks):
                    order = [("on", a), ("off", b)] if i % 2 == 0 else [("off", b), ("on", a)]
                    for name, gw in order:
                        times[name] += await block(gw, per_block)
                assert a.services.maintenance is not None and a.services.maintenance.is_leader
    finally:
        await embedded.stop()
        shutil.rmtree(data, ignore_errors=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["on"] / med["off"]
    print(f"warm path, {len(times['on'])} requests each (3 sources, all CACHED):")
    for k in ("off", "on"):
        v = sorted(times[k])
        print(f"  maintenance {k:>3}: median {med[k]:.3f} ms, p90 {v[int(0.9 * len(v))]:.3f} ms")
    print(f"  ratio on/off: {ratio:.3f} (target <= {TARGET_RATIO})")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
