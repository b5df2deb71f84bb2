"""Resilience of the gateway, measured from the outside: real processes, real sockets.

Everything runs on 127.0.0.1 as separate processes, the way an operator runs it:

* one embedded PostgreSQL (pgserver) for the whole benchmark, in a temp dir; every
  scenario run gets a fresh database (``CREATE DATABASE``), so caches start cold;
* one demo upstream (``gateway demo-upstream``): 300 ms latency on every route, faults
  installed through ``PUT /_demo/faults``, upstream calls read from ``GET /_demo/stats``;
* one gateway per scenario run (``gateway serve --workers N``) with a generated sources
  file: three sources (NewsAPI ``top-headlines?sources=bbc-news``, RSS ``tech``, Atom
  ``world``), ``ttl_s = 10``, ``timeout_ms = 1000``, breaker ``failure_threshold = 5``,
  ``recovery_s = 5``, ``half_open_max_calls = 1``; ``GATEWAY_REQUEST_DEADLINE_MS=3000``;
* one load generator process per run (this module with ``--loadgen``): aiohttp, a
  ``TCPConnector(limit=concurrency)``, connections opened (``GET /livez``) before the
  start signal, N clients in closed loop (each sends its next request when the previous
  one has answered), one prebuilt request body. It records, per request, the send time,
  the latency (send to last body byte), the HTTP status and each source's
  ``status``/``error.code``, and exits by itself if the benchmark goes away (stdin EOF).

The orchestrator (this process) only starts and stops things, samples the demo's
counters once a second and polls the gateway's ``health`` field, so its timings are not
disturbed by the load. Every query is::

    { articles(first: 10) { nodes { title url }
        sources { source { id } status ageSeconds error { code } } } }

Scenarios (each for every ``--workers`` count, all workers sharing the one Postgres):

``stampede``
    Cold cache; 100 identical queries fired at once (one each, on warm connections).
    Upstream calls = the demo's request total after the burst. Targets: <= 3 upstream
    calls in total (one per source, however many workers), p50 <= 330 ms, p99 <= 400 ms.
``sustained``
    100 clients in closed loop for 30 s (``--quick``: 12 s). The demo's counters are
    sampled every second; calls are bucketed in 10 s windows from the start of the load
    (the last window may be partial). Target: <= 3 upstream calls per window (one per
    source per TTL). Also throughput and p50/p99.
``faults``
    Caches warmed with one healthy query; then ``feeds.rss:tech`` hangs and
    ``feeds.atom:world`` answers 500 (after 300 ms); the load (200 clients, 30 s,
    ``--quick`` 12 s) starts once the warm copies are past their TTL, so every request
    from the first one on needs the upstreams. Targets: no 5xx or transport errors; the
    healthy source ``bbc`` has data (FRESH/CACHED/STALE) in every response, and every
    source is listed in every response; p99 <= deadline + 50 ms; each faulty source's
    breaker opens, and once it is open in every worker its route gets at most
    ``half_open_max_calls x workers`` calls in any ``recovery_s`` window (breakers are
    per process; SKIP when that moment never comes within the run). Breaker states come
    from the gateway itself: ``health`` is polled every 100 ms on fresh connections, so
    each poll reaches some worker; all workers' breakers count as open once a breaker
    was seen open and no poll has seen it CLOSED for 3 s (30 polls; exact with one
    worker). ``--quick`` is mostly too short to judge the breaker window target.
``pgrestart``
    Healthy sources, 100 clients; after 5 s Postgres is stopped (``pg_ctl stop -m fast``)
    for 5 s, then started again on the same socket; 10 s more (``--quick``: 3/5/6 s).
    ``{ health { database { ok } } }`` is polled every 100 ms on fresh connections.
    Targets: no 5xx or transport errors; health reports the database ok, and stays ok,
    within 2 s of Postgres being back ("back" = ``pg_ctl -w start`` returned).

Percentiles are nearest-rank over all answered requests. A target that could not be
evaluated (e.g. the run ended before a breaker window completed) is SKIP, not PASS.

Usage, from the repository root::

    .venv/bin/python -m tests.bench.bench_resilience                  # full run (~5 min)
    .venv/bin/python -m tests.bench.bench_resilience --quick          # smoke run (~2 min)
    .venv/bin/python -m tests.bench.bench_resilience --workers 3 --scenario faults,pgrestart
    .venv/bin/python -m tests.bench.bench_resilience --log-dir /tmp/bench-logs   # keep logs

Exit status: 0 all targets PASS (or SKIP), 1 a target FAILed or a run could not be
done, 130/143 interrupted. Everything started here is stopped on the way out (process
groups: SIGINT, then SIGTERM, then SIGKILL), Ctrl-C included.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ctypes
import gc
import itertools
import logging
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import orjson

# --- what is measured ------------------------------------------------------------

DEADLINE_MS = 3000
UPSTREAM_LATENCY_MS = 300
TTL_S = 10
SOURCE_TIMEOUT_MS = 1000  # a hang costs 1 s per call, so 5 failures open a breaker in ~5 s
FAILURE_THRESHOLD = 5
RECOVERY_S = 5
HALF_OPEN_MAX_CALLS = 1

STAMPEDE_CLIENTS = 100
STAMPEDE_MAX_UPSTREAM = 3
STAMPEDE_P50_MS = 330.0
STAMPEDE_P99_MS = 400.0
SUSTAINED_CLIENTS = 100
SUSTAINED_WINDOW_S = 10
SUSTAINED_MAX_PER_WINDOW = 3
FAULTS_CLIENTS = 200
FAULTS_P99_MS = DEADLINE_MS + 50.0
PG_CLIENTS = 100
PG_RECOVERY_MAX_S = 2.0

HEALTH_DB_POLL_S = 0.1
HEALTH_BREAKER_POLL_S = 0.1
BREAKER_QUIET_S = 3.0  # no poll saw a CLOSED breaker for this long: all workers' are open
STATS_SAMPLE_S = 1.0


@dataclass(frozen=True, slots=True)
class Durations:
    sustained_s: float
    faults_s: float
    pg_before_s: float
    pg_down_s: float
    pg_after_s: float


FULL = Durations(sustained_s=30, faults_s=30, pg_before_s=5, pg_down_s=5, pg_after_s=10)
QUICK = Durations(sustained_s=12, faults_s=12, pg_before_s=3, pg_down_s=5, pg_after_s=6)


@dataclass(frozen=True, slots=True)
class SourceSpec:
    id: str
    name: str
    kind: str
    path: str
    route: str  # the demo's route key: counts this source's calls (one source per route here)
    fault_key: str  # the demo's ``route:qualifier`` key, for installing faults on this source alone


SOURCES = (
    SourceSpec("bbc", "BBC News", "newsapi", "/newsapi/v2/top-headlines?sources=bbc-news",
               "newsapi.top-headlines", "newsapi.top-headlines:bbc-news"),
    SourceSpec("tech", "Demo Tech Wire", "feed", "/feeds/tech.rss", "feeds.rss", "feeds.rss:tech"),
    SourceSpec("world", "Demo World Report", "feed", "/feeds/world.atom", "feeds.atom", "feeds.atom:world"),
)
# Calls are counted per *route* (each source has a route of its own), not per
# ``route:qualifier``: a gateway that mangles a source's query string (say, drops
# ``sources=bbc-news``) still has its calls counted.
SOURCE_IDS = tuple(s.id for s in SOURCES)
HEALTHY_IN_FAULTS = "bbc"
#: source id -> (fault entry, human label); keyed by the source's route key when installed.
FAULTS_PLAN = {
    "tech": ({"fault": "hang"}, "hang"),
    "world": ({"fault": "500", "latency_ms": UPSTREAM_LATENCY_MS}, "HTTP 500 after 300 ms"),
}
DATA_STATUSES = frozenset({"FRESH", "CACHED", "STALE"})

ARTICLES_QUERY = (
    "{ articles(first: 10) { nodes { title url } "
    "sources { source { id } status ageSeconds error { code } } } }"
)
READY_QUERY = "{ sources { id } }"
HEALTH_DB_QUERY = "{ health { database { ok } } }"
HEALTH_BREAKER_QUERY = "{ health { sources { source { id } breaker { state openedAt } } } }"

# --- process handling ------------------------------------------------------------

STARTUP_TIMEOUT_S = 60.0
GATEWAY_STOP_GRACE_S = 12.0  # gateway serve uses timeout_graceful_shutdown=10
DEMO_STOP_GRACE_S = 5.0
LOADGEN_READY_TIMEOUT_S = 30.0
LOADGEN_HEADSTART_S = 4.0  # start the load generator this long before the load must begin
REQUEST_TIMEOUT_S = 10.0  # per request in the load generator: far above the 3 s deadline
CONTROL_TIMEOUT_S = 3.0
PG_CTL_TIMEOUT_S = 30
SETTLE_S = 1.0  # after a burst, before reading the counters
ORPHAN_WAIT_S = 2.0  # a stopped process's children get this long to follow it
SERIAL_QUERIES = 20

REPO_ROOT = Path(__file__).resolve().parents[2]


# =============================================================================
# The load generator (runs in its own process: ``bench_resilience --loadgen CONFIG``)
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
        out.append([(s.get("source") or {}).get("id"), s.get("status"), err.get("code") if err else None])
    return out, gql_error


# =============================================================================
# Processes: start them in their own process group, always stop the whole group
# =============================================================================


class StartError(Exception):
    """A process did not come up; the message carries the tail of its log."""


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PR_SET_PDEATHSIG = 1
try:
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl if platform.system() == "Linux" else None
except (OSError, AttributeError):
    _PRCTL = None


def _die_with_parent() -> None:
    """In the child, before exec: SIGTERM us when the benchmark dies (even by SIGKILL)."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, signal.SIGTERM)


