"""The load generator: its own process (``--loadgen CONFIG``), and its handle in the orchestrator."""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aiohttp
import orjson

from tests.bench.resilience.config import (
    ARTICLES_QUERY,
    LOADGEN_READY_TIMEOUT_S,
    REPO_ROOT,
    REQUEST_TIMEOUT_S,
)
from tests.bench.resilience.procs import (
    Gateway,
    StartError,
    _tail,
)

# =============================================================================
# The load generator (runs in its own process: ``python -m tests.bench.resilience --loadgen CONFIG``)
# =============================================================================


def _loadgen_main(raw_config: str) -> int:
    cfg = orjson.loads(raw_config)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_loadgen(cfg))
    return uvloop.run(_loadgen(cfg))  # a leaner client: more of the CPU left to the gateway


def _say(line: bytes) -> None:
    sys.stdout.buffer.write(line)
    sys.stdout.buffer.flush()


async def _loadgen(cfg: dict[str, Any]) -> int:
    loop = asyncio.get_running_loop()
    duration = float(cfg["duration_s"])
    # Never outlive the budget, whatever happens to the benchmark.
    loop.call_later(LOADGEN_READY_TIMEOUT_S + 60 + duration + 2 * REQUEST_TIMEOUT_S, os._exit, 4)
    stdin = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)

    url = cfg["url"]
    body = cfg["body"].encode()
    concurrency = int(cfg["concurrency"])
    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=concurrency, keepalive_timeout=60)
    timeout = aiohttp.ClientTimeout(total=REQUEST_TIMEOUT_S)
    async with aiohttp.ClientSession(
        connector=connector, timeout=timeout, headers={"Content-Type": "application/json"}
    ) as session:
        warm_errors = await _warm_connections(session, cfg["livez_url"], concurrency)
        go = asyncio.Event()
        t0_box: list[float] = []

        async def one() -> list[Any]:
            return await _one_request(session, url, body, t0_box[0])

        if cfg["mode"] == "burst":

            async def shot() -> list[Any]:
                await go.wait()
                return await one()

            tasks = [asyncio.ensure_future(shot()) for _ in range(concurrency)]
            await asyncio.sleep(0)  # every shot is now parked on the event
        gc.collect()
        gc.freeze()
        _say(b"READY\n")
        line = await stdin.readline()
        if line.strip() != b"GO":
            os._exit(3)  # the benchmark went away before the start
        watcher = asyncio.ensure_future(_exit_on_eof(stdin))
        t0_box.append(time.monotonic())
        if cfg["mode"] == "burst":
            go.set()
            records = list(await asyncio.gather(*tasks))
        else:
            records = await _closed_loop(one, concurrency, t0_box[0] + duration)
        watcher.cancel()
    result = {"t0": t0_box[0], "records": records, "warm_errors": warm_errors, "cpu_s": time.process_time()}
    _say(orjson.dumps(result) + b"\n")
    return 0


async def _exit_on_eof(stdin: asyncio.StreamReader) -> None:
    await stdin.read()
    os._exit(3)  # stdin closed: the benchmark is gone or wants us gone


async def _warm_connections(session: aiohttp.ClientSession, livez_url: str, n: int) -> int:
    """Open ``n`` keep-alive connections (n concurrent GET /livez), so the measured
    requests do not pay for TCP connects. Returns how many failed."""

    async def ping() -> bool:
        try:
            async with session.get(livez_url) as resp:
                await resp.read()
                return resp.status == 200
        except Exception:  # noqa: BLE001 - any failure is just a failed warm-up
            return False

    results = await asyncio.gather(*(ping() for _ in range(n)))
    return sum(1 for ok in results if not ok)


async def _closed_loop(one: Callable[[], Any], clients: int, t_end: float) -> list[list[Any]]:
    records: list[list[Any]] = []
    # A hard cap per client as well as the clock: 2,000 requests/s per client is
    # far beyond anything two cores can serve.
    cap = int((t_end - time.monotonic()) * 2000) + 1

    async def client() -> None:
        for _ in range(cap):
            if time.monotonic() >= t_end:
                return
            rec = await one()
            records.append(rec)
            if rec[2] == 0:
                await asyncio.sleep(0.01)  # transport error: do not spin on a dead socket

    await asyncio.gather(*(client() for _ in range(clients)))
    return records


