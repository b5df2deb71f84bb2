"""What metrics, logs, fetch statistics and maintenance cost on the warm path (every
answer CACHED).

Two gateways in one process, on one Postgres, against the demo upstream:

- "on" is configured as `gateway serve` runs by default: Prometheus metrics recorded,
  one ``graphql.operation`` JSON line per operation actually written (through
  gateway/ops/logging.py as every worker configures it, to a file, as stderr
  redirected by a process manager would be), the fetch statistics writer running, and
  maintenance leading (a refresh-ahead scan and a reads upsert every 0.5 s);
- "off" runs with GATEWAY_METRICS=false, GATEWAY_OPERATION_LOG=false,
  GATEWAY_STATS_QUEUE_MAX=0 and GATEWAY_MAINTENANCE=false: no observer in its schema,
  no HTTP metrics middleware, no writer, no rounds after startup.

Warm requests alternate between them in blocks, so both see the same machine; the
figure is the ratio of their median latencies (target: within 5%), with p90 and p99
beside it. Statistics are recorded per upstream call, which a warm request does not
make: on this path the writer costs its wake-ups only.

    .venv/bin/python -m tests.bench.bench_ops_warm [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from gateway.app import create_app
from gateway.demo.server import DemoServer
from gateway.ops import logging as gateway_logging
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


def operation_lines(path: Path) -> int:
    return path.read_text(encoding="utf-8").count('"event":"graphql.operation"')


def operations_counted(text: str) -> float:
    return sum(
        s.value for f in text_string_to_metric_families(text) for s in f.samples
        if s.name == "gateway_graphql_operations_total"
    )


def pct(values: list[float], q: float) -> float:
    v = sorted(values)
    return v[min(len(v) - 1, int(q * len(v)))]


async def main(quick: bool) -> int:
    data = Path(tempfile.mkdtemp(prefix="gateway-bench-pg-"))
    log_file = (data / "gateway.log").open("w", encoding="utf-8")
    gateway_logging.configure("auto", "info", stream=log_file)  # as create_app_from_env does
    logging.getLogger("httpx").setLevel(logging.WARNING)  # the load generator's own lines
    embedded = EmbeddedPostgres(data / "pg")
    url = await embedded.start()
    try:
        with DemoServer() as demo:
            base = Settings(sources=demo_sources(demo.url), database_url=url, data_dir=data / "x")
            on = replace(base, maintenance=True, maintenance_interval_s=0.5)
            off = replace(
                base, maintenance=False, maintenance_interval_s=3600.0, metrics=False, operation_log=False,
                stats_queue_max=0,
            )
            async with RunningGateway(create_app(on)) as a, RunningGateway(create_app(off)) as b:
                for gw in (a, b):  # warm: every source cached in memory
                    result = (await gw.post(QUERY)).json()
                    await block(gw, 20)
                    assert result["data"]["articles"]["sources"]
                times: dict[str, list[float]] = {"on": [], "off": []}
                # Short blocks, many of them: a burst of load from elsewhere on the machine falls on
                # both gateways alike.
                blocks, per_block = (8, 50) if quick else (40, 75)
                logged_before = operation_lines(data / "gateway.log")
                for i in range(blocks):
                    order = [("on", a), ("off", b)] if i % 2 == 0 else [("off", b), ("on", a)]
                    for name, gw in order:
                        times[name] += await block(gw, per_block)
                assert a.services.maintenance is not None and a.services.maintenance.is_leader
                counted = operations_counted((await a.client.get("/metrics")).text)
                assert (await b.client.get("/metrics")).status_code == 404
    finally:
        await embedded.stop()
        gateway_logging.shutdown()  # every queued line reaches the file
        log_file.close()
        lines = (data / "gateway.log").read_text(encoding="utf-8").count("\n")
        logged = operation_lines(data / "gateway.log") - logged_before
        shutil.rmtree(data, ignore_errors=True)
    n = len(times["on"])
    assert logged >= n, f"only {logged} operation lines written for {n} requests"
    assert counted >= n, f"only {counted} operations counted in /metrics for {n} requests"
    med = {k: statistics.median(v) for k, v in times.items()}
    ratio = med["on"] / med["off"]
    print(f"warm path, {n} requests each (3 sources, all CACHED):")
    for k, what in (("off", "all off"), ("on", "metrics + JSON operation log + statistics + maintenance")):
        v = times[k]
        print(f"  {k:>3} ({what}): median {med[k]:.3f} ms, p90 {pct(v, 0.9):.3f} ms, p99 {pct(v, 0.99):.3f} ms")
    print(f"  'on' wrote {logged} operation log lines ({lines} lines in all) and counted {counted:.0f} operations")
    print(f"  ratio on/off (medians): {ratio:.3f} (target <= {TARGET_RATIO}); p99 ratio "
          f"{pct(times['on'], 0.99) / pct(times['off'], 0.99):.3f}")
    return 0 if ratio <= TARGET_RATIO else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a short run")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