def _group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    import psutil

    members = []
    for proc in psutil.process_iter(["pid", "status"]):
        try:
            if proc.info["status"] == psutil.STATUS_ZOMBIE:
                continue
            if os.getpgid(proc.pid) == pgid:
                members.append(proc.pid)
        except (ProcessLookupError, psutil.Error):
            continue
    return members


def _describe(pids: Iterable[int]) -> list[str]:
    import psutil

    out = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            out.append(f"{pid} {' '.join(psutil.Process(pid).cmdline())[:100]}")
    return out


def stop_group(pgid: int, leader: subprocess.Popen[bytes] | None, grace_s: float) -> list[str]:
    """Stop process group ``pgid`` (its leader's pid) and everything in it.

    SIGINT goes to the leader alone, as an operator's ``kill -INT`` would, and it has
    ``grace_s`` to exit. Whatever of its group outlives it by ORPHAN_WAIT_S is noted
    (returned, as "pid cmdline") and the whole group gets SIGTERM, then SIGKILL."""

    def reap() -> bool:  # True once the leader is gone
        if leader is not None:
            return leader.poll() is not None
        return pgid not in _group_members(pgid)

    def wait(seconds: float, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not done():
            time.sleep(0.05)

    outlived: list[str] = []
    if _group_members(pgid) or not reap():
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pgid, signal.SIGINT)
        wait(grace_s, reap)
        if reap():
            wait(ORPHAN_WAIT_S, lambda: not _group_members(pgid))
            outlived = _describe(_group_members(pgid))
    for sig in (signal.SIGTERM, signal.SIGKILL):
        reap()
        if not _group_members(pgid):
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)
        wait(3.0, lambda: not _group_members(pgid))
    if leader is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            leader.wait(timeout=1)
    left = _group_members(pgid)
    if left:
        print(f"  warning: processes {left} of group {pgid} survived SIGKILL", file=sys.stderr)
    return outlived


def _tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join("    | " + line for line in text.splitlines()[-lines:])


@dataclass
class Registry:
    """What must be stopped on the way out, whatever happens."""

    groups: dict[int, tuple[str, subprocess.Popen[bytes] | None, float]] = field(default_factory=dict)
    postgres: Postgres | None = None
    temp_root: Path | None = None

    def add(self, name: str, pgid: int, leader: subprocess.Popen[bytes] | None, grace_s: float) -> None:
        self.groups[pgid] = (name, leader, grace_s)

    def stop(self, pgid: int) -> list[str]:
        """Stop a group we started; returns the processes that outlived its leader."""
        entry = self.groups.pop(pgid, None)
        if entry is None:
            return []
        _name, leader, grace_s = entry
        return stop_group(pgid, leader, grace_s)

    def cleanup(self) -> None:
        for pgid in list(self.groups):
            self.stop(pgid)
        if self.postgres is not None:
            self.postgres.close()
            self.postgres = None
        if self.temp_root is not None:
            shutil.rmtree(self.temp_root, ignore_errors=True)
            self.temp_root = None


def _gateway_command() -> list[str]:
    exe = Path(sys.executable).with_name("gateway")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "gateway"]


def _spawn(reg: Registry, name: str, cmd: list[str], log_path: Path, *, env: dict[str, str], cwd: Path,
           grace_s: float) -> subprocess.Popen[bytes]:
    with open(log_path, "wb") as log:  # truncate: readiness is read from this log
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=env, cwd=cwd,
            start_new_session=True, preexec_fn=_die_with_parent,  # noqa: PLW1509 - one prctl call, no locks
        )
    reg.add(name, proc.pid, proc, grace_s)
    return proc


# =============================================================================
# Postgres: one embedded server, restartable on the same socket
# =============================================================================