async def _one_request(session: aiohttp.ClientSession, url: str, body: bytes, t0: float) -> list[Any]:
    """``[sent_s (from t0), latency_s, http_status (0: no answer), transport_error,
    graphql_error_code, [[source_id, status, error_code], ...] | None]``"""
    start = time.monotonic()
    try:
        async with session.post(url, data=body) as resp:
            raw = await resp.read()
            status = resp.status
    except TimeoutError:
        return [start - t0, time.monotonic() - start, 0, "client-timeout", None, None]
    except Exception as exc:  # noqa: BLE001 - recorded: refused/reset, protocol errors
        return [start - t0, time.monotonic() - start, 0, type(exc).__name__, None, None]
    latency = time.monotonic() - start
    sources, gql_error = _extract_sources(raw)
    return [start - t0, latency, status, None, gql_error, sources]


def _extract_sources(raw: bytes) -> tuple[list[list[Any]] | None, str | None]:
    try:
        doc = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None, "NOT_JSON"
    if not isinstance(doc, dict):
        return None, "NOT_JSON"
    gql_error = None
    errors = doc.get("errors")
    if errors:
        first = errors[0] if isinstance(errors[0], dict) else {}
        gql_error = (first.get("extensions") or {}).get("code") or "NO_CODE"
    articles = (doc.get("data") or {}).get("articles")
    if not isinstance(articles, dict):
        return None, gql_error or "NO_ARTICLES"
    out = []
    for s in articles.get("sources") or ():
        err = s.get("error")
        out.append([(s.get("source") or {}).get("id"), s.get("status"), err.get("code") if err else None,
                    s.get("latencyMs")])
    return out, gql_error

if TYPE_CHECKING:
    from tests.bench.resilience.scenarios import Context



# =============================================================================
# The load generator, seen from the orchestrator
# =============================================================================


@dataclass
class LoadResult:
    t0: float  # monotonic (system-wide on Linux) at the start signal, in the load generator
    records: list[list[Any]]
    warm_errors: int
    cpu_s: float


class LoadGen:
    def __init__(self, ctx: Context, gw: Gateway, *, mode: str, concurrency: int, duration_s: float, label: str):
        self.ctx = ctx
        self.cfg = {
            "url": gw.graphql_url,
            "livez_url": gw.url + "/livez",
            "body": orjson.dumps({"query": ARTICLES_QUERY}).decode(),
            "mode": mode,
            "concurrency": concurrency,
            "duration_s": duration_s,
        }
        self.log_path = ctx.logs / f"loadgen-{label}.log"
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with open(self.log_path, "wb") as log:  # noqa: ASYNC230 - local file, instant
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "tests.bench.resilience", "--loadgen", orjson.dumps(self.cfg).decode(),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=log, cwd=REPO_ROOT,
                start_new_session=True,
            )
        self.ctx.reg.add("loadgen", self.proc.pid, None, 2.0)
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), LOADGEN_READY_TIMEOUT_S)
        except TimeoutError:
            line = b""
        if line.strip() != b"READY":
            raise StartError(f"load generator did not start (said {line!r}):\n{_tail(self.log_path)}")

    async def go(self) -> float:
        assert self.proc is not None and self.proc.stdin is not None
        self.proc.stdin.write(b"GO\n")
        await self.proc.stdin.drain()
        return time.monotonic()

    async def finish(self) -> LoadResult:
        assert self.proc is not None and self.proc.stdout is not None
        budget = float(self.cfg["duration_s"]) + 2 * REQUEST_TIMEOUT_S + 30
        try:
            raw = await asyncio.wait_for(self.proc.stdout.read(), budget)
            await asyncio.wait_for(self.proc.wait(), 10)
        finally:
            self.ctx.reg.stop(self.proc.pid)
        try:
            data = orjson.loads(raw.strip().splitlines()[-1])
        except (IndexError, orjson.JSONDecodeError):
            raise StartError(f"load generator gave no result:\n{_tail(self.log_path)}") from None
        return LoadResult(data["t0"], data["records"], data["warm_errors"], data["cpu_s"])

    def stop(self) -> None:
        if self.proc is not None:
            self.ctx.reg.stop(self.proc.pid)
