"""Throughput of the shared upstream HTTP client against raw aiohttp.

Why: httpx's own per-request work costs more CPU than aiohttp's whole request, and
its default transport (httpcore) contends on its connection pool when hundreds of
requests are in flight, so the gateway sends through aiohttp alone (see
:mod:`gateway.upstream`). This script keeps that choice honest. It serves a small (~1 KB) JSON body from a local HTTP/1.1 keep-alive
server running in a *separate process*, fires ``--requests`` GETs with at most
``--concurrency`` in flight through each client variant, and compares every
variant with raw aiohttp measured in the same run (same server, same process,
passes interleaved round-robin after one warm-up pass each).

Variants (``--variants`` picks any subset; ``--diagnostics`` adds the last one)::

    aiohttp         raw aiohttp.ClientSession: the reference
    httpx-default   httpx.AsyncClient() as shipped (httpcore pool: 100 conns, 20 kept alive)
    httpx-tuned     httpx.AsyncClient over httpcore, pool and keep-alive sized to the concurrency
    gateway         gateway.upstream.UpstreamClient (pool of 200).get(RequestSpec): the real
                    path (asyncio.timeout + streamed, size-capped body, error mapping)
    aiohttp-capped  diagnostic: aiohttp with the gateway's semantics (asyncio.timeout,
                    size-capped streamed read) written inline (what the client's own
                    layering costs)

The verdict line compares ``gateway`` with ``aiohttp`` at the highest concurrency
level (best pass of each): PASS (exit 0) at ``--threshold`` (default 80 %, the target) or
more, FAIL (exit 1) below; exit 2 if a variant errs.

A pass that runs longer than ``--pass-budget`` seconds stops issuing requests and
its rate is taken from the requests it completed (marked ``~``); a variant that
completed less than half of its requests in time is not timed again. This
keeps a default run under a minute even though plain httpx needs tens of seconds
(minutes, with a tuned pool) for 3,000 requests at 200 in flight.

Usage, from the repository root::

    .venv/bin/python -m tests.bench.bench_upstream             # default run (< 60 s on 2 cores)
    .venv/bin/python -m tests.bench.bench_upstream --quick     # smoke run (~20 s: plain httpx is slow)
    .venv/bin/python -m tests.bench.bench_upstream --quick --variants aiohttp,gateway   # ~3 s
    .venv/bin/python -m tests.bench.bench_upstream --diagnostics   # + aiohttp-capped
    .venv/bin/python -m tests.bench.bench_upstream --concurrency 20,200 --requests 3000 --repeat 3

With two or more CPUs the client and the server are pinned to one CPU each, so
the client's event loop never competes with the server for a core.

The server is a minimal asyncio protocol (no HTTP framework, uvloop when
available) so that it is never the bottleneck: it answers each request head with
the same canned response. It exits when the benchmark closes its stdin, so it
cannot outlive the benchmark even if the latter is killed with SIGKILL.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import selectors
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass, field
from importlib import metadata
from importlib.util import find_spec
from pathlib import Path
from typing import Any, TypeVar, cast

T = TypeVar("T")

#: ``fetch(url)`` performs one GET and returns the number of body bytes read.
Fetch = Callable[[str], Awaitable[int]]

GATEWAY_VARIANT = "gateway"
REFERENCE_VARIANT = "aiohttp"
SERVER_READY_TIMEOUT_S = 10.0
SERVER_STOP_TIMEOUT_S = 3.0
REQUEST_TIMEOUT_S = 30.0  # per call in the gateway path; never expected to fire locally
DRAIN_S = 1.0  # how long requests in flight at a pass's deadline may take to finish
GATEWAY_POOL_SIZE = 200  # settings.DEFAULT_MAX_OUTBOUND: what the app passes to UpstreamClient


# --------------------------------------------------------------------------
# The server (runs in its own process: ``bench_upstream.py --serve``)
# --------------------------------------------------------------------------


def canned_body() -> bytes:
    """A ~1 KB NewsAPI-like JSON document (deterministic)."""
    articles = [
        {
            "source": {"id": None, "name": f"Example Wire {i}"},
            "author": "A. Reporter",
            "title": f"Headline number {i}: something happened somewhere today",
            "description": "A short standfirst that summarises the story in a sentence or two.",
            "url": f"https://news.example.com/2024/01/01/story-{i}",
            "publishedAt": "2024-01-01T12:00:00Z",
        }
        for i in range(3)
    ]
    return json.dumps({"status": "ok", "totalResults": len(articles), "articles": articles}).encode()


def canned_response(body: bytes) -> bytes:
    head = (
        "HTTP/1.1 200 OK\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: keep-alive\r\n"
        "\r\n"
    )
    return head.encode("ascii") + body


class _CannedHTTPProtocol(asyncio.Protocol):
    """Answers each request head (GETs only: no request bodies) with one canned response."""

    def __init__(self, response: bytes) -> None:
        self._response = response
        self._buffer = b""
        self._transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # (uvloop's transports do not subclass asyncio.Transport, hence the cast.)
        self._transport = cast(asyncio.Transport, transport)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer + data
        complete = buffer.count(b"\r\n\r\n")
        if complete:
            assert self._transport is not None
            self._transport.write(self._response * complete)  # pipelined heads too
            buffer = buffer[buffer.rfind(b"\r\n\r\n") + 4 :]
        self._buffer = buffer


async def _serve() -> None:
    loop = asyncio.get_running_loop()
    body = canned_body()
    response = canned_response(body)
    server = await loop.create_server(
        lambda: _CannedHTTPProtocol(response), host="127.0.0.1", port=0, backlog=2048, reuse_address=True
    )
    port = server.sockets[0].getsockname()[1]

    # Stop when the parent closes our stdin (normally, or because it died).
    stop = asyncio.Event()

    class _StdinWatcher(asyncio.Protocol):
        def connection_lost(self, exc: Exception | None) -> None:
            stop.set()

    await loop.connect_read_pipe(_StdinWatcher, sys.stdin)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    sys.stdout.write(f"READY {port} {len(body)}\n")
    sys.stdout.flush()
    async with server:
        await stop.wait()


@dataclass(frozen=True, slots=True)
class ServerProcess:
    port: int
    body_size: int  # bytes of the canned JSON body, as every fetch must read

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v2/top-headlines?country=us"


@contextlib.contextmanager
def running_server(loop_name: str, cpu: int | None) -> Iterator[ServerProcess]:
    """Start the server process, wait for READY, and always stop it afterwards."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--serve", "--loop", loop_name]
    # A new session: a Ctrl-C in the terminal reaches only us, and we stop the server.
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, start_new_session=True)
    try:
        if cpu is not None:
            with contextlib.suppress(OSError):
                os.sched_setaffinity(proc.pid, {cpu})
        line = _readline_with_timeout(proc, SERVER_READY_TIMEOUT_S)
        if not line.startswith(b"READY "):
            raise RuntimeError(f"benchmark server failed to start (said {line!r}, exit code {proc.poll()})")
        _, port, size = line.split()
        yield ServerProcess(port=int(port), body_size=int(size))
    finally:
        _stop(proc)