class Postgres:
    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.embedded: Any = None
        self.admin_url = ""
        self.socket_dir = ""
        # pgserver runs postgres as this system user when we are root.
        self.system_user = "pgserver" if hasattr(os, "geteuid") and os.geteuid() == 0 else None

    @property
    def pgdata(self) -> Path:
        return self.embedded.pgdata  # type: ignore[no-any-return]

    def start(self) -> None:
        from gateway.store.embedded import EmbeddedPostgres

        self.embedded = EmbeddedPostgres(self.data_dir)
        self.admin_url = self.embedded.start_sync()
        _, _, query = self.admin_url.partition("?")
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if "host" not in params:
            raise RuntimeError(f"expected a unix-socket URL from pgserver, got {self.admin_url}")
        self.socket_dir = params["host"]

    def url_for(self, database: str) -> str:
        head, sep, query = self.admin_url.partition("?")
        return f"{head.rsplit('/', 1)[0]}/{database}{sep}{query}"

    async def create_database(self, name: str) -> str:
        import asyncpg

        conn = await asyncpg.connect(self.admin_url, timeout=10)
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()
        return self.url_for(name)

    async def drop_database(self, name: str) -> None:
        import asyncpg

        with contextlib.suppress(Exception):
            conn = await asyncpg.connect(self.admin_url, timeout=5)
            try:
                await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            finally:
                await conn.close()

    def _pg_ctl(self, args: list[str]) -> None:
        from pgserver._commands import pg_ctl  # type: ignore[import-untyped]

        pg_ctl(args, pgdata=self.pgdata, user=self.system_user, timeout=PG_CTL_TIMEOUT_S)

    def running(self) -> bool:
        return (self.pgdata / "postmaster.pid").exists()

    def stop_server(self) -> None:
        """Fast shutdown (terminates sessions), waiting until it is down."""
        self._pg_ctl(["-w", "-t", "20", "stop", "-m", "fast"])

    def start_server(self) -> None:
        """Start again with the arguments pgserver uses, on the same socket directory, so
        every URL handed out keeps working."""
        self._pg_ctl(["-w", "-t", "20", "-o", '-h ""', "-o", f"-k {self.socket_dir}",
                      "-l", str(self.pgdata / "log"), "start"])

    def close(self) -> None:
        if self.embedded is None:
            return
        # pgserver remembers the postmaster it started; after a restart that one is gone
        # and its cleanup would leave the new one running. Stop it ourselves first.
        if (self.pgdata / "postmaster.pid").exists():
            with contextlib.suppress(Exception):
                self.stop_server()
        # pgserver logs an error when its own stop finds the server already stopped.
        pg_log = logging.getLogger("pgserver")
        level = pg_log.level
        pg_log.setLevel(logging.CRITICAL)
        try:
            with contextlib.suppress(Exception):
                self.embedded.stop_sync()
        finally:
            pg_log.setLevel(level)
        self._kill_leftovers()
        self.embedded = None

    def _kill_leftovers(self) -> None:
        import psutil

        marker = str(self.pgdata)
        for proc in psutil.process_iter(["pid", "name", "cmdline"]):
            try:
                if proc.info["name"] == "postgres" and marker in " ".join(proc.info["cmdline"] or ()):
                    proc.kill()
            except psutil.Error:
                continue


# =============================================================================
# Demo upstream and gateway
# =============================================================================


class Demo:
    def __init__(self, reg: Registry, root: Path, logs: Path, session: aiohttp.ClientSession) -> None:
        self.reg = reg
        self.root = root
        self.logs = logs
        self.session = session
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.port = _free_port()
        log = self.logs / "demo-upstream.log"
        self.proc = _spawn(self.reg, "demo-upstream", [*_gateway_command(), "demo-upstream", "--port", str(self.port)],
                           log, env=_clean_env(), cwd=self.root, grace_s=DEMO_STOP_GRACE_S)
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise StartError(f"demo upstream exited with status {self.proc.returncode}:\n{_tail(log)}")
            with contextlib.suppress(aiohttp.ClientError, TimeoutError):
                await self.stats()
                return
            await asyncio.sleep(0.1)
        raise StartError(f"demo upstream not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(log)}")

    async def _call(self, method: str, path: str, body: Any = None) -> Any:
        data = orjson.dumps(body) if body is not None else None
        async with self.session.request(method, self.url + path, data=data,
                                        timeout=aiohttp.ClientTimeout(total=CONTROL_TIMEOUT_S)) as resp:
            payload = await resp.read()
            if resp.status != 200:
                raise RuntimeError(f"demo {method} {path}: HTTP {resp.status}: {payload[:200]!r}")
            return orjson.loads(payload)

    async def stats(self) -> dict[str, Any]:
        return await self._call("GET", "/_demo/stats")  # type: ignore[no-any-return]

    async def reset(self) -> None:
        await self._call("POST", "/_demo/reset")

    async def set_faults(self, entries: dict[str, Any]) -> None:
        await self._call("PUT", "/_demo/faults", entries)


def _clean_env(**extra: str) -> dict[str, str]:
    """Our environment without any GATEWAY_* an operator may have exported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


def sources_toml(demo_url: str) -> str:
    out = []
    for s in SOURCES:
        out.append(
            f'[[sources]]\nid = "{s.id}"\nname = "{s.name}"\nkind = "{s.kind}"\nurl = "{demo_url}{s.path}"\n'
            f"timeout_ms = {SOURCE_TIMEOUT_MS}\nttl_s = {TTL_S}\ncritical = false\n\n"
            f"[sources.breaker]\nfailure_threshold = {FAILURE_THRESHOLD}\nrecovery_s = {RECOVERY_S}\n"
            f"half_open_max_calls = {HALF_OPEN_MAX_CALLS}\n"
        )
    return "\n".join(out)


@dataclass
class Gateway:
    port: int
    workers: int
    proc: subprocess.Popen[bytes]
    log_path: Path
    ready_s: float = 0.0  # from spawn to ready
    stop_s: float = 0.0  # from the first signal to no process left
    outlived: list[str] = field(default_factory=list)  # processes left behind by the gateway

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def graphql_url(self) -> str:
        return self.url + "/graphql"


@contextlib.asynccontextmanager
async def running_gateway(ctx: Context, workers: int, database_url: str, label: str) -> AsyncIterator[Gateway]:
    port = _free_port()
    log_path = ctx.logs / f"gateway-{label}.log"
    env = _clean_env(
        GATEWAY_DATABASE_URL=database_url,
        GATEWAY_SOURCES=str(ctx.sources_file),
        GATEWAY_REQUEST_DEADLINE_MS=str(DEADLINE_MS),
        GATEWAY_DATA_DIR=str(ctx.root / "gateway-data"),
    )
    cmd = [*_gateway_command(), "serve", "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers),
           "--log-level", "info"]
    proc = _spawn(ctx.reg, f"gateway-{label}", cmd, log_path, env=env, cwd=ctx.root, grace_s=GATEWAY_STOP_GRACE_S)
    gw = Gateway(port, workers, proc, log_path)
    started = time.monotonic()
    try:
        await _wait_gateway_ready(ctx, gw)
        gw.ready_s = time.monotonic() - started
        yield gw
    finally:
        stopping = time.monotonic()
        gw.outlived = ctx.reg.stop(proc.pid)
        gw.stop_s = time.monotonic() - stopping


def gateway_line(res: RunResult, gw: Gateway) -> None:
    res.line(f"gateway: {gw.workers} worker(s), ready in {gw.ready_s:.1f} s, stopped in {gw.stop_s:.1f} s")
    if gw.outlived:
        res.line(f"  after SIGINT the gateway exited but left {len(gw.outlived)} process(es) running "
                 f"{ORPHAN_WAIT_S:.0f} s later (then SIGTERMed):")
        for line in gw.outlived:
            res.line(f"    {line}")


async def _wait_gateway_ready(ctx: Context, gw: Gateway) -> None:
    """Every worker has logged "Application startup complete", /livez answers 200 and a
    GraphQL query lists our sources."""
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while time.monotonic() < deadline:
        if gw.proc.poll() is not None:
            raise StartError(f"gateway exited with status {gw.proc.returncode}:\n{_tail(gw.log_path)}")
        try:
            text = gw.log_path.read_text(errors="replace")
        except OSError:
            text = ""
        if "Application startup failed" in text or "gateway failed to start" in text:
            raise StartError(f"gateway startup failed:\n{_tail(gw.log_path)}")
        if text.count("Application startup complete") >= gw.workers:
            with contextlib.suppress(aiohttp.ClientError, TimeoutError, ValueError):
                async with ctx.fresh.get(gw.url + "/livez", timeout=aiohttp.ClientTimeout(total=2)) as resp:
                    live = resp.status == 200
                if live:
                    doc = await graphql(ctx.fresh, gw, READY_QUERY, timeout_s=5)
                    ids = [s["id"] for s in doc["data"]["sources"]]
                    if ids != list(SOURCE_IDS):
                        raise StartError(f"gateway serves sources {ids}, expected {list(SOURCE_IDS)}")
                    return
        await asyncio.sleep(0.1)
    raise StartError(f"gateway not ready after {STARTUP_TIMEOUT_S:.0f} s:\n{_tail(gw.log_path)}")


async def graphql(session: aiohttp.ClientSession, gw: Gateway, query: str, *, timeout_s: float) -> dict[str, Any]:
    async with session.post(gw.graphql_url, data=orjson.dumps({"query": query}),
                            headers={"Content-Type": "application/json"},
                            timeout=aiohttp.ClientTimeout(total=timeout_s)) as resp:
        raw = await resp.read()
        if resp.status != 200:
            raise ValueError(f"HTTP {resp.status}: {raw[:300]!r}")
        return orjson.loads(raw)  # type: ignore[no-any-return]


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
                sys.executable, "-m", "tests.bench.bench_resilience", "--loadgen", orjson.dumps(self.cfg).decode(),
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


# =============================================================================
# Samplers (orchestrator side)
# =============================================================================


async def sleep_until(t: float) -> None:
    await asyncio.sleep(max(0.0, t - time.monotonic()))


async def sample_stats(demo: Demo, t0: float, count: int) -> list[tuple[float, dict[str, int] | None]]:
    """The demo's counters at t0 + 1 s, + 2 s, ... (``count`` samples; None when a read failed)."""
    out: list[tuple[float, dict[str, int] | None]] = []
    for k in range(1, count + 1):
        await sleep_until(t0 + k * STATS_SAMPLE_S)
        t = time.monotonic()
        try:
            out.append((t - t0, (await demo.stats())["requests"]))
        except Exception:  # noqa: BLE001 - a missed sample is recorded as None
            out.append((t - t0, None))
    return out


@dataclass(frozen=True, slots=True)
class Poll:
    sent: float  # seconds from t0
    received: float
    doc: dict[str, Any] | None  # None: the poll itself failed (HTTP error, timeout)
    error: str | None = None


async def poll_graphql(ctx: Context, gw: Gateway, query: str, t0: float, until: float, interval: float,
                       timeout_s: float) -> list[Poll]:
    """Poll on fresh connections (so with several workers every one of them answers some)."""
    out: list[Poll] = []
    next_at = time.monotonic()
    for _ in range(int((until - next_at) / interval) + 2):
        if time.monotonic() >= until:
            break
        await sleep_until(next_at)
        sent = time.monotonic()
        try:
            doc: dict[str, Any] | None = await graphql(ctx.fresh, gw, query, timeout_s=timeout_s)
            error = None
        except Exception as exc:  # noqa: BLE001 - a failed poll is data
            doc, error = None, f"{type(exc).__name__}: {exc}"[:200]
        out.append(Poll(sent - t0, time.monotonic() - t0, doc, error))
        next_at = max(sent + interval, time.monotonic())
    return out


# =============================================================================
# CPU accounting: who used the two cores while the load ran
# =============================================================================


@dataclass
class CpuSnapshot:
    t: float
    busy_s: float  # machine-wide, all CPUs
    steal_s: float  # taken by the hypervisor from this VM
    procs: dict[int, tuple[str, float]]  # pid -> (label, CPU seconds so far)


def _cpu_snapshot(labels: dict[int, str]) -> CpuSnapshot:
    import psutil

    t = psutil.cpu_times()
    busy = t.user + t.nice + t.system + getattr(t, "irq", 0.0) + getattr(t, "softirq", 0.0)
    procs = {}
    for pid, label in labels.items():
        with contextlib.suppress(psutil.Error):
            c = psutil.Process(pid).cpu_times()
            procs[pid] = (label, c.user + c.system)
    return CpuSnapshot(time.monotonic(), busy, getattr(t, "steal", 0.0), procs)


def _our_processes(ctx: Context, gw: Gateway, lg: LoadGen | None) -> dict[int, str]:
    """pid -> role, for everything of ours that burns CPU during a run."""
    import psutil

    out = {os.getpid(): "bench"}
    for pid in _group_members(gw.proc.pid):
        out[pid] = "gateway"
    if ctx.demo.proc is not None:
        for pid in _group_members(ctx.demo.proc.pid):
            out[pid] = "demo"
    if lg is not None and lg.proc is not None:
        out[lg.proc.pid] = "loadgen"
    marker = str(ctx.pg.pgdata)
    for proc in psutil.process_iter(["pid", "name", "cmdline"]):
        with contextlib.suppress(psutil.Error):
            if proc.info["name"] == "postgres" and (marker in " ".join(proc.info["cmdline"] or ()) or
                                                    _is_child_of_postmaster(proc, marker)):
                out[proc.pid] = "postgres"
    return out


def _is_child_of_postmaster(proc: Any, marker: str) -> bool:
    parent = proc.parent()
    return parent is not None and marker in " ".join(parent.cmdline() or ())


class CpuMeter:
    """Machine-wide busy CPU against what our processes used, over one load phase."""

    def __init__(self, ctx: Context, gw: Gateway, lg: LoadGen | None) -> None:
        self.ctx, self.gw, self.lg = ctx, gw, lg
        self.start: CpuSnapshot | None = None
        self.end: CpuSnapshot | None = None

    def begin(self) -> None:
        self.start = _cpu_snapshot(_our_processes(self.ctx, self.gw, self.lg))

    async def end_at(self, t: float) -> None:
        await sleep_until(t)
        # Processes born during the run (postgres backends after a restart) count in full.
        self.end = _cpu_snapshot(_our_processes(self.ctx, self.gw, self.lg))

    def report(self, res: RunResult) -> None:
        a, b = self.start, self.end
        if a is None or b is None or b.t <= a.t:
            return
        wall = b.t - a.t
        by_role: Counter[str] = Counter()
        for pid, (label, cpu) in b.procs.items():
            before = a.procs.get(pid)
            by_role[label] += cpu - (before[1] if before else 0.0)
        busy = b.busy_s - a.busy_s
        others = max(0.0, busy - sum(by_role.values()))
        cores = os.cpu_count() or 1
        res.line(f"CPU while loaded ({cores} cores, in cores busy): machine {busy / wall:.2f}; "
                 + ", ".join(f"{k} {v / wall:.2f}" for k, v in by_role.most_common())
                 + f"; other processes {others / wall:.2f}; hypervisor steal {(b.steal_s - a.steal_s) / wall:.2f}")


# =============================================================================
# Results and analysis
# =============================================================================

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"


@dataclass
class Target:
    name: str
    value: str
    result: str


@dataclass
class RunResult:
    scenario: str
    workers: int
    lines: list[str] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    error: str | None = None
    elapsed_s: float = 0.0
    raw: dict[str, Any] = field(default_factory=dict)  # records, samples, polls: for --dump

    def line(self, text: str = "") -> None:
        self.lines.append(text)

    def check(self, name: str, value: str, ok: bool | None) -> None:
        self.targets.append(Target(name, value, SKIP if ok is None else PASS if ok else FAIL))