def _readline_with_timeout(proc: subprocess.Popen[bytes], timeout_s: float) -> bytes:
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            raise RuntimeError(f"benchmark server not ready after {timeout_s:.0f} s")
    return proc.stdout.readline()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.close()  # the polite way: the server exits on EOF
    try:
        proc.wait(SERVER_STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    if proc.stdout is not None:
        proc.stdout.close()


# --------------------------------------------------------------------------
# Client variants: each opens a client and yields a Fetch; closing it closes the client
# --------------------------------------------------------------------------


class BenchFailure(RuntimeError):
    """A variant failed or returned something other than the canned 200 response."""


@asynccontextmanager
async def variant_aiohttp(concurrency: int) -> AsyncIterator[Fetch]:
    """Raw aiohttp: the reference (connector sized to the concurrency)."""
    import aiohttp

    connector = aiohttp.TCPConnector(limit=concurrency, limit_per_host=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def fetch(url: str) -> int:
            async with session.get(url) as resp:
                body = await resp.read()
                if resp.status != 200:
                    raise BenchFailure(f"HTTP {resp.status}")
                return len(body)

        yield fetch


def _httpx_fetch(client: Any) -> Fetch:
    async def fetch(url: str) -> int:
        resp = await client.get(url)
        if resp.status_code != 200:
            raise BenchFailure(f"HTTP {resp.status_code}")
        return len(resp.content)

    return fetch


@asynccontextmanager
async def variant_httpx_default(concurrency: int) -> AsyncIterator[Fetch]:
    """httpx.AsyncClient() with its shipped defaults (httpcore pool: 100 conns, 20 kept alive)."""
    import httpx

    async with httpx.AsyncClient() as client:
        yield _httpx_fetch(client)


@asynccontextmanager
async def variant_httpx_tuned(concurrency: int) -> AsyncIterator[Fetch]:
    """httpx.AsyncClient over httpcore, pool and keep-alive sized to the concurrency."""
    import httpx

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency, keepalive_expiry=30.0)
    async with httpx.AsyncClient(limits=limits) as client:
        yield _httpx_fetch(client)


@asynccontextmanager
async def variant_gateway(concurrency: int) -> AsyncIterator[Fetch]:
    """The gateway's UpstreamClient exactly as the app builds it (pool of 200)."""
    from gateway.resilience.clock import SystemClock
    from gateway.settings import DEFAULT_MAX_BODY_BYTES
    from gateway.sources.base import RequestSpec
    from gateway.upstream import UpstreamClient

    upstream = UpstreamClient(
        max_connections=GATEWAY_POOL_SIZE, max_body_bytes=DEFAULT_MAX_BODY_BYTES, clock=SystemClock()
    )
    try:

        async def fetch(url: str) -> int:
            resp = await upstream.get(RequestSpec(url), timeout_s=REQUEST_TIMEOUT_S)
            if resp.status != 200:
                raise BenchFailure(f"HTTP {resp.status}")
            return len(resp.content)

        yield fetch
    finally:
        await upstream.aclose()


@asynccontextmanager
async def variant_aiohttp_capped(concurrency: int) -> AsyncIterator[Fetch]:
    """Diagnostic: aiohttp with the gateway's rules (deadline, size cap) written inline."""
    import aiohttp

    from gateway.settings import DEFAULT_MAX_BODY_BYTES
    from gateway.upstream import USER_AGENT

    connector = aiohttp.TCPConnector(limit=GATEWAY_POOL_SIZE, limit_per_host=0)
    session = aiohttp.ClientSession(
        connector=connector, timeout=aiohttp.ClientTimeout(total=None), headers={"User-Agent": USER_AGENT}
    )
    try:

        async def fetch(url: str) -> int:
            async with asyncio.timeout(REQUEST_TIMEOUT_S):
                async with session.get(url, max_redirects=5) as resp:
                    declared = resp.content_length
                    if declared is not None and declared > DEFAULT_MAX_BODY_BYTES:
                        raise BenchFailure("body over the cap")
                    chunks: list[bytes] = []
                    size = 0
                    async for chunk in resp.content.iter_chunked(64 * 1024):
                        size += len(chunk)
                        if size > DEFAULT_MAX_BODY_BYTES:
                            raise BenchFailure("body over the cap")
                        chunks.append(chunk)
            if resp.status != 200:
                raise BenchFailure(f"HTTP {resp.status}")
            return len(b"".join(chunks))

        yield fetch
    finally:
        await session.close()


@dataclass(frozen=True, slots=True)
class Variant:
    name: str
    open: Callable[[int], AbstractAsyncContextManager[Fetch]]

    @property
    def description(self) -> str:
        return " ".join((self.open.__doc__ or "").split())


VARIANTS: tuple[Variant, ...] = (
    Variant(REFERENCE_VARIANT, variant_aiohttp),
    Variant("httpx-default", variant_httpx_default),
    Variant("httpx-tuned", variant_httpx_tuned),
    Variant(GATEWAY_VARIANT, variant_gateway),
)
#: Not options for the gateway but measurements of where its time goes (``--diagnostics``).
DIAGNOSTIC_VARIANTS: tuple[Variant, ...] = (
    Variant("aiohttp-capped", variant_aiohttp_capped),
)


# --------------------------------------------------------------------------
# Driving the load
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Pass:
    completed: int
    seconds: float
    truncated: bool  # stopped by the time budget before all requests were issued

    @property
    def rps(self) -> float:
        return self.completed / self.seconds


async def drive(
    fetch: Fetch, url: str, *, requests: int, concurrency: int, body_size: int, budget_s: float
) -> Pass:
    """Issue ``requests`` GETs from ``concurrency`` workers; give up at ``budget_s``.

    At the deadline no new request starts; those in flight get up to a second
    more to finish (uncounted: so the next pass does not start on a pool full of
    cancelled requests) and are then cancelled, as a pathologically slow client
    could take longer to drain than the pass itself. The rate counts the requests
    completed by the deadline. (The deadline is only as punctual as the event
    loop: a client that blocks it, like httpcore's pool with 200 waiters, overshoots.)
    """
    remaining = requests
    completed = 0

    async def worker() -> None:
        nonlocal remaining, completed
        while remaining > 0:
            remaining -= 1
            got = await fetch(url)
            if got != body_size:
                raise BenchFailure(f"read {got} body bytes, expected {body_size}")
            completed += 1

    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(min(concurrency, requests))]
    try:
        done, pending = await asyncio.wait(workers, timeout=budget_s, return_when=asyncio.FIRST_EXCEPTION)
        elapsed, finished, truncated = time.perf_counter() - started, completed, bool(pending)
        if pending and not any(task.exception() for task in done):
            remaining = 0  # drain: workers stop after their current request
            done, pending = await asyncio.wait(workers, timeout=DRAIN_S, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
    failure = next((exc for task in done if (exc := task.exception()) is not None), None)
    if failure is not None:
        raise BenchFailure(f"{type(failure).__name__}: {failure}") from failure
    return Pass(finished, elapsed, truncated=truncated)


@dataclass(slots=True)
class Result:
    variant: str
    concurrency: int
    passes: list[Pass] = field(default_factory=list)

    @property
    def best_rps(self) -> float:
        return max(p.rps for p in self.passes)

    @property
    def median_rps(self) -> float:
        return statistics.median(p.rps for p in self.passes)

    @property
    def truncated(self) -> bool:
        return any(p.truncated for p in self.passes)

    def hopeless(self, requests: int) -> bool:
        """Too slow for repeats to matter: a pass did not get through half of its requests."""
        return any(p.completed < requests / 2 for p in self.passes)


async def bench_level(
    variants: Sequence[Variant],
    url: str,
    *,
    concurrency: int,
    requests: int,
    repeat: int,
    body_size: int,
    budget_s: float,
) -> list[Result]:
    """One concurrency level: open every variant, warm each once, then time them round-robin.

    Round-robin (rather than all passes of one variant, then the next) spreads any
    drift of the machine (frequency scaling, a noisy neighbour) over all variants.
    """
    warmup = max(2 * concurrency, requests // 5)
    results = [Result(v.name, concurrency) for v in variants]
    async with contextlib.AsyncExitStack() as stack:
        fetches = [await stack.enter_async_context(v.open(concurrency)) for v in variants]
        for variant, fetch in zip(variants, fetches):
            await _named(variant, drive(fetch, url, requests=warmup, concurrency=concurrency,
                                        body_size=body_size, budget_s=budget_s / 3))
        for _ in range(repeat):
            for variant, fetch, result in zip(variants, fetches, results):
                if result.hopeless(requests):
                    continue
                result.passes.append(
                    await _named(variant, drive(fetch, url, requests=requests, concurrency=concurrency,
                                                body_size=body_size, budget_s=budget_s))
                )
    return results


async def _named(variant: Variant, coro: Coroutine[Any, Any, T]) -> T:
    try:
        return await coro
    except BenchFailure as exc:
        raise BenchFailure(f"variant {variant.name!r}: {exc}") from exc.__cause__


async def bench_all(variants: Sequence[Variant], server: ServerProcess, args: argparse.Namespace) -> list[Result]:
    results: list[Result] = []
    for concurrency in args.concurrency:
        level = await bench_level(
            variants,
            server.url,
            concurrency=concurrency,
            requests=args.requests,
            repeat=args.repeat,
            body_size=server.body_size,
            budget_s=args.pass_budget,
        )
        results.extend(level)
        _print_level(level)
    return results


# --------------------------------------------------------------------------
# Reporting
# --------------------------------------------------------------------------


def _print_header(args: argparse.Namespace, pinned: bool) -> None:
    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "-"

    libs = ", ".join(f"{d} {version(d)}" for d in ("httpx", "httpcore", "aiohttp", "uvloop"))
    where = "; client and server pinned to one CPU each" if pinned else ""
    print(f"# Python {platform.python_version()} on {os.cpu_count()} CPUs; event loop: {args.loop}{where}")
    print(f"# {libs}")
    if find_spec("sniffio") is None:
        # anyio >= 4.11 no longer pulls sniffio in, and httpcore 1.0.9 retries
        # `import sniffio` (uncached when it fails) on every lock/event setup.
        print("# sniffio not installed: httpcore pays a failed import per lock setup (encode/httpcore#1103)")
    print(
        f"# {args.requests} GETs of a {len(canned_body())} B JSON body per pass; best and median of "
        f"{args.repeat} pass(es) after one warm-up; ~ = pass stopped at {args.pass_budget:g} s\n"
        "# 'vs aiohttp' compares best passes (the verdict uses it); '(med)' compares medians"
    )
    print()
    print(f"{'variant':<15} {'conc':>5} {'req/s best':>11} {'req/s med':>10} {'vs aiohttp':>11} {'(med)':>6}")
    print("-" * 63)
    sys.stdout.flush()


def _print_level(level: Sequence[Result]) -> None:
    reference = next((r for r in level if r.variant == REFERENCE_VARIANT), None)
    for r in level:
        ratio = f"{r.best_rps / reference.best_rps:.0%}" if reference else "-"
        median_ratio = f"{r.median_rps / reference.median_rps:.0%}" if reference else "-"
        mark, note = " ", ""
        if r.truncated:
            cut = min((p for p in r.passes if p.truncated), key=lambda p: p.rps)
            mark, note = "~", f"  ({cut.completed} done in {cut.seconds:.1f} s)"
        print(
            f"{r.variant:<15} {r.concurrency:>5} {mark}{r.best_rps:>10,.0f} {r.median_rps:>10,.0f}"
            f" {ratio:>11} {median_ratio:>6}{note}"
        )
    print()
    sys.stdout.flush()


def verdict(results: Sequence[Result], concurrency: int, threshold: float) -> tuple[bool, str]:
    by_name = {r.variant: r for r in results if r.concurrency == concurrency}
    gateway, reference = by_name.get(GATEWAY_VARIANT), by_name.get(REFERENCE_VARIANT)
    if gateway is None or reference is None:
        return False, f"FAIL: need both '{GATEWAY_VARIANT}' and '{REFERENCE_VARIANT}' at concurrency {concurrency}"
    ratio = gateway.best_rps / reference.best_rps
    ok = ratio >= threshold
    return ok, (
        f"{'PASS' if ok else 'FAIL'}: gateway client at concurrency {concurrency}: "
        f"{gateway.best_rps:,.0f} req/s = {ratio:.0%} of raw aiohttp ({reference.best_rps:,.0f} req/s); "
        f"required >= {threshold:.0%}"
    )


# --------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------


def _int_list(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError("concurrency levels must be positive integers")
    return values


def _run(coro: Coroutine[Any, Any, T], loop_name: str) -> T:
    if loop_name == "uvloop":
        import uvloop

        return uvloop.run(coro)
    return asyncio.run(coro)


def _default_loop() -> str:
    # Match production: uvicorn's loop="auto" uses uvloop whenever it is installed.
    return "uvloop" if find_spec("uvloop") is not None else "asyncio"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    names = [v.name for v in VARIANTS + DIAGNOSTIC_VARIANTS]
    parser = argparse.ArgumentParser(
        prog="python -m tests.bench.bench_upstream",
        description="Compare the gateway's upstream HTTP client with raw aiohttp (see the module docstring).",
    )
    parser.add_argument("--concurrency", type=_int_list, default=[20, 200], help="levels (default 20,200)")
    parser.add_argument("--requests", type=int, default=3000, help="GETs per timed pass (default 3000)")
    parser.add_argument("--repeat", type=int, default=3, help="timed passes per variant and level (default 3)")
    parser.add_argument("--pass-budget", type=float, default=3.0, help="seconds before a pass is cut (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 600 requests, 1 pass, 1 s budget")
    parser.add_argument(
        "--loop", choices=("asyncio", "uvloop"), default=_default_loop(), help="event loop (default: as uvicorn)"
    )
    parser.add_argument(
        "--variants", type=lambda s: [n.strip() for n in s.split(",") if n.strip()],
        default=[v.name for v in VARIANTS], help=f"comma-separated subset of {','.join(names)}",
    )
    parser.add_argument("--diagnostics", action="store_true", help="also run the diagnostic variants")
    parser.add_argument("--threshold", type=float, default=0.8, help="required gateway/aiohttp ratio (default 0.8)")
    parser.add_argument("--no-pin", action="store_true", help="do not pin client and server to separate CPUs")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.requests, args.repeat, args.pass_budget = 600, 1, 1.0
    if args.requests < 1 or args.repeat < 1 or args.pass_budget <= 0:
        parser.error("--requests, --repeat and --pass-budget must be positive")
    if args.diagnostics:
        args.variants += [v.name for v in DIAGNOSTIC_VARIANTS if v.name not in args.variants]
    unknown = sorted(set(args.variants) - set(names))
    if unknown:
        parser.error(f"unknown variants: {', '.join(unknown)} (choose from {', '.join(names)})")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.serve:
        _run(_serve(), args.loop)
        return 0

    variants = [v for v in VARIANTS + DIAGNOSTIC_VARIANTS if v.name in args.variants]
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pinned = not args.no_pin and len(cpus) >= 2
    if pinned:
        os.sched_setaffinity(0, {cpus[0]})  # the server process gets cpus[1]

    _print_header(args, pinned)
    started = time.perf_counter()
    try:
        with running_server(args.loop, cpus[1] if pinned else None) as server:
            results = _run(bench_all(variants, server, args), args.loop)
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except BenchFailure as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2

    for v in variants:
        print(f"  {v.name:<15} {v.description}")
    print(f"\n# {time.perf_counter() - started:.0f} s")
    ok, line = verdict(results, max(args.concurrency), args.threshold)
    print(line)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