def pct(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of an ascending sequence."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(p / 100 * len(sorted_values)))
    return sorted_values[rank - 1]


def latencies_ms(records: Iterable[list[Any]]) -> list[float]:
    return sorted(r[1] * 1000 for r in records if r[2] != 0)


def fmt_ms(v: float) -> str:
    return "n/a" if math.isnan(v) else f"{v:.0f} ms"


def request_summary(res: RunResult, records: list[list[Any]], duration_s: float | None = None) -> tuple[int, int]:
    """Print counts, error kinds and latency; return (5xx, transport errors)."""
    n = len(records)
    n5xx = sum(1 for r in records if r[2] >= 500)
    transport = Counter(r[3] for r in records if r[2] == 0)
    other = Counter(r[2] for r in records if r[2] != 0 and r[2] != 200 and r[2] < 500)
    gql = Counter(r[4] for r in records if r[4])
    lat = latencies_ms(records)
    rate = f", {n / duration_s:.0f} req/s" if duration_s else ""
    res.line(f"requests {n}{rate}; 5xx {n5xx}; transport errors {sum(transport.values())}"
             + (f" {dict(transport)}" if transport else "")
             + (f"; other HTTP {dict(other)}" if other else "")
             + (f"; GraphQL errors {dict(gql)}" if gql else ""))
    res.line(f"latency min {fmt_ms(lat[0] if lat else math.nan)}  p50 {fmt_ms(pct(lat, 50))}  p90 {fmt_ms(pct(lat, 90))}  p99 {fmt_ms(pct(lat, 99))}  "
             f"max {fmt_ms(lat[-1] if lat else math.nan)}")
    return n5xx, sum(transport.values())


def status_by_source(records: Iterable[list[Any]]) -> dict[str, Counter[str]]:
    """source id -> Counter of "STATUS" or "STATUS/ERROR_CODE"; "missing" when a
    response did not list the source at all."""
    out: dict[str, Counter[str]] = {sid: Counter() for sid in SOURCE_IDS}
    for r in records:
        seen = {}
        for sid, status, code in r[5] or ():
            seen[sid] = f"{status}/{code}" if code else str(status)
        for sid in SOURCE_IDS:
            out[sid][seen.get(sid, "missing")] += 1
    return out


def status_lines(res: RunResult, records: list[list[Any]]) -> None:
    res.line("per-source outcome (status/error code: share of responses)")
    for sid, counter in status_by_source(records).items():
        total = sum(counter.values()) or 1
        parts = ", ".join(f"{k} {100 * v / total:.1f}%" for k, v in counter.most_common(5))
        res.line(f"  {sid:<6} {parts}")


_LETTER = {"FRESH": "F", "CACHED": "C", "STALE": "S", "FAILED": "X", "TIMEOUT": "T", "SKIPPED": "K"}


def status_timeline(res: RunResult, records: list[list[Any]], duration_s: float) -> None:
    """Status shares per source over time (buckets by send time)."""
    bucket = 5.0 if duration_s >= 20 else 3.0
    n = max(1, math.ceil(duration_s / bucket))
    cells: dict[str, list[Counter[str]]] = {sid: [Counter() for _ in range(n)] for sid in SOURCE_IDS}
    for r in records:
        i = min(n - 1, max(0, int(r[0] // bucket)))
        seen = {sid: status for sid, status, _ in (r[5] or ())}
        for sid in SOURCE_IDS:
            cells[sid][i][_LETTER.get(seen.get(sid, ""), "-")] += 1
    res.line(f"status over time (% per {bucket:.0f} s; F fresh C cached S stale X failed T timeout K skipped - missing)")
    res.line("  t(s)   " + "".join(f"{f'{i * bucket:.0f}-{(i + 1) * bucket:.0f}':<14}" for i in range(n)))
    for sid in SOURCE_IDS:
        row = []
        for c in cells[sid]:
            total = sum(c.values())
            row.append(" ".join(f"{k}{round(100 * v / total)}" for k, v in c.most_common(3)) if total else ".")
        res.line(f"  {sid:<6} " + "".join(f"{cell:<14}" for cell in row))


def route_counts(sample: dict[str, int] | None, key: str) -> int | None:
    return None if sample is None else int(sample.get(key, 0))


def window_table(res: RunResult, samples: list[tuple[float, dict[str, int] | None]], window_s: int) -> list[int]:
    """Upstream calls per source per ``window_s`` from the 1 s samples (sample 0 is the
    baseline at t0). Returns the per-window totals (complete or partial windows)."""
    res.line(f"upstream calls per {window_s} s window (demo counters, sampled every second)")
    res.line("  window     " + "".join(f"{s.id:>7}" for s in SOURCES) + "   total")
    last = len(samples) - 1
    totals: list[int] = []
    for start in range(0, last, window_s):
        end = min(start + window_s, last)
        a, b = samples[start][1], samples[end][1]
        if a is None or b is None:
            res.line(f"  {start:>3}-{end:<3} s  (a counter sample is missing)")
            continue
        per = [route_counts(b, s.route) - route_counts(a, s.route) for s in SOURCES]  # type: ignore[operator]
        totals.append(sum(per))
        partial = " (partial)" if end - start < window_s else ""
        res.line(f"  {start:>3}-{end:<3} s  " + "".join(f"{v:>7}" for v in per) + f"{sum(per):>8}{partial}")
    return totals


# =============================================================================
# Scenarios
# =============================================================================


@dataclass
class Context:
    reg: Registry
    args: argparse.Namespace
    durations: Durations
    root: Path
    logs: Path
    pg: Postgres
    demo: Demo
    control: aiohttp.ClientSession  # keep-alive, for the demo's control endpoints
    fresh: aiohttp.ClientSession  # a new connection per request, for gateway polls
    sources_file: Path


async def _fresh_database(ctx: Context, scenario: str, workers: int) -> tuple[str, str]:
    name = f"bench_{scenario}_w{workers}_{uuid.uuid4().hex[:8]}"
    return name, await ctx.pg.create_database(name)


async def _prepare_demo(ctx: Context) -> None:
    await ctx.demo.reset()
    await ctx.demo.set_faults({"*": {"latency_ms": UPSTREAM_LATENCY_MS}})


async def scenario_stampede(ctx: Context, res: RunResult) -> None:
    name, url = await _fresh_database(ctx, "stampede", res.workers)
    async with running_gateway(ctx, res.workers, url, f"stampede-w{res.workers}") as gw:
        await _prepare_demo(ctx)
        lg = LoadGen(ctx, gw, mode="burst", concurrency=STAMPEDE_CLIENTS, duration_s=0, label="stampede")
        try:
            await lg.start()
            before = (await ctx.demo.stats())["total"]
            meter = CpuMeter(ctx, gw, lg)
            meter.begin()  # before GO: its snapshot takes CPU that the burst must not share
            await lg.go()
            load = await lg.finish()
            await meter.end_at(time.monotonic())
        finally:
            lg.stop()
        await asyncio.sleep(SETTLE_S)
        stats = await ctx.demo.stats()
        # For scale: what one query costs the gateway when nothing else is going on.
        serial = []
        for _ in range(SERIAL_QUERIES):
            t = time.monotonic()
            await graphql(ctx.control, gw, ARTICLES_QUERY, timeout_s=5)
            serial.append((time.monotonic() - t) * 1000)
        serial.sort()
    await ctx.pg.drop_database(name)
    records = load.records
    calls = int(stats["total"]) - int(before)
    per = {s.id: int(stats["requests"].get(s.route, 0)) for s in SOURCES}
    res.line(f"{STAMPEDE_CLIENTS} identical queries at once, cold cache, upstream latency {UPSTREAM_LATENCY_MS} ms"
             + (f" (warm-up: {load.warm_errors} connection(s) failed)" if load.warm_errors else ""))
    n5xx, transport = request_summary(res, records)
    meter.report(res)
    gateway_line(res, gw)
    res.raw = {"records": records, "stats": stats, "serial_ms": serial}
    res.line(f"upstream calls {calls} ({', '.join(f'{k} {v}' for k, v in per.items())}); "
             f"demo counters {stats['requests']}")
    status_lines(res, records)
    res.line(f"for scale: {SERIAL_QUERIES} queries one after another on the warm cache: "
             f"p50 {pct(serial, 50):.1f} ms, max {serial[-1]:.1f} ms")
    lat = latencies_ms(records)
    res.check(f"upstream calls <= {STAMPEDE_MAX_UPSTREAM}", str(calls), calls <= STAMPEDE_MAX_UPSTREAM)
    res.check(f"p50 <= {STAMPEDE_P50_MS:.0f} ms", fmt_ms(pct(lat, 50)), pct(lat, 50) <= STAMPEDE_P50_MS)
    res.check(f"p99 <= {STAMPEDE_P99_MS:.0f} ms", fmt_ms(pct(lat, 99)), pct(lat, 99) <= STAMPEDE_P99_MS)
    res.check("no 5xx / transport errors", f"{n5xx} / {transport}", n5xx == 0 and transport == 0)


async def scenario_sustained(ctx: Context, res: RunResult) -> None:
    duration = ctx.durations.sustained_s
    name, url = await _fresh_database(ctx, "sustained", res.workers)
    async with running_gateway(ctx, res.workers, url, f"sustained-w{res.workers}") as gw:
        await _prepare_demo(ctx)
        lg = LoadGen(ctx, gw, mode="closed", concurrency=SUSTAINED_CLIENTS, duration_s=duration, label="sustained")
        try:
            await lg.start()
            baseline = (await ctx.demo.stats())["requests"]
            meter = CpuMeter(ctx, gw, lg)
            meter.begin()
            t0 = await lg.go()
            metering = asyncio.ensure_future(meter.end_at(t0 + duration))
            sampler = asyncio.ensure_future(sample_stats(ctx.demo, t0, math.ceil(duration)))
            load = await lg.finish()
            samples = [(0.0, baseline), *await sampler]
            await metering
        finally:
            lg.stop()
    await ctx.pg.drop_database(name)
    res.raw = {"records": load.records, "samples": samples}
    gateway_line(res, gw)
    res.line(f"{SUSTAINED_CLIENTS} clients in closed loop for {duration:.0f} s; ttl {TTL_S} s, "
             f"upstream latency {UPSTREAM_LATENCY_MS} ms")
    records = load.records
    n5xx, transport = request_summary(res, records, duration)
    meter.report(res)
    status_lines(res, records)
    totals = window_table(res, samples, SUSTAINED_WINDOW_S)
    worst = max(totals) if totals else None
    res.check(f"upstream calls per {SUSTAINED_WINDOW_S} s window <= {SUSTAINED_MAX_PER_WINDOW}",
              f"max {worst}" if worst is not None else "n/a",
              None if worst is None else worst <= SUSTAINED_MAX_PER_WINDOW)
    res.check("no 5xx / transport errors", f"{n5xx} / {transport}", n5xx == 0 and transport == 0)


def _opened_at_mono(value: str | None, wall_minus_mono: float) -> float | None:
    if not value:
        return None
    at = datetime.fromisoformat(value)
    if at.tzinfo is None:
        at = at.replace(tzinfo=UTC)  # the gateway's clock is UTC
    return at.timestamp() - wall_minus_mono


async def scenario_faults(ctx: Context, res: RunResult) -> None:
    duration = ctx.durations.faults_s
    name, url = await _fresh_database(ctx, "faults", res.workers)
    async with running_gateway(ctx, res.workers, url, f"faults-w{res.workers}") as gw:
        await _prepare_demo(ctx)
        warm = await graphql(ctx.fresh, gw, ARTICLES_QUERY, timeout_s=10)
        t_warm = time.monotonic()
        warm_status = {s["source"]["id"]: s["status"] for s in warm["data"]["articles"]["sources"]}
        by_id = {s.id: s for s in SOURCES}
        await ctx.demo.set_faults({by_id[sid].fault_key: entry for sid, (entry, _) in FAULTS_PLAN.items()})
        go_at = t_warm + TTL_S + 0.5  # the warm copies are past their TTL: every request needs the upstreams
        await sleep_until(go_at - LOADGEN_HEADSTART_S)
        lg = LoadGen(ctx, gw, mode="closed", concurrency=FAULTS_CLIENTS, duration_s=duration, label="faults")
        try:
            await lg.start()
            await sleep_until(go_at)
            baseline = (await ctx.demo.stats())["requests"]
            wall_minus_mono = time.time() - time.monotonic()
            meter = CpuMeter(ctx, gw, lg)
            meter.begin()
            t0 = await lg.go()
            metering = asyncio.ensure_future(meter.end_at(t0 + duration))
            sampler = asyncio.ensure_future(sample_stats(ctx.demo, t0, math.ceil(duration)))
            poller = asyncio.ensure_future(
                poll_graphql(ctx, gw, HEALTH_BREAKER_QUERY, t0, t0 + duration, HEALTH_BREAKER_POLL_S, 5.0))
            load = await lg.finish()
            samples = [(0.0, baseline), *await sampler]
            polls = await poller
            await metering
        finally:
            lg.stop()
    await ctx.pg.drop_database(name)

    records = load.records
    res.raw = {"records": records, "samples": samples, "polls": [[p.sent, p.received, p.doc, p.error] for p in polls]}
    gateway_line(res, gw)
    res.line(f"warm query: {warm_status}; then {', '.join(f'{sid}: {label}' for sid, (_, label) in FAULTS_PLAN.items())}; "
             f"load starts {TTL_S + 0.5:.1f} s after the warm query")
    res.line(f"{FAULTS_CLIENTS} clients in closed loop for {duration:.0f} s; deadline {DEADLINE_MS} ms, "
             f"source timeout {SOURCE_TIMEOUT_MS} ms, breaker {FAILURE_THRESHOLD} failures / "
             f"{RECOVERY_S} s recovery / {HALF_OPEN_MAX_CALLS} probe")
    n5xx, transport = request_summary(res, records, duration)
    meter.report(res)
    status_lines(res, records)
    status_timeline(res, records, duration)
    window_table(res, samples, TTL_S)

    healthy_ok = sum(
        1 for r in records
        if r[2] == 200 and any(sid == HEALTHY_IN_FAULTS and st in DATA_STATUSES for sid, st, _ in (r[5] or ()))
    )
    all_listed = sum(1 for r in records if r[2] == 200 and {s[0] for s in (r[5] or ())} >= set(SOURCE_IDS))
    lat = latencies_ms(records)
    res.check("no 5xx / transport errors", f"{n5xx} / {transport}", n5xx == 0 and transport == 0)
    res.check(f"'{HEALTHY_IN_FAULTS}' has data in every response", f"{healthy_ok}/{len(records)}",
              healthy_ok == len(records) and len(records) > 0)
    res.check("every source listed in every response", f"{all_listed}/{len(records)}",
              all_listed == len(records) and len(records) > 0)
    res.check(f"p99 <= {FAULTS_P99_MS:.0f} ms", fmt_ms(pct(lat, 99)), pct(lat, 99) <= FAULTS_P99_MS)

    # Breakers. Each poll reaches one worker (a fresh connection each time), so "every
    # worker's breaker is open" is read as: a breaker was seen OPEN, and for the last
    # BREAKER_QUIET_S of polls (dozens of them) none saw it CLOSED.
    poll_failures = sum(1 for p in polls if p.doc is None)
    last_poll = max((p.received for p in polls if p.doc is not None), default=0.0)
    res.line(f"breaker polls: {len(polls)} ({poll_failures} failed), every {HEALTH_BREAKER_POLL_S * 1000:.0f} ms")
    allowed = HALF_OPEN_MAX_CALLS * res.workers
    seconds = math.ceil(duration)
    for sid, (_, label) in FAULTS_PLAN.items():
        spec = by_id[sid]
        seen: list[tuple[float, str, float | None]] = []  # (poll answered, state, openedAt), s from t0
        for p in polls:
            for s in (((p.doc or {}).get("data") or {}).get("health") or {}).get("sources", ()):
                if s["source"]["id"] == sid:
                    at = _opened_at_mono(s["breaker"]["openedAt"], wall_minus_mono)
                    seen.append((p.received, s["breaker"]["state"], None if at is None else at - t0))
        timeline = [set() for _ in range(seconds)]
        for t, state, _ in seen:
            if 0 <= t < seconds:
                timeline[int(t)].add(state[0])  # C, O, H
        per_second = [
            (route_counts(b, spec.route) or 0) - (route_counts(a, spec.route) or 0)
            if a is not None and b is not None else None
            for (_, a), (_, b) in itertools.pairwise(samples)
        ]
        res.line(f"breaker {sid} ({label}): polls saw {dict(Counter(st for _, st, _ in seen))}")
        res.line("  per second, states seen (C closed O open H half-open): "
                 + " ".join("".join(sorted(x)) or "." for x in timeline))
        res.line("  per second, upstream calls:                            "
                 + " ".join("?" if c is None else str(c) for c in per_second))
        opens = [at for _, _, at in seen if at is not None]
        window_target = f"'{sid}' calls per {RECOVERY_S} s window once open <= {allowed}"
        if not opens:
            res.line("  never seen open")
            res.check(f"breaker '{sid}' opens", "never", False)
            res.check(window_target, "n/a (never open)", None)
            continue
        first = min(opens)
        last_closed = max((t for t, st, _ in seen if st == "CLOSED" and t > first), default=first)
        all_open = last_closed if last_poll - last_closed >= BREAKER_QUIET_S else None
        res.line(f"  first opened at {first:.1f} s (openedAt); "
                 + (f"open in every worker from {all_open:.1f} s" if all_open is not None
                    else f"some worker's breaker still CLOSED at {last_closed:.1f} s"))
        res.check(f"breaker '{sid}' opens", f"at {first:.1f} s", True)
        if all_open is None:
            res.check(window_target, "n/a (not open in every worker)", None)
            continue
        windows = []
        for k, (t_k, a) in enumerate(samples):
            if k + RECOVERY_S >= len(samples) or t_k < all_open:
                continue
            b = samples[k + RECOVERY_S][1]
            if a is not None and b is not None:
                windows.append(route_counts(b, spec.route) - route_counts(a, spec.route))  # type: ignore[operator]
        if windows:
            res.line(f"  calls per {RECOVERY_S} s window once all open: max {max(windows)} over {len(windows)} "
                     f"window(s) (allowed {allowed})")
            res.check(window_target, f"max {max(windows)}", max(windows) <= allowed)
        else:
            res.check(window_target, "n/a (run too short)", None)


async def scenario_pgrestart(ctx: Context, res: RunResult) -> None:
    d = ctx.durations
    duration = d.pg_before_s + d.pg_down_s + d.pg_after_s
    name, url = await _fresh_database(ctx, "pgrestart", res.workers)
    marks: dict[str, float] = {}
    restart_error: list[str] = []

    async def outage(t0: float) -> None:
        await sleep_until(t0 + d.pg_before_s)
        marks["stop"] = time.monotonic()
        try:
            await asyncio.to_thread(ctx.pg.stop_server)
            marks["stopped"] = time.monotonic()
            await sleep_until(marks["stopped"] + d.pg_down_s)
        finally:
            # Always bring it back, even when cancelled: later runs need it.
            if not ctx.pg.running():
                marks["start"] = time.monotonic()
                try:
                    await asyncio.shield(asyncio.to_thread(ctx.pg.start_server))
                except Exception as exc:  # noqa: BLE001 - reported; the run cannot be judged without it
                    restart_error.append(f"{type(exc).__name__}: {exc}")
                marks["back"] = time.monotonic()

    async with running_gateway(ctx, res.workers, url, f"pgrestart-w{res.workers}") as gw:
        await _prepare_demo(ctx)
        lg = LoadGen(ctx, gw, mode="closed", concurrency=PG_CLIENTS, duration_s=duration, label="pgrestart")
        try:
            await lg.start()
            meter = CpuMeter(ctx, gw, lg)
            meter.begin()
            t0 = await lg.go()
            metering = asyncio.ensure_future(meter.end_at(t0 + duration))
            outage_task = asyncio.ensure_future(outage(t0))
            poller = asyncio.ensure_future(
                poll_graphql(ctx, gw, HEALTH_DB_QUERY, t0, t0 + duration, HEALTH_DB_POLL_S, 1.5))
            try:
                load = await lg.finish()
                polls = await poller
                await metering
            finally:
                await outage_task
        finally:
            lg.stop()
    await ctx.pg.drop_database(name)
    if restart_error:
        raise RuntimeError(f"Postgres did not restart: {restart_error[0]}")
    if not {"stopped", "back"} <= set(marks):
        raise RuntimeError(f"the Postgres outage did not happen as planned (marks: {sorted(marks)})")

    rel = {k: v - t0 for k, v in marks.items()}
    records = load.records
    res.raw = {"records": records, "marks": rel, "polls": [[p.sent, p.received, p.doc, p.error] for p in polls]}
    gateway_line(res, gw)
    res.line(f"{PG_CLIENTS} clients in closed loop for {duration:.0f} s; Postgres stopped at {rel['stop']:.1f} s "
             f"(down at {rel['stopped']:.1f} s), restarted at {rel['start']:.1f} s, back at {rel['back']:.1f} s")
    n5xx, transport = request_summary(res, records, duration)
    meter.report(res)
    for phase, lo, hi in (("before", 0.0, rel["stop"]), ("outage", rel["stop"], rel["back"]),
                          ("after", rel["back"], math.inf)):
        part = [r for r in records if lo <= r[0] < hi]
        lat = latencies_ms(part)
        res.line(f"  {phase:<7} {len(part):>6} requests, 5xx {sum(1 for r in part if r[2] >= 500)}, "
                 f"transport errors {sum(1 for r in part if r[2] == 0)}, "
                 f"p50 {fmt_ms(pct(lat, 50))}, p99 {fmt_ms(pct(lat, 99))}")
    status_lines(res, records)

    def db_ok(p: Poll) -> bool | None:
        if p.doc is None:
            return None
        return bool((((p.doc.get("data") or {}).get("health") or {}).get("database") or {}).get("ok"))

    during = [p for p in polls if rel["stopped"] <= p.sent and p.received <= rel["start"]]
    after = [p for p in polls if p.sent >= rel["back"]]
    res.line(f"health polls: {len(polls)} ({sum(1 for p in polls if p.doc is None)} failed); while Postgres was "
             f"down {sum(1 for p in during if db_ok(p) is False)}/{len(during)} said database not ok")
    first_ok = next((p for p in after if db_ok(p)), None)
    last_bad = max((i for i, p in enumerate(after) if not db_ok(p)), default=None)
    stable = after[last_bad + 1] if last_bad is not None and last_bad + 1 < len(after) else (
        first_ok if last_bad is None else None)
    first_s = first_ok.received - rel["back"] if first_ok else None
    stable_s = stable.received - rel["back"] if stable else None
    res.line("database ok again after Postgres was back: first ok "
             + (f"{first_s:.2f} s" if first_s is not None else "never")
             + ", ok from then on " + (f"{stable_s:.2f} s" if stable_s is not None else "never")
             + f" ({len(after)} polls after)")
    if during and not any(db_ok(p) is False for p in during):
        res.line("warning: no health poll saw the database down: was Postgres really stopped?")
    res.check("no 5xx / transport errors", f"{n5xx} / {transport}", n5xx == 0 and transport == 0)
    res.check(f"database ok (and stays ok) within {PG_RECOVERY_MAX_S:.0f} s",
              f"{stable_s:.2f} s" if stable_s is not None else "never",
              stable_s is not None and stable_s <= PG_RECOVERY_MAX_S)


SCENARIOS: dict[str, Callable[[Context, RunResult], Any]] = {
    "stampede": scenario_stampede,
    "sustained": scenario_sustained,
    "faults": scenario_faults,
    "pgrestart": scenario_pgrestart,
}


# =============================================================================
# Main
# =============================================================================


def _print_run(res: RunResult) -> None:
    print(f"\n== {res.scenario}, workers={res.workers} ({res.elapsed_s:.0f} s) ==")
    for line in res.lines:
        print(f"  {line}")
    if res.error:
        print(f"  ERROR: {res.error}")
    for t in res.targets:
        print(f"  [{t.result}] {t.name:<48} {t.value}")
    sys.stdout.flush()


def _print_summary(results: list[RunResult]) -> int:
    print("\n== summary ==")
    print(f"  {'scenario':<10} {'workers':>7}  {'target':<50} {'value':<31} result")
    counts: Counter[str] = Counter()
    for res in results:
        if res.error:
            print(f"  {res.scenario:<10} {res.workers:>7}  {'(run failed)':<50} {'-':<31} FAIL")
            counts[FAIL] += 1
        for t in res.targets:
            print(f"  {res.scenario:<10} {res.workers:>7}  {t.name:<50} {t.value:<31} {t.result}")
            counts[t.result] += 1
    verdict = "FAIL" if counts[FAIL] else "PASS"
    print(f"  {counts[PASS]} pass, {counts[FAIL]} fail, {counts[SKIP]} skip: {verdict}")
    return 1 if counts[FAIL] else 0


def _csv(value: str, allowed: Iterable[str] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if allowed is not None:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {bad}; choose from {', '.join(allowed)}")
    return items


def _workers(value: str) -> list[int]:
    try:
        out = [int(v) for v in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected numbers like 1,3, got {value!r}") from None
    if not out or any(w < 1 or w > 16 for w in out):
        raise argparse.ArgumentTypeError("worker counts must be between 1 and 16")
    return out


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bench_resilience", description=__doc__.split("\n", 1)[0])
    p.add_argument("--quick", action="store_true", help="shorter runs (about 2 minutes in all)")
    p.add_argument("--workers", type=_workers, default=[1, 3], help="gateway worker counts (default 1,3)")
    p.add_argument("--scenario", type=lambda v: _csv(v, SCENARIOS), default=list(SCENARIOS),
                   help=f"which scenarios (default: {','.join(SCENARIOS)})")
    p.add_argument("--log-dir", type=Path, help="keep the processes' logs here (default: a temp dir, deleted)")
    p.add_argument("--dump", type=Path, help="write each run's raw data (per-request records, counter samples, "
                   "health polls) as JSON files into this directory")
    return p


async def _amain(args: argparse.Namespace, reg: Registry) -> int:
    loop = asyncio.get_running_loop()
    main_task = asyncio.current_task()
    assert main_task is not None
    for sig in (signal.SIGTERM, signal.SIGHUP):
        loop.add_signal_handler(sig, main_task.cancel)

    started = time.monotonic()
    durations = QUICK if args.quick else FULL
    root = Path(tempfile.mkdtemp(prefix="bench-resilience-"))
    reg.temp_root = root
    logs = args.log_dir.resolve() if args.log_dir else root / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    print(f"bench_resilience: {'quick' if args.quick else 'full'} run; workers {args.workers}; "
          f"scenarios {', '.join(args.scenario)}")
    print(f"  python {platform.python_version()}, {os.cpu_count()} CPU(s), load average "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}; logs in {logs}")
    sys.stdout.flush()

    pg = Postgres(root / "pg")
    reg.postgres = pg
    await asyncio.to_thread(pg.start)
    results: list[RunResult] = []
    async with aiohttp.ClientSession() as control, aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True)
    ) as fresh:
        demo = Demo(reg, root, logs, control)
        await demo.start()
        sources_file = root / "sources.toml"
        sources_file.write_text(sources_toml(demo.url))
        ctx = Context(reg, args, durations, root, logs, pg, demo, control, fresh, sources_file)
        for workers in args.workers:
            for name in args.scenario:
                res = RunResult(name, workers)
                t = time.monotonic()
                try:
                    await SCENARIOS[name](ctx, res)
                except (StartError, RuntimeError, ValueError, OSError, aiohttp.ClientError, TimeoutError) as exc:
                    res.error = f"{type(exc).__name__}: {exc}"
                res.elapsed_s = time.monotonic() - t
                _print_run(res)
                results.append(res)
                if args.dump and res.raw:
                    args.dump.mkdir(parents=True, exist_ok=True)
                    (args.dump / f"{name}-w{workers}.json").write_bytes(orjson.dumps(
                        {"scenario": name, "workers": workers, "lines": res.lines,
                         "targets": [t.__dict__ for t in res.targets], **res.raw}))
                res.raw = {}
    code = _print_summary(results)
    print(f"  total {time.monotonic() - started:.0f} s; load average now "
          f"{' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    return code


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--loadgen"] and len(argv) == 2:
        return _loadgen_main(argv[1])
    args = _parser().parse_args(argv)
    reg = Registry()
    code = 1
    try:
        code = asyncio.run(_amain(args, reg))
    except KeyboardInterrupt:
        print("\ninterrupted: stopping everything", file=sys.stderr)
        code = 130
    except asyncio.CancelledError:
        print("\nterminated: stopping everything", file=sys.stderr)
        code = 143
    finally:
        # A second Ctrl-C must not cut the cleanup short and leave processes behind.
        previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            reg.cleanup()
        finally:
            signal.signal(signal.SIGINT, previous)
    return code


if __name__ == "__main__":
    sys.exit(main())
